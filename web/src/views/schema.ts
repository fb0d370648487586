// The schema sidebar: the dataset's columns, searchable; a click offers what to do with one.

import type { Column } from "../api";
import { isNumeric } from "../catalog";
import { changed, el, openMenu, type MenuItem } from "../dom";
import * as edit from "../spec-edit";
import { onSpec, type Dispatch } from "../state";

export interface SchemaProps { columns: Column[]; search: string }

/** `container` holds the search box (`input`) and the list (`ul`). */
export function render(container: HTMLElement, props: SchemaProps, dispatch: Dispatch) {
  const box = container.querySelector("input")!;
  box.oninput = () => dispatch((s) => ({ ...s, schemaSearch: box.value }));
  if (!changed(container, { ...props })) return;
  const q = props.search.toLowerCase();
  container.querySelector("ul")!.replaceChildren(
    ...props.columns
      .filter((c) => c.name.toLowerCase().includes(q))
      .map((c) => {
        const title = c.derived
          ? `${c.name} = ${c.expression}${c.error ? ` (${c.error})` : ""}`
          : `${c.name} (${c.type})${c.last_seen ? `, last seen ${c.last_seen}` : ""}`;
        const li = el("li", { title, className: c.derived ? "derived" : "" },
          el("span", { textContent: c.derived ? `ƒ ${c.name}` : c.name }), el("span", { className: "ty", textContent: c.type }));
        li.dataset.column = c.name;
        li.addEventListener("click", (ev) => openMenu(ev, columnActions(c, dispatch)));
        return li;
      }),
  );
}

function columnActions(c: Column, dispatch: Dispatch): MenuItem[] {
  const run = (f: Parameters<typeof onSpec>[0]) => () => dispatch(onSpec(f), "run");
  const visualize = (op: string): MenuItem => [`Visualize ${op}(${c.name})`, run((s) => edit.addCalculation(s, { op, column: c.name }))];
  return [
    [`Group by ${c.name}`, run((s) => edit.addBreakdown(s, c.name))],
    [`Filter: ${c.name} exists`, run((s) => edit.addFilters(s, { column: c.name, op: "exists" }))],
    ...(isNumeric(c) ? [visualize("P99"), visualize("HEATMAP")] : [visualize("COUNT_DISTINCT")]),
    [`Show ${c.name} in raw events`, () => dispatch((s) => ({
      ...s, spec: edit.showEvents(s.spec), eventColumns: s.eventColumns.includes(c.name) ? s.eventColumns : [...s.eventColumns, c.name],
    }), "run")],
  ];
}

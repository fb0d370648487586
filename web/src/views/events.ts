// Raw events (VISUALIZE empty): a page of them, newest first, in chosen columns; a click expands
// one, and from there its trace is one click away.

import type { Column, EventsAnswer, QuerySpec } from "../api";
import { changed, chip, el, input } from "../dom";
import type { Dispatch, Update } from "../state";

export const PAGE = 50;

/** A page of raw events as shown: the spec it answers and which page it is. */
export interface EventsShown { kind: "events"; spec: QuerySpec; answer: EventsAnswer; page: number }

export interface EventsProps { shown: EventsShown | null; eventColumns: string[]; columns: Column[] }

export function eventsStatus(a: EventsAnswer, msInAll: number): string {
  return `${a.events.length} events · ${a.meta.rows_examined.toLocaleString("en-US")} rows examined · `
    + `${a.meta.segments_scanned} segments scanned · ${a.meta.elapsed_ms.toFixed(1)} ms in the server, ${msInAll.toFixed(0)} ms in all`;
}

const turnPage = (by: number): Update => (s) => ({ ...s, eventPage: s.eventPage + by });
const dropColumn = (i: number): Update => (s) => ({ ...s, eventColumns: s.eventColumns.filter((_, j) => j !== i) });

export function render(container: HTMLElement, props: EventsProps, dispatch: Dispatch) {
  if (!changed(container, { ...props })) return;
  if (!props.shown) return container.replaceChildren();
  const { answer: a, page } = props.shown;
  const cols = ["timestamp", ...props.eventColumns];
  const head = el("tr", {}, ...cols.map((c) => el("th", { textContent: c })));
  const rows = a.events.map((ev) => {
    const tr = el("tr", { title: "Click to expand" }, ...cols.map((c) => el("td", { textContent: ev[c] === undefined ? "" : String(ev[c]) })));
    tr.addEventListener("click", () => {
      const next = tr.nextElementSibling as HTMLElement | null;
      if (next?.classList.contains("expanded")) return next.remove();
      const td = el("td", { colSpan: cols.length });
      const traceId = ev["trace.trace_id"];
      if (typeof traceId === "string") {
        const open = (e: MouseEvent) => {
          e.stopPropagation();
          dispatch((s) => ({ ...s, panel: { kind: "trace", traceId } }));
        };
        td.append(el("button", { textContent: "View trace", className: "view-trace", onclick: open }), "\n");
      }
      td.append(JSON.stringify(ev, null, 2));
      tr.after(el("tr", { className: "expanded" }, td));
    });
    return tr;
  });
  const colInput = input({ placeholder: "add column…", id: "event-column" }, "col-list");
  colInput.addEventListener("keydown", (e) => {
    const column = colInput.value;
    if (e.key !== "Enter" || !props.columns.some((c) => c.name === column)) return;
    dispatch((s) => ({ ...s, eventColumns: s.eventColumns.includes(column) ? s.eventColumns : [...s.eventColumns, column] }), "rerun");
  });
  const pager = el(
    "div",
    { className: "pager" },
    el("button", { textContent: "← Newer", disabled: page === 0, onclick: () => dispatch(turnPage(-1), "rerun") }),
    el("span", { textContent: `Events ${page * PAGE + 1}–${page * PAGE + a.events.length}, newest first` }),
    el("button", { textContent: "Older →", disabled: a.events.length < PAGE, onclick: () => dispatch(turnPage(1), "rerun") }),
    colInput,
    ...props.eventColumns.map((c, i) => chip(c, () => dispatch(dropColumn(i), "rerun"))),
  );
  container.replaceChildren(pager, el("table", { className: "grid", id: "events-table" }, el("thead", {}, head), el("tbody", {}, ...rows)));
}

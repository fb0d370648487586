// The query builder: VISUALIZE, WHERE, GROUP BY, ORDER BY, LIMIT, HAVING. Built once; a render
// updates its chips and choices, so what is being typed survives renders. Edits change the spec
// only; the query runs from the Run button.

import type { Column, QuerySpec } from "../api";
import { parseCalc, type Catalog } from "../catalog";
import { chip, clause, datalist, el, input, setChips, setOptions, setValue, changed } from "../dom";
import { isExpression } from "../expr";
import * as edit from "../spec-edit";
import { onSpec, type Dispatch } from "../state";

export interface BuilderProps {
  spec: QuerySpec;
  columns: Column[];
  catalog: Catalog;
  /** Shows a message in the error box. */
  complain: (msg: string) => void;
  /** Values of a string column seen in the current time range, to suggest as filter values. */
  suggest: (column: string) => Promise<string[]>;
}

interface Parts {
  props: BuilderProps;
  clauses: Record<"visualize" | "where" | "groupBy" | "orderBy" | "having", HTMLElement>;
  calcList: HTMLDataListElement;
  colList: HTMLDataListElement;
  fop: HTMLSelectElement;
  combo: HTMLSelectElement;
  osel: HTMLSelectElement;
  hsel: HTMLSelectElement;
  limit: HTMLInputElement;
}

const built = new WeakMap<HTMLElement, Parts>();

function build(container: HTMLElement, props: BuilderProps, dispatch: Dispatch): Parts {
  const p = { props } as Parts;
  const specEdit = (f: (s: QuerySpec) => QuerySpec) => dispatch(onSpec(f));

  // VISUALIZE
  const calcInput = input({ placeholder: "e.g. P99(duration_ms)", id: "calc-input" }, "calc-list");
  calcInput.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    const c = parseCalc(calcInput.value);
    if (!c || !p.props.catalog.knowsCalc(c.op)) {
      return p.props.complain(`Unknown calculation ${JSON.stringify(calcInput.value)}: use e.g. COUNT, P99(duration_ms)`);
    }
    calcInput.value = "";
    // P99(DIV($duration_ms, 1000)): the expression becomes a calculated field of the query.
    const expr = c.column && !p.props.columns.some((col) => col.name === c.column) && isExpression(c.column);
    specEdit((s) => edit.addCalculation(expr ? edit.withField(s, c.column!) : s, c));
  });
  p.calcList = datalist("calc-list");

  // WHERE
  const fcol = input({ placeholder: "column", id: "filter-column" }, "col-list");
  p.fop = el("select", { id: "filter-op" });
  const fval = input({ placeholder: "value", id: "filter-value" }, "value-list");
  const values = datalist("value-list");
  fcol.addEventListener("change", async () => {
    const suggested = await p.props.suggest(fcol.value);
    setOptions(values, suggested.map((v) => [v, ""]));
  });
  const addFilter = () => {
    const typed = fcol.value.trim();
    // An expression (`$a * 2`) filters through a calculated field; its value goes as typed
    // and the server converts it to the expression's type.
    const col = p.props.columns.find((c) => c.name === typed) ?? (isExpression(typed) ? { name: typed, type: "string" as const } : undefined);
    if (!col) return p.props.complain(`Unknown column ${JSON.stringify(fcol.value)}`);
    const value = p.props.catalog.filterValue(col, p.fop.value, fval.value);
    const f = value === undefined ? { column: col.name, op: p.fop.value } : { column: col.name, op: p.fop.value, value };
    fcol.value = fval.value = "";
    const derived = !p.props.columns.some((c) => c.name === typed);
    specEdit((s) => edit.addFilters(derived ? edit.withField(s, typed) : s, f));
  };
  fval.addEventListener("keydown", (ev) => ev.key === "Enter" && addFilter());
  p.combo = el("select", { id: "filter-combination" });
  setOptions(p.combo, [["AND", "AND"], ["OR", "OR"]]);
  p.combo.onchange = () => specEdit((s) => edit.setFilterCombination(s, p.combo.value as "AND" | "OR"));

  // GROUP BY
  const gin = input({ placeholder: "column or $expression", id: "group-input" }, "col-list");
  gin.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    const column = gin.value.trim();
    const known = p.props.columns.some((c) => c.name === column);
    if (!known && !isExpression(column)) return p.props.complain(`Unknown column ${JSON.stringify(column)}`);
    gin.value = "";
    specEdit((s) => edit.addBreakdown(known ? s : edit.withField(s, column), column));
  });

  // ORDER BY
  p.osel = el("select", { id: "order-key" });
  const odir = el("select", { id: "order-dir" });
  setOptions(odir, [["descending", "desc"], ["ascending", "asc"]]);
  const addOrder = () => {
    const [key, dir] = [p.osel.value, odir.value as edit.Direction];
    p.osel.value = "";
    specEdit((s) => edit.addOrder(s, key, dir, p.props.catalog));
  };

  // LIMIT
  p.limit = input({ type: "number", min: "1", max: "10000", className: "short", id: "limit" });
  p.limit.onchange = () => specEdit((s) => edit.setLimit(s, p.limit.value));

  // HAVING
  p.hsel = el("select", { id: "having-calc" });
  const hop = el("select", { id: "having-op" });
  setOptions(hop, props.catalog.havingOps().map((o) => [o, o]));
  const hval = input({ type: "number", className: "short", id: "having-value" });
  const addHaving = () => {
    if (!p.hsel.value || hval.value === "") return;
    const value = Number(hval.value);
    hval.value = "";
    specEdit((s) => edit.addHaving(s, p.hsel.value, hop.value, value, p.props.catalog));
  };

  p.clauses = {
    visualize: clause("VISUALIZE", calcInput, p.calcList),
    where: clause("WHERE", fcol, p.fop, fval, el("button", { textContent: "+", id: "filter-add", onclick: addFilter }), values, p.combo),
    groupBy: clause("GROUP BY", gin),
    orderBy: clause("ORDER BY", p.osel, odir, el("button", { textContent: "+", onclick: addOrder })),
    having: clause("HAVING", p.hsel, hop, hval, el("button", { textContent: "+", onclick: addHaving })),
  };
  p.colList = datalist("col-list");
  const c = p.clauses;
  container.replaceChildren(c.visualize, c.where, c.groupBy, c.orderBy, clause("LIMIT", p.limit), c.having, p.colList);
  return p;
}

export function render(container: HTMLElement, props: BuilderProps, dispatch: Dispatch) {
  let p = built.get(container);
  if (!p) built.set(container, (p = build(container, props, dispatch)));
  p.props = props;
  if (!changed(container, { spec: props.spec, columns: props.columns, catalog: props.catalog })) return;
  const { spec: s, catalog: cat, columns } = props;
  const remove = (f: (s: QuerySpec) => QuerySpec) => () => dispatch(onSpec(f));

  setChips(p.clauses.visualize, s.calculations.map((c, i) => chip(cat.key(c), remove((s) => edit.removeCalculation(s, i)))));
  setOptions(p.calcList, cat.suggestions(columns).map((v) => [v, ""]));

  setChips(p.clauses.where, s.filters.map((f, i) => {
    const text = `${f.column} ${f.op}${f.value === undefined ? "" : " " + JSON.stringify(f.value)}`;
    return chip(text, remove((s) => edit.removeFilter(s, i)));
  }));
  setOptions(p.fop, cat.filterOps().map((o) => [o, o]));
  p.combo.hidden = s.filters.length <= 1;
  setValue(p.combo, s.filter_combination ?? "AND");

  setChips(p.clauses.groupBy, s.breakdowns.map((g, i) => chip(g, remove((s) => edit.removeBreakdown(s, i)))));

  const orderKeys = edit.orderKeys(s, cat);
  setChips(p.clauses.orderBy, s.orders.map((o, i) => {
    const key = o.op ? cat.key({ op: o.op, column: o.column }) : o.column;
    return chip(`${key} ${o.order === "ascending" ? "asc" : "desc"}`, remove((s) => edit.removeOrder(s, i)));
  }));
  setOptions(p.osel, [["", "—"], ...orderKeys.map((k): [string, string] => [k, k])]);

  setValue(p.limit, String(s.limit ?? 100));

  setChips(p.clauses.having, s.havings.map((h, i) => {
    const text = `${cat.key({ op: h.calculate_op, column: h.column })} ${h.op} ${h.value}`;
    return chip(text, remove((s) => edit.removeHaving(s, i)));
  }));
  setOptions(p.hsel, edit.havingKeys(s, cat).map((k) => [k, k]));

  setOptions(p.colList, columns.map((c) => [c.name, ""]));
}

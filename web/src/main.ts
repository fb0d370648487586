// Sonde's UI: a query builder in the style of Honeycomb's, over the same JSON API as curl.
//
// State lives in the URL (`?dataset=…&q=<spec JSON>`): every query is a permalink, and the
// browser's back/forward move through queries. Runs are recorded in a local history.

import "./style.css";
import {
  api, ApiError, CALC_OPS, FILTER_OPS, calcKey, parseCalc,
  type Column, type QueryAnswer, type QuerySpec, type Row, type Filter,
} from "./api";
import { PALETTE, formatNumber, heatmapChart, lineChart, type Heatmap } from "./charts";
import { renderBubbleUp, type BubbleColumn } from "./bubbleup";
import { renderTrace } from "./trace";
import type uPlot from "uplot";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
// Properties are assigned as given (`textContent`, `className`, `onclick`, …).
const el = <K extends keyof HTMLElementTagNameMap>(tag: K, props: Record<string, unknown> = {}, ...kids: (Node | string)[]): HTMLElementTagNameMap[K] => {
  const e = document.createElement(tag);
  Object.assign(e, props);
  e.append(...kids);
  return e;
};

const TIME_PRESETS: [string, number][] = [["Last 10 minutes", 600], ["Last hour", 3600], ["Last 6 hours", 21600], ["Last 24 hours", 86400], ["Last 7 days", 604800]];
const HISTORY_KEY = "sonde.history";

interface State {
  dataset: string;
  spec: QuerySpec;
  /** Raw-events view: columns shown and page. */
  eventColumns: string[];
  eventPage: number;
}

const emptySpec = (): QuerySpec => ({ calculations: [{ op: "COUNT" }], filters: [], breakdowns: [], orders: [], havings: [], time_range: 3600 });

let state: State = { dataset: "", spec: emptySpec(), eventColumns: [], eventPage: 0 };
let columns: Column[] = [];
let plots: uPlot[] = [];

// ---------------------------------------------------------------------------------------------
// URL state

function stateToUrl(s: State): string {
  const p = new URLSearchParams();
  if (s.dataset) p.set("dataset", s.dataset);
  p.set("q", JSON.stringify(s.spec));
  return `${location.pathname}?${p.toString()}`;
}

function stateFromUrl(): Partial<State> {
  const p = new URLSearchParams(location.search);
  const out: Partial<State> = {};
  const ds = p.get("dataset");
  if (ds) out.dataset = ds;
  const q = p.get("q");
  if (q) {
    try {
      out.spec = { ...emptySpec(), ...JSON.parse(q) };
    } catch {
      showError("The query in the URL is not valid JSON.");
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Menus and errors

function showError(msg: string | null) {
  const e = $("error");
  e.hidden = !msg;
  e.textContent = msg ?? "";
}

function openMenu(ev: MouseEvent, items: [string, () => void][]) {
  const m = $("menu");
  m.replaceChildren(...items.map(([label, f]) => el("button", { textContent: label, onclick: () => { m.hidden = true; f(); } })));
  m.hidden = false;
  m.style.left = `${Math.min(ev.clientX, window.innerWidth - 240)}px`;
  m.style.top = `${Math.min(ev.clientY, window.innerHeight - 40 * items.length)}px`;
  ev.stopPropagation();
}
document.addEventListener("click", (ev) => {
  if (!(ev.target as HTMLElement).closest("#menu")) $("menu").hidden = true;
});

// ---------------------------------------------------------------------------------------------
// Schema sidebar

async function loadColumns() {
  columns = state.dataset ? (await api.columns(state.dataset)).columns : [];
  renderSchema();
  renderBuilder();
}

function renderSchema() {
  const q = $<HTMLInputElement>("schema-search").value.toLowerCase();
  const list = $("schema");
  list.replaceChildren(
    ...columns
      .filter((c) => c.name.toLowerCase().includes(q))
      .map((c) => {
        const li = el("li", { title: `${c.name} (${c.type})${c.last_seen ? `, last seen ${c.last_seen}` : ""}` }, el("span", { textContent: c.name }), el("span", { className: "ty", textContent: c.type }));
        li.dataset.column = c.name;
        li.addEventListener("click", (ev) => openMenu(ev, columnActions(c)));
        return li;
      }),
  );
}

function columnActions(c: Column): [string, () => void][] {
  const acts: [string, () => void][] = [
    [`Group by ${c.name}`, () => { addUnique(state.spec.breakdowns, c.name); rerun(); }],
    [`Filter: ${c.name} exists`, () => { state.spec.filters.push({ column: c.name, op: "exists" }); rerun(); }],
  ];
  if (c.type === "int" || c.type === "float") {
    acts.push([`Visualize P99(${c.name})`, () => { state.spec.calculations.push({ op: "P99", column: c.name }); rerun(); }]);
    acts.push([`Visualize HEATMAP(${c.name})`, () => { state.spec.calculations.push({ op: "HEATMAP", column: c.name }); rerun(); }]);
  } else {
    acts.push([`Visualize COUNT_DISTINCT(${c.name})`, () => { state.spec.calculations.push({ op: "COUNT_DISTINCT", column: c.name }); rerun(); }]);
  }
  acts.push([`Show ${c.name} in raw events`, () => { addUnique(state.eventColumns, c.name); state.spec.calculations = []; rerun(); }]);
  return acts;
}

function addUnique<T>(xs: T[], x: T) {
  if (!xs.includes(x)) xs.push(x);
}

// ---------------------------------------------------------------------------------------------
// Query builder

function datalist(id: string, values: string[]): HTMLDataListElement {
  const dl = el("datalist", { id });
  dl.append(...values.map((v) => el("option", { value: v })));
  return dl;
}

function chip(text: string, onRemove: () => void): HTMLElement {
  const c = el("span", { className: "chip" }, text, el("button", { textContent: "×", title: "Remove", onclick: () => { onRemove(); renderBuilder(); } }));
  return c;
}

function clause(label: string, ...kids: (Node | string)[]): HTMLElement {
  return el("div", { className: "clause" }, el("label", { textContent: label }), ...kids);
}

function numericColumns() {
  return columns.filter((c) => c.type === "int" || c.type === "float").map((c) => c.name);
}

function calcSuggestions(): string[] {
  const out = ["COUNT", "CONCURRENCY"];
  for (const col of numericColumns()) for (const op of CALC_OPS) if (!["COUNT", "CONCURRENCY"].includes(op)) out.push(`${op}(${col})`);
  for (const c of columns.filter((c) => c.type === "string" || c.type === "bool")) out.push(`COUNT_DISTINCT(${c.name})`);
  return out;
}

function renderBuilder() {
  const s = state.spec;
  const b = $("builder");
  const colNames = columns.map((c) => c.name);

  // VISUALIZE
  const calcInput = el("input", { placeholder: "e.g. P99(duration_ms)", id: "calc-input" });
  calcInput.setAttribute("list", "calc-list");
  calcInput.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    const c = parseCalc(calcInput.value);
    if (c && CALC_OPS.includes(c.op)) {
      s.calculations.push(c);
      renderBuilder();
      document.getElementById("calc-input")?.focus();
    } else showError(`Unknown calculation ${JSON.stringify(calcInput.value)}: use e.g. COUNT, P99(duration_ms)`);
  });
  const visualize = clause("VISUALIZE", ...s.calculations.map((c, i) => chip(calcKey(c), () => s.calculations.splice(i, 1))), calcInput, datalist("calc-list", calcSuggestions()));

  // WHERE
  const fcol = el("input", { placeholder: "column", id: "filter-column" });
  fcol.setAttribute("list", "col-list");
  const fop = el("select", { id: "filter-op" });
  fop.append(...FILTER_OPS.map((o) => el("option", { value: o, textContent: o })));
  const fval = el("input", { placeholder: "value", id: "filter-value" });
  fval.setAttribute("list", "value-list");
  const values = datalist("value-list", []);
  fcol.addEventListener("change", () => suggestValues(fcol.value, values));
  const addFilter = () => {
    const col = columns.find((c) => c.name === fcol.value);
    if (!col) return showError(`Unknown column ${JSON.stringify(fcol.value)}`);
    const f: Filter = { column: col.name, op: fop.value };
    if (!["exists", "does-not-exist"].includes(fop.value)) {
      const raw = fval.value;
      const conv = (v: string) => (col.type === "int" || col.type === "float") && v.trim() !== "" && !isNaN(Number(v)) ? Number(v) : col.type === "bool" ? v === "true" : v;
      f.value = ["in", "not-in"].includes(fop.value) ? raw.split(",").map((v) => conv(v.trim())) : conv(raw);
    }
    s.filters.push(f);
    renderBuilder();
  };
  fval.addEventListener("keydown", (ev) => ev.key === "Enter" && addFilter());
  const combo = el("select", { id: "filter-combination" });
  combo.append(el("option", { value: "AND", textContent: "AND" }), el("option", { value: "OR", textContent: "OR" }));
  combo.value = s.filter_combination ?? "AND";
  combo.onchange = () => (s.filter_combination = combo.value as "AND" | "OR");
  const where = clause(
    "WHERE",
    ...s.filters.map((f, i) => chip(`${f.column} ${f.op}${f.value === undefined ? "" : " " + JSON.stringify(f.value)}`, () => s.filters.splice(i, 1))),
    fcol, fop, fval, el("button", { textContent: "+", id: "filter-add", onclick: addFilter }), values,
    ...(s.filters.length > 1 ? [combo] : []),
  );

  // GROUP BY
  const gin = el("input", { placeholder: "column", id: "group-input" });
  gin.setAttribute("list", "col-list");
  gin.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && colNames.includes(gin.value)) {
      addUnique(s.breakdowns, gin.value);
      renderBuilder();
    }
  });
  const groupBy = clause("GROUP BY", ...s.breakdowns.map((g, i) => chip(g, () => s.breakdowns.splice(i, 1))), gin);

  // ORDER BY
  const orderKeys = [...s.calculations.filter((c) => !["HEATMAP", "RATE_AVG", "RATE_SUM", "RATE_MAX", "CONCURRENCY"].includes(c.op)).map(calcKey), ...s.breakdowns];
  const osel = el("select", { id: "order-key" });
  osel.append(el("option", { value: "", textContent: "—" }), ...orderKeys.map((k) => el("option", { value: k, textContent: k })));
  const odir = el("select", { id: "order-dir" });
  odir.append(el("option", { value: "descending", textContent: "desc" }), el("option", { value: "ascending", textContent: "asc" }));
  const addOrder = () => {
    if (!osel.value) return;
    const calc = s.calculations.find((c) => calcKey(c) === osel.value);
    s.orders.push(calc ? { op: calc.op, column: calc.column, order: odir.value as "ascending" } : { column: osel.value, order: odir.value as "ascending" });
    renderBuilder();
  };
  const orderBy = clause("ORDER BY", ...s.orders.map((o, i) => chip(`${o.op ? calcKey({ op: o.op, column: o.column }) : o.column} ${o.order === "ascending" ? "asc" : "desc"}`, () => s.orders.splice(i, 1))), osel, odir, el("button", { textContent: "+", onclick: addOrder }));

  // LIMIT
  const lim = el("input", { type: "number", min: "1", max: "10000", className: "short", id: "limit", value: String(s.limit ?? 100) });
  lim.onchange = () => (s.limit = Math.max(1, Math.min(10000, Number(lim.value) || 100)));

  // HAVING
  const hsel = el("select", { id: "having-calc" });
  hsel.append(...orderKeys.filter((k) => !s.breakdowns.includes(k)).map((k) => el("option", { value: k, textContent: k })));
  const hop = el("select", { id: "having-op" });
  hop.append(...["=", "!=", ">", ">=", "<", "<="].map((o) => el("option", { value: o, textContent: o })));
  const hval = el("input", { type: "number", className: "short", id: "having-value" });
  const addHaving = () => {
    const calc = s.calculations.find((c) => calcKey(c) === hsel.value);
    if (!calc || hval.value === "") return;
    s.havings.push({ calculate_op: calc.op, column: calc.column, op: hop.value, value: Number(hval.value) });
    renderBuilder();
  };
  const having = clause("HAVING", ...s.havings.map((h, i) => chip(`${calcKey({ op: h.calculate_op, column: h.column })} ${h.op} ${h.value}`, () => s.havings.splice(i, 1))), hsel, hop, hval, el("button", { textContent: "+", onclick: addHaving }));

  b.replaceChildren(visualize, where, groupBy, orderBy, clause("LIMIT", lim), having, datalist("col-list", colNames));
}

async function suggestValues(column: string, list: HTMLDataListElement) {
  const col = columns.find((c) => c.name === column);
  if (!col || col.type !== "string") return list.replaceChildren();
  try {
    const a = await api.query(state.dataset, { ...timeOf(state.spec), calculations: [{ op: "COUNT" }], filters: [], breakdowns: [column], orders: [], havings: [], limit: 50 });
    list.replaceChildren(...a.data.results.map((r) => el("option", { value: String(r.data[column] ?? "") })));
  } catch {
    list.replaceChildren();
  }
}

// ---------------------------------------------------------------------------------------------
// Time picker

function timeOf(s: QuerySpec): Pick<QuerySpec, "time_range" | "start_time" | "end_time"> {
  return s.start_time !== undefined && s.end_time !== undefined ? { start_time: s.start_time, end_time: s.end_time } : { time_range: s.time_range ?? 3600 };
}

function renderTimePicker() {
  const s = state.spec;
  const sel = el("select", { id: "time-preset" });
  sel.append(...TIME_PRESETS.map(([label, secs]) => el("option", { value: String(secs), textContent: label })), el("option", { value: "custom", textContent: "Custom range" }));
  const custom = s.start_time !== undefined && s.end_time !== undefined;
  sel.value = custom ? "custom" : String(s.time_range ?? 3600);
  const toLocal = (secs: number) => new Date(secs * 1000).toISOString().slice(0, 19);
  const from = el("input", { type: "datetime-local", step: "1", id: "time-from", value: custom ? toLocal(s.start_time!) : "" });
  const to = el("input", { type: "datetime-local", step: "1", id: "time-to", value: custom ? toLocal(s.end_time!) : "" });
  from.hidden = to.hidden = !custom;
  const fromLocal = (v: string) => Math.floor(Date.parse(v + "Z") / 1000);
  sel.onchange = () => {
    if (sel.value === "custom") {
      const end = Math.floor(Date.now() / 1000);
      s.start_time = end - (s.time_range ?? 3600);
      s.end_time = end;
      delete s.time_range;
    } else {
      s.time_range = Number(sel.value);
      delete s.start_time;
      delete s.end_time;
    }
    renderTimePicker();
  };
  from.onchange = () => (s.start_time = fromLocal(from.value));
  to.onchange = () => (s.end_time = fromLocal(to.value));
  $("time-picker").replaceChildren(sel, from, to, el("span", { className: "status", textContent: custom ? "UTC" : "" }));
}

// ---------------------------------------------------------------------------------------------
// Running

let runSeq = 0;

function rerun() {
  renderBuilder();
  run(true);
}

async function run(push: boolean) {
  const seq = ++runSeq;
  showError(null);
  if (!state.dataset) {
    $("status").textContent = "No datasets yet: send some events (see the README), then reload.";
    return;
  }
  if (push) {
    const url = stateToUrl(state);
    if (url !== location.pathname + location.search) history.pushState(null, "", url);
    remember();
  }
  $("status").textContent = "Running…";
  $("bubbleup").hidden = true;
  $("trace").hidden = true;
  const started = performance.now();
  try {
    if (state.spec.calculations.length === 0) {
      await runEvents(seq, started);
    } else {
      const answer = await api.query(state.dataset, state.spec);
      if (seq !== runSeq) return;
      let totals: QueryAnswer | null = null;
      const additive = state.spec.calculations.filter((c) => c.op === "COUNT" || c.op === "SUM");
      if (answer.meta.groups_truncated && state.spec.breakdowns.length && additive.length && state.spec.havings.length === 0) {
        totals = await api.query(state.dataset, { ...state.spec, calculations: additive, breakdowns: [], orders: [], havings: [] });
      }
      if (seq !== runSeq) return;
      renderAnswer(answer, totals);
      const m = answer.meta;
      $("status").textContent = `${m.groups} group${m.groups === 1 ? "" : "s"}${m.groups_truncated ? " (top)" : ""} · ${m.rows_examined.toLocaleString("en-US")} rows examined · ${m.segments_scanned}/${m.segments_total} segments scanned · ${m.elapsed_ms.toFixed(1)} ms in the server, ${(performance.now() - started).toFixed(0)} ms in all · ${m.granularity}s buckets`;
    }
  } catch (e) {
    if (seq !== runSeq) return;
    $("status").textContent = "";
    showError(e instanceof ApiError ? e.message : String(e));
  }
}

function groupLabel(row: Row): string {
  return state.spec.breakdowns.length ? state.spec.breakdowns.map((b) => (row[b] === null || row[b] === undefined ? "(null)" : String(row[b]))).join(", ") : "all events";
}

function groupKey(row: Row): string {
  return JSON.stringify(state.spec.breakdowns.map((b) => row[b] ?? null));
}

function renderAnswer(a: QueryAnswer, totals: QueryAnswer | null) {
  plots.forEach((p) => p.destroy());
  plots = [];
  const charts = $("charts");
  charts.replaceChildren();
  $("events").replaceChildren();
  const results = a.data.results.map((r) => r.data);
  const gIndex = new Map(results.map((r, i) => [groupKey(r), i]));
  const step = a.meta.granularity;
  const start = Date.parse(a.meta.start_time) / 1000;
  const end = Date.parse(a.meta.end_time) / 1000;
  const times: number[] = [];
  for (let t = start; t < end; t += step) times.push(t);
  const tIndex = (iso: string) => Math.round((Date.parse(iso) / 1000 - start) / step);
  const handlers = {
    onZoom: (from: number, to: number) => {
      state.spec.start_time = Math.floor(from);
      state.spec.end_time = Math.ceil(to);
      delete state.spec.time_range;
      renderTimePicker();
      run(true);
    },
    onClick: (t: number, series: number, ev: MouseEvent) => {
      const group = series >= 0 && series < results.length ? results[series] : null;
      const bucketStart = start + Math.floor((t - start) / step) * step;
      openMenu(ev, pointActions(group, bucketStart, bucketStart + step));
    },
  };
  const seen = new Set<string>();
  for (const c of state.spec.calculations) {
    const key = calcKey(c);
    if (seen.has(key)) continue;
    seen.add(key);
    if (c.op === "HEATMAP") {
      // One heatmap over all groups shown: their histograms share the value buckets.
      const cells: (Heatmap | null)[] = times.map(() => null);
      for (const s of a.data.series) {
        const h = s.data[key] as Heatmap | undefined;
        if (!h) continue;
        const i = tIndex(s.time);
        const cur = cells[i];
        cells[i] = cur ? { ...cur, counts: cur.counts.map((n, k) => n + h.counts[k]) } : { ...h, counts: [...h.counts] };
      }
      const column = c.column!;
      heatmapChart(charts, key, times, cells, step, {
        ...handlers,
        onBox: (from, to, lo, hi) =>
          runBubbleUp(
            { heatmap: { column, start_time: from, end_time: to, min: lo, max: hi } },
            `${column} ${formatNumber(lo)}–${formatNumber(hi)}, ${new Date(from * 1000).toISOString().slice(11, 19)}–${new Date(to * 1000).toISOString().slice(11, 19)}`,
          ),
      });
      continue;
    }
    const lines = results.map((r) => ({ label: groupLabel(r), values: times.map(() => null as number | null) }));
    for (const s of a.data.series) {
      const g = gIndex.get(groupKey(s.data));
      const v = s.data[key];
      if (g !== undefined && typeof v === "number") lines[g].values[tIndex(s.time)] = v;
    }
    if (totals && (c.op === "COUNT" || c.op === "SUM")) {
      // The groups past the limit, summed: total minus the groups shown.
      const other = times.map(() => null as number | null);
      for (const s of totals.data.series) {
        const v = s.data[key];
        if (typeof v === "number") other[tIndex(s.time)] = v;
      }
      for (const l of lines) l.values.forEach((v, i) => { if (v !== null && other[i] !== null) other[i]! -= v; });
      lines.push({ label: "other", values: other });
    }
    plots.push(lineChart(charts, key, times, lines, handlers));
  }
  renderResultsTable(results);
}

function swatch(color: string): HTMLElement {
  const s = el("span", { className: "swatch" });
  s.style.background = color;
  return s;
}

function renderResultsTable(results: Row[]) {
  const keys = [...new Set(state.spec.calculations.map(calcKey))].filter((k) => !k.startsWith("HEATMAP("));
  const head = el("tr", {}, el("th"), ...state.spec.breakdowns.map((b) => el("th", { textContent: b })), ...keys.map((k) => el("th", { textContent: k })));
  const rows = results.map((r, i) => {
    const tr = el(
      "tr",
      {},
      el("td", {}, swatch(PALETTE[i % PALETTE.length])),
      ...state.spec.breakdowns.map((b) => el("td", { textContent: r[b] === null ? "(null)" : String(r[b]) })),
      ...keys.map((k) => el("td", { className: "num", textContent: formatNumber(r[k]) })),
    );
    tr.addEventListener("mouseenter", () => plots.forEach((p) => p.setSeries(i + 1, { focus: true })));
    tr.addEventListener("mouseleave", () => plots.forEach((p) => p.setSeries(null, { focus: false })));
    tr.addEventListener("click", (ev) => openMenu(ev, pointActions(r, null, null)));
    return tr;
  });
  const table = el("table", { className: "grid", id: "results-table" }, el("thead", {}, head), el("tbody", {}, ...rows));
  $("results").replaceChildren(table);
}

/** What can be done with a clicked group and/or time bucket. */
function pointActions(group: Row | null, from: number | null, to: number | null): [string, () => void][] {
  const groupFilters: Filter[] = group ? state.spec.breakdowns.map((b) => (group[b] === null ? { column: b, op: "does-not-exist" } : { column: b, op: "=", value: group[b] })) : [];
  const acts: [string, () => void][] = [];
  acts.push([from !== null ? "Show events in this bucket" + (group ? " and group" : "") : "Show events for this group", () => {
    state.spec.calculations = [];
    state.spec.filters.push(...groupFilters);
    if (from !== null && to !== null) {
      state.spec.start_time = from;
      state.spec.end_time = to;
      delete state.spec.time_range;
      renderTimePicker();
    }
    rerun();
  }]);
  if (group && groupFilters.length) {
    acts.push(["Filter by this group", () => { state.spec.filters.push(...groupFilters); rerun(); }]);
    acts.push(["BubbleUp: what is different about this group?", () => {
      const sel: Record<string, unknown> = {};
      for (const b of state.spec.breakdowns) sel[b] = group[b] ?? null;
      runBubbleUp({ group: sel }, groupLabel(group));
    }]);
  }
  if (from !== null && to !== null) {
    acts.push(["Zoom to this bucket", () => { state.spec.start_time = from; state.spec.end_time = to; delete state.spec.time_range; renderTimePicker(); run(true); }]);
  }
  for (const c of columns.filter((c) => c.type === "string" && !state.spec.breakdowns.includes(c.name)).slice(0, 4)) {
    acts.push([`Group by ${c.name}`, () => { state.spec.breakdowns.push(c.name); if (group) state.spec.filters.push(...groupFilters); rerun(); }]);
  }
  return acts;
}

// ---------------------------------------------------------------------------------------------
// Raw events (VISUALIZE empty)

const PAGE = 50;

async function runEvents(seq: number, started: number) {
  plots.forEach((p) => p.destroy());
  plots = [];
  $("charts").replaceChildren();
  $("results").replaceChildren();
  const s = state.spec;
  const a = await api.events(state.dataset, { filters: s.filters, filter_combination: s.filter_combination, ...timeOf(s), limit: PAGE, offset: state.eventPage * PAGE });
  if (seq !== runSeq) return;
  if (state.eventColumns.length === 0) {
    // The fields an on-call engineer reads first, when the dataset has them; else the first few.
    const preferred = ["service.name", "name", "duration_ms", "http.status_code", "error", "trace.trace_id"];
    const have = new Set(columns.map((c) => c.name));
    const picked = preferred.filter((c) => have.has(c));
    state.eventColumns = picked.length >= 3 ? picked : columns.filter((c) => !c.reserved).slice(0, 6).map((c) => c.name);
  }
  const cols = ["timestamp", ...state.eventColumns];
  const head = el("tr", {}, ...cols.map((c) => el("th", { textContent: c })));
  const rows: HTMLElement[] = [];
  for (const ev of a.events) {
    const tr = el("tr", { title: "Click to expand" }, ...cols.map((c) => el("td", { textContent: ev[c] === undefined ? "" : String(ev[c]) })));
    tr.addEventListener("click", () => {
      const next = tr.nextElementSibling as HTMLElement | null;
      if (next?.classList.contains("expanded")) return next.remove();
      const td = el("td", { colSpan: cols.length });
      const traceId = ev["trace.trace_id"];
      if (typeof traceId === "string") {
        td.append(el("button", { textContent: "View trace", className: "view-trace", onclick: (e: MouseEvent) => { e.stopPropagation(); openTrace(traceId); } }), "\n");
      }
      td.append(JSON.stringify(ev, null, 2));
      const detail = el("tr", { className: "expanded" }, td);
      tr.after(detail);
    });
    rows.push(tr);
  }
  const colInput = el("input", { placeholder: "add column…", id: "event-column" });
  colInput.setAttribute("list", "col-list");
  colInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && columns.some((c) => c.name === colInput.value)) {
      addUnique(state.eventColumns, colInput.value);
      run(false);
    }
  });
  const pager = el(
    "div",
    { className: "pager" },
    el("button", { textContent: "← Newer", disabled: state.eventPage === 0, onclick: () => { state.eventPage--; run(false); } }),
    el("span", { textContent: `Events ${state.eventPage * PAGE + 1}–${state.eventPage * PAGE + a.events.length}, newest first` }),
    el("button", { textContent: "Older →", disabled: a.events.length < PAGE, onclick: () => { state.eventPage++; run(false); } }),
    colInput,
    ...state.eventColumns.map((c, i) => chip(c, () => { state.eventColumns.splice(i, 1); run(false); })),
  );
  $("events").replaceChildren(pager, el("table", { className: "grid", id: "events-table" }, el("thead", {}, head), el("tbody", {}, ...rows)));
  $("status").textContent = `${a.events.length} events · ${a.meta.rows_examined.toLocaleString("en-US")} rows examined · ${a.meta.segments_scanned} segments scanned · ${a.meta.elapsed_ms.toFixed(1)} ms in the server, ${(performance.now() - started).toFixed(0)} ms in all`;
}

// ---------------------------------------------------------------------------------------------
// BubbleUp and traces

async function runBubbleUp(selection: unknown, title: string) {
  const panel = $("bubbleup");
  panel.hidden = false;
  panel.replaceChildren(el("div", { className: "status", textContent: "BubbleUp: comparing the selection with the rest…" }));
  try {
    const s = state.spec;
    const a = await api.bubbleup(state.dataset, { filters: s.filters, filter_combination: s.filter_combination, ...timeOf(s), selection });
    renderBubbleUp(panel, a, title, (col, value, range, ev) => openMenu(ev, bubbleActions(col, value, range)));
    panel.querySelector(".bu-head")?.append(el("button", { textContent: "Show events in the selection", id: "bubbleup-events", onclick: () => showSelectionEvents(selection) }));
    panel.scrollIntoView({ block: "nearest" });
  } catch (e) {
    panel.replaceChildren(el("div", { className: "error", textContent: e instanceof ApiError ? e.message : String(e) }));
  }
}

/** Raw events of a BubbleUp selection (from which a trace is one click away). */
function showSelectionEvents(selection: unknown) {
  const sel = selection as { heatmap?: { column: string; start_time: number; end_time: number; min: number; max: number }; group?: Record<string, unknown> };
  if (sel.heatmap) {
    const h = sel.heatmap;
    state.spec.filters.push({ column: h.column, op: ">=", value: h.min }, { column: h.column, op: "<=", value: h.max });
    state.spec.start_time = Math.floor(h.start_time);
    state.spec.end_time = Math.ceil(h.end_time);
    delete state.spec.time_range;
    renderTimePicker();
  } else if (sel.group) {
    for (const [column, value] of Object.entries(sel.group)) {
      state.spec.filters.push(value === null ? { column, op: "does-not-exist" } : { column, op: "=", value });
    }
  }
  state.spec.calculations = [];
  rerun();
}

function bubbleActions(col: BubbleColumn, value: unknown, range: [number, number] | null): [string, () => void][] {
  const acts: [string, () => void][] = [];
  if (range) {
    acts.push([`Filter: ${formatNumber(range[0])} <= ${col.column} < ${formatNumber(range[1])}`, () => {
      state.spec.filters.push({ column: col.column, op: ">=", value: range[0] }, { column: col.column, op: "<", value: range[1] });
      rerun();
    }]);
  } else if (value === null) {
    acts.push([`Filter: ${col.column} does not exist`, () => { state.spec.filters.push({ column: col.column, op: "does-not-exist" }); rerun(); }]);
  } else {
    acts.push([`Filter: ${col.column} = ${String(value)}`, () => { state.spec.filters.push({ column: col.column, op: "=", value }); rerun(); }]);
    acts.push([`Filter: ${col.column} != ${String(value)}`, () => { state.spec.filters.push({ column: col.column, op: "!=", value }); rerun(); }]);
  }
  acts.push([`Group by ${col.column}`, () => { addUnique(state.spec.breakdowns, col.column); rerun(); }]);
  return acts;
}

async function openTrace(traceId: string) {
  const panel = $("trace");
  panel.hidden = false;
  panel.replaceChildren(el("div", { className: "status", textContent: `Loading trace ${traceId}…` }));
  panel.scrollIntoView({ block: "start" });
  try {
    const t = await api.trace(state.dataset, traceId);
    renderTrace(panel, t, () => (panel.hidden = true));
  } catch (e) {
    panel.replaceChildren(el("div", { className: "error", textContent: e instanceof ApiError ? e.message : String(e) }));
  }
}

// ---------------------------------------------------------------------------------------------
// History

interface HistoryEntry { dataset: string; spec: QuerySpec; at: number }

function remember() {
  const list: HistoryEntry[] = JSON.parse(localStorage.getItem(HISTORY_KEY) ?? "[]");
  const entry = { dataset: state.dataset, spec: state.spec, at: Date.now() };
  const same = (e: HistoryEntry) => e.dataset === entry.dataset && JSON.stringify(e.spec) === JSON.stringify(entry.spec);
  const next = [entry, ...list.filter((e) => !same(e))].slice(0, 50);
  localStorage.setItem(HISTORY_KEY, JSON.stringify(next));
  renderHistory();
}

function renderHistory() {
  const list: HistoryEntry[] = JSON.parse(localStorage.getItem(HISTORY_KEY) ?? "[]");
  $("history").replaceChildren(
    ...list.map((e) => {
      const label = `${e.dataset}: ${e.spec.calculations.map(calcKey).join(", ") || "events"}${e.spec.breakdowns.length ? " by " + e.spec.breakdowns.join(", ") : ""}`;
      return el("li", { textContent: label, title: new Date(e.at).toLocaleString(), onclick: () => load({ dataset: e.dataset, spec: structuredClone(e.spec) }, true) });
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// SQL tab

async function renderSqlTables() {
  const ds = (await api.datasets()).datasets;
  const parts: HTMLElement[] = [];
  for (const d of ds) {
    const cols = (await api.columns(d.name)).columns;
    parts.push(el("b", { textContent: `"${d.name}"` }), ...cols.map((c) => el("div", { textContent: `"${c.name}" ${c.type}` })));
  }
  $("sql-tables").replaceChildren(...parts);
}

async function runSql() {
  const text = $<HTMLTextAreaElement>("sql-text");
  const err = $("sql-error");
  err.hidden = true;
  $("sql-status").textContent = "Running…";
  const started = performance.now();
  try {
    const a = await api.sql(text.value);
    const head = el("tr", {}, ...a.columns.map((c) => el("th", { textContent: c.name, title: c.type })));
    const rows = a.rows.map((r) => el("tr", {}, ...a.columns.map((c) => el("td", { textContent: r[c.name] === null ? "NULL" : String(r[c.name]) }))));
    $("sql-results").replaceChildren(el("table", { className: "grid", id: "sql-table" }, el("thead", {}, head), el("tbody", {}, ...rows)));
    $("sql-status").textContent = `${a.meta.rows} rows · ${a.meta.elapsed_ms.toFixed(1)} ms in the server, ${(performance.now() - started).toFixed(0)} ms in all`;
  } catch (e) {
    $("sql-status").textContent = "";
    const msg = e instanceof ApiError ? e.message : String(e);
    err.textContent = msg;
    err.hidden = false;
    // Point at the error: DataFusion's parser reports "Line: L, Column: C".
    const m = /Line: (\d+), Column: (\d+)/.exec(msg);
    if (m) {
      const lines = text.value.split("\n");
      const line = Math.min(Number(m[1]), lines.length) - 1;
      const pos = lines.slice(0, line).reduce((n, l) => n + l.length + 1, 0) + Number(m[2]) - 1;
      text.focus();
      text.setSelectionRange(pos, Math.min(pos + 1, text.value.length));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Boot

function showTab(tab: "query" | "sql") {
  $("query-view").hidden = tab !== "query";
  $("sql-view").hidden = tab !== "sql";
  $("run").hidden = tab !== "query";
  $("time-picker").hidden = tab !== "query";
  $("tab-query").classList.toggle("active", tab === "query");
  $("tab-sql").classList.toggle("active", tab === "sql");
  if (tab === "sql") renderSqlTables().catch((e) => showError(String(e)));
}

async function load(s: Partial<State>, push: boolean) {
  const datasetChanged = s.dataset !== undefined && s.dataset !== state.dataset;
  state = { ...state, ...s, eventPage: 0 };
  if (datasetChanged) {
    state.eventColumns = [];
    $<HTMLSelectElement>("dataset").value = state.dataset;
    await loadColumns();
  }
  renderTimePicker();
  renderBuilder();
  await run(push);
}

async function boot() {
  const ds = (await api.datasets()).datasets;
  const select = $<HTMLSelectElement>("dataset");
  select.replaceChildren(...ds.map((d) => el("option", { value: d.name, textContent: `${d.name} (${d.rows.toLocaleString("en-US")})` })));
  const fromUrl = stateFromUrl();
  state.dataset = fromUrl.dataset ?? ds[0]?.name ?? "";
  if (fromUrl.spec) state.spec = fromUrl.spec;
  select.value = state.dataset;
  select.onchange = () => load({ dataset: select.value, spec: emptySpec() }, true);
  $<HTMLInputElement>("schema-search").oninput = renderSchema;
  $("run").onclick = () => { state.eventPage = 0; run(true); };
  $("tab-query").onclick = () => showTab("query");
  $("tab-sql").onclick = () => showTab("sql");
  $("sql-run").onclick = runSql;
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      if (!$("sql-view").hidden) runSql();
      else run(true);
    }
  });
  window.addEventListener("popstate", () => {
    const s = stateFromUrl();
    load({ dataset: s.dataset ?? state.dataset, spec: s.spec ?? emptySpec() }, false);
  });
  renderHistory();
  await loadColumns();
  renderTimePicker();
  await run(false);
  history.replaceState(null, "", stateToUrl(state));
}

boot().catch((e) => showError(`Could not reach the Sonde API: ${e}`));

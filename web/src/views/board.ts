// A board (`/?board=ID`): saved queries and Markdown text on a 12-column grid, run in parallel
// and drawn with the query view's charts; a filter bar of the board's preset filters (and its
// saved views) that applies to every query panel whose dataset has the column; and an edit mode
// to add, move, resize and remove panels and preset filters, saved with `PUT /1/boards/{id}`.

import {
  api, errorText, type Board, type BoardPanel, type BoardView, type Filter, type QueryAnnotation, type QueryAnswer, type QuerySpec,
} from "../api";
import type { Catalog } from "../catalog";
import { formatNumber, heatmapChart, lineChart, type ChartHandlers } from "../charts";
import { el, formDialog } from "../dom";
import { markdown } from "../markdown";
import { graphs, heatmapCells, tableKeys, timeAxis, toLines } from "../series";
import { encodeUrl } from "../state";
import { specOf } from "./saved";
import { sloSummary } from "./slo";

const COLUMNS = 12;

interface Ctx {
  root: HTMLElement;
  catalog: Catalog;
  datasets: string[];
  board: Board;
  views: BoardView[];
  /** The filter bar's values by column, and the view chosen. */
  values: Map<string, string>;
  view: string;
  editing: boolean;
  /** Each dataset's columns and annotations, fetched once. */
  columns: Map<string, Promise<Set<string>>>;
  annotations: Map<string, Promise<QueryAnnotation[]>>;
}

/** Shows board `id` in `root`. */
export async function showBoard(root: HTMLElement, id: string, catalog: Catalog, datasets: string[]) {
  root.replaceChildren(el("div", { className: "status", textContent: "Loading the board…" }));
  try {
    const [board, views] = await Promise.all([api.board(id), api.boardViews(id)]);
    const ctx: Ctx = {
      root, catalog, datasets, board, views, values: new Map(), view: "", editing: false, columns: new Map(), annotations: new Map(),
    };
    render(ctx);
  } catch (e) {
    root.replaceChildren(el("div", { className: "error", textContent: errorText(e) }));
  }
}

/** Asks for a name and makes an empty board; answers its id. */
export async function newBoard(name: string): Promise<string> {
  const b = await api.createBoard({ name, type: "flexible", preset_filters: [], panels: [] });
  return b.id;
}

function columnsOf(ctx: Ctx, ds: string): Promise<Set<string>> {
  let p = ctx.columns.get(ds);
  if (!p) {
    p = api.columns(ds).then((a) => new Set(a.columns.map((c) => c.name))).catch(() => new Set<string>());
    ctx.columns.set(ds, p);
  }
  return p;
}

function annotationsOf(ctx: Ctx, ds: string): Promise<QueryAnnotation[]> {
  let p = ctx.annotations.get(ds);
  if (!p) {
    p = api.annotations(ds).catch(() => []);
    ctx.annotations.set(ds, p);
  }
  return p;
}

/** The filters the bar adds to a query of `ds`: preset values (`=`) and the chosen view's. */
async function barFilters(ctx: Ctx, ds: string): Promise<Filter[]> {
  const have = await columnsOf(ctx, ds);
  const out: Filter[] = [];
  for (const [column, value] of ctx.values) if (value !== "" && have.has(column)) out.push({ column, op: "=", value });
  const view = ctx.views.find((v) => v.id === ctx.view);
  for (const f of view?.filters ?? []) {
    if (have.has(f.column)) out.push({ column: f.column, op: f.operation, ...(f.value !== undefined ? { value: f.value } : {}) });
  }
  return out;
}

function render(ctx: Ctx) {
  const b = ctx.board;
  const head = el(
    "div",
    { className: "board-head" },
    el("h2", { id: "board-name", textContent: b.name }),
    el("span", { className: "dim", textContent: b.description ?? "" }),
    el("span", { className: "spacer" }),
    ...(ctx.editing
      ? [
          el("button", { id: "board-add-query", textContent: "+ Query panel", onclick: () => addQueryPanel(ctx) }),
          el("button", { id: "board-add-text", textContent: "+ Text panel", onclick: () => addTextPanel(ctx) }),
          el("button", { id: "board-add-slo", textContent: "+ SLO panel", onclick: () => addSloPanel(ctx) }),
          el("button", { id: "board-save", className: "primary", textContent: "Save layout", onclick: () => void save(ctx) }),
          el("button", { textContent: "Cancel", onclick: () => void showBoard(ctx.root, b.id, ctx.catalog, ctx.datasets) }),
        ]
      : [el("button", { id: "board-edit", textContent: "Edit layout", onclick: () => { ctx.editing = true; render(ctx); } })]),
  );
  const error = el("div", { id: "board-error", className: "error", hidden: true });
  ctx.root.replaceChildren(head, filterBar(ctx), error, grid(ctx));
}

/** The preset filters (a value each), the board's views, and in edit mode the filters' editor. */
function filterBar(ctx: Ctx): HTMLElement {
  const bar = el("div", { className: "board-filters", id: "board-filters" });
  for (const f of ctx.board.preset_filters) {
    const input = el("input", { className: "preset-value", placeholder: "any", value: ctx.values.get(f.column) ?? "" });
    input.dataset.column = f.column;
    input.addEventListener("change", () => {
      ctx.values.set(f.column, input.value.trim());
      render(ctx);
    });
    bar.append(
      el(
        "label",
        { className: "preset" },
        `${f.alias || f.column} `,
        input,
        ...(ctx.editing
          ? [el("button", {
            className: "link", textContent: "×", title: "Remove this preset filter",
            onclick: () => { ctx.board.preset_filters = ctx.board.preset_filters.filter((p) => p !== f); render(ctx); },
          })]
          : []),
      ),
    );
  }
  if (ctx.views.length) {
    const select = el("select", { id: "board-view-select" }, el("option", { value: "", textContent: "No view" }),
      ...ctx.views.map((v) => el("option", { value: v.id, textContent: v.name })));
    select.value = ctx.view;
    select.addEventListener("change", () => { ctx.view = select.value; render(ctx); });
    bar.append(el("label", {}, "View ", select));
  }
  if (ctx.editing && ctx.board.preset_filters.length < 5) {
    const column = el("input", { id: "preset-column", placeholder: "column" });
    const alias = el("input", { id: "preset-alias", placeholder: "label (optional)" });
    bar.append(column, alias, el("button", {
      id: "preset-add", textContent: "+ Preset filter",
      onclick: () => {
        if (!column.value.trim()) return;
        ctx.board.preset_filters = [...ctx.board.preset_filters, { column: column.value.trim(), alias: alias.value.trim() }];
        render(ctx);
      },
    }));
  }
  return bar;
}

function grid(ctx: Ctx): HTMLElement {
  const g = el("div", { className: "board-grid", id: "board-grid" });
  ctx.board.panels.forEach((p, i) => g.append(panel(ctx, p, i)));
  if (!ctx.board.panels.length) g.append(el("div", { className: "dim", textContent: "No panels yet: “Edit layout”, then add a query or text panel." }));
  return g;
}

function panel(ctx: Ctx, p: BoardPanel, index: number): HTMLElement {
  const { x_coordinate: x, y_coordinate: y, width: w, height: h } = p.position;
  const box = el("div", { className: `board-panel ${p.type}-panel` });
  box.dataset.index = String(index);
  box.style.gridColumn = `${x + 1} / span ${Math.max(1, w)}`;
  box.style.gridRow = `${y + 1} / span ${Math.max(1, h)}`;
  const title = el("h3", { className: "panel-title" });
  const body = el("div", { className: "panel-body" });
  box.append(title, body);
  if (ctx.editing) box.append(editTools(ctx, p));
  if (p.type === "text" && p.text_panel) {
    title.remove();
    body.append(...markdown(p.text_panel.content));
  } else if (p.type === "query" && p.query_panel) {
    void runPanel(ctx, p, title, body);
  } else if (p.type === "slo" && p.slo_panel) {
    void sloPanel(ctx, p.slo_panel.slo_id, title, body);
  } else {
    body.append(el("div", { className: "dim", textContent: `A ${p.type} panel` }));
  }
  return box;
}

/** Moves and sizes within the grid, and removal. */
function editTools(ctx: Ctx, p: BoardPanel): HTMLElement {
  const pos = p.position;
  const change = (f: () => void) => () => {
    f();
    pos.width = Math.min(COLUMNS, Math.max(1, pos.width));
    pos.height = Math.max(1, pos.height);
    pos.x_coordinate = Math.min(COLUMNS - pos.width, Math.max(0, pos.x_coordinate));
    pos.y_coordinate = Math.max(0, pos.y_coordinate);
    render(ctx);
  };
  const b = (label: string, title: string, f: () => void) =>
    el("button", { textContent: label, title, className: `edit-${title.split(" ")[0].toLowerCase()}`, onclick: change(f) });
  return el(
    "div",
    { className: "panel-tools" },
    b("←", "Left", () => pos.x_coordinate--),
    b("→", "Right", () => pos.x_coordinate++),
    b("↑", "Up", () => pos.y_coordinate--),
    b("↓", "Down", () => pos.y_coordinate++),
    b("W−", "Narrower", () => pos.width--),
    b("W+", "Wider", () => pos.width++),
    b("H−", "Shorter", () => pos.height--),
    b("H+", "Taller", () => pos.height++),
    b("×", "Remove this panel", () => { ctx.board.panels = ctx.board.panels.filter((o) => o !== p); }),
  );
}

/** The first free row below every panel. */
function bottom(b: Board): number {
  return Math.max(0, ...b.panels.map((p) => p.position.y_coordinate + p.position.height));
}

function addTextPanel(ctx: Ctx) {
  const text = el("textarea", { id: "text-panel-content", rows: 6, placeholder: "# Markdown\nNotes, runbook links…" });
  dialog(ctx, "Add a text panel", [text], () => {
    ctx.board.panels.push({
      type: "text", position: { x_coordinate: 0, y_coordinate: bottom(ctx.board), width: 6, height: 3 }, text_panel: { content: text.value },
    });
  });
}

/** Every SLO with its dataset, fetched once per board page. */
let sloList: Promise<{ ds: string; id: string; name: string }[]> | null = null;
function allSlos(ctx: Ctx) {
  sloList ??= Promise.all(ctx.datasets.map(async (ds) => (await api.slos(ds).catch(() => [])).map((s) => ({ ds, id: s.id, name: s.name }))))
    .then((l) => l.flat());
  return sloList;
}

async function sloPanel(ctx: Ctx, id: string, title: HTMLElement, body: HTMLElement) {
  try {
    const slo = (await allSlos(ctx)).find((s) => s.id === id);
    if (!slo) throw new Error(`no SLO with id ${id}`);
    await sloSummary(body, slo.ds, id);
    title.replaceChildren(el("a", { href: `/?dataset=${encodeURIComponent(slo.ds)}&slo=${encodeURIComponent(id)}`, textContent: slo.name }),
      el("span", { className: "dim", textContent: ` · SLO · ${slo.ds}` }));
  } catch (e) {
    body.replaceChildren(el("div", { className: "error", textContent: errorText(e) }));
  }
}

function addSloPanel(ctx: Ctx) {
  const select = el("select", { id: "slo-panel-choice" }, el("option", { value: "", textContent: "Loading SLOs…" }));
  void allSlos(ctx).then((list) => select.replaceChildren(...(list.length
    ? list.map((s) => el("option", { value: s.id, textContent: `${s.name} (${s.ds})` }))
    : [el("option", { value: "", textContent: "No SLOs yet" })])));
  dialog(ctx, "Add an SLO", [el("label", {}, "SLO ", select)], () => {
    if (!select.value) return;
    ctx.board.panels.push({ type: "slo", position: { x_coordinate: 0, y_coordinate: bottom(ctx.board), width: 4, height: 3 }, slo_panel: { slo_id: select.value } });
  });
}

function addQueryPanel(ctx: Ctx) {
  const select = el("select", { id: "query-panel-choice" }, el("option", { value: "", textContent: "Loading saved queries…" }));
  const style = el("select", { id: "query-panel-style" }, ...["graph", "table", "combo"].map((s) => el("option", { value: s, textContent: s })));
  void Promise.all(ctx.datasets.map(async (ds) => (await annotationsOf(ctx, ds)).map((a) => [ds, a] as const))).then((lists) => {
    const all = lists.flat();
    select.replaceChildren(...(all.length
      ? all.map(([ds, a]) => el("option", { value: JSON.stringify([ds, a.query_id, a.id]), textContent: `${a.name} (${ds})` }))
      : [el("option", { value: "", textContent: "No saved queries: save one from the query view first" })]));
  });
  dialog(ctx, "Add a saved query", [el("label", {}, "Query ", select), el("label", {}, " as ", style)], () => {
    if (!select.value) return;
    const [, query_id, query_annotation_id] = JSON.parse(select.value) as [string, string, string];
    const row = bottom(ctx.board);
    ctx.board.panels.push({
      type: "query", position: { x_coordinate: 0, y_coordinate: row, width: 6, height: 6 },
      query_panel: { query_id, query_annotation_id, query_style: style.value as "graph" },
    });
  });
}

function dialog(ctx: Ctx, title: string, fields: HTMLElement[], onAdd: () => void) {
  formDialog({
    id: "panel-dialog", title, rows: [el("div", { className: "row" }, ...fields)], submitId: "panel-add", submitLabel: "Add",
    errorId: "panel-error",
    submit: () => {
      onAdd();
      render(ctx);
    },
  });
}

async function save(ctx: Ctx) {
  try {
    ctx.board = await api.updateBoard(ctx.board);
    ctx.editing = false;
    render(ctx);
  } catch (e) {
    const err = document.getElementById("board-error")!;
    err.hidden = false;
    err.textContent = errorText(e);
  }
}

/** Runs a query panel's saved query with the bar's filters and draws it. */
async function runPanel(ctx: Ctx, p: BoardPanel, title: HTMLElement, body: HTMLElement) {
  const qp = p.query_panel!;
  const ds = qp.dataset ?? "";
  body.append(el("div", { className: "dim", textContent: "Running…" }));
  try {
    const [saved, notes, extra] = await Promise.all([api.savedQuery(ds, qp.query_id), annotationsOf(ctx, ds), barFilters(ctx, ds)]);
    const name = notes.find((a) => a.id === qp.query_annotation_id)?.name ?? qp.query_id;
    const spec: QuerySpec = specOf(saved);
    // The bar's filters narrow the query (AND). A query whose own filters are OR'd together
    // cannot take more in one spec, so it is shown as saved, and says so.
    const orQuery = spec.filter_combination === "OR" && extra.length > 0;
    const effective: QuerySpec = orQuery ? spec : { ...spec, filters: [...spec.filters, ...extra] };
    const note = orQuery ? " · board filters not applied (an OR query)" : extra.length ? ` · ${extra.length} board filter${extra.length > 1 ? "s" : ""}` : "";
    const answer = await api.query(ds, effective);
    const markers = qp.visualization_settings?.hide_markers
      ? []
      : await api.markers(ds, Date.parse(answer.meta.start_time) / 1000, Date.parse(answer.meta.end_time) / 1000).catch(() => []);
    title.replaceChildren(
      el("a", { href: encodeUrl("/", { dataset: ds, spec: effective }), textContent: name, title: "Open in the query builder" }),
      el("span", { className: "dim", textContent: ` · ${ds}${note}` }),
    );
    body.replaceChildren();
    drawAnswer(ctx, body, ds, effective, answer, qp.query_style ?? "graph", markers);
  } catch (e) {
    body.replaceChildren(el("div", { className: "error", textContent: errorText(e) }));
  }
}

function drawAnswer(
  ctx: Ctx, body: HTMLElement, ds: string, spec: QuerySpec, answer: QueryAnswer, style: string, markers: import("../api").Marker[],
) {
  const axis = timeAxis(answer.meta);
  const open = (s: QuerySpec) => { location.href = encodeUrl("/", { dataset: ds, spec: s }); };
  const handlers: ChartHandlers = {
    onZoom: (from, to) => open({ ...spec, time_range: undefined, start_time: Math.floor(from), end_time: Math.ceil(to) }),
    onClick: () => {},
  };
  if (style !== "table") {
    for (const g of graphs(spec, ctx.catalog)) {
      if (g.heatmap) heatmapChart(body, g.key, axis.times, heatmapCells(answer, g.key), axis.step, handlers, markers);
      else lineChart(body, g.key, axis.times, toLines(answer, null, spec.breakdowns, g.key, false), handlers, markers);
    }
  }
  if (style !== "graph") {
    const keys = tableKeys(spec, ctx.catalog);
    const rows = answer.data.results.map((r) =>
      el("tr", {}, ...spec.breakdowns.map((b) => el("td", { textContent: r.data[b] == null ? "(null)" : String(r.data[b]) })),
        ...keys.map((k) => el("td", { className: "num", textContent: formatNumber(r.data[k]) }))));
    body.append(el("table", { className: "grid panel-table" },
      el("thead", {}, el("tr", {}, ...[...spec.breakdowns, ...keys].map((k) => el("th", { textContent: k })))), el("tbody", {}, ...rows)));
  }
}

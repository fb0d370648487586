// Sonde's UI: a query builder in the style of Honeycomb's, over the same JSON API as curl.
//
// One update path. A user action dispatches a pure change of the state (state.ts, spec-edit.ts);
// `dispatch` applies it, records a run query (URL, recent queries), renders every view from the
// state and the server's answers, and starts what the change asks for (the query, a panel's
// answer, the columns of a new dataset). The answers come back through `receive`, which renders
// again. Nothing else changes `state` or `answers`.

import "./style.css";
import { api, errorText, type Column, type Dataset, type QueryAnnotation } from "./api";
import { Catalog } from "./catalog";
import { $, closeMenuOnClick } from "./dom";
import { totalsSpec } from "./series";
import { fieldsOf, timeOf } from "./spec-edit";
import * as derivedEditor from "./views/derived";
import {
  decodeUrl, emptySpec, initialState, openQuery, pinEventColumns, pushUrl, readRecent, remember, replaceUrl, writeRecent,
  type How, type Panel, type Recent, type State, type Update,
} from "./state";
import * as boards from "./views/board";
import * as builder from "./views/builder";
import * as events from "./views/events";
import * as header from "./views/header";
import * as panels from "./views/panels";
import * as recent from "./views/recent";
import * as results from "./views/results";
import * as saved from "./views/saved";
import * as schema from "./views/schema";
import * as slo from "./views/slo";
import * as triggers from "./views/triggers";
import * as sql from "./views/sql";
import * as timePicker from "./views/time-picker";

/** What the server answered (and the recent queries read from this browser), as last received. */
interface Answers {
  catalog: Catalog;
  datasets: Dataset[];
  /** The current dataset's columns. */
  columns: Column[];
  recent: Recent[];
  /** The current dataset's saved queries. */
  saved: QueryAnnotation[];
  status: string;
  error: string | null;
  /** The last answer to a run query. */
  shown: results.QueryShown | events.EventsShown | null;
  panel: panels.PanelAnswer | null;
  sqlTables: sql.SqlProps["tables"];
  sql: sql.SqlResult;
}

let state: State = initialState();
let answers: Answers;
/** The current dataset's columns loaded (a query waits for them, as the raw events' default columns come from them). */
let columnsReady: Promise<void> = Promise.resolve();
let runSeq = 0;

function dispatch(update: Update, how: How = "edit"): Promise<void> {
  const before = state;
  state = update(state);
  // Running closes the panels: they were about the answer being replaced.
  if (how !== "edit") state = { ...state, panel: null };
  if (state.dataset !== before.dataset) columnsReady = loadColumns(state.dataset);
  if (how === "run" && state.dataset) {
    pushUrl(state);
    const list = remember(readRecent(), { dataset: state.dataset, spec: state.spec, at: Date.now() });
    writeRecent(list);
    answers = { ...answers, recent: list };
  }
  render();
  if (state.panel && state.panel !== before.panel) void openPanel(state.panel);
  if (state.tab === "sql" && before.tab !== "sql") void loadSqlTables();
  return how === "edit" ? Promise.resolve() : run();
}

function receive(patch: Partial<Answers>) {
  answers = { ...answers, ...patch };
  render();
}

/** The board or the SLO shown instead of the query view (`/?board=ID`, `/?dataset=DS&slo=ID`), if any. */
const boardId = new URLSearchParams(location.search).get("board");
const sloId = new URLSearchParams(location.search).get("slo");

function render() {
  const s = state;
  const a = answers;
  if (boardId || sloId) return;
  $("query-view").hidden = s.tab !== "query";
  $("sql-view").hidden = s.tab !== "sql";
  $("status").textContent = a.status;
  $("error").hidden = !a.error;
  $("error").textContent = a.error ?? "";
  header.render($("top"), { datasets: a.datasets, dataset: s.dataset, tab: s.tab }, dispatch);
  schema.render($("schema-view"), { columns: a.columns, search: s.schemaSearch }, dispatch);
  recent.render($("history"), { recent: a.recent, catalog: a.catalog }, dispatch);
  saved.render($("saved"), { dataset: s.dataset, saved: a.saved, open: openSaved, remove: forgetSaved });
  timePicker.render($("time-picker"), { spec: s.spec }, dispatch);
  builder.render($("builder"), { spec: s.spec, columns: a.columns, catalog: a.catalog, complain, suggest }, dispatch);
  panels.render({ bubbleup: $("bubbleup"), trace: $("trace") }, { panel: s.panel, answer: a.panel }, dispatch);
  const shown = a.shown;
  const query = shown?.kind === "query" ? shown : null;
  results.render({ charts: $("charts"), table: $("results") }, { shown: query, catalog: a.catalog, columns: a.columns, dataset: s.dataset }, dispatch);
  events.render($("events"), { shown: shown?.kind === "events" ? shown : null, eventColumns: s.eventColumns, columns: a.columns }, dispatch);
  sql.render($("sql-view"), { tables: a.sqlTables, result: a.sql, run: runSql });
}

// ---------------------------------------------------------------------------------------------
// Requests: each answer comes back through `receive`

async function run(): Promise<void> {
  const seq = ++runSeq;
  const s = state;
  if (!s.dataset) return receive({ error: null, status: "No datasets yet: send some events (see the README), then reload." });
  receive({ error: null, status: "Running…" });
  const started = performance.now();
  try {
    await columnsReady;
    if (seq !== runSeq) return;
    const spec = s.spec;
    if (spec.calculations.length === 0) {
      const page = s.eventPage;
      const req = {
        filters: spec.filters, filter_combination: spec.filter_combination, ...timeOf(spec), ...fieldsOf(spec),
        limit: events.PAGE, offset: page * events.PAGE,
      };
      const answer = await api.events(s.dataset, req);
      if (seq !== runSeq) return;
      dispatch(pinEventColumns(answers.columns));
      receive({ shown: { kind: "events", spec, answer, page }, status: events.eventsStatus(answer, performance.now() - started) });
    } else {
      const answer = await api.query(s.dataset, spec);
      if (seq !== runSeq) return;
      const t = totalsSpec(spec, answer, answers.catalog);
      const from = Date.parse(answer.meta.start_time) / 1000, to = Date.parse(answer.meta.end_time) / 1000;
      // Markers are a decoration: a failure to read them leaves the graphs without them.
      const [totals, markers] = await Promise.all([
        t ? api.query(s.dataset, t) : null,
        api.markers(s.dataset, from, to).catch(() => []),
      ]);
      if (seq !== runSeq) return;
      receive({ shown: { kind: "query", spec, answer, totals, markers }, status: results.queryStatus(answer.meta, performance.now() - started) });
    }
  } catch (e) {
    if (seq !== runSeq) return;
    receive({ status: "", error: errorText(e) });
  }
}

async function loadColumns(dataset: string) {
  void loadSaved(dataset);
  const columns = dataset ? (await api.columns(dataset)).columns : [];
  if (dataset === state.dataset) receive({ columns });
}

async function loadSaved(dataset: string) {
  void triggers.listTriggers($("triggers"), dataset);
  try {
    const [list, slos] = dataset ? await Promise.all([api.annotations(dataset), api.slos(dataset)]) : [[], []];
    $("slos").replaceChildren(...slos.map((s) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = `/?dataset=${encodeURIComponent(dataset)}&slo=${encodeURIComponent(s.id)}`;
      a.textContent = s.name;
      li.append(a);
      return li;
    }));
    if (dataset === state.dataset) receive({ saved: list });
  } catch (e) {
    receive({ error: `Could not list the saved queries: ${errorText(e)}` });
  }
}

async function openSaved(queryId: string) {
  const ds = state.dataset;
  try {
    const q = await api.savedQuery(ds, queryId);
    void dispatch(openQuery(ds, saved.specOf(q)), "run");
  } catch (e) {
    receive({ error: errorText(e) });
  }
}

async function forgetSaved(a: QueryAnnotation) {
  try {
    await api.deleteAnnotation(state.dataset, a.id);
  } catch (e) {
    receive({ error: errorText(e) });
  }
  void loadSaved(state.dataset);
}

async function openPanel(p: Panel) {
  const s = state;
  let answer: panels.PanelAnswer;
  try {
    if (p.kind === "bubbleup") {
      const req = {
        filters: s.spec.filters, filter_combination: s.spec.filter_combination, ...timeOf(s.spec), ...fieldsOf(s.spec), selection: p.selection,
      };
      answer = { for: p, bubbleup: await api.bubbleup(s.dataset, req) };
    } else {
      answer = { for: p, trace: await api.trace(s.dataset, p.traceId) };
    }
  } catch (e) {
    answer = { for: p, error: errorText(e) };
  }
  if (state.panel === p) receive({ panel: answer });
}

/** Values of a string column in the current time range, most frequent first. */
async function suggest(column: string): Promise<string[]> {
  const col = answers.columns.find((c) => c.name === column);
  if (!col || col.type !== "string") return [];
  const spec = { ...timeOf(state.spec), calculations: [{ op: "COUNT" }], filters: [], breakdowns: [column], orders: [], havings: [], limit: 50 };
  try {
    return (await api.query(state.dataset, spec)).data.results.map((r) => String(r.data[column] ?? ""));
  } catch {
    return [];
  }
}

function complain(msg: string) {
  receive({ error: msg });
}

async function loadSqlTables() {
  try {
    const tables: sql.SqlProps["tables"] = [];
    for (const d of (await api.datasets()).datasets) tables.push({ name: d.name, columns: (await api.columns(d.name)).columns });
    receive({ sqlTables: tables });
  } catch (e) {
    receive({ error: String(e) });
  }
}

async function runSql(text: string) {
  receive({ sql: { ...answers.sql, status: "Running…", error: null } });
  const started = performance.now();
  try {
    const a = await api.sql(text);
    const status = `${a.meta.rows} rows · ${a.meta.elapsed_ms.toFixed(1)} ms in the server, ${(performance.now() - started).toFixed(0)} ms in all`;
    receive({ sql: { status, answer: a, error: null } });
  } catch (e) {
    receive({ sql: { ...answers.sql, status: "", error: errorText(e) } });
  }
}

// ---------------------------------------------------------------------------------------------
// Boot

/** The sidebar's list of boards, each a link to its page. */
async function listBoards() {
  try {
    const list = await api.boards();
    $("boards").replaceChildren(...list.map((b) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = `/?board=${encodeURIComponent(b.id)}`;
      a.textContent = b.name;
      li.append(a);
      return li;
    }));
  } catch (e) {
    $("boards").replaceChildren(errorText(e));
  }
}

async function boot() {
  const [meta, ds] = await Promise.all([api.meta(), api.datasets()]);
  void listBoards();
  $("board-new").addEventListener("click", async () => {
    const name = prompt("The new board's name")?.trim();
    if (!name) return;
    try {
      location.href = `/?board=${encodeURIComponent(await boards.newBoard(name))}`;
    } catch (e) {
      receive({ error: errorText(e) });
    }
  });
  if (boardId || sloId) {
    for (const id of ["query-view", "sql-view", "run", "save-query", "make-trigger", "time-picker", "dataset"]) $(id).hidden = true;
    $("board-view").hidden = false;
    if (boardId) await boards.showBoard($("board-view"), boardId, new Catalog(meta), ds.datasets.map((d) => d.name));
    else await slo.showSlo($("board-view"), new URLSearchParams(location.search).get("dataset") ?? "", sloId!, new Catalog(meta));
    return;
  }
  const url = decodeUrl(location.search);
  answers = {
    catalog: new Catalog(meta), datasets: ds.datasets, columns: [], recent: readRecent(), saved: [], status: "", error: null,
    shown: null, panel: null, sqlTables: [], sql: { status: "", answer: null, error: null },
  };
  state = { ...initialState(), dataset: url.dataset ?? ds.datasets[0]?.name ?? "", spec: url.spec ?? emptySpec() };
  closeMenuOnClick();
  $("derived-open").addEventListener("click", () => derivedEditor.open({
    dataset: state.dataset,
    columns: answers.columns.filter((c) => c.name !== "timestamp"),
    functions: answers.catalog.meta.functions ?? [],
    range: timeOf(state.spec) as Record<string, number>,
    onChanged: () => { columnsReady = loadColumns(state.dataset); },
  }));
  $("make-trigger").addEventListener("click", () => {
    if (state.dataset) triggers.openTriggerDialog(state.dataset, state.spec, () => void triggers.listTriggers($("triggers"), state.dataset));
  });
  $("save-query").addEventListener("click", () => {
    if (state.dataset) saved.openSaveDialog(state.dataset, state.spec, () => void loadSaved(state.dataset));
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter" || !(ev.ctrlKey || ev.metaKey)) return;
    if (state.tab === "sql") void runSql($<HTMLTextAreaElement>("sql-text").value);
    else void dispatch((s) => s, "run");
  });
  window.addEventListener("popstate", () => {
    const u = decodeUrl(location.search);
    void dispatch(openQuery(u.dataset ?? state.dataset, u.spec ?? emptySpec()), "rerun");
  });
  columnsReady = loadColumns(state.dataset);
  replaceUrl(state);
  await dispatch((s) => s, "rerun");
  if (url.error) receive({ error: url.error });
}

boot().catch((e) => {
  $("error").hidden = false;
  $("error").textContent = `Could not reach the Sonde API: ${e}`;
});

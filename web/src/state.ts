// The UI's state, and where it is kept: the query in the URL (`?dataset=…&q=<spec JSON>`, so every
// query is a permalink and back/forward move through queries), recent queries in localStorage.
// Everything else the UI shows is either derived from this state or answered by the server.

import type { Column, QuerySpec, Selection } from "./api";

/** A panel opened over the results: BubbleUp of a selection, or a trace's waterfall. */
export type Panel = { kind: "bubbleup"; selection: Selection; title: string } | { kind: "trace"; traceId: string };

export interface State {
  dataset: string;
  /** The builder's query: the URL's once run. */
  spec: QuerySpec;
  /** Raw-events view: the columns shown (none: a default pick) and the page. */
  eventColumns: string[];
  eventPage: number;
  tab: "query" | "sql";
  panel: Panel | null;
  /** What the schema sidebar's search box holds. */
  schemaSearch: string;
}

/** A change of state: pure, returning a new state. */
export type Update = (s: State) => State;
/**
 * What a change asks for besides showing it: `edit` nothing more; `run` runs the query and
 * records it (in the URL, as a new history entry, and in recent queries); `rerun` runs it as is
 * (the URL already holds it, or it is not part of the URL: the raw events' page).
 */
export type How = "edit" | "run" | "rerun";
export type Dispatch = (update: Update, how?: How) => void;

export const emptySpec = (): QuerySpec => ({
  calculations: [{ op: "COUNT" }], filters: [], breakdowns: [], orders: [], havings: [], time_range: 3600,
});

export const initialState = (): State => ({
  dataset: "", spec: emptySpec(), eventColumns: [], eventPage: 0, tab: "query", panel: null, schemaSearch: "",
});

/** An update of the spec alone. */
export const onSpec = (f: (s: QuerySpec) => QuerySpec): Update => (s) => ({ ...s, spec: f(s.spec) });

/** Opens a query: a dataset's spec, from the first page of events (a new dataset: its default columns). */
export const openQuery = (dataset: string, spec: QuerySpec): Update => (s) => ({
  ...s, dataset, spec, eventPage: 0, eventColumns: dataset === s.dataset ? s.eventColumns : [],
});

/** The raw-events columns an on-call engineer reads first, when the dataset has them; else its first few. */
export function defaultEventColumns(columns: Column[]): string[] {
  const preferred = ["service.name", "name", "duration_ms", "http.status_code", "error", "trace.trace_id"];
  const have = new Set(columns.map((c) => c.name));
  const picked = preferred.filter((c) => have.has(c));
  return picked.length >= 3 ? picked : columns.filter((c) => !c.reserved).slice(0, 6).map((c) => c.name);
}

/** Raw events shown without chosen columns get the default ones, which can then be changed. */
export const pinEventColumns = (columns: Column[]): Update => (s) =>
  s.eventColumns.length ? s : { ...s, eventColumns: defaultEventColumns(columns) };

// ---------------------------------------------------------------------------------------------
// URL

/** The URL (path and query string) of a state's query. */
export function encodeUrl(pathname: string, s: Pick<State, "dataset" | "spec">): string {
  const p = new URLSearchParams();
  if (s.dataset) p.set("dataset", s.dataset);
  p.set("q", JSON.stringify(s.spec));
  return `${pathname}?${p.toString()}`;
}

/** What a URL's query string holds: the dataset, the spec (over the empty one's defaults), an error. */
export function decodeUrl(search: string): { dataset?: string; spec?: QuerySpec; error?: string } {
  const p = new URLSearchParams(search);
  const out: { dataset?: string; spec?: QuerySpec; error?: string } = {};
  const ds = p.get("dataset");
  if (ds) out.dataset = ds;
  const q = p.get("q");
  if (q) {
    try {
      out.spec = { ...emptySpec(), ...JSON.parse(q) };
    } catch {
      out.error = "The query in the URL is not valid JSON.";
    }
  }
  return out;
}

/** A new history entry for the state's query, unless the URL already shows it. */
export function pushUrl(s: State) {
  const url = encodeUrl(location.pathname, s);
  if (url !== location.pathname + location.search) history.pushState(null, "", url);
}

/** The current history entry rewritten to the state's query. */
export function replaceUrl(s: State) {
  history.replaceState(null, "", encodeUrl(location.pathname, s));
}

// ---------------------------------------------------------------------------------------------
// Recent queries

export interface Recent { dataset: string; spec: QuerySpec; at: number }

const RECENT_KEY = "sonde.history";
const RECENT_MAX = 50;

/** The list with `entry` first, once (an equal query earlier in the list is dropped), at most 50. */
export function remember(list: Recent[], entry: Recent): Recent[] {
  const same = (e: Recent) => e.dataset === entry.dataset && JSON.stringify(e.spec) === JSON.stringify(entry.spec);
  return [entry, ...list.filter((e) => !same(e))].slice(0, RECENT_MAX);
}

export function readRecent(): Recent[] {
  try {
    return JSON.parse(localStorage.getItem(RECENT_KEY) ?? "[]");
  } catch {
    return [];
  }
}

export function writeRecent(list: Recent[]) {
  localStorage.setItem(RECENT_KEY, JSON.stringify(list));
}

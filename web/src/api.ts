// The HTTP API the UI speaks: the same endpoints curl and the CLI use.

export type ColumnType = "string" | "int" | "float" | "bool" | "timestamp";

export interface Column {
  name: string;
  type: ColumnType;
  reserved?: boolean;
  first_seen?: string;
  last_seen?: string;
  /** A derived column: computed from the others by `expression`. */
  derived?: boolean;
  expression?: string;
  description?: string;
  /** Why a derived column no longer checks against the dataset's columns. */
  error?: string;
}

/** A query-scoped derived column. */
export interface CalculatedField { name: string; expression: string }

/** A stored derived column (`/1/derived_columns/{dataset}`). */
export interface DerivedColumn { id: string; alias: string; expression: string; description?: string; created_at?: string; updated_at?: string }

export interface Calculation { op: string; column?: string }
export interface Filter { column: string; op: string; value?: unknown }
export interface Order { op?: string; column?: string; order?: "ascending" | "descending" }
export interface Having { calculate_op: string; column?: string; op: string; value: number }

export interface QuerySpec {
  calculations: Calculation[];
  filters: Filter[];
  filter_combination?: "AND" | "OR";
  breakdowns: string[];
  orders: Order[];
  havings: Having[];
  limit?: number;
  time_range?: number;
  start_time?: number;
  end_time?: number;
  granularity?: number;
  calculated_fields?: CalculatedField[];
  compare_time_offset_seconds?: number;
}

export type Row = Record<string, unknown>;

/** A marker (`/1/markers/{dataset}`; `__all__`: on every dataset's graphs). Times in unix seconds. */
export interface Marker {
  id: string; start_time: number; end_time?: number; message?: string; type?: string; url?: string;
  /** From the marker settings of its type. */
  color?: string;
}

/** A saved query's name (`/1/query_annotations/{dataset}`). */
export interface QueryAnnotation { id: string; name: string; description?: string; query_id: string; source?: string; created_at?: string }

/** A board's panel on the 12-column grid (Honeycomb's flexible board). */
export interface BoardPanel {
  type: "query" | "text" | "slo";
  position: { x_coordinate: number; y_coordinate: number; width: number; height: number };
  query_panel?: {
    query_id: string; query_annotation_id: string; query_style?: "graph" | "table" | "combo"; dataset?: string;
    visualization_settings?: { hide_markers?: boolean } & Record<string, unknown>;
  };
  text_panel?: { content: string };
  slo_panel?: { slo_id: string };
}
export interface Board {
  id: string; name: string; description?: string; type: "flexible"; tags?: { key: string; value: string }[];
  preset_filters: { column: string; alias?: string }[]; panels: BoardPanel[]; links?: { board_url: string };
}
export interface BoardView { id: string; name: string; filters: { column: string; operation: string; value?: unknown }[] }

/** Environment-wide objects (markers, derived columns) live under this name. */
export const ALL_DATASETS = "__all__";

export interface QueryAnswer {
  data: {
    series: { time: string; data: Row }[];
    results: { data: Row }[];
    /** With `compare_time_offset_seconds`: the same query over the earlier range. */
    compare?: { offset_seconds: number; series: { time: string; data: Row }[]; results: { data: Row }[] };
  };
  meta: {
    rows_examined: number; segments_total: number; segments_scanned: number; segments_pruned: number;
    elapsed_ms: number; granularity: number; start_time: string; end_time: string; groups: number; groups_truncated: boolean;
    /** Segments answered from precomputed per-segment partials instead of being read. */
    segments_precomputed?: number;
    /** Present when some values are approximate (percentiles from sketches over a large range). */
    approximate?: { what: string; relative_error: number; reason: string };
  };
}

/** A calculation operator the server takes (`GET /api/meta`). */
export interface CalcOpInfo {
  op: string;
  needs_column: boolean;
  numeric: boolean;
  /** One value per group: can be ordered by and filtered with a having. */
  per_group: boolean;
  /** Groups' values add up to the total (COUNT, SUM), so "other" is total − shown. */
  additive: boolean;
}
/** A filter operator the server takes (`GET /api/meta`). */
export interface FilterOpInfo { op: string; takes_value: boolean; string_only: boolean; takes_list: boolean; having: boolean }
/** `GET /api/meta`: the operators the server takes, so the UI keeps no copy of them. */
export interface Meta {
  calculations: CalcOpInfo[]; filters: FilterOpInfo[]; max_clauses: number;
  /** The functions of derived-column expressions. */
  functions?: import("./expr").FuncInfo[];
}

/** What BubbleUp compares with the rest: a box drawn on a heatmap, or a group of the results. */
export type Selection =
  | { heatmap: { column: string; start_time: number; end_time: number; min: number; max: number } }
  | { group: Record<string, unknown> };

export interface Dataset { name: string; rows: number; last_event: string | null }

export interface EventsAnswer { events: Row[]; meta: { rows_examined: number; segments_scanned: number; elapsed_ms: number } }
export interface SqlAnswer { columns: { name: string; type: string }[]; rows: Row[]; meta: { rows: number; elapsed_ms: number } }

/** An error answered by the server, with its message. */
export class ApiError extends Error {
  /** For a mistake in an expression: its character offset there. */
  position?: number;
  constructor(public status: number, message: string, position?: number) {
    super(message);
    this.position = position;
  }
}

// API keys: when the server has keys configured, every API call needs one. The UI asks for a
// query key the first time the server answers 401, keeps it in this browser's localStorage, and
// asks again if the server stops accepting it.
const KEY_STORE = "sonde.apiKey";
let keyPrompt: Promise<string> | null = null;

/** Asks for an API key (once, however many calls are waiting for it). */
function askForKey(message: string): Promise<string> {
  keyPrompt ??= new Promise<string>((resolve) => {
    const dialog = document.createElement("dialog");
    dialog.className = "key-dialog";
    dialog.innerHTML = `<form method="dialog">
      <h2>API key required</h2>
      <p class="key-reason"></p>
      <label>Query key <input name="key" type="password" autocomplete="off" required placeholder="sonde_…"></label>
      <p class="hint">Make one with <code>sonde keys new NAME --scopes query</code>. It is kept in this browser only.</p>
      <button type="submit">Use key</button>
    </form>`;
    dialog.querySelector(".key-reason")!.textContent = message;
    dialog.addEventListener("cancel", (e) => e.preventDefault());
    dialog.querySelector("form")!.addEventListener("submit", () => {
      const key = (dialog.querySelector("input") as HTMLInputElement).value.trim();
      localStorage.setItem(KEY_STORE, key);
      dialog.remove();
      keyPrompt = null;
      resolve(key);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
  return keyPrompt;
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  let r: Response;
  for (;;) {
    const headers: Record<string, string> = body === undefined ? {} : { "content-type": "application/json" };
    const key = localStorage.getItem(KEY_STORE);
    if (key) headers.authorization = `Bearer ${key}`;
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    // 401: no key or an unknown one; 403: a key without the scope or dataset asked for.
    if (r.status !== 401 && r.status !== 403) break;
    const why = ((await r.json().catch(() => ({}))) as { error?: string }).error ?? "this server needs an API key";
    await askForKey(key ? `The key was refused: ${why}` : why);
  }
  const text = await r.text();
  // 204 No Content (a deletion) answers nothing.
  if (r.ok && text === "") return undefined as T;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ApiError(r.status, text || r.statusText);
  }
  if (!r.ok) {
    const e = json as { error?: string; position?: number };
    throw new ApiError(r.status, e.error ?? r.statusText, e.position);
  }
  return json as T;
}

/** The message to show for a failed call. */
export function errorText(e: unknown): string {
  return e instanceof ApiError ? e.message : String(e);
}

export const api = {
  /** Public: no API key needed. */
  meta: () => call<Meta>("GET", "/api/meta"),
  datasets: () => call<{ datasets: Dataset[] }>("GET", "/api/datasets"),
  columns: (ds: string) => call<{ columns: Column[] }>("GET", `/api/datasets/${encodeURIComponent(ds)}/columns`),
  query: (ds: string, spec: QuerySpec) => call<QueryAnswer>("POST", `/api/query/${encodeURIComponent(ds)}`, spec),
  events: (ds: string, req: unknown) => call<EventsAnswer>("POST", `/api/events/${encodeURIComponent(ds)}`, req),
  sql: (sql: string) => call<SqlAnswer>("POST", "/api/sql", { sql }),
  bubbleup: (ds: string, req: unknown) => call<import("./bubbleup").BubbleAnswer>("POST", `/api/bubbleup/${encodeURIComponent(ds)}`, req),
  derivedColumns: (ds: string) => call<DerivedColumn[]>("GET", `/1/derived_columns/${encodeURIComponent(ds)}`),
  createDerived: (ds: string, d: Omit<DerivedColumn, "id">) => call<DerivedColumn>("POST", `/1/derived_columns/${encodeURIComponent(ds)}`, d),
  updateDerived: (ds: string, d: DerivedColumn) =>
    call<DerivedColumn>("PUT", `/1/derived_columns/${encodeURIComponent(ds)}/${encodeURIComponent(d.id)}`, d),
  deleteDerived: (ds: string, id: string) => call<unknown>("DELETE", `/1/derived_columns/${encodeURIComponent(ds)}/${encodeURIComponent(id)}`),
  /** The markers of `ds` and of the environment that overlap [from, to] (unix seconds). */
  markers: async (ds: string, from: number, to: number) => {
    const q = `?start_time=${Math.floor(from)}&end_time=${Math.ceil(to)}`;
    const [own, env] = await Promise.all([
      call<Marker[]>("GET", `/1/markers/${encodeURIComponent(ds)}${q}`),
      call<Marker[]>("GET", `/1/markers/${ALL_DATASETS}${q}`),
    ]);
    return [...own, ...env];
  },
  createMarker: (ds: string, m: Omit<Marker, "id" | "color">) => call<Marker>("POST", `/1/markers/${encodeURIComponent(ds)}`, m),
  /** Saves a query (the same spec answers the same id). */
  saveQuery: (ds: string, spec: QuerySpec) => call<QuerySpec & { id: string }>("POST", `/1/queries/${encodeURIComponent(ds)}`, spec),
  savedQuery: (ds: string, id: string) => call<QuerySpec & { id: string }>("GET", `/1/queries/${encodeURIComponent(ds)}/${encodeURIComponent(id)}`),
  annotations: (ds: string) => call<QueryAnnotation[]>("GET", `/1/query_annotations/${encodeURIComponent(ds)}`),
  annotate: (ds: string, a: Omit<QueryAnnotation, "id">) => call<QueryAnnotation>("POST", `/1/query_annotations/${encodeURIComponent(ds)}`, a),
  deleteAnnotation: (ds: string, id: string) => call<unknown>("DELETE", `/1/query_annotations/${encodeURIComponent(ds)}/${encodeURIComponent(id)}`),
  slos: (ds: string) => call<{ id: string; name: string }[]>("GET", `/1/slos/${encodeURIComponent(ds)}`),
  sloPage: (ds: string, id: string) => call<import("./views/slo").SloPage>("GET", `/api/slos/${encodeURIComponent(ds)}/${encodeURIComponent(id)}`),
  triggers: (ds: string) => call<import("./views/triggers").TriggerInfo[]>("GET", `/1/triggers/${encodeURIComponent(ds)}`),
  createTrigger: (ds: string, t: unknown) => call<{ id: string }>("POST", `/1/triggers/${encodeURIComponent(ds)}`, t),
  recipients: () => call<{ id: string; type: string; details?: Record<string, unknown> }[]>("GET", "/1/recipients"),
  boards: () => call<Board[]>("GET", "/1/boards"),
  board: (id: string) => call<Board>("GET", `/1/boards/${encodeURIComponent(id)}`),
  createBoard: (b: Omit<Board, "id">) => call<Board>("POST", "/1/boards", b),
  updateBoard: (b: Board) => call<Board>("PUT", `/1/boards/${encodeURIComponent(b.id)}`, b),
  boardViews: (id: string) => call<BoardView[]>("GET", `/1/boards/${encodeURIComponent(id)}/views`),
  trace: (ds: string, id: string) => call<import("./trace").TraceAnswer>("GET", `/api/traces/${encodeURIComponent(ds)}/${encodeURIComponent(id)}`),
};

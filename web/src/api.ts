// The HTTP API the UI speaks: the same endpoints curl and the CLI use.

export type ColumnType = "string" | "int" | "float" | "bool" | "timestamp";

export interface Column {
  name: string;
  type: ColumnType;
  reserved?: boolean;
  first_seen?: string;
  last_seen?: string;
}

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
}

export type Row = Record<string, unknown>;

export interface QueryAnswer {
  data: { series: { time: string; data: Row }[]; results: { data: Row }[] };
  meta: {
    rows_examined: number; segments_total: number; segments_scanned: number; segments_pruned: number;
    elapsed_ms: number; granularity: number; start_time: string; end_time: string; groups: number; groups_truncated: boolean;
  };
}

export interface EventsAnswer { events: Row[]; meta: { rows_examined: number; segments_scanned: number; elapsed_ms: number } }
export interface SqlAnswer { columns: { name: string; type: string }[]; rows: Row[]; meta: { rows: number; elapsed_ms: number } }

/** An error answered by the server, with its message. */
export class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message);
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
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ApiError(r.status, text || r.statusText);
  }
  if (!r.ok) throw new ApiError(r.status, (json as { error?: string }).error ?? r.statusText);
  return json as T;
}

export const api = {
  datasets: () => call<{ datasets: { name: string; rows: number; last_event: string | null }[] }>("GET", "/api/datasets"),
  columns: (ds: string) => call<{ columns: Column[] }>("GET", `/api/datasets/${encodeURIComponent(ds)}/columns`),
  query: (ds: string, spec: QuerySpec) => call<QueryAnswer>("POST", `/api/query/${encodeURIComponent(ds)}`, spec),
  events: (ds: string, req: unknown) => call<EventsAnswer>("POST", `/api/events/${encodeURIComponent(ds)}`, req),
  sql: (sql: string) => call<SqlAnswer>("POST", "/api/sql", { sql }),
  bubbleup: (ds: string, req: unknown) => call<import("./bubbleup").BubbleAnswer>("POST", `/api/bubbleup/${encodeURIComponent(ds)}`, req),
  trace: (ds: string, id: string) => call<import("./trace").TraceAnswer>("GET", `/api/traces/${encodeURIComponent(ds)}/${encodeURIComponent(id)}`),
};

/** The result key of a calculation, as the server names it. */
export function calcKey(c: Calculation): string {
  return c.column && !["COUNT", "CONCURRENCY"].includes(c.op) ? `${c.op}(${c.column})` : c.op;
}

/** Parses `P99(duration_ms)` or `COUNT` into a calculation. */
export function parseCalc(text: string): Calculation | null {
  const t = text.trim();
  const m = /^([A-Za-z0-9_]+)\s*(?:\(\s*(.+?)\s*\))?$/.exec(t);
  if (!m) return null;
  const op = m[1].toUpperCase();
  return m[2] ? { op, column: m[2] } : { op };
}

export const CALC_OPS = [
  "COUNT", "SUM", "AVG", "MIN", "MAX", "COUNT_DISTINCT", "P001", "P01", "P05", "P10", "P20", "P25", "P50", "P75",
  "P80", "P90", "P95", "P99", "P999", "HEATMAP", "RATE_AVG", "RATE_SUM", "RATE_MAX", "CONCURRENCY",
];

export const FILTER_OPS = [
  "=", "!=", ">", ">=", "<", "<=", "starts-with", "does-not-start-with", "ends-with", "does-not-end-with",
  "contains", "does-not-contain", "exists", "does-not-exist", "in", "not-in",
];

/** Calculations that are one value per group, so they can be ordered by and graphed as lines. */
export function isLineCalc(op: string): boolean {
  return !["HEATMAP"].includes(op);
}

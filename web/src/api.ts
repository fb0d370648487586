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

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
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

// What `GET /api/meta` answers (the server's catalogue, abridged to what the rules below need
// plus the order of the real one), and a spec to edit.

const calc = (op, needs_column, numeric, per_group) => ({ op, needs_column, numeric, per_group });
const P = ["P001", "P01", "P05", "P10", "P20", "P25", "P50", "P75", "P80", "P90", "P95", "P99", "P999"];

export const META = {
  calculations: [
    calc("COUNT", false, false, true),
    ...["SUM", "AVG", "MIN", "MAX"].map((op) => calc(op, true, true, true)),
    calc("COUNT_DISTINCT", true, false, true),
    ...P.map((op) => calc(op, true, true, true)),
    calc("HEATMAP", true, true, false),
    ...["RATE_AVG", "RATE_SUM", "RATE_MAX"].map((op) => calc(op, true, true, false)),
    calc("CONCURRENCY", false, false, false),
  ],
  filters: [
    ...["=", "!=", ">", ">=", "<", "<="].map((op) => ({ op, takes_value: true, string_only: false })),
    ...["starts-with", "does-not-start-with", "ends-with", "does-not-end-with", "contains", "does-not-contain"]
      .map((op) => ({ op, takes_value: true, string_only: true })),
    { op: "exists", takes_value: false, string_only: false },
    { op: "does-not-exist", takes_value: false, string_only: false },
    { op: "in", takes_value: true, string_only: false },
    { op: "not-in", takes_value: true, string_only: false },
  ],
  max_clauses: 100,
};

export const COLUMNS = [
  { name: "duration_ms", type: "float" },
  { name: "http.status_code", type: "int" },
  { name: "service.name", type: "string" },
  { name: "error", type: "bool" },
  { name: "timestamp", type: "timestamp", reserved: true },
];

export const SPEC = {
  calculations: [{ op: "COUNT" }, { op: "P99", column: "duration_ms" }, { op: "HEATMAP", column: "duration_ms" }],
  filters: [{ column: "error", op: "=", value: true }],
  breakdowns: ["service.name"],
  orders: [],
  havings: [],
  time_range: 3600,
};

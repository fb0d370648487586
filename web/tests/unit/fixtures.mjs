// What `GET /api/meta` answers (the server's catalogue, abridged to what the rules below need
// plus the order of the real one), and a spec to edit.

const calc = (op, needs_column, numeric, per_group) => ({ op, needs_column, numeric, per_group, additive: op === "COUNT" || op === "SUM" });
const filter = (op, takes_value, string_only) =>
  ({ op, takes_value, string_only, takes_list: op === "in" || op === "not-in", having: ["=", "!=", ">", ">=", "<", "<="].includes(op) });
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
    ...["=", "!=", ">", ">=", "<", "<="].map((op) => filter(op, true, false)),
    ...["starts-with", "does-not-start-with", "ends-with", "does-not-end-with", "contains", "does-not-contain"]
      .map((op) => filter(op, true, true)),
    filter("exists", false, false),
    filter("does-not-exist", false, false),
    filter("in", true, false),
    filter("not-in", true, false),
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

// The operator catalogue from GET /api/meta: keys, per-group calculations, suggestions, values.

import { test } from "node:test";
import assert from "node:assert/strict";
import { load } from "./load.mjs";
import { COLUMNS, META } from "./fixtures.mjs";

const { Catalog, parseCalc } = await load("catalog");
const cat = new Catalog(META);

test("a calculation's key names its column only when the operator takes one", () => {
  assert.equal(cat.key({ op: "P99", column: "duration_ms" }), "P99(duration_ms)");
  assert.equal(cat.key({ op: "COUNT" }), "COUNT");
  assert.equal(cat.key({ op: "COUNT", column: "duration_ms" }), "COUNT");
  assert.equal(cat.key({ op: "CONCURRENCY", column: "x" }), "CONCURRENCY");
  assert.equal(cat.key({ op: "COUNT_DISTINCT", column: "service.name" }), "COUNT_DISTINCT(service.name)");
});

test("only per-group calculations are per group (not HEATMAP, the RATE_* or CONCURRENCY)", () => {
  const perGroup = META.calculations.map((c) => c.op).filter((op) => cat.perGroup(op));
  assert.equal(perGroup.length, 19);
  for (const op of ["HEATMAP", "RATE_AVG", "RATE_SUM", "RATE_MAX", "CONCURRENCY", "NOPE"]) assert.equal(cat.perGroup(op), false, op);
});

test("the calculations known are exactly the server's", () => {
  assert.equal(cat.knowsCalc("P999"), true);
  assert.equal(cat.knowsCalc("P98"), false);
  assert.equal(cat.knowsCalc("count"), false, "parseCalc upper-cases; the catalogue does not guess");
});

test("filter operators come in the server's order", () => {
  assert.deepEqual(cat.filterOps(), META.filters.map((f) => f.op));
  assert.equal(cat.filterOps().length, 16);
});

test("suggestions: operators without a column, every column-taking operator per numeric column, COUNT_DISTINCT per string or bool column", () => {
  const s = cat.suggestions(COLUMNS);
  assert.deepEqual(s.slice(0, 2), ["COUNT", "CONCURRENCY"]);
  const perNumeric = META.calculations.filter((c) => c.needs_column).length;
  assert.equal(s.length, 2 + 2 * perNumeric + 2);
  assert.ok(s.includes("HEATMAP(duration_ms)") && s.includes("RATE_MAX(http.status_code)") && s.includes("COUNT_DISTINCT(duration_ms)"));
  assert.deepEqual(s.slice(-2), ["COUNT_DISTINCT(service.name)", "COUNT_DISTINCT(error)"]);
  assert.ok(!s.some((x) => x.includes("timestamp")), "no timestamp column");
  assert.ok(!s.includes("P99(service.name)"), "no numeric operator over a string column");
});

test("a typed filter value is read by the column's type, as a list for in/not-in, and not at all for exists", () => {
  const [dur, status, svc, err] = COLUMNS;
  assert.equal(cat.filterValue(dur, ">", "1.5"), 1.5);
  assert.equal(cat.filterValue(dur, ">", "abc"), "abc", "not a number: sent as typed, the server says why");
  assert.equal(cat.filterValue(dur, "=", " "), " ");
  assert.equal(cat.filterValue(svc, "=", "42"), "42", "a string column keeps digits as text");
  assert.equal(cat.filterValue(err, "=", "true"), true);
  assert.equal(cat.filterValue(err, "=", "no"), false);
  assert.deepEqual(cat.filterValue(status, "in", "500, 502,x"), [500, 502, "x"]);
  assert.deepEqual(cat.filterValue(svc, "not-in", "a, b"), ["a", "b"]);
  assert.equal(cat.filterValue(svc, "exists", "ignored"), undefined);
  assert.equal(cat.filterValue(svc, "does-not-exist", ""), undefined);
});

test("parseCalc reads OP and OP(column), upper-casing the operator", () => {
  assert.deepEqual(parseCalc("count"), { op: "COUNT" });
  assert.deepEqual(parseCalc(" p99( duration_ms ) "), { op: "P99", column: "duration_ms" });
  assert.deepEqual(parseCalc("COUNT_DISTINCT(service.name)"), { op: "COUNT_DISTINCT", column: "service.name" });
  assert.equal(parseCalc("P99 duration_ms"), null);
  assert.equal(parseCalc(""), null);
});

test("having comparisons, list-valued filters and additive calculations come from the catalogue", () => {
  assert.deepEqual(cat.havingOps(), ["=", "!=", ">", ">=", "<", "<="]);
  assert.deepEqual(META.calculations.map((c) => c.op).filter((op) => cat.additive(op)), ["COUNT", "SUM"]);
  const col = COLUMNS.find((c) => c.type === "float");
  assert.deepEqual(cat.filterValue(col, "in", "1, 2"), [1, 2]);
  assert.equal(cat.filterValue(col, "=", "1, 2"), "1, 2");
  // An operator the server marks as list-valued is read as a list, whatever its name.
  const renamed = new Catalog({ ...META, filters: META.filters.map((f) => (f.op === "=" ? { ...f, takes_list: true } : f)) });
  assert.deepEqual(renamed.filterValue(col, "=", "3,4"), [3, 4]);
});

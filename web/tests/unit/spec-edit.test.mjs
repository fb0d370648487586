// Spec edits: each returns the edited spec and leaves its (deep-frozen) input as it was.

import { test } from "node:test";
import assert from "node:assert/strict";
import { frozen, load } from "./load.mjs";
import { META, SPEC } from "./fixtures.mjs";

const edit = await load("spec-edit");
const { Catalog } = await load("catalog");
const cat = new Catalog(META);
const spec = () => frozen(SPEC);

test("addCalculation appends, removeCalculation drops the i-th", () => {
  const s = edit.addCalculation(spec(), { op: "AVG", column: "duration_ms" });
  assert.deepEqual(s.calculations.at(-1), { op: "AVG", column: "duration_ms" });
  assert.equal(s.calculations.length, 4);
  assert.deepEqual(edit.removeCalculation(spec(), 1).calculations, [{ op: "COUNT" }, { op: "HEATMAP", column: "duration_ms" }]);
});

test("showEvents empties VISUALIZE and keeps the rest", () => {
  const s = edit.showEvents(spec());
  assert.deepEqual(s.calculations, []);
  assert.deepEqual({ ...s, calculations: SPEC.calculations }, SPEC);
});

test("addFilters appends in order, removeFilter drops the i-th, setFilterCombination sets AND/OR", () => {
  const s = edit.addFilters(spec(), { column: "a", op: "exists" }, { column: "b", op: "=", value: 1 });
  assert.deepEqual(s.filters.map((f) => f.column), ["error", "a", "b"]);
  assert.deepEqual(edit.removeFilter(s, 0).filters.map((f) => f.column), ["a", "b"]);
  assert.equal(edit.setFilterCombination(spec(), "OR").filter_combination, "OR");
});

test("addBreakdown groups by a column once; removeBreakdown drops the i-th", () => {
  assert.deepEqual(edit.addBreakdown(spec(), "http.method").breakdowns, ["service.name", "http.method"]);
  assert.deepEqual(edit.addBreakdown(spec(), "service.name").breakdowns, ["service.name"]);
  assert.deepEqual(edit.removeBreakdown(spec(), 0).breakdowns, []);
});

test("orderKeys are the per-group calculations' keys then the breakdowns; havingKeys leave the breakdowns out", () => {
  const s = edit.addCalculation(edit.addCalculation(spec(), { op: "RATE_SUM", column: "duration_ms" }), { op: "CONCURRENCY" });
  assert.deepEqual(edit.orderKeys(s, cat), ["COUNT", "P99(duration_ms)", "service.name"]);
  assert.deepEqual(edit.havingKeys(s, cat), ["COUNT", "P99(duration_ms)"]);
});

test("addOrder orders by a calculation (its op and column) or a breakdown (its column); no key, no order", () => {
  assert.deepEqual(edit.addOrder(spec(), "P99(duration_ms)", "descending", cat).orders, [{ op: "P99", column: "duration_ms", order: "descending" }]);
  assert.deepEqual(edit.addOrder(spec(), "service.name", "ascending", cat).orders, [{ column: "service.name", order: "ascending" }]);
  assert.equal(edit.addOrder(spec(), "", "ascending", cat).orders.length, 0);
  const two = edit.addOrder(edit.addOrder(spec(), "COUNT", "ascending", cat), "service.name", "ascending", cat);
  assert.deepEqual(edit.removeOrder(two, 0).orders, [{ column: "service.name", order: "ascending" }]);
});

test("addHaving compares a calculation of the spec with a number; otherwise the spec is unchanged", () => {
  const s = edit.addHaving(spec(), "P99(duration_ms)", ">", 250, cat);
  assert.deepEqual(s.havings, [{ calculate_op: "P99", column: "duration_ms", op: ">", value: 250 }]);
  const s2 = spec();
  assert.equal(edit.addHaving(s2, "AVG(duration_ms)", ">", 1, cat), s2, "not a calculation of the spec");
  assert.equal(edit.addHaving(s2, "COUNT", ">", NaN, cat), s2, "not a number");
  assert.deepEqual(edit.removeHaving(s, 0).havings, []);
});

test("setLimit keeps the limit within 1 to 10,000, 100 when not a number", () => {
  assert.equal(edit.setLimit(spec(), "25").limit, 25);
  assert.equal(edit.setLimit(spec(), "0").limit, 100);
  assert.equal(edit.setLimit(spec(), "-3").limit, 1);
  assert.equal(edit.setLimit(spec(), "99999").limit, 10000);
  assert.equal(edit.setLimit(spec(), "abc").limit, 100);
});

test("timeOf is the absolute range when the spec has both ends, else the relative one (an hour by default)", () => {
  assert.deepEqual(edit.timeOf({ start_time: 10, end_time: 20, time_range: 600 }), { start_time: 10, end_time: 20 });
  assert.deepEqual(edit.timeOf({ start_time: 10, time_range: 600 }), { time_range: 600 });
  assert.deepEqual(edit.timeOf({}), { time_range: 3600 });
});

test("setCustomRange turns the relative range into the same absolute one; setTimeRange goes back", () => {
  const abs = edit.setCustomRange(frozen({ ...SPEC, time_range: 600 }), 1000);
  assert.equal(abs.start_time, 400);
  assert.equal(abs.end_time, 1000);
  assert.ok(!("time_range" in abs));
  const rel = edit.setTimeRange(frozen(abs), 86400);
  assert.equal(rel.time_range, 86400);
  assert.ok(!("start_time" in rel) && !("end_time" in rel));
  assert.equal(edit.setStartTime(frozen(abs), 500).start_time, 500);
  assert.equal(edit.setEndTime(frozen(abs), 900).end_time, 900);
});

test("zoomTo sets the absolute range widened to whole seconds and drops the relative one", () => {
  const s = edit.zoomTo(spec(), 100.7, 200.2);
  assert.deepEqual([s.start_time, s.end_time], [100, 201]);
  assert.ok(!("time_range" in s));
});

test("groupFilters select one group: = its value, does-not-exist for a missing one", () => {
  assert.deepEqual(edit.groupFilters(["service.name", "http.method"], { "service.name": "api", "http.method": null, COUNT: 3 }), [
    { column: "service.name", op: "=", value: "api" },
    { column: "http.method", op: "does-not-exist" },
  ]);
  assert.deepEqual(edit.groupFilters([], { COUNT: 3 }), []);
});

test("groupSelection names the group's breakdown values, null when missing", () => {
  assert.deepEqual(edit.groupSelection(["a", "b"], { a: "x", COUNT: 1 }), { group: { a: "x", b: null } });
});

test("selectionFilters: a heatmap box is its value range (inclusive), a group is its values", () => {
  const box = { heatmap: { column: "duration_ms", start_time: 10.5, end_time: 20.5, min: 100, max: 900 } };
  assert.deepEqual(edit.selectionFilters(box), [
    { column: "duration_ms", op: ">=", value: 100 },
    { column: "duration_ms", op: "<=", value: 900 },
  ]);
  assert.deepEqual(edit.selectionFilters({ group: { "service.name": "api", region: null } }), [
    { column: "service.name", op: "=", value: "api" },
    { column: "region", op: "does-not-exist" },
  ]);
});

test("selectionEvents shows the raw events of a selection: its filters, a box's time widened to whole seconds", () => {
  const s = edit.selectionEvents(spec(), { heatmap: { column: "duration_ms", start_time: 10.5, end_time: 20.5, min: 1, max: 2 } });
  assert.deepEqual(s.calculations, []);
  assert.equal(s.filters.length, 3);
  assert.deepEqual([s.start_time, s.end_time, s.time_range], [10, 21, undefined]);
  const g = edit.selectionEvents(spec(), { group: { "service.name": "api" } });
  assert.deepEqual(g.filters.at(-1), { column: "service.name", op: "=", value: "api" });
  assert.equal(g.time_range, 3600, "a group keeps the time range");
});

test("groupEvents shows a group's events, in a bucket's time range when given", () => {
  const f = [{ column: "service.name", op: "=", value: "api" }];
  const s = edit.groupEvents(spec(), f, [60, 120]);
  assert.deepEqual([s.calculations, s.filters.at(-1), s.start_time, s.end_time, s.time_range], [[], f[0], 60, 120, undefined]);
  assert.equal(edit.groupEvents(spec(), [], null).time_range, 3600);
});

test("rangeFilters select a numeric bucket [lo, hi)", () => {
  assert.deepEqual(edit.rangeFilters("d", 1, 2), [{ column: "d", op: ">=", value: 1 }, { column: "d", op: "<", value: 2 }]);
});

test("withField adds an expression as a calculated field once; setCompare sets or drops the offset", async () => {
  const edit = await load("spec-edit");
  const s = frozen({ calculations: [], filters: [], breakdowns: [], orders: [], havings: [] });
  const once = edit.withField(s, "IF($a, 1)");
  assert.deepEqual(once.calculated_fields, [{ name: "IF($a, 1)", expression: "IF($a, 1)" }]);
  assert.equal(edit.withField(once, "IF($a, 1)"), once);
  assert.equal(edit.setCompare(s, 3600).compare_time_offset_seconds, 3600);
  assert.equal("compare_time_offset_seconds" in edit.setCompare(edit.setCompare(s, 3600), 0), false);
  assert.deepEqual(edit.fieldsOf(s), {});
});

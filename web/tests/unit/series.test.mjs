// A query answer as the graphs draw it: time buckets, lines per group, "other", heatmaps.

import { test } from "node:test";
import assert from "node:assert/strict";
import { frozen, load } from "./load.mjs";
import { META, SPEC } from "./fixtures.mjs";

const series = await load("series");
const { Catalog } = await load("catalog");
const cat = new Catalog(META);

const T0 = "2026-11-25T10:00:00Z";
const t0 = Date.parse(T0) / 1000;
const iso = (k) => new Date((t0 + 60 * k) * 1000).toISOString();
const meta = (extra = {}) => ({
  granularity: 60, start_time: T0, end_time: iso(4), groups: 2, groups_truncated: false,
  rows_examined: 0, segments_total: 0, segments_scanned: 0, segments_pruned: 0, elapsed_ms: 0, ...extra,
});
const answer = (results, points, extra) => frozen({
  data: { results: results.map((data) => ({ data })), series: points.map(([k, data]) => ({ time: iso(k), data })) },
  meta: meta(extra),
});
const S = "service.name";

test("timeAxis: one bucket per granularity from start to end (exclusive); a series time's index; the bucket holding a time", () => {
  const axis = series.timeAxis(meta());
  assert.deepEqual(axis.times, [0, 1, 2, 3].map((k) => t0 + 60 * k));
  assert.equal(axis.index(iso(2)), 2);
  assert.equal(axis.index(new Date((t0 + 119) * 1000).toISOString()), 2, "rounded to the nearest bucket");
  assert.deepEqual(axis.bucket(t0 + 150), [t0 + 120, t0 + 180]);
  assert.deepEqual(axis.bucket(t0 + 120), [t0 + 120, t0 + 180]);
});

test("toLines: one line per result group, in the results' order, with its values at its buckets and null elsewhere", () => {
  const a = answer(
    [{ [S]: "b", COUNT: 5 }, { [S]: "a", COUNT: 3 }],
    [[0, { [S]: "a", COUNT: 1 }], [2, { [S]: "a", COUNT: 2 }], [1, { [S]: "b", COUNT: 5 }], [3, { [S]: "zz", COUNT: 9 }]],
  );
  assert.deepEqual(series.toLines(a, null, [S], "COUNT", true), [
    { label: "b", values: [null, 5, null, null] },
    { label: "a", values: [1, null, 2, null] },
  ]);
});

test("toLines labels a group by its values ((null) when missing) and one without breakdowns 'all events'", () => {
  const a = answer([{ [S]: null, m: "GET", COUNT: 1 }], [[0, { [S]: null, m: "GET", COUNT: 1 }]]);
  assert.deepEqual(series.toLines(a, null, [S, "m"], "COUNT", true).map((l) => [l.label, l.values[0]]), [["(null), GET", 1]]);
  const all = answer([{ COUNT: 4 }], [[1, { COUNT: 4 }]]);
  assert.deepEqual(series.toLines(all, null, [], "COUNT", true), [{ label: "all events", values: [null, 4, null, null] }]);
});

test("toLines adds 'other' = total − the groups shown, per bucket, for an additive calculation given totals", () => {
  const a = answer(
    [{ [S]: "a", COUNT: 6 }, { [S]: "b", COUNT: 2 }],
    [[0, { [S]: "a", COUNT: 4 }], [1, { [S]: "a", COUNT: 2 }], [1, { [S]: "b", COUNT: 2 }]],
    { groups_truncated: true },
  );
  const totals = answer([{ COUNT: 20 }], [[0, { COUNT: 10 }], [1, { COUNT: 7 }], [3, { COUNT: 1 }]]);
  const lines = series.toLines(a, totals, [S], "COUNT", true);
  assert.deepEqual(lines.at(-1), { label: "other", values: [6, 3, null, 1] });
  assert.equal(lines.length, 3);
  assert.equal(series.toLines(a, totals, [S], "COUNT", false).length, 2, "no 'other' for a calculation that does not add up");
  assert.equal(series.toLines(a, null, [S], "COUNT", true).length, 2, "no totals, no 'other'");
});

test("totalsSpec: asked only when groups were left out, with breakdowns, an additive calculation and no having", () => {
  const spec = { ...SPEC, calculations: [{ op: "COUNT" }, { op: "SUM", column: "d" }, { op: "P99", column: "d" }], orders: [{ column: S }] };
  const cut = answer([], [], { groups_truncated: true });
  assert.deepEqual(series.totalsSpec(frozen(spec), cut, cat), {
    ...spec, calculations: [{ op: "COUNT" }, { op: "SUM", column: "d" }], breakdowns: [], orders: [], havings: [],
  });
  assert.equal(series.totalsSpec(spec, answer([], []), cat), null, "all groups shown");
  assert.equal(series.totalsSpec({ ...spec, breakdowns: [] }, cut, cat), null);
  assert.equal(series.totalsSpec({ ...spec, calculations: [{ op: "AVG", column: "d" }] }, cut, cat), null);
  assert.equal(series.totalsSpec({ ...spec, havings: [{ calculate_op: "COUNT", op: ">", value: 1 }] }, cut, cat), null);
});

test("heatmapCells sums the groups' histograms per bucket, leaving its input and buckets without data alone", () => {
  const h = (counts) => ({ min: 0, max: 10, bucket_width: 5, counts });
  const key = "HEATMAP(duration_ms)";
  const a = answer([], [[0, { [S]: "a", [key]: h([1, 2]) }], [0, { [S]: "b", [key]: h([10, 20]) }], [2, { [S]: "a", [key]: h([3, 4]) }]]);
  const cells = series.heatmapCells(a, key);
  assert.deepEqual(cells, [h([11, 22]), null, h([3, 4]), null]);
  assert.deepEqual(a.data.series[0].data[key].counts, [1, 2]);
});

test("graphs: one per distinct calculation key, HEATMAP as a heatmap; the table lists the others", () => {
  const spec = { ...SPEC, calculations: [...SPEC.calculations, { op: "COUNT" }, { op: "RATE_AVG", column: "d" }] };
  assert.deepEqual(series.graphs(spec, cat).map((g) => [g.key, g.heatmap]), [
    ["COUNT", false], ["P99(duration_ms)", false], ["HEATMAP(duration_ms)", true], ["RATE_AVG(d)", false],
  ]);
  assert.deepEqual(series.tableKeys(spec, cat), ["COUNT", "P99(duration_ms)", "RATE_AVG(d)"]);
});

test("groupKey tells groups apart by their breakdown values, a missing value as null", () => {
  assert.equal(series.groupKey([S], { [S]: "a", COUNT: 1 }), series.groupKey([S], { [S]: "a", COUNT: 2 }));
  assert.notEqual(series.groupKey([S], { [S]: "a" }), series.groupKey([S], { [S]: "b" }));
  assert.equal(series.groupKey([S], {}), series.groupKey([S], { [S]: null }));
});

test("compareLines: the earlier period dashed over the main axis, shifted by the offset, in its group's colour", () => {
  const earlier = (k) => new Date((t0 - 3600 + 60 * k) * 1000).toISOString();
  const a = frozen({
    data: {
      results: [{ data: { [S]: "b", COUNT: 5 } }, { data: { [S]: "a", COUNT: 3 } }],
      series: [],
      compare: {
        offset_seconds: 3600,
        results: [{ data: { [S]: "a", COUNT: 4 } }, { data: { [S]: "gone", COUNT: 1 } }],
        series: [{ time: earlier(1), data: { [S]: "a", COUNT: 4 } }, { time: earlier(3), data: { [S]: "gone", COUNT: 1 } }],
      },
    },
    meta: meta(),
  });
  const lines = series.compareLines(a, [S], "COUNT");
  assert.deepEqual(lines.map((l) => l.values), [[null, 4, null, null], [null, null, null, 1]]);
  assert.deepEqual(lines.map((l) => l.dashed), [true, true]);
  assert.equal(lines[0].label, "a (1 hour earlier)");
  assert.equal(lines[0].color, "#4aa3ff", "the colour of group a, second in the main results");
  assert.deepEqual(series.changes(a, [S], "COUNT"), ["new", "-25.0%"]);
  assert.deepEqual(series.compareLines(answer([], []), [S], "COUNT"), []);
  assert.equal(series.offsetLabel(86400), "1 day");
  assert.equal(series.offsetLabel(1800), "30 minutes");
});

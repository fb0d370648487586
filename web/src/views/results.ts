// A query's answer: one graph per calculation (lines per group, or one heatmap) and the results
// table. A click on either offers what to do with that group or time bucket.

import type uPlot from "uplot";
import type { Column, Marker, QueryAnswer, QuerySpec, Row } from "../api";
import type { Catalog } from "../catalog";
import { PALETTE, formatNumber, heatmapChart, lineChart, type ChartHandlers } from "../charts";
import { changed, el, openMenu, swatch, type MenuItem } from "../dom";
import { changes, compareLines, graphs, groupLabel, heatmapCells, offsetLabel, tableKeys, timeAxis, toLines } from "../series";
import * as edit from "../spec-edit";
import { onSpec, type Dispatch } from "../state";
import { openMarkerDialog } from "./markers";

/**
 * A query's answer as shown: the spec it answers, the totals for "other" lines if any, and the
 * markers (of the dataset and the environment) in its range.
 */
export interface QueryShown { kind: "query"; spec: QuerySpec; answer: QueryAnswer; totals: QueryAnswer | null; markers: Marker[] }

export interface ResultsProps { shown: QueryShown | null; catalog: Catalog; columns: Column[]; dataset: string }

/** The status line under the builder. */
export function queryStatus(m: QueryAnswer["meta"], msInAll: number): string {
  const precomputed = m.segments_precomputed ? ` (${m.segments_precomputed} precomputed)` : "";
  // Approximate values are said up front: an on-call engineer must not mistake them for exact.
  const approx = m.approximate
    ? `≈ ${m.approximate.what} within ${(m.approximate.relative_error * 100).toFixed(1)}% (${m.approximate.reason}) · `
    : "";
  return `${approx}${m.groups} group${m.groups === 1 ? "" : "s"}${m.groups_truncated ? " (top)" : ""} · `
    + `${m.rows_examined.toLocaleString("en-US")} rows examined · ${m.segments_scanned}/${m.segments_total} segments scanned${precomputed} · `
    + `${m.elapsed_ms.toFixed(1)} ms in the server, ${msInAll.toFixed(0)} ms in all · ${m.granularity}s buckets`;
}

const plotsOf = new WeakMap<HTMLElement, uPlot[]>();

export function render(at: { charts: HTMLElement; table: HTMLElement }, props: ResultsProps, dispatch: Dispatch) {
  if (!changed(at.charts, { ...props })) return;
  (plotsOf.get(at.charts) ?? []).forEach((p) => p.destroy());
  at.charts.replaceChildren();
  at.table.replaceChildren();
  const plots: uPlot[] = [];
  plotsOf.set(at.charts, plots);
  if (!props.shown) return;
  const { spec, answer, totals, markers } = props.shown;
  const results = answer.data.results.map((r) => r.data);
  const axis = timeAxis(answer.meta);
  const actions = (group: Row | null, bucket: [number, number] | null, t: number | null) => [
    ...pointActions(spec, props.columns, group, bucket, dispatch),
    ...(t != null ? [["Add a marker here…", () => openMarkerDialog(props.dataset, Math.round(t), () => dispatch((s) => s, "rerun"))] as MenuItem] : []),
  ];
  const handlers: ChartHandlers = {
    onZoom: (from, to) => dispatch(onSpec((s) => edit.zoomTo(s, from, to)), "run"),
    onClick: (t, series, ev) => openMenu(ev, actions(series >= 0 && series < results.length ? results[series] : null, axis.bucket(t), t)),
  };
  for (const g of graphs(spec, props.catalog)) {
    if (!g.heatmap) {
      const lines = [
        ...toLines(answer, totals, spec.breakdowns, g.key, props.catalog.additive(g.op)),
        ...compareLines(answer, spec.breakdowns, g.key),
      ];
      plots.push(lineChart(at.charts, g.key, axis.times, lines, handlers, markers));
      continue;
    }
    const column = g.column!;
    const hhmmss = (t: number) => new Date(t * 1000).toISOString().slice(11, 19);
    heatmapChart(at.charts, g.key, axis.times, heatmapCells(answer, g.key), axis.step, {
      ...handlers,
      onBox: (from, to, lo, hi) => dispatch((s) => ({
        ...s,
        panel: {
          kind: "bubbleup",
          selection: { heatmap: { column, start_time: from, end_time: to, min: lo, max: hi } },
          title: `${column} ${formatNumber(lo)}–${formatNumber(hi)}, ${hhmmss(from)}–${hhmmss(to)}`,
        },
      })),
    }, markers);
  }

  const keys = tableKeys(spec, props.catalog);
  // With a comparison: the change of the first value per group since the earlier period.
  const compare = answer.data.compare && keys.length ? changes(answer, spec.breakdowns, keys[0]) : null;
  const head = el("tr", {}, el("th"), ...spec.breakdowns.map((b) => el("th", { textContent: b })), ...keys.map((k) => el("th", { textContent: k })),
    ...(compare ? [el("th", { textContent: `${keys[0]} vs ${offsetLabel(answer.data.compare!.offset_seconds)} earlier` })] : []));
  const rows = results.map((r, i) => {
    const tr = el(
      "tr",
      {},
      el("td", {}, swatch(PALETTE[i % PALETTE.length])),
      ...spec.breakdowns.map((b) => el("td", { textContent: r[b] === null ? "(null)" : String(r[b]) })),
      ...keys.map((k) => el("td", { className: "num", textContent: formatNumber(r[k]) })),
      ...(compare ? [el("td", { className: "num change", textContent: compare[i] })] : []),
    );
    tr.addEventListener("mouseenter", () => plots.forEach((p) => p.setSeries(i + 1, { focus: true })));
    tr.addEventListener("mouseleave", () => plots.forEach((p) => p.setSeries(null, { focus: false })));
    tr.addEventListener("click", (ev) => openMenu(ev, actions(r, null, null)));
    return tr;
  });
  at.table.replaceChildren(el("table", { className: "grid", id: "results-table" }, el("thead", {}, head), el("tbody", {}, ...rows)));
}

/** What can be done with a clicked group and/or time bucket of the answer to `spec`. */
function pointActions(spec: QuerySpec, columns: Column[], group: Row | null, bucket: [number, number] | null, dispatch: Dispatch): MenuItem[] {
  const filters = group ? edit.groupFilters(spec.breakdowns, group) : [];
  const run = (f: (s: QuerySpec) => QuerySpec) => () => dispatch(onSpec(f), "run");
  const acts: MenuItem[] = [[
    bucket ? "Show events in this bucket" + (group ? " and group" : "") : "Show events for this group",
    run((s) => edit.groupEvents(s, filters, bucket)),
  ]];
  if (group && filters.length) {
    const selection = edit.groupSelection(spec.breakdowns, group);
    const title = groupLabel(spec.breakdowns, group);
    acts.push(["Filter by this group", run((s) => edit.addFilters(s, ...filters))]);
    acts.push(["BubbleUp: what is different about this group?", () => dispatch((s) => ({ ...s, panel: { kind: "bubbleup", selection, title } }))]);
  }
  if (bucket) acts.push(["Zoom to this bucket", run((s) => edit.zoomTo(s, bucket[0], bucket[1]))]);
  for (const c of columns.filter((c) => c.type === "string" && !spec.breakdowns.includes(c.name)).slice(0, 4)) {
    acts.push([`Group by ${c.name}`, run((s) => edit.addFilters(edit.addBreakdown(s, c.name), ...(group ? filters : [])))]);
  }
  return acts;
}

// A query answer as the graphs draw it: the time axis, one line per group (and "other", the groups
// past the limit), heatmaps merged over the groups. Pure: no DOM.

import type { QueryAnswer, QuerySpec, Row } from "./api";
import type { Catalog } from "./catalog";
import type { Heatmap, LineSeries } from "./charts";
import { PALETTE } from "./palette";

/** The answer's time buckets (seconds): their starts, and which bucket a time falls in. */
export interface TimeAxis {
  start: number;
  step: number;
  times: number[];
  /** The index of the bucket starting at an ISO time of the answer's series. */
  index(iso: string): number;
  /** The bucket [from, to) holding time `t`. */
  bucket(t: number): [number, number];
}

export function timeAxis(meta: QueryAnswer["meta"]): TimeAxis {
  const step = meta.granularity;
  const start = Date.parse(meta.start_time) / 1000;
  const end = Date.parse(meta.end_time) / 1000;
  const times: number[] = [];
  for (let t = start; t < end; t += step) times.push(t);
  return {
    start, step, times,
    index: (iso) => Math.round((Date.parse(iso) / 1000 - start) / step),
    bucket: (t) => {
      const from = start + Math.floor((t - start) / step) * step;
      return [from, from + step];
    },
  };
}

/** A group's identity: its breakdown values. */
export function groupKey(breakdowns: string[], row: Row): string {
  return JSON.stringify(breakdowns.map((b) => row[b] ?? null));
}

/** A group as people read it: its breakdown values, or "all events" without breakdowns. */
export function groupLabel(breakdowns: string[], row: Row): string {
  if (!breakdowns.length) return "all events";
  return breakdowns.map((b) => (row[b] === null || row[b] === undefined ? "(null)" : String(row[b]))).join(", ");
}

/** What the graphs show: one per distinct calculation, a heatmap or lines. */
export function graphs(spec: QuerySpec, cat: Catalog): { key: string; op: string; column?: string; heatmap: boolean }[] {
  const seen = new Set<string>();
  const out = [];
  for (const c of spec.calculations) {
    const key = cat.key(c);
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ key, op: c.op, column: c.column, heatmap: c.op === "HEATMAP" });
  }
  return out;
}

/** The results table's value columns: each distinct calculation but heatmaps (no single value). */
export function tableKeys(spec: QuerySpec, cat: Catalog): string[] {
  return graphs(spec, cat).filter((g) => !g.heatmap).map((g) => g.key);
}

/**
 * The totals query, for a line "other" (the groups past the limit) under each additive
 * calculation: when the answer left groups out and no having hides some on purpose.
 */
export function totalsSpec(spec: QuerySpec, answer: QueryAnswer, cat: Catalog): QuerySpec | null {
  const additive = spec.calculations.filter((c) => cat.additive(c.op));
  if (!answer.meta.groups_truncated || !spec.breakdowns.length || !additive.length || spec.havings.length) return null;
  return { ...spec, calculations: additive, breakdowns: [], orders: [], havings: [] };
}

/**
 * One line per result group of calculation `key` over the time axis (null where a bucket has
 * no value) and, given the totals of an additive calculation (`additive`, from the catalogue),
 * "other": total minus the groups.
 */
export function toLines(
  answer: QueryAnswer, totals: QueryAnswer | null, breakdowns: string[], key: string, additive: boolean,
): LineSeries[] {
  const axis = timeAxis(answer.meta);
  const results = answer.data.results.map((r) => r.data);
  const gIndex = new Map(results.map((r, i) => [groupKey(breakdowns, r), i]));
  const lines = results.map((r) => ({ label: groupLabel(breakdowns, r), values: axis.times.map(() => null as number | null) }));
  for (const s of answer.data.series) {
    const g = gIndex.get(groupKey(breakdowns, s.data));
    const v = s.data[key];
    if (g !== undefined && typeof v === "number") lines[g].values[axis.index(s.time)] = v;
  }
  if (totals && additive) {
    const other = axis.times.map(() => null as number | null);
    for (const s of totals.data.series) {
      const v = s.data[key];
      if (typeof v === "number") other[axis.index(s.time)] = v;
    }
    for (const l of lines) l.values.forEach((v, i) => { if (v !== null && other[i] !== null) other[i]! -= v; });
    lines.push({ label: "other", values: other });
  }
  return lines;
}

/** An offset as people say it: "1 hour", "1 day", "7 days", or seconds. */
export function offsetLabel(seconds: number): string {
  const units: [number, string][] = [[604800, "week"], [86400, "day"], [3600, "hour"], [60, "minute"]];
  for (const [n, unit] of units) {
    if (seconds % n === 0) return `${seconds / n} ${unit}${seconds / n === 1 ? "" : "s"}`;
  }
  return `${seconds} s`;
}

/**
 * The earlier period of a comparison as dashed lines over the main time axis (shifted by the
 * offset), one per group of the earlier answer, each in its group's colour in the main answer.
 */
export function compareLines(answer: QueryAnswer, breakdowns: string[], key: string): LineSeries[] {
  const c = answer.data.compare;
  if (!c) return [];
  const axis = timeAxis(answer.meta);
  const main = new Map(answer.data.results.map((r, i) => [groupKey(breakdowns, r.data), i]));
  const lines = c.results.map((r) => {
    const i = main.get(groupKey(breakdowns, r.data));
    return {
      label: `${groupLabel(breakdowns, r.data)} (${offsetLabel(c.offset_seconds)} earlier)`,
      values: axis.times.map(() => null as number | null),
      color: i === undefined ? "#8a95a3" : PALETTE[i % PALETTE.length],
      dashed: true,
    };
  });
  const index = new Map(c.results.map((r, i) => [groupKey(breakdowns, r.data), i]));
  for (const s of c.series) {
    const g = index.get(groupKey(breakdowns, s.data));
    const v = s.data[key];
    const t = axis.index(new Date(Date.parse(s.time) + c.offset_seconds * 1000).toISOString());
    if (g !== undefined && typeof v === "number" && t >= 0 && t < axis.times.length) lines[g].values[t] = v;
  }
  return lines;
}

/** Per main group, the change of `key` from the earlier period: "+12.5%", "new", or "". */
export function changes(answer: QueryAnswer, breakdowns: string[], key: string): string[] {
  const c = answer.data.compare;
  if (!c) return [];
  const before = new Map(c.results.map((r) => [groupKey(breakdowns, r.data), r.data[key]]));
  return answer.data.results.map((r) => {
    const now = r.data[key];
    const was = before.get(groupKey(breakdowns, r.data));
    if (typeof now !== "number") return "";
    if (typeof was !== "number") return "new";
    if (was === 0) return now === 0 ? "0%" : "new";
    const pct = ((now - was) / Math.abs(was)) * 100;
    return `${pct >= 0 ? "+" : ""}${pct.toFixed(1)}%`;
  });
}

/** One heatmap over all groups: per time bucket, the groups' histograms (same value buckets) summed. */
export function heatmapCells(answer: QueryAnswer, key: string): (Heatmap | null)[] {
  const axis = timeAxis(answer.meta);
  const cells: (Heatmap | null)[] = axis.times.map(() => null);
  for (const s of answer.data.series) {
    const h = s.data[key] as Heatmap | undefined;
    if (!h) continue;
    const i = axis.index(s.time);
    const cur = cells[i];
    cells[i] = cur ? { ...cur, counts: cur.counts.map((n, k) => n + h.counts[k]) } : { ...h, counts: [...h.counts] };
  }
  return cells;
}

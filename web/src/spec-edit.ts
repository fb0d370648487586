// Edits of a query spec: each a pure `(spec, …) => newSpec` that leaves its input as it was, so
// the UI changes its state only by replacing it (see main.ts's `dispatch`).

import type { Calculation, Filter, QuerySpec, Row, Selection } from "./api";
import type { Catalog } from "./catalog";

export type Direction = "ascending" | "descending";
export type TimeRange = Pick<QuerySpec, "time_range" | "start_time" | "end_time">;

const DEFAULT_RANGE = 3600;
const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 10000;

const without = <T>(xs: T[], i: number): T[] => xs.filter((_, j) => j !== i);
const withOnce = <T>(xs: T[], x: T): T[] => (xs.includes(x) ? xs : [...xs, x]);

/** The time part of a spec: an absolute range if it has one, else the relative one. */
export function timeOf(s: QuerySpec): TimeRange {
  return s.start_time !== undefined && s.end_time !== undefined
    ? { start_time: s.start_time, end_time: s.end_time }
    : { time_range: s.time_range ?? DEFAULT_RANGE };
}

export const addCalculation = (s: QuerySpec, c: Calculation): QuerySpec => ({ ...s, calculations: [...s.calculations, c] });
export const removeCalculation = (s: QuerySpec, i: number): QuerySpec => ({ ...s, calculations: without(s.calculations, i) });
/** No calculations: the raw events view. */
export const showEvents = (s: QuerySpec): QuerySpec => ({ ...s, calculations: [] });

export const addFilters = (s: QuerySpec, ...fs: Filter[]): QuerySpec => ({ ...s, filters: [...s.filters, ...fs] });
export const removeFilter = (s: QuerySpec, i: number): QuerySpec => ({ ...s, filters: without(s.filters, i) });
export const setFilterCombination = (s: QuerySpec, c: "AND" | "OR"): QuerySpec => ({ ...s, filter_combination: c });

/** Groups by a column (once: a column already grouped by stays where it is). */
export const addBreakdown = (s: QuerySpec, column: string): QuerySpec => ({ ...s, breakdowns: withOnce(s.breakdowns, column) });
export const removeBreakdown = (s: QuerySpec, i: number): QuerySpec => ({ ...s, breakdowns: without(s.breakdowns, i) });

/** Result keys that can be ordered by: calculations with one value per group, then breakdowns. */
export function orderKeys(s: QuerySpec, cat: Catalog): string[] {
  return [...s.calculations.filter((c) => cat.perGroup(c.op)).map((c) => cat.key(c)), ...s.breakdowns];
}

/** Result keys a having can compare: calculations with one value per group. */
export function havingKeys(s: QuerySpec, cat: Catalog): string[] {
  return orderKeys(s, cat).filter((k) => !s.breakdowns.includes(k));
}

/** Orders by a result key: a calculation's (by its op and column) or a breakdown's column. */
export function addOrder(s: QuerySpec, key: string, order: Direction, cat: Catalog): QuerySpec {
  if (!key) return s;
  const calc = s.calculations.find((c) => cat.key(c) === key);
  return { ...s, orders: [...s.orders, calc ? { op: calc.op, column: calc.column, order } : { column: key, order }] };
}
export const removeOrder = (s: QuerySpec, i: number): QuerySpec => ({ ...s, orders: without(s.orders, i) });

/** A having on the calculation whose key is `key`; the spec as it was if there is none. */
export function addHaving(s: QuerySpec, key: string, op: string, value: number, cat: Catalog): QuerySpec {
  const calc = s.calculations.find((c) => cat.key(c) === key);
  if (!calc || !Number.isFinite(value)) return s;
  return { ...s, havings: [...s.havings, { calculate_op: calc.op, column: calc.column, op, value }] };
}
export const removeHaving = (s: QuerySpec, i: number): QuerySpec => ({ ...s, havings: without(s.havings, i) });

/** The limit typed, kept within 1–10,000 (100 when it is not a number). */
export const setLimit = (s: QuerySpec, typed: string): QuerySpec => ({
  ...s,
  limit: Math.max(1, Math.min(MAX_LIMIT, Number(typed) || DEFAULT_LIMIT)),
});

/** A relative time range: the last `seconds`. */
export function setTimeRange(s: QuerySpec, seconds: number): QuerySpec {
  const { start_time: _s, end_time: _e, ...rest } = s;
  return { ...rest, time_range: seconds };
}

/** An absolute range covering what the relative one covers at `now` (seconds). */
export function setCustomRange(s: QuerySpec, now: number): QuerySpec {
  const { time_range, ...rest } = s;
  return { ...rest, start_time: now - (time_range ?? DEFAULT_RANGE), end_time: now };
}

export const setStartTime = (s: QuerySpec, t: number): QuerySpec => ({ ...s, start_time: t });
export const setEndTime = (s: QuerySpec, t: number): QuerySpec => ({ ...s, end_time: t });

/** The absolute range [from, to] (seconds), widened to whole seconds. */
export function zoomTo(s: QuerySpec, from: number, to: number): QuerySpec {
  const { time_range: _t, ...rest } = s;
  return { ...rest, start_time: Math.floor(from), end_time: Math.ceil(to) };
}

/** Filters that select one result group: `=` its value for each breakdown (missing: does not exist). */
export function groupFilters(breakdowns: string[], group: Row): Filter[] {
  return breakdowns.map((b) => {
    const value = group[b];
    return value === null || value === undefined ? { column: b, op: "does-not-exist" } : { column: b, op: "=", value };
  });
}

/** A group as a BubbleUp selection: its value (or null) for each breakdown. */
export function groupSelection(breakdowns: string[], group: Row): Selection {
  return { group: Object.fromEntries(breakdowns.map((b) => [b, group[b] ?? null])) };
}

/** Filters selecting the events of a BubbleUp selection (a heatmap box's time goes in zoomTo). */
export function selectionFilters(sel: Selection): Filter[] {
  if ("heatmap" in sel) {
    const h = sel.heatmap;
    return [{ column: h.column, op: ">=", value: h.min }, { column: h.column, op: "<=", value: h.max }];
  }
  return Object.entries(sel.group).map(([column, value]) => (value === null ? { column, op: "does-not-exist" } : { column, op: "=", value }));
}

/** The raw events of a BubbleUp selection: its filters, and a heatmap box's time range. */
export function selectionEvents(s: QuerySpec, sel: Selection): QuerySpec {
  const out = addFilters(s, ...selectionFilters(sel));
  return showEvents("heatmap" in sel ? zoomTo(out, sel.heatmap.start_time, sel.heatmap.end_time) : out);
}

/** The events of one group (if any) in one time bucket (if any). */
export function groupEvents(s: QuerySpec, filters: Filter[], bucket: [number, number] | null): QuerySpec {
  const out = showEvents(addFilters(s, ...filters));
  return bucket ? zoomTo(out, bucket[0], bucket[1]) : out;
}

/** Filters for a numeric bucket [lo, hi) of a column. */
export function rangeFilters(column: string, lo: number, hi: number): Filter[] {
  return [{ column, op: ">=", value: lo }, { column, op: "<", value: hi }];
}

/**
 * An expression typed where a column is expected becomes a query-scoped calculated field named
 * by its own text (once), so `IF($status >= 500, "err", "ok")` can be grouped by directly.
 */
export function withField(s: QuerySpec, expression: string): QuerySpec {
  const fields = s.calculated_fields ?? [];
  if (fields.some((f) => f.name === expression)) return s;
  return { ...s, calculated_fields: [...fields, { name: expression, expression }] };
}

/** Compare with the same range this many seconds earlier (0: no comparison). */
export function setCompare(s: QuerySpec, seconds: number): QuerySpec {
  const { compare_time_offset_seconds: _, ...rest } = s;
  return seconds > 0 ? { ...rest, compare_time_offset_seconds: seconds } : rest;
}

/** The query-scoped fields a request for raw events or BubbleUp carries along with the filters. */
export const fieldsOf = (s: QuerySpec) => (s.calculated_fields?.length ? { calculated_fields: s.calculated_fields } : {});

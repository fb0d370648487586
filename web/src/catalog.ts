// The operators the server takes, as `GET /api/meta` answers them, and what follows from them:
// a calculation's result key, which calculations are one value per group, what the builder
// suggests, how a typed filter value is read. Pure: no DOM, no fetching.

import type { CalcOpInfo, Calculation, Column, FilterOpInfo, Meta } from "./api";

export const isNumeric = (c: Column) => c.type === "int" || c.type === "float";

export class Catalog {
  private readonly calcs: Map<string, CalcOpInfo>;
  private readonly filters: Map<string, FilterOpInfo>;

  constructor(readonly meta: Meta) {
    this.calcs = new Map(meta.calculations.map((c) => [c.op, c]));
    this.filters = new Map(meta.filters.map((f) => [f.op, f]));
  }

  /** Filter operators, in the server's order. */
  filterOps(): string[] {
    return this.meta.filters.map((f) => f.op);
  }

  /** The comparisons a having may use, in the server's order. */
  havingOps(): string[] {
    return this.meta.filters.filter((f) => f.having).map((f) => f.op);
  }

  /** Whether a calculation's group values add up to its total (so "other" = total − shown). */
  additive(op: string): boolean {
    return this.calcs.get(op)?.additive ?? false;
  }

  /** Whether the server takes this calculation operator. */
  knowsCalc(op: string): boolean {
    return this.calcs.has(op);
  }

  /** The result key of a calculation, as the server names it: `COUNT`, `P99(duration_ms)`. */
  key(c: Calculation): string {
    const info = this.calcs.get(c.op);
    return c.column && (info ? info.needs_column : true) ? `${c.op}(${c.column})` : c.op;
  }

  /** One value per group, so it can be ordered by and filtered with a having. */
  perGroup(op: string): boolean {
    return this.calcs.get(op)?.per_group ?? false;
  }

  /** Whether a filter operator takes a value (`exists` does not). */
  takesValue(op: string): boolean {
    return this.filters.get(op)?.takes_value ?? true;
  }

  /** Calculations to suggest for these columns: those without a column, then each column's. */
  suggestions(columns: Column[]): string[] {
    const ops = this.meta.calculations;
    const out = ops.filter((o) => !o.needs_column).map((o) => o.op);
    for (const col of columns.filter(isNumeric)) for (const o of ops) if (o.needs_column) out.push(`${o.op}(${col.name})`);
    for (const col of columns.filter((c) => c.type === "string" || c.type === "bool")) {
      for (const o of ops) if (o.needs_column && !o.numeric) out.push(`${o.op}(${col.name})`);
    }
    return out;
  }

  /**
   * A filter's value as typed for `column` and `op`: numbers for numeric columns, booleans for
   * bool ones, a list for the operators that take one (`in`, `not-in`); `undefined` when the
   * operator takes none.
   */
  filterValue(column: Column, op: string, raw: string): unknown {
    if (!this.takesValue(op)) return undefined;
    const conv = (v: string) =>
      isNumeric(column) && v.trim() !== "" && !isNaN(Number(v)) ? Number(v) : column.type === "bool" ? v === "true" : v;
    return this.filters.get(op)?.takes_list ? raw.split(",").map((v) => conv(v.trim())) : conv(raw);
  }
}

/** Parses `P99(duration_ms)` or `COUNT` into a calculation. */
export function parseCalc(text: string): Calculation | null {
  const m = /^([A-Za-z0-9_]+)\s*(?:\(\s*(.+?)\s*\))?$/.exec(text.trim());
  if (!m) return null;
  const op = m[1].toUpperCase();
  return m[2] ? { op, column: m[2] } : { op };
}

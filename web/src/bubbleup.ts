// BubbleUp's answer as a ranked grid of small charts: for every column, the selection's
// distribution (orange) against the baseline's (blue).

import { formatNumber } from "./charts";

export interface BubbleValue { value: unknown; selection: number; baseline: number }
export interface BubbleColumn {
  column: string;
  type: string;
  score: number;
  values?: BubbleValue[];
  buckets?: { lower: number; upper: number; selection: number; baseline: number }[];
  missing: { selection: number; baseline: number };
  other?: { selection: number; baseline: number };
}
export interface BubbleAnswer {
  selection: { count: number };
  baseline: { count: number };
  columns: BubbleColumn[];
  meta: { elapsed_ms: number; events_examined: number; sampled?: BubbleSampled };
}

/** How a BubbleUp over a large population read its rows (absent: every row). */
export interface BubbleSampled {
  /** Rows of the selection counted, and its rows in all. */
  selection_rows: [number, number];
  /** Rows of the baseline counted, and its rows in all. */
  baseline_rows: [number, number];
  /** The selection's sample (null: counted whole). */
  selection_blocks: BubbleBlocks | null;
  /** The baseline's sample (null: counted whole). */
  baseline_blocks: BubbleBlocks | null;
}

/** A side's sample: one block of `block_rows` consecutive rows in every `every`. */
export interface BubbleBlocks {
  every: number;
  block_rows: number;
}

/** The line saying a BubbleUp's shares come from a sample, or "" when every row was counted. */
export function samplingNote(s: BubbleSampled | undefined): string {
  if (!s) return "";
  const part = ([read, all]: [number, number], blocks: BubbleBlocks | null, what: string) =>
    !blocks || read >= all
      ? `${what} whole`
      : `${what} ${formatNumber(read)} of ${formatNumber(all)} rows `
        + `(blocks of ${formatNumber(blocks.block_rows)}, 1 in ${blocks.every})`;
  return `shares from a sample: ${part(s.selection_rows, s.selection_blocks, "selection")}, `
    + `${part(s.baseline_rows, s.baseline_blocks, "baseline")}; counts exact`;
}

const SEL = "#f5a524";
const BASE = "#4aa3ff";

/** Called when a bar is clicked: the column and the value (or a numeric bucket's range). */
export type BarClick = (column: BubbleColumn, value: unknown, range: [number, number] | null, ev: MouseEvent) => void;

function bar(share: number, color: string): HTMLElement {
  const b = document.createElement("div");
  b.className = "bu-bar";
  b.style.width = `${Math.max(share * 100, share > 0 ? 1 : 0)}%`;
  b.style.background = color;
  return b;
}

/** Renders the grid into `el`, most different column first. */
export function renderBubbleUp(el: HTMLElement, a: BubbleAnswer, title: string, onBar: BarClick) {
  const head = document.createElement("div");
  head.className = "bu-head";
  // The title holds column names and values from events: text, never markup.
  const h3 = document.createElement("h3");
  h3.textContent = `BubbleUp: ${title}`;
  head.append(h3);
  const legend = document.createElement("span");
  legend.className = "status";
  legend.innerHTML =
    `<span class="swatch" style="background:${SEL}"></span>selection (${formatNumber(a.selection.count)} events) `
    + `<span class="swatch" style="background:${BASE}; margin-left:12px"></span>baseline (${formatNumber(a.baseline.count)}) · `
    + `ranked by how different the two distributions are · ${a.meta.elapsed_ms.toFixed(0)} ms`;
  head.append(legend);
  const note = samplingNote(a.meta.sampled);
  if (note) {
    const sampled = document.createElement("div");
    sampled.className = "status bu-sampled";
    sampled.textContent = note;
    sampled.title = "Over many rows BubbleUp reads evenly spread blocks of rows; the API's \"exact\": true counts every one.";
    head.append(sampled);
  }
  const grid = document.createElement("div");
  grid.className = "bu-grid";
  for (const c of a.columns.slice(0, 48)) {
    const card = document.createElement("div");
    card.className = "bu-card";
    card.dataset.column = c.column;
    const h = document.createElement("div");
    h.className = "bu-title";
    h.textContent = c.column;
    const score = document.createElement("span");
    score.className = "bu-score";
    score.textContent = `${(c.score * 100).toFixed(0)}% different`;
    h.append(score);
    card.append(h);
    const rows: [string, number, number, unknown, [number, number] | null][] = [];
    if (c.values) {
      for (const v of c.values.slice(0, 6)) rows.push([String(v.value), v.selection, v.baseline, v.value, null]);
      if (c.other && (c.other.selection > 0 || c.other.baseline > 0)) rows.push(["(other)", c.other.selection, c.other.baseline, undefined, null]);
    } else if (c.buckets) {
      for (const b of c.buckets) {
        if (b.selection > 0 || b.baseline > 0) {
          rows.push([`${formatNumber(b.lower)}–${formatNumber(b.upper)}`, b.selection, b.baseline, undefined, [b.lower, b.upper]]);
        }
      }
    }
    if (c.missing.selection > 0 || c.missing.baseline > 0) rows.push(["(missing)", c.missing.selection, c.missing.baseline, null, null]);
    for (const [label, s, b, value, range] of rows) {
      const row = document.createElement("div");
      row.className = "bu-row";
      row.title = `${label}: ${(s * 100).toFixed(1)}% of the selection, ${(b * 100).toFixed(1)}% of the baseline`;
      row.dataset.value = label;
      const name = document.createElement("span");
      name.className = "bu-label";
      name.textContent = label;
      const bars = document.createElement("span");
      bars.className = "bu-bars";
      bars.append(bar(s, SEL), bar(b, BASE));
      row.append(name, bars);
      if (label !== "(other)") row.addEventListener("click", (ev) => onBar(c, value, range, ev));
      card.append(row);
    }
    grid.append(card);
  }
  el.replaceChildren(head, grid);
}

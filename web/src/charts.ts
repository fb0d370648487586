// Graphs: uPlot line charts (canvas, one series per group) and a canvas heatmap.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

import type { Marker } from "./api";
import { PALETTE } from "./palette";
export { PALETTE };

export interface LineSeries {
  label: string;
  values: (number | null)[];
  /** Its colour (by default the palette's, in order). */
  color?: string;
  /** Drawn dashed: the earlier period of a comparison. */
  dashed?: boolean;
}

export interface ChartHandlers {
  /** Drag across the graph: zoom to [from, to] (seconds). */
  onZoom(from: number, to: number): void;
  /** Drag a box on a heatmap: time [from, to] (seconds) × values [lo, hi]. */
  onBox?(from: number, to: number, lo: number, hi: number): void;
  /** Click on the graph at time `t` (seconds), nearest series index or -1. */
  onClick(t: number, series: number, ev: MouseEvent): void;
}

/** The titled box every chart is drawn in, appended to `el`. */
function chartFrame(el: HTMLElement, title: string): HTMLDivElement {
  const wrap = document.createElement("div");
  wrap.className = "chart";
  wrap.dataset.calc = title;
  const h3 = document.createElement("h3");
  h3.textContent = title;
  wrap.append(h3);
  el.append(wrap);
  return wrap;
}

/** The colour of a marker: its type's setting, else one of the palette's picked by its type. */
export function markerColor(m: Marker): string {
  if (m.color) return m.color;
  let h = 0;
  for (const c of m.type ?? "") h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return PALETTE[(h + 3) % PALETTE.length];
}

/** Where markers are drawn: a positioned element over a plot area [left, left+width] × [top, top+height]. */
interface MarkerLayer { el: HTMLElement; left: number; top: number; width: number; height: number; x(t: number): number }

/**
 * Markers over a graph: a line at `start_time`, or a shaded span to `end_time`, in the colour of
 * their type, with a flag on top that shows the message (and link) on hover. The line and span
 * let the pointer through, so dragging and clicking on the graph work as without them.
 */
function drawMarkers(layer: MarkerLayer, markers: Marker[]) {
  const right = layer.left + layer.width;
  for (const m of markers) {
    const color = markerColor(m);
    const x0 = layer.x(m.start_time);
    const x1 = m.end_time != null ? layer.x(m.end_time) : x0;
    if (x1 < layer.left || x0 > right) continue;
    const a = Math.max(layer.left, x0), b = Math.min(right, x1);
    const mark = document.createElement("div");
    mark.className = m.end_time != null ? "marker-span" : "marker-line";
    mark.style.left = `${a}px`;
    mark.style.top = `${layer.top}px`;
    mark.style.height = `${layer.height}px`;
    if (m.end_time != null) {
      mark.style.width = `${Math.max(2, b - a)}px`;
      mark.style.background = `${color}2e`;
      mark.style.borderLeft = mark.style.borderRight = `1px solid ${color}`;
    } else {
      mark.style.borderLeft = `2px solid ${color}`;
    }
    const flag = document.createElement("div");
    flag.className = "marker-flag";
    flag.dataset.markerId = m.id;
    flag.style.left = `${a - 5}px`;
    flag.style.top = `${layer.top}px`;
    flag.style.background = color;
    const tip = document.createElement("div");
    tip.className = "marker-tip";
    const when = new Date(m.start_time * 1000).toISOString().slice(0, 19).replace("T", " ")
      + (m.end_time != null ? ` – ${new Date(m.end_time * 1000).toISOString().slice(11, 19)}` : "") + " UTC";
    const msg = document.createElement(m.url ? "a" : "div");
    msg.className = "marker-message";
    msg.textContent = m.message || "(no message)";
    if (m.url && msg instanceof HTMLAnchorElement) {
      msg.href = m.url;
      msg.target = "_blank";
      msg.rel = "noopener noreferrer";
    }
    const meta = document.createElement("div");
    meta.className = "dim";
    meta.textContent = `${m.type ? m.type + " · " : ""}${when}`;
    tip.append(msg, meta);
    flag.append(tip);
    // The flag takes the pointer for its hover; it must not start a drag on the graph below.
    flag.addEventListener("mousedown", (ev) => ev.stopPropagation());
    flag.addEventListener("click", (ev) => ev.stopPropagation());
    layer.el.append(mark, flag);
  }
}

/** A line chart of one calculation, with the markers in its range; returns the uPlot instance (for highlighting). */
export function lineChart(
  el: HTMLElement, title: string, times: number[], series: LineSeries[], h: ChartHandlers, markers: Marker[] = [],
): uPlot {
  const wrap = chartFrame(el, title);
  const width = Math.max(400, el.clientWidth - 16);
  const opts: uPlot.Options = {
    width,
    height: 200,
    cursor: { drag: { x: true, y: false, setScale: false }, focus: { prox: 24 } },
    focus: { alpha: 0.25 },
    // The legend's marker is dashed for a dashed line (the earlier period of a comparison).
    legend: { live: true, markers: { dash: (u: uPlot, i: number) => (u.series[i].dash ? "dashed" : "solid") } },
    scales: { x: { time: true } },
    axes: [
      { stroke: "#8a95a3", grid: { stroke: "#2a3038" }, ticks: { stroke: "#2a3038" } },
      { stroke: "#8a95a3", grid: { stroke: "#2a3038" }, ticks: { stroke: "#2a3038" }, size: 60 },
    ],
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        stroke: s.color ?? PALETTE[i % PALETTE.length],
        width: 1.5,
        ...(s.dashed ? { dash: [6, 4] } : {}),
        spanGaps: false,
        points: { show: times.length < 60 },
      })),
    ],
    hooks: {
      // Markers once the scales are set (uPlot sets them after the first draw is committed).
      ready: [
        (u: uPlot) => {
          if (!markers.length) return;
          const x = (t: number) => u.valToPos(t, "x");
          drawMarkers({ el: u.over, left: 0, top: 0, width: u.over.clientWidth, height: u.over.clientHeight, x }, markers);
        },
      ],
      setSelect: [
        (u: uPlot) => {
          if (u.select.width > 4) {
            const from = u.posToVal(u.select.left, "x");
            const to = u.posToVal(u.select.left + u.select.width, "x");
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
            h.onZoom(from, to);
          }
        },
      ],
    },
  };
  const data: uPlot.AlignedData = [times, ...series.map((s) => s.values)];
  const u = new uPlot(opts, data, wrap);
  u.over.addEventListener("click", (ev) => {
    if (u.cursor.idx == null) return;
    let best = -1;
    let bestDist = Infinity;
    const top = u.cursor.top ?? 0;
    series.forEach((s, i) => {
      const v = s.values[u.cursor.idx!];
      if (v == null) return;
      const d = Math.abs(u.valToPos(v, "y") - top);
      if (d < bestDist) {
        bestDist = d;
        best = i;
      }
    });
    h.onClick(times[u.cursor.idx], best, ev);
  });
  return u;
}

export interface Heatmap { min: number; max: number; bucket_width: number; counts: number[] }

/** A heatmap: time × value buckets, colour by (log) weighted count, with the markers in its range. */
export function heatmapChart(
  el: HTMLElement, title: string, times: number[], cells: (Heatmap | null)[], stepSeconds: number, h: ChartHandlers,
  markers: Marker[] = [],
): HTMLCanvasElement {
  const wrap = chartFrame(el, title);
  const canvas = document.createElement("canvas");
  canvas.className = "heatmap";
  const width = Math.max(400, el.clientWidth - 16);
  const height = 220;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = width * dpr;
  canvas.height = height * dpr;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  wrap.append(canvas);
  const ctx = canvas.getContext("2d")!;
  ctx.scale(dpr, dpr);
  const left = 60, bottom = 22, plotW = width - left - 8, plotH = height - bottom - 6;
  const first = cells.find((c) => c) ?? null;
  ctx.fillStyle = "#171b21";
  ctx.fillRect(0, 0, width, height);
  if (!first || times.length === 0) {
    ctx.fillStyle = "#8a95a3";
    ctx.fillText("no values", left + 10, 30);
    return canvas;
  }
  const nb = first.counts.length;
  const t0 = times[0];
  const t1 = times[times.length - 1] + stepSeconds;
  const x = (t: number) => left + ((t - t0) / (t1 - t0)) * plotW;
  const maxCount = Math.max(1, ...cells.flatMap((c) => (c ? c.counts : [0])));
  const cellH = plotH / nb;
  cells.forEach((c, i) => {
    if (!c) return;
    const x0 = x(times[i]);
    const w = Math.max(1, x(times[i] + stepSeconds) - x0);
    c.counts.forEach((n, b) => {
      if (n <= 0) return;
      const intensity = Math.log1p(n) / Math.log1p(maxCount);
      ctx.fillStyle = `rgba(245, 165, 36, ${0.12 + 0.88 * intensity})`;
      ctx.fillRect(x0, 6 + plotH - (b + 1) * cellH, w, Math.ceil(cellH));
    });
  });
  ctx.fillStyle = "#8a95a3";
  ctx.font = "11px system-ui";
  for (let k = 0; k <= 4; k++) {
    const v = first.min + ((first.max - first.min) * k) / 4;
    ctx.fillText(formatNumber(v), 4, 6 + plotH - (plotH * k) / 4 + 4);
  }
  for (let k = 0; k <= 4; k++) {
    const t = t0 + ((t1 - t0) * k) / 4;
    ctx.fillText(new Date(t * 1000).toISOString().slice(11, 19), left + (plotW * k) / 4 - 20, height - 6);
  }
  // Drag a box to select (BubbleUp), or to zoom in time when no box handler is given; click
  // for the menu.
  wrap.style.position = "relative";
  const box = document.createElement("div");
  box.className = "hm-box";
  box.hidden = true;
  wrap.append(box);
  const valueAt = (y: number) => first.min + ((plotH - (y - 6)) / plotH) * (first.max - first.min);
  const tAt = (x: number) => t0 + ((x - left) / plotW) * (t1 - t0);
  let from: [number, number] | null = null;
  const place = (a: [number, number], b: [number, number]) => {
    box.hidden = false;
    box.style.left = `${canvas.offsetLeft + Math.min(a[0], b[0])}px`;
    box.style.top = `${canvas.offsetTop + Math.min(a[1], b[1])}px`;
    box.style.width = `${Math.abs(a[0] - b[0])}px`;
    box.style.height = `${Math.abs(a[1] - b[1])}px`;
  };
  canvas.addEventListener("mousedown", (ev) => {
    from = [ev.offsetX, ev.offsetY];
    box.hidden = true;
  });
  canvas.addEventListener("mousemove", (ev) => {
    if (from && h.onBox) place(from, [ev.offsetX, ev.offsetY]);
  });
  canvas.addEventListener("mouseup", (ev) => {
    const to: [number, number] = [ev.offsetX, ev.offsetY];
    if (from && Math.abs(to[0] - from[0]) > 4) {
      const [ta, tb] = [tAt(Math.min(from[0], to[0])), tAt(Math.max(from[0], to[0]))];
      if (h.onBox && Math.abs(to[1] - from[1]) > 4) {
        place(from, to);
        h.onBox(ta, tb, valueAt(Math.max(from[1], to[1])), valueAt(Math.min(from[1], to[1])));
      } else {
        box.hidden = true;
        h.onZoom(ta, tb);
      }
    } else {
      box.hidden = true;
      h.onClick(tAt(ev.offsetX), -1, ev);
    }
    from = null;
  });
  drawMarkers({ el: wrap, left: canvas.offsetLeft + left, top: canvas.offsetTop + 6, width: plotW, height: plotH, x: (t) => canvas.offsetLeft + x(t) }, markers);
  return canvas;
}

export function formatNumber(v: unknown): string {
  if (typeof v !== "number") return v == null ? "" : String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(3) : v.toPrecision(3);
}

// An SLO's page (`/?dataset=DS&slo=ID`): compliance and budget left over its window, the budget
// burndown and burn rate hour by hour, each day's compliance, the SLI's pass and fail over time
// with a heatmap of durations when the dataset has them, and BubbleUp of fail against pass. All
// from `GET /api/slos/{dataset}/{id}` (the SLO's per-minute counters) and the query API.

import { api, errorText, type QueryAnswer, type QuerySpec } from "../api";
import type { Catalog } from "../catalog";
import { formatNumber, heatmapChart, lineChart, type ChartHandlers } from "../charts";
import { el } from "../dom";
import { heatmapCells, timeAxis, toLines } from "../series";
import { encodeUrl } from "../state";
import { renderBubbleUp } from "../bubbleup";

/** What `GET /api/slos/{dataset}/{id}` answers. */
export interface SloPage {
  slo: { id: string; name: string; description?: string; sli: { alias: string }; time_period_days: number; target_per_million: number };
  figures: { good: number; bad: number; compliance: number; budget_remaining: number };
  window: { start_time: number; end_time: number };
  hours: { time: number; budget_remaining: number; burn_rate: number | null }[];
  days: { day: number; good: number; bad: number; compliance: number }[];
}

const pct = (v: number) => `${v.toFixed(3)}%`;
const none: ChartHandlers = { onZoom: () => {}, onClick: () => {} };

/** A small summary of an SLO (for a board's SLO panel), into `body`. */
export async function sloSummary(body: HTMLElement, ds: string, id: string): Promise<string> {
  const p = await api.sloPage(ds, id);
  body.replaceChildren(
    el("div", { className: "slo-figures" },
      figure("Compliance", pct(p.figures.compliance), `target ${pct(p.slo.target_per_million / 10_000)}`),
      figure("Budget left", pct(p.figures.budget_remaining), `${formatNumber(p.figures.bad)} bad of ${formatNumber(p.figures.good + p.figures.bad)}`)),
  );
  return p.slo.name;
}

function figure(label: string, value: string, sub: string): HTMLElement {
  return el("div", { className: "slo-figure" }, el("div", { className: "dim", textContent: label }), el("div", { className: "big", textContent: value }),
    el("div", { className: "dim", textContent: sub }));
}

/** Shows the SLO page in `root`. */
export async function showSlo(root: HTMLElement, ds: string, id: string, catalog: Catalog) {
  root.replaceChildren(el("div", { className: "status", textContent: "Loading the SLO…" }));
  let p: SloPage;
  try {
    p = await api.sloPage(ds, id);
  } catch (e) {
    root.replaceChildren(el("div", { className: "error", textContent: errorText(e) }));
    return;
  }
  const { slo, figures } = p;
  const alias = slo.sli.alias;
  const head = el("div", { className: "board-head" }, el("h2", { id: "slo-name", textContent: slo.name }),
    el("span", { className: "dim", textContent: `${ds} · SLI ${alias} · ${slo.time_period_days} day${slo.time_period_days > 1 ? "s" : ""}` }));
  const figs = el("div", { className: "slo-figures", id: "slo-figures" },
    figure("Compliance", pct(figures.compliance), `target ${pct(slo.target_per_million / 10_000)}`),
    figure("Budget left", pct(figures.budget_remaining), `${formatNumber(figures.bad)} bad of ${formatNumber(figures.good + figures.bad)} qualified`));
  const charts = el("div", { id: "slo-charts" });
  const daysTable = el("table", { className: "grid", id: "slo-days" },
    el("thead", {}, el("tr", {}, ...["day (UTC)", "good", "bad", "compliance"].map((h) => el("th", { textContent: h })))),
    el("tbody", {}, ...p.days.map((d) => el("tr", {},
      el("td", { textContent: new Date(d.day * 1000).toISOString().slice(0, 10) }),
      el("td", { className: "num", textContent: formatNumber(d.good) }),
      el("td", { className: "num", textContent: formatNumber(d.bad) }),
      el("td", { className: "num", textContent: pct(d.compliance) })))));
  const bu = el("div", { id: "slo-bubbleup", className: "panel" });
  root.replaceChildren(head, figs, charts, el("h3", { textContent: "Each day" }), daysTable, el("h3", { textContent: "What is different about failing events (BubbleUp)" }), bu);

  const times = p.hours.map((h) => h.time);
  lineChart(charts, "Budget burndown (% of the error budget left)", times, [{ label: "budget left", values: p.hours.map((h) => h.budget_remaining) }], none);
  lineChart(charts, "Burn rate (1 = exactly the budget)", times, [{ label: "burn rate", values: p.hours.map((h) => h.burn_rate) }], none);
  // Pass and fail over the window, from the events (the link opens it in the query builder).
  const range = { start_time: p.window.start_time, end_time: p.window.end_time };
  const passFail: QuerySpec = { calculations: [{ op: "COUNT" }], filters: [{ column: alias, op: "exists" }], breakdowns: [alias], orders: [], havings: [], ...range };
  try {
    const cols = new Set((await api.columns(ds)).columns.map((c) => c.name));
    const answer: QueryAnswer = await api.query(ds, passFail);
    const axis = timeAxis(answer.meta);
    lineChart(charts, `COUNT by ${alias} (pass true, fail false)`, axis.times, toLines(answer, null, [alias], "COUNT", false), none);
    if (cols.has("duration_ms")) {
      const hm: QuerySpec = { ...passFail, calculations: [{ op: "HEATMAP", column: "duration_ms" }], breakdowns: [] };
      const h = await api.query(ds, hm);
      heatmapChart(charts, "HEATMAP(duration_ms) of qualified events", timeAxis(h.meta).times, heatmapCells(h, "HEATMAP(duration_ms)"), h.meta.granularity, none);
    }
    charts.append(el("a", { href: encodeUrl("/", { dataset: ds, spec: passFail }), textContent: "Open pass and fail in the query builder" }));
    const answerBu = await api.bubbleup(ds, { ...range, filters: [{ column: alias, op: "exists" }], selection: { group: { [alias]: false } } });
    renderBubbleUp(bu, answerBu, `failing (${alias} = false) against passing`, () => {});
  } catch (e) {
    charts.append(el("div", { className: "error", textContent: errorText(e) }));
  }
  void catalog;
}

// The panels opened over the results: BubbleUp (what is different about a selection) and a
// trace's waterfall. Each shows "loading" until its answer (or error) arrives.

import { renderBubbleUp, type BubbleAnswer, type BubbleColumn } from "../bubbleup";
import { formatNumber } from "../charts";
import { changed, el, openMenu, type MenuItem } from "../dom";
import * as edit from "../spec-edit";
import { onSpec, type Dispatch, type Panel } from "../state";
import { renderTrace, type TraceAnswer } from "../trace";

/** A panel's answer: for which request, and what came back. */
export type PanelAnswer = { for: Panel } & ({ bubbleup: BubbleAnswer } | { trace: TraceAnswer } | { error: string });

export interface PanelsProps { panel: Panel | null; answer: PanelAnswer | null }

export function render(at: { bubbleup: HTMLElement; trace: HTMLElement }, props: PanelsProps, dispatch: Dispatch) {
  if (!changed(at.bubbleup, { ...props })) return;
  const p = props.panel;
  const answer = props.answer?.for === p ? props.answer : null;
  at.bubbleup.hidden = p?.kind !== "bubbleup";
  at.trace.hidden = p?.kind !== "trace";
  if (!p) return;
  const box = p.kind === "bubbleup" ? at.bubbleup : at.trace;
  if (!answer) {
    const text = p.kind === "bubbleup" ? "BubbleUp: comparing the selection with the rest…" : `Loading trace ${p.traceId}…`;
    box.replaceChildren(el("div", { className: "status", textContent: text }));
    if (p.kind === "trace") box.scrollIntoView({ block: "start" });
  } else if ("error" in answer) {
    box.replaceChildren(el("div", { className: "error", textContent: answer.error }));
  } else if ("trace" in answer) {
    renderTrace(box, answer.trace, () => dispatch((s) => ({ ...s, panel: null })));
  } else if (p.kind === "bubbleup" && "bubbleup" in answer) {
    const selection = p.selection;
    renderBubbleUp(box, answer.bubbleup, p.title, (col, value, range, ev) => openMenu(ev, bubbleActions(col, value, range, dispatch)));
    const showEvents = () => dispatch(onSpec((s) => edit.selectionEvents(s, selection)), "run");
    box.querySelector(".bu-head")?.append(el("button", { textContent: "Show events in the selection", id: "bubbleup-events", onclick: showEvents }));
    box.scrollIntoView({ block: "nearest" });
  }
}

/** What can be done with a clicked BubbleUp bar: filter by its value (or range), group by its column. */
function bubbleActions(col: BubbleColumn, value: unknown, range: [number, number] | null, dispatch: Dispatch): MenuItem[] {
  const c = col.column;
  const filter = (label: string, ...fs: Parameters<typeof edit.addFilters>[1][]): MenuItem =>
    [label, () => dispatch(onSpec((s) => edit.addFilters(s, ...fs)), "run")];
  const acts: MenuItem[] = [];
  if (range) acts.push(filter(`Filter: ${formatNumber(range[0])} <= ${c} < ${formatNumber(range[1])}`, ...edit.rangeFilters(c, range[0], range[1])));
  else if (value === null) acts.push(filter(`Filter: ${c} does not exist`, { column: c, op: "does-not-exist" }));
  else {
    acts.push(filter(`Filter: ${c} = ${String(value)}`, { column: c, op: "=", value }));
    acts.push(filter(`Filter: ${c} != ${String(value)}`, { column: c, op: "!=", value }));
  }
  acts.push([`Group by ${c}`, () => dispatch(onSpec((s) => edit.addBreakdown(s, c)), "run")]);
  return acts;
}

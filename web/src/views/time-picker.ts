// The time range: a preset (the last hour, …) or a custom absolute range, in UTC. Built once; a
// render shows the spec's range without disturbing a date being typed.

import type { QuerySpec } from "../api";
import { changed, el, input, setOptions, setValue } from "../dom";
import * as edit from "../spec-edit";
import { onSpec, type Dispatch } from "../state";

const PRESETS: [string, number][] = [
  ["Last 10 minutes", 600], ["Last hour", 3600], ["Last 6 hours", 21600], ["Last 24 hours", 86400], ["Last 7 days", 604800],
];

export interface TimePickerProps { spec: QuerySpec }

interface Parts { preset: HTMLSelectElement; from: HTMLInputElement; to: HTMLInputElement; utc: HTMLElement; compare: HTMLSelectElement }

const COMPARE: [string, string][] = [
  ["0", "No comparison"], ["1800", "vs 30 minutes before"], ["3600", "vs 1 hour before"], ["86400", "vs 1 day before"], ["604800", "vs 1 week before"],
];
const built = new WeakMap<HTMLElement, Parts>();

const toLocal = (secs: number) => new Date(secs * 1000).toISOString().slice(0, 19);
const fromLocal = (v: string) => Math.floor(Date.parse(v + "Z") / 1000);

function build(container: HTMLElement, dispatch: Dispatch): Parts {
  const preset = el("select", { id: "time-preset" });
  setOptions(preset, [...PRESETS.map(([label, secs]): [string, string] => [String(secs), label]), ["custom", "Custom range"]]);
  const from = input({ type: "datetime-local", step: "1", id: "time-from" });
  const to = input({ type: "datetime-local", step: "1", id: "time-to" });
  preset.onchange = () => {
    const v = preset.value;
    const now = Math.floor(Date.now() / 1000);
    dispatch(onSpec((s) => (v === "custom" ? edit.setCustomRange(s, now) : edit.setTimeRange(s, Number(v)))));
  };
  from.onchange = () => dispatch(onSpec((s) => edit.setStartTime(s, fromLocal(from.value))));
  to.onchange = () => dispatch(onSpec((s) => edit.setEndTime(s, fromLocal(to.value))));
  const utc = el("span", { className: "status" });
  const compare = el("select", { id: "compare", title: "Draw the same query over an earlier period, dashed" });
  setOptions(compare, COMPARE);
  compare.onchange = () => dispatch(onSpec((s) => edit.setCompare(s, Number(compare.value))));
  container.replaceChildren(preset, from, to, utc, compare);
  return { preset, from, to, utc, compare };
}

export function render(container: HTMLElement, props: TimePickerProps, dispatch: Dispatch) {
  let p = built.get(container);
  if (!p) built.set(container, (p = build(container, dispatch)));
  if (!changed(container, { spec: props.spec })) return;
  const s = props.spec;
  const custom = s.start_time !== undefined && s.end_time !== undefined;
  setValue(p.preset, custom ? "custom" : String(s.time_range ?? 3600));
  setValue(p.from, custom ? toLocal(s.start_time!) : "");
  setValue(p.to, custom ? toLocal(s.end_time!) : "");
  p.from.hidden = p.to.hidden = !custom;
  p.utc.textContent = custom ? "UTC" : "";
  const offset = String(s.compare_time_offset_seconds ?? 0);
  if (!COMPARE.some(([v]) => v === offset)) setOptions(p.compare, [...COMPARE, [offset, `vs ${offset} s before`]]);
  setValue(p.compare, offset);
}

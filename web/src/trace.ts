// The trace waterfall: spans as bars on a shared time axis, nested by parent, coloured by
// service, errors marked; a side panel shows the selected span's fields.

import { PALETTE, formatNumber } from "./charts";

export interface TraceNode { span_id: string; index: number; children: TraceNode[]; missing_parent?: boolean }
export interface TraceAnswer {
  trace_id: string;
  spans: Record<string, unknown>[];
  tree: TraceNode[];
  meta: { elapsed_ms: number; row_groups_pruned_by_bloom_filter: number; datasets_searched: number };
}

const ms = (iso: unknown) => Date.parse(String(iso));

export function renderTrace(el: HTMLElement, t: TraceAnswer, onClose: () => void) {
  const rows: { node: TraceNode; depth: number }[] = [];
  const walk = (n: TraceNode, depth: number) => {
    rows.push({ node: n, depth });
    n.children.forEach((c) => walk(c, depth + 1));
  };
  t.tree.forEach((n) => walk(n, 0));
  const start = Math.min(...t.spans.map((s) => ms(s.timestamp)));
  const end = Math.max(...t.spans.map((s) => ms(s.timestamp) + Number(s.duration_ms ?? 0)));
  const total = Math.max(end - start, 1);
  const services = [...new Set(t.spans.map((s) => String(s["service.name"] ?? s.dataset)))];
  const colour = (s: Record<string, unknown>) => PALETTE[services.indexOf(String(s["service.name"] ?? s.dataset)) % PALETTE.length];

  const head = document.createElement("div");
  head.className = "bu-head";
  const h3 = document.createElement("h3");
  h3.textContent = `Trace ${t.trace_id}`;
  const info = document.createElement("span");
  info.className = "status";
  info.textContent = `${t.spans.length} spans · ${services.length} services · ${formatNumber(total)} ms · found in ${t.meta.elapsed_ms.toFixed(0)} ms`;
  const close = document.createElement("button");
  close.textContent = "Close";
  close.onclick = onClose;
  head.append(h3, info, close);

  const body = document.createElement("div");
  body.className = "wf";
  const list = document.createElement("div");
  list.className = "wf-rows";
  const panel = document.createElement("div");
  panel.className = "wf-panel";
  panel.textContent = "Click a span to see its fields.";
  for (const { node, depth } of rows) {
    const s = t.spans[node.index];
    const row = document.createElement("div");
    row.className = "wf-row";
    row.dataset.span = node.span_id;
    const label = document.createElement("span");
    label.className = "wf-label";
    label.style.paddingLeft = `${depth * 14}px`;
    label.textContent = `${s["service.name"] ?? s.dataset} ${s.name ?? node.span_id}${node.missing_parent ? " (parent missing)" : ""}`;
    const lane = document.createElement("span");
    lane.className = "wf-lane";
    const b = document.createElement("span");
    b.className = "wf-bar";
    const isError = s.error === true || String(s.status_code ?? "").toUpperCase().includes("ERROR");
    if (isError) b.classList.add("error");
    b.style.left = `${((ms(s.timestamp) - start) / total) * 100}%`;
    b.style.width = `${Math.max((Number(s.duration_ms ?? 0) / total) * 100, 0.3)}%`;
    b.style.background = colour(s);
    b.title = `${formatNumber(Number(s.duration_ms ?? 0))} ms`;
    lane.append(b);
    const dur = document.createElement("span");
    dur.className = "wf-dur";
    dur.textContent = `${formatNumber(Number(s.duration_ms ?? 0))} ms${isError ? " ⚠" : ""}`;
    row.append(label, lane, dur);
    row.addEventListener("click", () => {
      list.querySelectorAll(".wf-row.selected").forEach((r) => r.classList.remove("selected"));
      row.classList.add("selected");
      const table = document.createElement("table");
      table.className = "grid";
      for (const [k, v] of Object.entries(s).sort(([a], [b]) => a.localeCompare(b))) {
        const tr = document.createElement("tr");
        const kd = document.createElement("td");
        kd.textContent = k;
        const vd = document.createElement("td");
        vd.textContent = String(v);
        tr.append(kd, vd);
        table.append(tr);
      }
      panel.replaceChildren(table);
    });
    list.append(row);
  }
  body.append(list, panel);
  el.replaceChildren(head, body);
}

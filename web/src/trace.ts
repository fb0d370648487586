// The trace waterfall: spans as bars on a shared time axis, nested by parent, coloured by
// service, errors marked; a side panel shows the selected span's fields.

import { PALETTE, formatNumber } from "./charts";

// The server sends the tree flat, in depth-first order (parent before child), each span once:
// identical copies are folded into `duplicates`, halves of a shared span id are marked, and a
// broken cycle is marked where it was cut.
export interface TraceNode {
  span_id: string | null;
  index: number;
  parent: number | null;
  depth: number;
  missing_parent?: boolean;
  cycle?: boolean;
  shared_id?: boolean;
  duplicates?: number[];
}
export interface TraceAnswer {
  trace_id: string;
  spans: Record<string, unknown>[];
  tree: TraceNode[];
  meta: { elapsed_ms: number; row_groups_pruned_by_bloom_filter: number; datasets_searched: number };
}

const ms = (iso: unknown) => Date.parse(String(iso));

export function renderTrace(el: HTMLElement, t: TraceAnswer, onClose: () => void) {
  const rows = t.tree.map((node) => ({ node, depth: node.depth }));
  const marks = (n: TraceNode) =>
    [
      n.missing_parent ? " (parent missing)" : "",
      n.cycle ? " (cycle cut here)" : "",
      n.shared_id ? " (shared span id)" : "",
      n.duplicates?.length ? ` (×${n.duplicates.length + 1} copies)` : "",
    ].join("");
  // A loop, not Math.min(...spans): spreading a very large trace overflows the call stack.
  let start = Infinity;
  let end = -Infinity;
  for (const s of t.spans) {
    start = Math.min(start, ms(s.timestamp));
    end = Math.max(end, ms(s.timestamp) + Number(s.duration_ms ?? 0));
  }
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
    row.dataset.span = node.span_id ?? "";
    const label = document.createElement("span");
    label.className = "wf-label";
    // Deep traces: indentation stops growing past 40 levels (the depth is in the tooltip).
    label.style.paddingLeft = `${Math.min(depth, 40) * 14}px`;
    label.title = `depth ${depth}`;
    label.textContent = `${s["service.name"] ?? s.dataset} ${s.name ?? node.span_id}${marks(node)}`;
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

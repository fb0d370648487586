// The SQL tab: an editor, the tables one can query (every dataset and its columns), the answer;
// an error from the parser puts the cursor where it points.

import type { Column, SqlAnswer } from "../api";
import { changed, el } from "../dom";

export interface SqlResult { status: string; answer: SqlAnswer | null; error: string | null }
export interface SqlProps {
  tables: { name: string; columns: Column[] }[];
  result: SqlResult;
  /** Runs the SQL typed. */
  run: (sql: string) => void;
}

/** `container` holds the editor (`#sql-text`, `#sql-run`, …) of index.html. */
export function render(container: HTMLElement, props: SqlProps) {
  const part = <T extends HTMLElement>(id: string) => container.querySelector<T>(`#${id}`)!;
  const text = part<HTMLTextAreaElement>("sql-text");
  part("sql-run").onclick = () => props.run(text.value);
  if (changed(part("sql-tables"), { tables: props.tables })) {
    part("sql-tables").replaceChildren(
      ...props.tables.flatMap((t) => [
        el("b", { textContent: `"${t.name}"` }),
        ...t.columns.map((c) => el("div", { textContent: `"${c.name}" ${c.type}` })),
      ]),
    );
  }
  if (!changed(part("sql-results"), { result: props.result })) return;
  const { status, answer: a, error } = props.result;
  part("sql-status").textContent = status;
  const err = part("sql-error");
  err.hidden = !error;
  err.textContent = error ?? "";
  if (a) {
    const head = el("tr", {}, ...a.columns.map((c) => el("th", { textContent: c.name, title: c.type })));
    const rows = a.rows.map((r) => el("tr", {}, ...a.columns.map((c) => el("td", { textContent: r[c.name] === null ? "NULL" : String(r[c.name]) }))));
    part("sql-results").replaceChildren(el("table", { className: "grid", id: "sql-table" }, el("thead", {}, head), el("tbody", {}, ...rows)));
  }
  // Point at the error: DataFusion's parser reports "Line: L, Column: C".
  const m = error ? /Line: (\d+), Column: (\d+)/.exec(error) : null;
  if (m) {
    const lines = text.value.split("\n");
    const line = Math.min(Number(m[1]), lines.length) - 1;
    const pos = lines.slice(0, line).reduce((n, l) => n + l.length + 1, 0) + Number(m[2]) - 1;
    text.focus();
    text.setSelectionRange(pos, Math.min(pos + 1, text.value.length));
  }
}

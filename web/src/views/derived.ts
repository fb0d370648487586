// The derived-column editor: a dialog listing the dataset's derived columns, with an
// expression editor that colours tokens, suggests functions and `$columns` as you type, points
// at the server's error where it is, and previews the first values over the query's time range.
// The server checks everything; the editor only shows what it says.

import { ApiError, api, errorText, type Column, type DerivedColumn } from "../api";
import { el } from "../dom";
import { completions, tokenize, type Completion, type FuncInfo } from "../expr";

export interface EditorContext {
  dataset: string;
  columns: Column[];
  functions: FuncInfo[];
  /** The query's time range, for the preview. */
  range: Record<string, number>;
  /** Called after a derived column was saved or deleted (the schema changed). */
  onChanged: () => void;
}

/** Opens the editor over the page. */
export function open(ctx: EditorContext) {
  document.getElementById("derived-dialog")?.remove();
  const dialog = el("dialog", { id: "derived-dialog", className: "derived-dialog" });
  const list = el("ul", { id: "derived-list" });
  const alias = el("input", { id: "derived-alias", placeholder: "alias, e.g. kind" });
  const description = el("input", { id: "derived-description", placeholder: "description (optional)" });
  const highlight = el("pre", { id: "derived-highlight", className: "expr-highlight" });
  const text = el("textarea", {
    id: "derived-expression", className: "expr-text", spellcheck: false, rows: 3,
    placeholder: 'IF(GTE($http.status_code, 500), "error", "ok")',
  });
  const suggest = el("ul", { id: "derived-complete", className: "expr-complete" });
  const error = el("div", { id: "derived-error", className: "error", hidden: true });
  const preview = el("div", { id: "derived-preview" });
  const status = el("span", { className: "status", id: "derived-status" });
  let editing: DerivedColumn | null = null;
  let errorAt: number | null = null;
  let items: Completion[] = [];
  let replaceFrom = 0;

  const paint = () => {
    highlight.replaceChildren(
      ...tokenize(text.value).flatMap((t) => {
        const chars = [...t.text];
        // The character the error points at gets its own mark.
        if (errorAt !== null && errorAt >= t.start && errorAt < t.start + chars.length) {
          const k = errorAt - t.start;
          return [
            el("span", { className: `tk-${t.kind}`, textContent: chars.slice(0, k).join("") }),
            el("span", { className: "tk-error", textContent: chars[k] }),
            el("span", { className: `tk-${t.kind}`, textContent: chars.slice(k + 1).join("") }),
          ];
        }
        return [el("span", { className: `tk-${t.kind}`, textContent: t.text })];
      }),
      // At the end of the text: a mark after the last character.
      ...(errorAt !== null && errorAt >= [...text.value].length ? [el("span", { className: "tk-error", textContent: " " })] : []),
      "\n",
    );
  };
  const showError = (e: unknown) => {
    const pos = e instanceof ApiError ? e.position : undefined;
    errorAt = pos ?? null;
    error.hidden = false;
    error.textContent = pos === undefined ? errorText(e) : `${errorText(e)} — at character ${pos}`;
    paint();
  };
  const clearError = () => {
    errorAt = null;
    error.hidden = true;
    paint();
  };
  const refreshSuggestions = () => {
    const cursor = [...text.value.slice(0, text.selectionStart)].length;
    const c = completions(text.value, cursor, ctx.columns.map((c) => c.name), ctx.functions);
    items = c.items;
    replaceFrom = c.start;
    suggest.replaceChildren(...items.map((it, i) => {
      const li = el("li", { textContent: it.label, title: it.detail });
      li.dataset.index = String(i);
      li.addEventListener("mousedown", (ev) => {
        ev.preventDefault();
        accept(i);
      });
      return li;
    }));
    suggest.hidden = items.length === 0;
  };
  const accept = (i: number) => {
    const chars = [...text.value];
    const cursor = [...text.value.slice(0, text.selectionStart)].length;
    const next = [...chars.slice(0, replaceFrom), ...items[i].insert, ...chars.slice(cursor)].join("");
    const at = replaceFrom + [...items[i].insert].length;
    text.value = next;
    const offset = [...next].slice(0, at).join("").length;
    text.setSelectionRange(offset, offset);
    text.focus();
    clearError();
    refreshSuggestions();
  };
  text.addEventListener("input", () => {
    clearError();
    refreshSuggestions();
  });
  text.addEventListener("scroll", () => (highlight.scrollTop = text.scrollTop));
  text.addEventListener("keydown", (ev) => {
    if (ev.key === "Tab" && items.length && !suggest.hidden) {
      ev.preventDefault();
      accept(0);
    } else if (ev.key === "Escape") {
      suggest.hidden = true;
    }
  });
  text.addEventListener("blur", () => (suggest.hidden = true));

  const runPreview = async () => {
    status.textContent = "Checking…";
    try {
      const name = "preview";
      const a = await api.events(ctx.dataset, {
        ...ctx.range, calculated_fields: [{ name, expression: text.value }], columns: [name], limit: 10,
      });
      clearError();
      preview.replaceChildren(el("table", { className: "grid", id: "derived-preview-table" },
        el("thead", {}, el("tr", {}, el("th", { textContent: "timestamp" }), el("th", { textContent: "value" }))),
        el("tbody", {}, ...a.events.map((e) => el("tr", {},
          el("td", { textContent: String(e.timestamp ?? "") }),
          el("td", { textContent: e[name] === undefined ? "(null)" : JSON.stringify(e[name]) }))))));
      status.textContent = `${a.events.length} newest values`;
    } catch (e) {
      preview.replaceChildren();
      status.textContent = "";
      showError(e);
    }
  };
  const save = async () => {
    status.textContent = "Saving…";
    try {
      const body = { alias: alias.value.trim(), expression: text.value, description: description.value };
      if (editing) await api.updateDerived(ctx.dataset, { ...editing, ...body });
      else await api.createDerived(ctx.dataset, body);
      status.textContent = `Saved ${body.alias}`;
      clearError();
      editing = null;
      alias.disabled = false;
      ctx.onChanged();
      await reload();
    } catch (e) {
      status.textContent = "";
      showError(e);
    }
  };
  const edit = (d: DerivedColumn | null) => {
    editing = d;
    alias.value = d?.alias ?? "";
    alias.disabled = d !== null; // an alias cannot change: queries name the column by it
    text.value = d?.expression ?? "";
    description.value = d?.description ?? "";
    clearError();
    preview.replaceChildren();
  };
  const reload = async () => {
    try {
      const all = await api.derivedColumns(ctx.dataset);
      list.replaceChildren(...all.map((d) => {
        const li = el("li", {},
          el("code", { className: "alias", textContent: d.alias }),
          el("span", { className: "dim expr-inline", textContent: d.expression }),
          el("button", { textContent: "Edit", onclick: () => edit(d) }),
          el("button", {
            textContent: "Delete",
            onclick: async () => {
              try {
                await api.deleteDerived(ctx.dataset, d.id);
                ctx.onChanged();
                await reload();
              } catch (e) {
                showError(e);
              }
            },
          }));
        li.dataset.alias = d.alias;
        return li;
      }));
    } catch (e) {
      showError(e);
    }
  };

  dialog.append(
    el("h2", { textContent: `Derived columns of ${ctx.dataset}` }),
    list,
    el("div", { className: "derived-form" },
      el("div", { className: "row" }, alias, description, el("button", { textContent: "New", onclick: () => edit(null) })),
      el("div", { className: "expr-editor" }, highlight, text),
      suggest,
      error,
      el("div", { className: "row" },
        el("button", { textContent: "Preview", id: "derived-preview-button", onclick: runPreview }),
        el("button", { textContent: "Save", className: "primary", id: "derived-save", onclick: save }),
        el("button", { textContent: "Close", onclick: () => dialog.close() }),
        status),
      preview),
  );
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  suggest.hidden = true;
  paint();
  dialog.showModal();
  void reload();
}

// Saved queries: the current query kept with a name (Honeycomb's query + query annotation), and
// the sidebar list of the dataset's saved queries; a click opens one, × forgets its name (the
// query itself is immutable and stays, as Honeycomb's do).

import { api, errorText, type QueryAnnotation, type QuerySpec } from "../api";
import { changed, el } from "../dom";

export interface SavedProps {
  dataset: string;
  saved: QueryAnnotation[];
  /** Opens the saved query `queryId` of the dataset. */
  open(queryId: string): void;
  /** Forgets the saved query's name. */
  remove(a: QueryAnnotation): void;
}

export function render(container: HTMLElement, props: SavedProps) {
  if (!changed(container, { ...props })) return;
  if (!props.saved.length) {
    container.replaceChildren(el("li", { className: "dim", textContent: "None yet: “Save…” keeps the current query." }));
    return;
  }
  container.replaceChildren(
    ...props.saved.map((a) =>
      el(
        "li",
        { className: "saved-query", title: a.description || a.name, onclick: () => props.open(a.query_id) },
        el("span", { textContent: a.name }),
        el("button", {
          className: "link", textContent: "×", title: "Forget this name",
          onclick: (ev: MouseEvent) => { ev.stopPropagation(); props.remove(a); },
        }),
      ),
    ),
  );
}

/** The spec of a saved query as the builder holds it (without the id the server adds). */
export function specOf(saved: QuerySpec & { id?: string }): QuerySpec {
  const { id: _, ...spec } = saved as Partial<QuerySpec> & { id?: string };
  return { calculations: [], filters: [], breakdowns: [], orders: [], havings: [], ...spec } as QuerySpec;
}

/** Opens the dialog that saves `spec` of `dataset` under a name; `onSaved` runs once it is. */
export function openSaveDialog(dataset: string, spec: QuerySpec, onSaved: () => void) {
  document.getElementById("save-dialog")?.remove();
  const dialog = el("dialog", { id: "save-dialog", className: "derived-dialog" });
  const name = el("input", { id: "save-name", placeholder: "e.g. Slow checkouts by region", required: true, maxLength: 320 });
  const description = el("input", { id: "save-description", placeholder: "description (optional)", maxLength: 1023 });
  const error = el("div", { id: "save-error", className: "error", hidden: true });
  const form = el(
    "form",
    { method: "dialog" },
    el("h2", { textContent: `Save this query of ${dataset}` }),
    el("div", { className: "row" }, el("label", { textContent: "Name" }), name),
    el("div", { className: "row" }, el("label", { textContent: "Description" }), description),
    error,
    el(
      "div",
      { className: "row" },
      el("button", { id: "save-confirm", className: "primary", type: "submit", textContent: "Save" }),
      el("button", { type: "button", textContent: "Cancel", onclick: () => dialog.close() }),
    ),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const q = await api.saveQuery(dataset, spec);
      await api.annotate(dataset, { name: name.value.trim(), description: description.value.trim(), query_id: q.id });
      dialog.close();
      onSaved();
    } catch (e) {
      error.hidden = false;
      error.textContent = errorText(e);
    }
  });
  dialog.addEventListener("close", () => dialog.remove());
  dialog.append(form);
  document.body.append(dialog);
  dialog.showModal();
  name.focus();
}

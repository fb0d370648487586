// Saved queries: the current query kept with a name (Honeycomb's query + query annotation), and
// the sidebar list of the dataset's saved queries; a click opens one, × forgets its name (the
// query itself is immutable and stays, as Honeycomb's do).

import { api, type QueryAnnotation, type QuerySpec } from "../api";
import { changed, el, formDialog, formRow } from "../dom";

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
  const name = el("input", { id: "save-name", placeholder: "e.g. Slow checkouts by region", required: true, maxLength: 320 });
  const description = el("input", { id: "save-description", placeholder: "description (optional)", maxLength: 1023 });
  formDialog({
    id: "save-dialog", title: `Save this query of ${dataset}`, submitId: "save-confirm", submitLabel: "Save", errorId: "save-error", focus: name,
    rows: [formRow("Name", name), formRow("Description", description)],
    submit: async () => {
      const q = await api.saveQuery(dataset, spec);
      await api.annotate(dataset, { name: name.value.trim(), description: description.value.trim(), query_id: q.id });
      onSaved();
    },
  });
}

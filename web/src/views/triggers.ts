// Triggers in the UI: "Trigger…" makes one from the current query (its first calculation,
// filters and breakdowns over a time range of its own), notifying a stored recipient or the
// server's log; the sidebar lists the dataset's triggers, firing ones marked, each opening its
// query. The server checks Honeycomb's restrictions and the UI shows what it says.

import { api, errorText, type QuerySpec } from "../api";
import { el, formDialog, formRow } from "../dom";
import { encodeUrl } from "../state";

/** A trigger as listed. */
export interface TriggerInfo { id: string; name: string; triggered: boolean; query: QuerySpec; frequency: number; threshold: { op: string; value: number } }

/** The sidebar's list of `dataset`'s triggers into `container`. */
export async function listTriggers(container: HTMLElement, dataset: string) {
  try {
    const list = dataset ? await api.triggers(dataset) : [];
    container.replaceChildren(...list.map((t) => {
      const li = el("li", { className: t.triggered ? "trigger firing" : "trigger", title: `${t.threshold.op} ${t.threshold.value}, every ${t.frequency / 60} min` });
      li.append(el("a", { href: encodeUrl("/", { dataset, spec: t.query }), textContent: `${t.triggered ? "● " : ""}${t.name}` }));
      return li;
    }));
  } catch (e) {
    container.replaceChildren(el("li", { className: "error", textContent: errorText(e) }));
  }
}

/** Opens the dialog that makes a trigger of `spec`; `onMade` runs once it is stored. */
export function openTriggerDialog(dataset: string, spec: QuerySpec, onMade: () => void) {
  const name = el("input", { id: "trigger-name", placeholder: "e.g. Checkout errors", required: true, maxLength: 120 });
  const op = el("select", { id: "trigger-op" }, ...[">", ">=", "<", "<="].map((o) => el("option", { value: o, textContent: o })));
  const value = el("input", { id: "trigger-value", type: "number", step: "any", required: true });
  const every = el("input", { id: "trigger-frequency", type: "number", min: "1", value: "15", title: "minutes (1 to 1,440)" });
  const recipient = el("select", { id: "trigger-recipient" }, el("option", { value: "log", textContent: "the server's log" }));
  void api.recipients().then((list) => recipient.append(...list.map((r) =>
    el("option", { value: r.id, textContent: `${r.type}: ${String(r.details?.webhook_name ?? r.details?.webhook_url ?? r.details?.email_address ?? r.id)}` }))))
    .catch(() => {});
  const calc = spec.calculations[0];
  formDialog({
    id: "trigger-dialog", title: `Trigger on ${calc ? (calc.column ? `${calc.op}(${calc.column})` : calc.op) : "COUNT"} of ${dataset}`,
    submitId: "trigger-save", submitLabel: "Make trigger", errorId: "trigger-error", focus: name,
    rows: [formRow("Name", name), formRow("Fires when it is", op, value), formRow("Every (minutes)", every), formRow("Notify", recipient)],
    submit: async () => {
      const frequency = Math.round(Number(every.value) || 15) * 60;
      // A trigger's query: one calculation, its filters and breakdowns, over the last period.
      const query = {
        calculations: spec.calculations.slice(0, 1), filters: spec.filters, breakdowns: spec.breakdowns,
        ...(spec.filter_combination ? { filter_combination: spec.filter_combination } : {}),
        ...(spec.calculated_fields?.length ? { calculated_fields: spec.calculated_fields } : {}),
        time_range: frequency,
      };
      await api.createTrigger(dataset, {
        name: name.value.trim(), query, frequency, threshold: { op: op.value, value: Number(value.value) },
        recipients: [recipient.value === "log" ? { type: "log" } : { id: recipient.value }],
      });
      onMade();
    },
  });
}

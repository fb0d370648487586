// The "add marker" dialog: a deploy, an incident or a flag flip marked at a moment of a graph
// (or over a span of minutes from it), on this dataset's graphs or on every dataset's.

import { ALL_DATASETS, api } from "../api";
import { el, formDialog, formRow } from "../dom";

/** Opens the dialog for a marker at `at` (unix seconds); `onCreated` runs once one is stored. */
export function openMarkerDialog(dataset: string, at: number, onCreated: () => void) {
  const message = el("input", { id: "marker-message", placeholder: "e.g. backend deploy #123", required: true });
  const type = el("input", { id: "marker-type", placeholder: "e.g. deploy" });
  type.setAttribute("list", "marker-types");
  const types = el("datalist", { id: "marker-types" }, ...["deploy", "incident", "feature flag", "config change"].map((t) => el("option", { value: t })));
  const url = el("input", { id: "marker-url", placeholder: "https://… (optional)", type: "url" });
  const minutes = el("input", { id: "marker-minutes", type: "number", min: "0", step: "1", value: "0", title: "0: a moment; more: a span" });
  const everywhere = el("input", { id: "marker-all", type: "checkbox" });
  const when = new Date(at * 1000).toISOString().slice(0, 19).replace("T", " ") + " UTC";
  formDialog({
    id: "marker-dialog", title: `Add a marker at ${when}`, submitId: "marker-save", submitLabel: "Add marker", errorId: "marker-error", focus: message,
    rows: [
      formRow("Message", message),
      formRow("Type", type, types),
      formRow("Link", url),
      formRow("Lasts (minutes)", minutes),
      el("div", { className: "row" }, el("label", {}, everywhere, " on every dataset's graphs")),
    ],
    submit: async () => {
      const span = Math.max(0, Math.round(Number(minutes.value) || 0)) * 60;
      await api.createMarker(everywhere.checked ? ALL_DATASETS : dataset, {
        start_time: at,
        ...(span ? { end_time: at + span } : {}),
        message: message.value.trim(),
        type: type.value.trim(),
        url: url.value.trim(),
      });
      onCreated();
    },
  });
}

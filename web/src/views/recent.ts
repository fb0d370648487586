// Recent queries (sidebar): a click opens one again.

import type { Catalog } from "../catalog";
import { changed, el } from "../dom";
import { openQuery, type Dispatch, type Recent } from "../state";

export interface RecentProps { recent: Recent[]; catalog: Catalog }

export function render(container: HTMLElement, props: RecentProps, dispatch: Dispatch) {
  if (!changed(container, { ...props })) return;
  container.replaceChildren(
    ...props.recent.map((e) => {
      const calcs = e.spec.calculations.map((c) => props.catalog.key(c)).join(", ") || "events";
      const label = `${e.dataset}: ${calcs}${e.spec.breakdowns.length ? " by " + e.spec.breakdowns.join(", ") : ""}`;
      return el("li", { textContent: label, title: new Date(e.at).toLocaleString(), onclick: () => dispatch(openQuery(e.dataset, e.spec), "run") });
    }),
  );
}

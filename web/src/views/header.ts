// The top bar: the dataset, the Query/SQL tabs, the Run button.

import type { Dataset } from "../api";
import { $, changed, setOptions } from "../dom";
import { emptySpec, openQuery, type Dispatch, type State } from "../state";

export interface HeaderProps { datasets: Dataset[]; dataset: string; tab: State["tab"] }

export function render(container: HTMLElement, props: HeaderProps, dispatch: Dispatch) {
  const select = container.querySelector<HTMLSelectElement>("#dataset")!;
  select.onchange = () => dispatch(openQuery(select.value, emptySpec()), "run");
  $("run").onclick = () => dispatch((s) => ({ ...s, eventPage: 0 }), "run");
  $("tab-query").onclick = () => dispatch((s) => ({ ...s, tab: "query" }));
  $("tab-sql").onclick = () => dispatch((s) => ({ ...s, tab: "sql" }));
  if (!changed(container, { ...props })) return;
  setOptions(select, props.datasets.map((d) => [d.name, `${d.name} (${d.rows.toLocaleString("en-US")})`]));
  select.value = props.dataset;
  $("run").hidden = props.tab !== "query";
  $("time-picker").hidden = props.tab !== "query";
  $("tab-query").classList.toggle("active", props.tab === "query");
  $("tab-sql").classList.toggle("active", props.tab === "sql");
}

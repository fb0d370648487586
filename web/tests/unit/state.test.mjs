// State: the URL round trip, opening a query, recent queries, the raw events' default columns.

import { test } from "node:test";
import assert from "node:assert/strict";
import { frozen, load } from "./load.mjs";
import { COLUMNS, SPEC } from "./fixtures.mjs";

const st = await load("state");

test("a state's query survives the URL: encodeUrl then decodeUrl gives the dataset and spec back", () => {
  const spec = { ...SPEC, filters: [{ column: "name", op: "in", value: ["a&b", "c=d", "é ü", "100%"] }], start_time: 1, end_time: 2 };
  const url = st.encodeUrl("/", { dataset: "my data/set", spec });
  assert.ok(url.startsWith("/?dataset="));
  const back = st.decodeUrl(url.slice(url.indexOf("?")));
  assert.equal(back.dataset, "my data/set");
  assert.deepEqual(back.spec, spec);
  assert.equal(back.error, undefined);
});

test("decodeUrl reads the dataset and q as before: missing fields of q take the empty spec's values", () => {
  const back = st.decodeUrl(`?dataset=demo&q=${encodeURIComponent(JSON.stringify({ breakdowns: ["x"] }))}`);
  assert.deepEqual(back.spec, { ...st.emptySpec(), breakdowns: ["x"] });
  assert.deepEqual(st.decodeUrl(""), {});
  assert.deepEqual(st.decodeUrl("?dataset="), {}, "an empty dataset is no dataset");
});

test("decodeUrl takes what the server's /1/query_results links hold (its own spec JSON, percent-encoded)", () => {
  const server = { calculations: [{ op: "COUNT" }], filters: [], breakdowns: ["service.name"], orders: [], havings: [], start_time: 5, end_time: 9 };
  // As the server encodes: everything but RFC 3986's unreserved characters.
  const byte = (b) => (/[A-Za-z0-9\-_.~]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`);
  const pct = (s) => [...new TextEncoder().encode(s)].map(byte).join("");
  const back = st.decodeUrl(`?dataset=${pct("my demo")}&q=${pct(JSON.stringify(server))}`);
  assert.equal(back.dataset, "my demo");
  assert.deepEqual(back.spec, { ...st.emptySpec(), ...server });
});

test("decodeUrl says so when q is not JSON, and gives no spec", () => {
  const back = st.decodeUrl("?dataset=demo&q=%7Bnope");
  assert.equal(back.dataset, "demo");
  assert.equal(back.spec, undefined);
  assert.match(back.error, /not valid JSON/);
});

test("encodeUrl leaves the dataset out when there is none", () => {
  assert.equal(st.encodeUrl("/ui", { dataset: "", spec: { calculations: [] } }), `/ui?q=${encodeURIComponent('{"calculations":[]}')}`);
});

test("emptySpec is COUNT over the last hour, a new object each time", () => {
  const a = st.emptySpec();
  assert.deepEqual(a, { calculations: [{ op: "COUNT" }], filters: [], breakdowns: [], orders: [], havings: [], time_range: 3600 });
  assert.notEqual(a.calculations, st.emptySpec().calculations);
});

test("openQuery starts from the first page; a new dataset drops the chosen event columns, the same one keeps them", () => {
  const s = frozen({ ...st.initialState(), dataset: "a", eventColumns: ["x"], eventPage: 3 });
  const same = st.openQuery("a", SPEC)(s);
  assert.deepEqual([same.dataset, same.spec, same.eventPage, same.eventColumns], ["a", SPEC, 0, ["x"]]);
  const other = st.openQuery("b", SPEC)(s);
  assert.deepEqual([other.dataset, other.eventPage, other.eventColumns], ["b", 0, []]);
});

test("onSpec changes the spec alone", () => {
  const s = frozen({ ...st.initialState(), dataset: "a" });
  const t = st.onSpec((sp) => ({ ...sp, limit: 5 }))(s);
  assert.equal(t.spec.limit, 5);
  assert.deepEqual({ ...t, spec: s.spec }, s);
});

test("remember puts the query first, once, and keeps at most 50", () => {
  const e = (dataset, n, at = 0) => ({ dataset, spec: { ...SPEC, limit: n }, at });
  let list = [];
  for (let i = 0; i < 60; i++) list = st.remember(list, e("d", i, i));
  assert.equal(list.length, 50);
  assert.deepEqual(list.slice(0, 2).map((x) => x.spec.limit), [59, 58]);
  const again = st.remember(frozen(list), e("d", 55, 99));
  assert.equal(again.length, 50);
  assert.deepEqual(again.slice(0, 2).map((x) => [x.spec.limit, x.at]), [[55, 99], [59, 59]]);
  assert.equal(again.filter((x) => x.spec.limit === 55).length, 1);
  assert.equal(st.remember(frozen(list), e("other", 55)).length, 50, "another dataset's query is another query");
});

test("the raw events' default columns: the usual ones when at least three exist, else the first six not reserved", () => {
  assert.deepEqual(st.defaultEventColumns(COLUMNS), ["service.name", "duration_ms", "http.status_code", "error"]);
  const few = [
    { name: "name", type: "string" }, { name: "timestamp", type: "timestamp", reserved: true },
    ...["a", "b", "c", "d", "e", "f", "g"].map((name) => ({ name, type: "int" })),
  ];
  assert.deepEqual(st.defaultEventColumns(few), ["name", "a", "b", "c", "d", "e"]);
});

test("pinEventColumns sets the default columns only when none are chosen", () => {
  const s = frozen(st.initialState());
  assert.deepEqual(st.pinEventColumns(COLUMNS)(s).eventColumns, st.defaultEventColumns(COLUMNS));
  const chosen = frozen({ ...s, eventColumns: ["x"] });
  assert.equal(st.pinEventColumns(COLUMNS)(chosen), chosen);
});

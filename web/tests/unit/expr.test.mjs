// The editor's view of the expression language: tokens and suggestions.

import { test } from "node:test";
import assert from "node:assert/strict";
import { load } from "./load.mjs";

const { tokenize, completions, columnRef, isExpression } = await load("expr");

const FUNCS = [
  { name: "IF", category: "conditional", signature: "IF(cond, then, [else])", min_args: 2, max_args: null },
  { name: "INT", category: "cast", signature: "INT(x)", min_args: 1, max_args: 1 },
  { name: "GTE", category: "comparison", signature: "GTE(left, right)", min_args: 2, max_args: 2 },
];

test("every character is in one token, at its offset, of the kind the server reads it as", () => {
  const text = 'IF(GTE($http.status_code, 500) AND $"a b" != `x`, "é\\"", -1.5)';
  const toks = tokenize(text);
  assert.equal(toks.map((t) => t.text).join(""), text);
  for (const t of toks) assert.equal([...text].slice(t.start, t.start + [...t.text].length).join(""), t.text);
  const kinds = Object.fromEntries(toks.filter((t) => t.kind !== "space").map((t) => [t.text, t.kind]));
  assert.equal(kinds.IF, "func");
  assert.equal(kinds["$http.status_code"], "column");
  assert.equal(kinds['$"a b"'], "column");
  assert.equal(kinds.AND, "keyword");
  assert.equal(kinds["!="], "op");
  assert.equal(kinds["`x`"], "string");
  assert.equal(kinds['"é\\""'], "string");
  assert.equal(kinds["500"], "number");
});

test("after $ the columns are suggested, prefixes first; after letters the functions", () => {
  const cols = ["duration_ms", "http.status_code", "1st token", "status"];
  const c = completions("IF(GTE($stat", 12, cols, FUNCS);
  assert.equal(c.start, 7);
  assert.deepEqual(c.items.map((i) => i.insert), ["$status", "$http.status_code"]);
  assert.equal(completions("$1", 2, cols, FUNCS).items[0].insert, '$"1st token"');
  const f = completions("i", 1, cols, FUNCS);
  assert.deepEqual(f.items.map((i) => i.insert), ["IF(", "INT("]);
  assert.equal(f.start, 0);
  assert.deepEqual(completions("1 + ", 4, cols, FUNCS).items, []);
});

test("column references are quoted when they must be, and expressions are told from column names", () => {
  assert.equal(columnRef("service.name"), "$service.name");
  assert.equal(columnRef("a b"), '$"a b"');
  assert.equal(isExpression("IF($a, 1)"), true);
  assert.equal(isExpression("service.name"), false);
});

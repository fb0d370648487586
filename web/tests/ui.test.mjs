// End-to-end tests of the web UI: the real sonde binary on a loopback port, real generated
// events, and headless Chromium driven by Playwright. What the page shows is checked against
// the JSON API's answer for the same query.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const TARGET = process.env.CARGO_TARGET_DIR ?? join(process.env.HOME, ".cache/sonde-target");
const BIN = process.env.SONDE_BIN ?? join(TARGET, "debug/sonde");
const START = "2026-11-25T10:00:00Z";
const END = "2026-11-25T11:00:00Z";
const RANGE = { start_time: Date.parse(START) / 1000, end_time: Date.parse(END) / 1000 };
const TRACE = "5b8efff798038103d269b633813fc60c";

// Screenshots of each view, for people to look at (not compared).
const SHOTS = join(import.meta.dirname, "..", "test-results");
mkdirSync(SHOTS, { recursive: true });
const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

let server, url, browser, dir;

async function startServer() {
  dir = mkdtempSync(join(tmpdir(), "sonde-ui-"));
  // Percentiles over more than 15,000 events come from sketches, so the whole hour's are
  // approximate (and marked) while a shorter range's stay exact.
  server = spawn(BIN, ["serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--grpc-listen", "off", "--exact-percentile-rows", "15000"], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, SONDE_LOG: "warn" } });
  const lines = createInterface({ input: server.stdout });
  url = await new Promise((resolve, reject) => {
    lines.once("line", (l) => resolve(l.replace("sonde listening on ", "").trim()));
    server.once("exit", (code) => reject(new Error(`sonde exited with ${code}`)));
  });
}

before(async () => {
  await startServer();
  execFileSync(BIN, ["gen", "20000", "--seed", "5", "--start", START, "--span", "1h", "--post", url, "--dataset", "demo"], { stdio: "ignore" });
  // One multi-span trace, for the waterfall.
  const span = (id, parent, service, offsetMs, dur, extra = {}) => ({
    time: new Date(Date.parse("2026-11-25T10:20:00Z") + offsetMs).toISOString(),
    data: { "trace.trace_id": TRACE, "trace.span_id": id, ...(parent ? { "trace.parent_id": parent } : {}), "service.name": service, "dns.provider": "route53", name: `${service} ${id}`, duration_ms: dur, ...extra },
  });
  const r = await fetch(`${url}/1/batch/demo`, {
    method: "POST",
    body: JSON.stringify([
      span("s-root", null, "frontend", 0, 250.5),
      span("s-api", "s-root", "api-gateway", 3, 200.25),
      span("s-pay", "s-api", "payments", 10, 150.125, { error: true, "error.message": "card declined" }),
      span("s-lost", "s-gone", "search", 40, 20.5),
    ]),
  });
  assert.equal(r.status, 200);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  await new Promise((r) => (server ? server.once("exit", r) : r()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function apiQuery(spec) {
  const r = await fetch(`${url}/api/query/demo`, { method: "POST", body: JSON.stringify(spec) });
  assert.equal(r.status, 200);
  return r.json();
}

function permalink(spec) {
  return `${url}/?dataset=demo&q=${encodeURIComponent(JSON.stringify(spec))}`;
}

async function newPage() {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.errors = errors;
  return page;
}

async function tableRows(page, selector) {
  return page.$$eval(`${selector} tbody tr`, (trs) => trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent)));
}

const fmt = (n) => (Number.isInteger(n) ? n.toLocaleString("en-US") : null);

test("a permalink shows one graph per calculation and a table equal to the API's answer", async () => {
  const spec = { calculations: [{ op: "COUNT" }, { op: "P99", column: "duration_ms" }], breakdowns: ["service.name"], filters: [], orders: [], havings: [], granularity: 60, ...RANGE };
  const want = await apiQuery(spec);
  const page = await newPage();
  await page.goto(permalink(spec));
  await page.waitForSelector("#results-table tbody tr");
  const rows = await tableRows(page, "#results-table");
  assert.equal(rows.length, want.data.results.length);
  want.data.results.forEach((r, i) => {
    assert.equal(rows[i][1], r.data["service.name"]);
    assert.equal(rows[i][2], fmt(r.data.COUNT));
  });
  assert.equal(await page.locator(".chart").count(), 2);
  assert.equal(await page.locator(".chart canvas").count() >= 2, true);
  assert.match(await page.textContent("#status"), /rows examined/);
  // 20,000 events in the hour: its P99 comes from sketches, and the status says so first.
  assert.equal(want.meta.approximate.what, "percentiles");
  assert.match(await page.textContent("#status"), /^≈ percentiles within 0\.5% \(\d+ events in the range/);
  await shot(page, "permalink");
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("a /1/query_results link opens its query", async () => {
  const spec = { calculations: [{ op: "COUNT" }], breakdowns: ["service.name"], filters: [], orders: [], havings: [], ...RANGE };
  const saved = await (await fetch(`${url}/1/queries/demo`, { method: "POST", body: JSON.stringify(spec) })).json();
  const r = await fetch(`${url}/1/query_results/demo`, { method: "POST", body: JSON.stringify({ query_id: saved.id }) });
  assert.equal(r.status, 201);
  const result = await r.json();
  const page = await newPage();
  await page.goto(url + result.links.query_url);
  await page.waitForSelector("#results-table tbody tr");
  const rows = await tableRows(page, "#results-table");
  assert.equal(rows.length, result.data.results.length);
  result.data.results.forEach((row, i) => {
    assert.equal(rows[i][1], row.data["service.name"]);
    assert.equal(rows[i][2], fmt(row.data.COUNT));
  });
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("the builder makes a query, the URL keeps it, and back returns to the previous one", async () => {
  const page = await newPage();
  await page.goto(permalink({ calculations: [{ op: "COUNT" }], filters: [], breakdowns: [], orders: [], havings: [], ...RANGE }));
  await page.waitForSelector("#results-table tbody tr");
  assert.equal((await tableRows(page, "#results-table")).length, 1);
  await page.fill("#group-input", "dns.provider");
  await page.press("#group-input", "Enter");
  await page.fill("#calc-input", "HEATMAP(duration_ms)");
  await page.press("#calc-input", "Enter");
  await page.click("#run");
  await page.waitForFunction(() => document.querySelectorAll("#results-table tbody tr").length === 3);
  const q = JSON.parse(new URL(page.url()).searchParams.get("q"));
  assert.deepEqual(q.breakdowns, ["dns.provider"]);
  assert.equal(await page.locator("canvas.heatmap").count(), 1);
  const want = await apiQuery(q);
  const rows = await tableRows(page, "#results-table");
  assert.deepEqual(rows.map((r) => r[1]), want.data.results.map((r) => r.data["dns.provider"]));
  await shot(page, "builder-heatmap");
  await page.goBack();
  await page.waitForFunction(() => document.querySelectorAll("#results-table tbody tr").length === 1);
  assert.equal(await page.locator("canvas.heatmap").count(), 0);
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("a filter added in the builder gives the API's count", async () => {
  const page = await newPage();
  await page.goto(permalink({ calculations: [{ op: "COUNT" }], filters: [], breakdowns: [], orders: [], havings: [], ...RANGE }));
  await page.waitForSelector("#results-table tbody tr");
  await page.fill("#filter-column", "error");
  await page.selectOption("#filter-op", "=");
  await page.fill("#filter-value", "true");
  await page.click("#filter-add");
  await page.click("#run");
  const want = await apiQuery({ calculations: [{ op: "COUNT" }], filters: [{ column: "error", op: "=", value: true }], ...RANGE });
  const expected = fmt(want.data.results[0].data.COUNT);
  await page.waitForFunction((e) => document.querySelector("#results-table tbody tr td:nth-child(2)")?.textContent === e, expected);
  await page.close();
});

test("with VISUALIZE empty the raw events show newest first and expand", async () => {
  const page = await newPage();
  await page.goto(permalink({ calculations: [], filters: [{ column: "service.name", op: "=", value: "payments" }], breakdowns: [], orders: [], havings: [], ...RANGE }));
  await page.waitForSelector("#events-table tbody tr");
  const rows = await tableRows(page, "#events-table");
  assert.equal(rows.length, 50);
  const times = rows.map((r) => Date.parse(r[0]));
  assert.deepEqual([...times].sort((a, b) => b - a), times, "newest first");
  await page.click("#events-table tbody tr");
  const detail = await page.textContent("#events-table tr.expanded");
  assert.match(detail, /"service.name": "payments"/);
  await shot(page, "raw-events");
  await page.click("text=Older →");
  await page.waitForFunction(() => /Events 51–100/.test(document.querySelector(".pager")?.textContent ?? ""));
  await page.close();
});

test("dragging across a graph zooms the time range", async () => {
  const page = await newPage();
  await page.goto(permalink({ calculations: [{ op: "COUNT" }], filters: [], breakdowns: [], orders: [], havings: [], ...RANGE }));
  await page.waitForSelector(".u-over");
  const box = await page.locator(".u-over").first().boundingBox();
  await page.mouse.move(box.x + box.width * 0.25, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction((s) => JSON.parse(new URL(location.href).searchParams.get("q")).start_time > s, RANGE.start_time);
  const q = JSON.parse(new URL(page.url()).searchParams.get("q"));
  assert.ok(q.end_time - q.start_time < 3600 * 0.4, `zoomed range ${q.end_time - q.start_time}s`);
  // The results follow the zoom: the count over the narrower range, as the API gives it.
  const want = fmt((await apiQuery(q)).data.results[0].data.COUNT);
  await page.waitForFunction((e) => document.querySelector("#results-table tbody tr td:nth-child(2)")?.textContent === e, want);
  await shot(page, "zoomed");
  await page.close();
});

test("the schema sidebar searches columns and groups by a click", async () => {
  const page = await newPage();
  await page.goto(permalink({ calculations: [{ op: "COUNT" }], filters: [], breakdowns: [], orders: [], havings: [], ...RANGE }));
  await page.waitForSelector("#schema li");
  await page.fill("#schema-search", "dns");
  assert.equal(await page.locator("#schema li").count(), 1);
  await page.click('#schema li[data-column="dns.provider"]');
  await page.click("text=Group by dns.provider");
  await page.waitForFunction(() => document.querySelectorAll("#results-table tbody tr").length === 3);
  await page.close();
});

test("the SQL tab runs queries and points at errors", async () => {
  const page = await newPage();
  await page.goto(`${url}/?dataset=demo`);
  await page.click("#tab-sql");
  await page.waitForSelector("#sql-tables b");
  await page.fill("#sql-text", 'SELECT "dns.provider" AS p, count(*) AS n FROM demo GROUP BY 1 ORDER BY 1');
  await page.click("#sql-run");
  await page.waitForSelector("#sql-table tbody tr");
  const rows = await tableRows(page, "#sql-table");
  assert.deepEqual(rows.map((r) => r[0]), ["cloudflare", "dyn", "route53"]);
  await shot(page, "sql");
  await page.fill("#sql-text", "SELECT count(*) FROM nosuchtable");
  await page.click("#sql-run");
  await page.waitForSelector("#sql-error:not([hidden])");
  assert.match(await page.textContent("#sql-error"), /nosuchtable/);
  await shot(page, "sql-error");
  await page.close();
});

/** Pixels of a canvas that differ from its background: proof that something was drawn. */
async function drawnPixels(page, selector) {
  return page.$eval(selector, (c) => {
    const ctx = c.getContext("2d");
    const { data } = ctx.getImageData(0, 0, c.width, c.height);
    const [r0, g0, b0] = [data[0], data[1], data[2]];
    let n = 0;
    for (let i = 0; i < data.length; i += 4) if (Math.abs(data[i] - r0) + Math.abs(data[i + 1] - g0) + Math.abs(data[i + 2] - b0) > 30) n++;
    return n;
  });
}

test("a query built by clicking (COUNT, P99, WHERE, GROUP BY, time range) draws and lists the API's answer, and reloads the same", async () => {
  const page = await newPage();
  await page.goto(`${url}/?dataset=demo`);
  await page.waitForSelector("#calc-input");
  await page.fill("#calc-input", "P99(duration_ms)");
  await page.press("#calc-input", "Enter");
  await page.fill("#filter-column", "http.method");
  await page.selectOption("#filter-op", "!=");
  await page.fill("#filter-value", "DELETE");
  await page.click("#filter-add");
  await page.fill("#group-input", "service.name");
  await page.press("#group-input", "Enter");
  await page.selectOption("#time-preset", "custom");
  await page.fill("#time-from", "2026-11-25T10:30:00");
  await page.fill("#time-to", "2026-11-25T10:50:00");
  await page.click("#run");
  await page.waitForFunction(() => document.querySelectorAll("#results-table tbody tr").length === 7);
  const q = JSON.parse(new URL(page.url()).searchParams.get("q"));
  assert.deepEqual(q.calculations, [{ op: "COUNT" }, { op: "P99", column: "duration_ms" }]);
  assert.deepEqual(q.filters, [{ column: "http.method", op: "!=", value: "DELETE" }]);
  assert.deepEqual(q.breakdowns, ["service.name"]);
  assert.equal(q.start_time, Date.parse("2026-11-25T10:30:00Z") / 1000);
  assert.equal(q.end_time, Date.parse("2026-11-25T10:50:00Z") / 1000);
  const want = await apiQuery(q);
  const check = async () => {
    const rows = await tableRows(page, "#results-table");
    assert.deepEqual(
      rows.map((r) => [r[1], r[2], r[3]]),
      want.data.results.map((r) => [r.data["service.name"], fmt(r.data.COUNT), r.data["P99(duration_ms)"].toFixed(1)]),
    );
  };
  await check();
  assert.equal(await page.locator(".chart").count(), 2);
  assert.ok((await drawnPixels(page, '.chart[data-calc="P99(duration_ms)"] canvas')) > 500, "the P99 graph is drawn");
  await shot(page, "built-by-clicking");
  await page.reload();
  await page.waitForFunction(() => document.querySelectorAll("#results-table tbody tr").length === 7);
  await check();
  await page.close();
});

test("the heatmap renders the incident's slow band, and the P99 by DNS provider names the culprit", async () => {
  const page = await newPage();
  const spec = {
    calculations: [{ op: "HEATMAP", column: "duration_ms" }, { op: "P99", column: "duration_ms" }, { op: "COUNT" }],
    filters: [], breakdowns: ["dns.provider"], orders: [{ op: "P99", column: "duration_ms", order: "descending" }], havings: [], ...RANGE,
  };
  await page.goto(permalink(spec));
  await page.waitForSelector("canvas.heatmap");
  await page.waitForSelector("#results-table tbody tr");
  assert.ok((await drawnPixels(page, "canvas.heatmap")) > 2000, "cells are drawn");
  const rows = await tableRows(page, "#results-table");
  assert.equal(rows[0][1], "dyn", "the slowest provider is listed first");
  await shot(page, "incident");
  await page.close();
});

test("an invalid query shows the API's error message", async () => {
  const page = await newPage();
  const spec = { calculations: [{ op: "AVG", column: "service.name" }], filters: [], breakdowns: [], orders: [], havings: [], ...RANGE };
  const r = await fetch(`${url}/api/query/demo`, { method: "POST", body: JSON.stringify(spec) });
  assert.equal(r.status, 400);
  const { error } = await r.json();
  await page.goto(permalink(spec));
  await page.waitForSelector("#error:not([hidden])");
  assert.equal(await page.textContent("#error"), error);
  await shot(page, "error");
  await page.close();
});

test("a box drawn on the heatmap opens BubbleUp, which ranks dns.provider first; a click makes it a filter", async () => {
  const page = await newPage();
  await page.goto(permalink({ calculations: [{ op: "HEATMAP", column: "duration_ms" }], filters: [], breakdowns: [], orders: [], havings: [], ...RANGE }));
  await page.waitForSelector("canvas.heatmap");
  const box = await page.locator("canvas.heatmap").boundingBox();
  // The plot area of the heatmap: 60 px of axis on the left, 22 px below, 6 px above.
  const left = box.x + 60, plotW = box.width - 68, top = box.y + 6, plotH = box.height - 28;
  // The incident runs from 60% to 75% of the hour; its band sits above ~1.8 s of ~6.3 s.
  await page.mouse.move(left + plotW * 0.61, top + 2);
  await page.mouse.down();
  await page.mouse.move(left + plotW * 0.68, top + plotH * 0.4, { steps: 4 });
  await page.mouse.move(left + plotW * 0.74, top + plotH * 0.66, { steps: 4 });
  await page.mouse.up();
  await page.waitForSelector("#bubbleup .bu-card");
  const first = await page.$eval("#bubbleup .bu-card", (c) => c.dataset.column);
  assert.equal(first, "dns.provider");
  const firstValue = await page.$eval('#bubbleup .bu-card[data-column="dns.provider"] .bu-row', (r) => r.dataset.value);
  assert.equal(firstValue, "dyn");
  await shot(page, "bubbleup");
  // The selection's events are one click away (and from them, their traces).
  await page.click("#bubbleup-events");
  await page.waitForSelector("#events-table tbody tr");
  const q0 = JSON.parse(new URL(page.url()).searchParams.get("q"));
  assert.deepEqual(q0.calculations, []);
  assert.equal(q0.filters.filter((f) => f.column === "duration_ms").length, 2);
  await page.goBack();
  await page.waitForSelector("canvas.heatmap");
  await page.mouse.move(left + plotW * 0.61, top + 2);
  await page.mouse.down();
  await page.mouse.move(left + plotW * 0.74, top + plotH * 0.66, { steps: 6 });
  await page.mouse.up();
  await page.waitForSelector('#bubbleup .bu-card[data-column="dns.provider"]');
  await page.click('#bubbleup .bu-card[data-column="dns.provider"] .bu-row[data-value="dyn"]');
  await page.click("text=Filter: dns.provider = dyn");
  await page.waitForFunction(() => JSON.parse(new URL(location.href).searchParams.get("q")).filters.some((f) => f.column === "dns.provider" && f.value === "dyn"));
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("a raw event opens its trace waterfall, nested by parent, with the error marked", async () => {
  const page = await newPage();
  await page.goto(permalink({ calculations: [], filters: [{ column: "trace.trace_id", op: "=", value: TRACE }], breakdowns: [], orders: [], havings: [], ...RANGE }));
  await page.waitForSelector("#events-table tbody tr");
  assert.equal((await tableRows(page, "#events-table")).length, 4);
  await page.click("#events-table tbody tr");
  await page.click("#events-table .view-trace");
  await page.waitForSelector("#trace .wf-row");
  const rows = await page.$$eval("#trace .wf-row", (rs) => rs.map((r) => [r.dataset.span, r.querySelector(".wf-label").style.paddingLeft]));
  assert.deepEqual(rows, [["s-root", "0px"], ["s-api", "14px"], ["s-pay", "28px"], ["s-lost", "0px"]]);
  assert.equal(await page.locator("#trace .wf-bar.error").count(), 1);
  assert.match(await page.textContent('#trace .wf-row[data-span="s-lost"]'), /parent missing/);
  await page.click('#trace .wf-row[data-span="s-pay"]');
  assert.match(await page.textContent("#trace .wf-panel"), /card declined/);
  await shot(page, "trace");
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("with API keys on, the UI asks for a query key, keeps it, and asks again when it is refused", async () => {
  // A server of its own, with one ingest key and one query key (hashes in a keys file).
  const keyDir = mkdtempSync(join(tmpdir(), "sonde-ui-keys-"));
  const newKey = (name, scopes) => execFileSync(BIN, ["keys", "new", name, "--scopes", scopes], { encoding: "utf8" }).trim().split("\n");
  const [ingestKey, ingestLine] = newKey("loader", "ingest");
  const [queryKey, queryLine] = newKey("viewer", "query");
  writeFileSync(join(keyDir, "keys"), `${ingestLine}\n${queryLine}\n`);
  const locked = spawn(BIN, ["serve", "--data-dir", join(keyDir, "data"), "--listen", "127.0.0.1:0", "--grpc-listen", "off", "--keys-file", join(keyDir, "keys")], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, SONDE_LOG: "warn" } });
  try {
    const lockedUrl = await new Promise((resolve, reject) => {
      createInterface({ input: locked.stdout }).once("line", (l) => resolve(l.replace("sonde listening on ", "").trim()));
      locked.once("exit", (code) => reject(new Error(`sonde exited with ${code}`)));
    });
    const batch = Array.from({ length: 30 }, (_, i) => ({ time: new Date(Date.parse(START) + i * 60_000).toISOString(), data: { "service.name": i % 3 ? "api" : "web", duration_ms: i } }));
    const post = await fetch(`${lockedUrl}/1/batch/locked`, { method: "POST", headers: { "x-honeycomb-team": ingestKey }, body: JSON.stringify(batch) });
    assert.equal(post.status, 200);
    assert.equal((await fetch(`${lockedUrl}/api/datasets`)).status, 401);

    const page = await newPage();
    const spec = { calculations: [{ op: "COUNT" }], filters: [], breakdowns: ["service.name"], orders: [], havings: [], ...RANGE };
    await page.goto(`${lockedUrl}/?dataset=locked&q=${encodeURIComponent(JSON.stringify(spec))}`);
    // First a wrong key (an ingest key cannot read): refused, and the prompt comes back saying so.
    await page.waitForSelector("dialog.key-dialog[open]");
    assert.match(await page.textContent("dialog.key-dialog"), /API key is required/);
    await page.fill("dialog.key-dialog input", ingestKey);
    await page.click("dialog.key-dialog button");
    await page.waitForFunction(() => /refused/.test(document.querySelector("dialog.key-dialog[open]")?.textContent ?? ""));
    assert.match(await page.textContent("dialog.key-dialog"), /query scope/);
    await shot(page, "api-key-prompt");
    await page.fill("dialog.key-dialog input", queryKey);
    await page.click("dialog.key-dialog button");
    await page.waitForSelector("#results-table tbody tr");
    const rows = await tableRows(page, "#results-table");
    assert.deepEqual(rows.map((r) => [r[1], r[2]]), [["api", "20"], ["web", "10"]]);
    // The key is kept: a reload needs no prompt.
    await page.reload();
    await page.waitForSelector("#results-table tbody tr");
    assert.equal(await page.locator("dialog.key-dialog").count(), 0);
    assert.deepEqual(page.errors, []);
    await page.close();
  } finally {
    locked.kill("SIGTERM");
    await new Promise((r) => locked.once("exit", r));
    rmSync(keyDir, { recursive: true, force: true });
  }
});

test("a derived column made in the editor: a typo's error at its position, a preview, then grouped by and compared with an earlier period, dashed", async () => {
  const HALF = { start_time: Date.parse("2026-11-25T10:30:00Z") / 1000, end_time: Date.parse(END) / 1000 };
  const page = await newPage();
  await page.goto(permalink({ calculations: [{ op: "COUNT" }], filters: [], breakdowns: [], orders: [], havings: [], ...HALF }));
  await page.waitForSelector("#results-table tbody tr");
  await page.click("#derived-open");
  await page.waitForSelector("#derived-dialog[open]");
  await page.fill("#derived-alias", "tier");
  // Autocomplete: "$dur" offers duration_ms, Tab takes it.
  await page.click("#derived-expression");
  await page.keyboard.type("$dur");
  await page.waitForSelector("#derived-complete li");
  assert.equal(await page.textContent("#derived-complete li"), "duration_ms");
  await page.keyboard.press("Tab");
  assert.equal(await page.inputValue("#derived-expression"), "$duration_ms");
  const typo = 'IF(GTE($duration_ms, 1000), "slow", FOOO("fast"))';
  await page.fill("#derived-expression", typo);
  await page.click("#derived-preview-button");
  await page.waitForSelector("#derived-error:not([hidden])");
  assert.match(await page.textContent("#derived-error"), /unknown function FOOO — at character 36/);
  assert.equal(await page.textContent(".tk-error"), typo[36]);
  assert.equal(await page.textContent(".tk-func"), "IF", "functions are coloured");
  await shot(page, "derived-error");
  await page.fill("#derived-expression", 'IF(GTE($duration_ms, 1000), "slow", "fast")');
  await page.click("#derived-preview-button");
  await page.waitForFunction(() => document.querySelectorAll("#derived-preview-table tbody tr").length === 10);
  assert.equal(await page.isHidden("#derived-error"), true);
  await page.click("#derived-save");
  await page.waitForSelector('#derived-list li[data-alias="tier"]');
  await shot(page, "derived-editor");
  await page.keyboard.press("Escape");
  await page.waitForSelector('#schema li[data-column="tier"]');

  await page.fill("#group-input", "tier");
  await page.press("#group-input", "Enter");
  await page.click("#run");
  await page.waitForFunction(() => document.querySelectorAll("#results-table tbody tr").length === 2);
  const spec = JSON.parse(new URL(page.url()).searchParams.get("q"));
  const want = await apiQuery(spec);
  assert.deepEqual(
    (await tableRows(page, "#results-table")).map((r) => [r[1], r[2]]),
    want.data.results.map((r) => [r.data.tier, fmt(r.data.COUNT)]),
  );

  await page.selectOption("#compare", "1800");
  await page.click("#run");
  await page.waitForFunction(() => /30 minutes earlier/.test(document.querySelector("#results-table thead")?.textContent ?? ""));
  const compared = await apiQuery(JSON.parse(new URL(page.url()).searchParams.get("q")));
  assert.equal(compared.data.compare.offset_seconds, 1800);
  assert.ok(compared.data.compare.results.length > 0, "the earlier half hour has events");
  const legend = await page.$$eval('.chart[data-calc="COUNT"] .u-legend .u-series', (rows) =>
    rows.map((r) => [r.textContent, getComputedStyle(r.querySelector(".u-marker") ?? r).borderStyle]));
  const dashed = legend.filter(([label, style]) => /earlier/.test(label) && /dashed/.test(style));
  assert.equal(dashed.length, compared.data.compare.results.length, JSON.stringify(legend));
  await shot(page, "compare");
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("markers: a span and an environment marker drawn on line and heatmap graphs with their colours; one added from a graph's menu appears", async () => {
  const post = (path, body) => fetch(`${url}${path}`, { method: "POST", body: JSON.stringify(body) });
  assert.equal((await post("/1/marker_settings/demo", { type: "deploy", color: "#ff00ff" })).status, 201);
  const deploy = await (await post("/1/markers/demo", {
    start_time: RANGE.start_time + 600, end_time: RANGE.start_time + 1200, message: "backend deploy #123", type: "deploy", url: "https://ci.example/123",
  })).json();
  const env = await (await post("/1/markers/__all__", { start_time: RANGE.start_time + 2400, message: "flag checkout-v2 on", type: "flag" })).json();
  // Outside the range: not drawn.
  await post("/1/markers/demo", { start_time: RANGE.start_time - 7200, message: "long ago" });

  const page = await newPage();
  const spec = { calculations: [{ op: "COUNT" }, { op: "HEATMAP", column: "duration_ms" }], filters: [], breakdowns: [], orders: [], havings: [], ...RANGE };
  await page.goto(permalink(spec));
  await page.waitForSelector("canvas.heatmap");
  await page.waitForSelector(".u-over .marker-flag");
  // Each graph carries both markers, and only those.
  for (const chart of ["COUNT", "HEATMAP(duration_ms)"]) {
    const ids = await page.$$eval(`.chart[data-calc="${chart}"] .marker-flag`, (fs) => fs.map((f) => f.dataset.markerId).sort());
    assert.deepEqual(ids, [deploy.id, env.id].sort(), chart);
  }
  // The deploy is a span in its type's colour; the flag a line; the span sits where its times are.
  const line = page.locator('.chart[data-calc="COUNT"]');
  const span = line.locator(".marker-span");
  assert.equal(await span.count(), 1);
  assert.equal(await span.evaluate((e) => getComputedStyle(e).borderLeftColor), "rgb(255, 0, 255)");
  assert.equal(await line.locator(".marker-line").count(), 1);
  const over = await line.locator(".u-over").boundingBox();
  const sb = await span.boundingBox();
  // The x axis runs over the buckets' starts: 0 to 3600 - step seconds.
  const step = (await apiQuery(spec)).meta.granularity;
  const xAt = (t) => over.x + ((t - RANGE.start_time) / (3600 - step)) * over.width;
  assert.ok(Math.abs(sb.x - xAt(RANGE.start_time + 600)) < 3, `span starts at ${sb.x}, want ${xAt(RANGE.start_time + 600)}`);
  assert.ok(Math.abs(sb.x + sb.width - xAt(RANGE.start_time + 1200)) < 3);
  // Hover shows the message as a link.
  await line.locator(`.marker-flag[data-marker-id="${deploy.id}"]`).hover();
  const link = line.locator(`.marker-flag[data-marker-id="${deploy.id}"] a.marker-message`);
  await link.waitFor({ state: "visible" });
  assert.equal(await link.textContent(), "backend deploy #123");
  assert.equal(await link.getAttribute("href"), "https://ci.example/123");
  await shot(page, "markers");

  // Add one from the graph's menu: a click on the line chart, "Add a marker here…".
  await page.mouse.click(over.x + over.width * 0.75, over.y + over.height / 2);
  await page.click("#menu >> text=Add a marker here…");
  await page.fill("#marker-message", "rollback");
  await page.fill("#marker-type", "deploy");
  await page.click("#marker-save");
  await page.waitForFunction(() => document.querySelectorAll('.chart[data-calc="COUNT"] .marker-flag').length === 3);
  const stored = await (await fetch(`${url}/1/markers/demo?start_time=${RANGE.start_time}&end_time=${RANGE.end_time}`)).json();
  const added = stored.find((m) => m.message === "rollback");
  assert.ok(added, JSON.stringify(stored));
  assert.ok(added.start_time > RANGE.start_time + 2400 && added.start_time < RANGE.end_time, `at ${added.start_time}`);
  assert.equal(added.color, "#ff00ff");
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("a query saved with a name is listed, survives a reload, opens again, and can be forgotten", async () => {
  const page = await newPage();
  const spec = { calculations: [{ op: "P95", column: "duration_ms" }], filters: [], breakdowns: ["service.name"], orders: [], havings: [], ...RANGE };
  await page.goto(permalink(spec));
  await page.waitForSelector("#results-table tbody tr");
  await page.click("#save-query");
  await page.fill("#save-name", "P95 by service");
  await page.fill("#save-description", "during the incident");
  await page.click("#save-confirm");
  await page.waitForSelector("#saved li.saved-query");
  assert.equal(await page.textContent("#saved li.saved-query span"), "P95 by service");
  // The server has it: an annotation naming a saved query whose spec is this one.
  const notes = await (await fetch(`${url}/1/query_annotations/demo`)).json();
  const note = notes.find((a) => a.name === "P95 by service");
  assert.equal(note.description, "during the incident");
  const q = await (await fetch(`${url}/1/queries/demo/${note.query_id}`)).json();
  assert.deepEqual(q.breakdowns, ["service.name"]);
  assert.deepEqual(q.calculations, spec.calculations);

  // Elsewhere, after a reload: a click opens it again.
  await page.goto(permalink({ calculations: [{ op: "COUNT" }], filters: [], breakdowns: [], orders: [], havings: [], ...RANGE }));
  await page.waitForSelector("#saved li.saved-query");
  await page.click("#saved li.saved-query span");
  await page.waitForFunction(() => JSON.parse(new URL(location.href).searchParams.get("q")).breakdowns[0] === "service.name");
  await page.waitForSelector('#results-table th:text("P95(duration_ms)")');
  await shot(page, "saved-query");
  // × forgets the name.
  await page.click("#saved li.saved-query button");
  await page.waitForFunction(() => !document.querySelector("#saved li.saved-query"));
  assert.deepEqual(await (await fetch(`${url}/1/query_annotations/demo`)).json(), notes.filter((a) => a.id !== note.id));
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("a board built in the UI: three saved queries and a text panel, reloaded, its layout edited, a preset filter applied to every panel", async () => {
  const post = async (path, body, want = 201) => {
    const r = await fetch(`${url}${path}`, { method: "POST", body: JSON.stringify(body) });
    const j = await r.json();
    assert.equal(r.status, want, JSON.stringify(j));
    return j;
  };
  const specs = {
    "Requests": { calculations: [{ op: "COUNT" }], filters: [], breakdowns: [], orders: [], havings: [], ...RANGE },
    "P99 by service": { calculations: [{ op: "P99", column: "duration_ms" }], filters: [], breakdowns: ["service.name"], orders: [], havings: [], ...RANGE },
    "Latency heatmap": { calculations: [{ op: "HEATMAP", column: "duration_ms" }], filters: [], breakdowns: [], orders: [], havings: [], ...RANGE },
  };
  for (const [name, spec] of Object.entries(specs)) {
    const q = await post("/1/queries/demo", spec, 200);
    await post("/1/query_annotations/demo", { name, query_id: q.id });
  }
  const page = await newPage();
  page.on("dialog", (d) => d.accept("On-call"));
  await page.goto(url);
  await page.click("#board-new");
  await page.waitForSelector("#board-name");
  const boardId = new URL(page.url()).searchParams.get("board");
  assert.equal(await page.textContent("#board-name"), "On-call");

  // Edit: three query panels (one as a table), a text panel, a preset filter; save.
  await page.click("#board-edit");
  for (const [name, style] of [["Requests", "graph"], ["P99 by service", "table"], ["Latency heatmap", "graph"]]) {
    await page.click("#board-add-query");
    await page.waitForFunction((n) => [...document.querySelectorAll("#query-panel-choice option")].some((o) => o.textContent.startsWith(n)), name);
    const value = await page.$eval("#query-panel-choice", (s, n) => [...s.options].find((o) => o.textContent.startsWith(n)).value, name);
    await page.selectOption("#query-panel-choice", value);
    await page.selectOption("#query-panel-style", style);
    await page.click("#panel-add");
  }
  await page.click("#board-add-text");
  await page.fill("#text-panel-content", "# Runbook\nCheck **dns.provider** first.\n- page the [DNS team](https://example.com/dns)");
  await page.click("#panel-add");
  await page.fill("#preset-column", "service.name");
  await page.fill("#preset-alias", "Service");
  await page.click("#preset-add");
  await page.click("#board-save");
  await page.waitForSelector("#board-edit");
  let saved = await (await fetch(`${url}/1/boards/${boardId}`)).json();
  assert.deepEqual(saved.panels.map((p) => p.type), ["query", "query", "query", "text"]);
  assert.deepEqual(saved.preset_filters, [{ column: "service.name", alias: "Service" }]);

  // Reload: every panel drawn, each from the API's answer.
  await page.reload();
  await page.waitForSelector(".board-panel .chart canvas.heatmap");
  await page.waitForSelector(".board-panel table.panel-table tbody tr");
  await page.waitForSelector(".board-panel .u-over");
  assert.equal(await page.locator(".board-panel").count(), 4);
  assert.equal(await page.textContent(".text-panel h1"), "Runbook");
  assert.equal(await page.textContent(".text-panel strong"), "dns.provider");
  assert.equal(await page.getAttribute(".text-panel a", "href"), "https://example.com/dns");
  const want = await apiQuery(specs["P99 by service"]);
  const rows = await tableRows(page, ".board-panel table.panel-table");
  assert.equal(rows.length, want.data.results.length);
  assert.equal(rows[0][0], want.data.results[0].data["service.name"]);
  await shot(page, "board");

  // Edit the layout: the table panel moves right and grows taller, the text panel goes.
  await page.click("#board-edit");
  const table = page.locator('.board-panel[data-index="1"]');
  const before = saved.panels[1].position;
  await table.locator(".edit-right").click();
  await page.locator('.board-panel[data-index="1"] .edit-taller').click();
  await page.locator('.board-panel[data-index="3"] .edit-remove').click();
  await page.click("#board-save");
  await page.waitForSelector("#board-edit");
  saved = await (await fetch(`${url}/1/boards/${boardId}`)).json();
  assert.equal(saved.panels.length, 3);
  assert.deepEqual(saved.panels[1].position, { ...before, x_coordinate: before.x_coordinate + 1, height: before.height + 1 });

  // The preset filter narrows every panel: the COUNT panel now shows the API's count for one service.
  const service = want.data.results[0].data["service.name"];
  await page.fill('.preset-value[data-column="service.name"]', service);
  await page.press('.preset-value[data-column="service.name"]', "Enter");
  await page.waitForFunction(() => [...document.querySelectorAll(".board-panel .panel-title")].filter((t) => t.textContent.includes("1 board filter")).length === 3);
  const filtered = await apiQuery({ ...specs["P99 by service"], filters: [{ column: "service.name", op: "=", value: service }] });
  await page.waitForFunction((n) => document.querySelectorAll(".board-panel table.panel-table tbody tr").length === n, filtered.data.results.length);
  const href = await page.getAttribute('.board-panel[data-index="0"] .panel-title a', "href");
  const linked = JSON.parse(new URL(url + href).searchParams.get("q"));
  assert.deepEqual(linked.filters, [{ column: "service.name", op: "=", value: service }], "the panel's link opens the filtered query");
  await shot(page, "board-filtered");
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("an SLO's page: compliance and budget from its counters, each day equal to the events, burn charts, BubbleUp of failing events; shown on a board", async () => {
  const post = async (path, body) => {
    const r = await fetch(`${url}${path}`, { method: "POST", body: JSON.stringify(body) });
    const j = await r.json();
    assert.ok(r.status < 300, JSON.stringify(j));
    return j;
  };
  await post("/1/derived_columns/demo", { alias: "sli.fast", expression: "IF(EXISTS($duration_ms), LT($duration_ms, 1000))" });
  const slo = await post("/1/slos/demo", { name: "Fast requests", sli: { alias: "sli.fast" }, time_period_days: 30, target_per_million: 990000 });
  const detailed = await (await fetch(`${url}/1/slos/demo/${slo.id}?detailed`)).json();
  // Independently: good and bad from a COUNT by the SLI over the whole demo hour.
  const counts = await apiQuery({ calculations: [{ op: "COUNT" }], filters: [], breakdowns: ["sli.fast"], orders: [], havings: [], start_time: RANGE.start_time - 3600, end_time: RANGE.end_time + 3600 });
  const n = (v) => counts.data.results.find((r) => r.data["sli.fast"] === v)?.data.COUNT ?? 0;
  const [good, bad] = [n(true), n(false)];
  assert.ok(bad > 0 && good > 0);
  assert.ok(Math.abs(detailed.compliance - (good / (good + bad)) * 100) < 1e-9, `${detailed.compliance}`);

  const page = await newPage();
  await page.goto(`${url}/?dataset=demo&slo=${slo.id}`);
  await page.waitForSelector("#slo-figures");
  assert.equal(await page.textContent("#slo-name"), "Fast requests");
  assert.match(await page.textContent("#slo-figures"), new RegExp(`${detailed.compliance.toFixed(3)}%`));
  const days = await tableRows(page, "#slo-days");
  assert.deepEqual(days, [["2026-11-25", fmt(good), fmt(bad), `${((good / (good + bad)) * 100).toFixed(3)}%`]]);
  await page.waitForSelector("#slo-bubbleup .bu-card");
  assert.ok((await page.locator("#slo-charts .chart").count()) >= 3);
  await shot(page, "slo");

  // On a board, an SLO panel shows the same figures.
  const board = await post("/1/boards", { name: "SLOs", type: "flexible", panels: [{ type: "slo", slo_panel: { slo_id: slo.id } }] });
  await page.goto(`${url}/?board=${board.id}`);
  await page.waitForSelector(".slo-panel .slo-figures");
  assert.match(await page.textContent(".slo-panel"), new RegExp(`${detailed.compliance.toFixed(3)}%`));
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("a trigger made from the current query: a restriction's error shown as the server says it, then stored and listed", async () => {
  const page = await newPage();
  const spec = { calculations: [{ op: "COUNT" }], filters: [{ column: "error", op: "=", value: true }], breakdowns: ["service.name"], orders: [], havings: [], ...RANGE };
  await page.goto(permalink(spec));
  await page.waitForSelector("#results-table tbody tr");
  await page.click("#make-trigger");
  await page.fill("#trigger-name", "Errors by service");
  await page.selectOption("#trigger-op", ">");
  await page.fill("#trigger-value", "100");
  // 2000 minutes is past Honeycomb's day: the server refuses, the dialog shows why.
  await page.fill("#trigger-frequency", "2000");
  await page.click("#trigger-save");
  await page.waitForSelector("#trigger-error:not([hidden])");
  assert.match(await page.textContent("#trigger-error"), /frequency/);
  await page.fill("#trigger-frequency", "5");
  await page.click("#trigger-save");
  await page.waitForSelector('#triggers li a:text("Errors by service")');
  const list = await (await fetch(`${url}/1/triggers/demo`)).json();
  const t = list.find((x) => x.name === "Errors by service");
  assert.equal(t.frequency, 300);
  assert.deepEqual(t.threshold, { op: ">", value: 100, exceeded_limit: 1 });
  assert.deepEqual(t.query.breakdowns, ["service.name"]);
  assert.deepEqual(t.query.filters, spec.filters);
  assert.equal(t.query.time_range, 300);
  assert.deepEqual(t.recipients, [{ type: "log" }]);
  assert.deepEqual(page.errors, []);
  await page.close();
});

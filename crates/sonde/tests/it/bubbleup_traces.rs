//! BubbleUp finds the incident's cause, checked against a brute-force count over the
//! generated events; trace lookups return exactly a trace's spans and skip the segments whose
//! bloom filters rule the trace out.

use crate::fixtures::T0;
use crate::harness::{Server, send_json};
use serde_json::{Value, json};
use sonde_gen::{GenConfig, GenEvent, Generator, format_time};
use std::collections::HashMap;

const HOUR: i64 = 3_600_000_000;

async fn ingest(client: &reqwest::Client, server: &Server, dataset: &str, events: &[GenEvent]) {
    for chunk in events.chunks(2000) {
        let body: String = chunk.iter().map(|e| e.to_ndjson() + "\n").collect();
        let (status, r) = send_json(client.post(server.at(&format!("/api/ingest/{dataset}"))).body(body)).await;
        assert_eq!(status, 200, "{r}");
    }
}

/// Weighted shares of each value of `column` among `events` (missing as null), keyed by the
/// value's JSON text.
pub(crate) fn shares(events: &[&GenEvent], column: &str) -> HashMap<String, f64> {
    let total: i64 = events.iter().map(|e| e.sample_rate).sum();
    let mut out: HashMap<String, f64> = HashMap::new();
    for e in events {
        let v = e.data.get(column).map_or("null".to_string(), |v| v.to_string());
        *out.entry(v).or_default() += e.sample_rate as f64 / total as f64;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bubbleup_ranks_the_failing_dependency_first() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--flush-rows", "6000"]).await;
    let client = reqwest::Client::new();
    let cfg = GenConfig {
        seed: 11,
        start_us: T0,
        span_us: HOUR,
        incident: true,
    };
    let events: Vec<GenEvent> = Generator::new(cfg, 20_000).collect();
    ingest(&client, &server, "incident", &events).await;

    // The box a person draws around the slow band: the incident's window, above 1.8 s.
    let (t0, t1) = (T0 + HOUR * 60 / 100, T0 + HOUR * 75 / 100);
    let (lo, hi) = (1800.0, 1e9);
    let req = json!({
        "start_time": format_time(T0), "end_time": format_time(T0 + HOUR),
        "selection": {"heatmap": {"column": "duration_ms", "start_time": format_time(t0), "end_time": format_time(t1), "min": lo, "max": hi}},
    });
    let (status, r) = send_json(client.post(server.at("/api/bubbleup/incident")).json(&req)).await;
    assert_eq!(status, 200, "{r}");

    // Brute force over the generated events.
    let in_box = |e: &GenEvent| {
        let d = e.data["duration_ms"].as_f64().unwrap();
        e.time_us >= t0 && e.time_us < t1 && d >= lo && d <= hi
    };
    let selection: Vec<&GenEvent> = events.iter().filter(|e| in_box(e)).collect();
    let baseline: Vec<&GenEvent> = events.iter().filter(|e| !in_box(e)).collect();
    assert!(selection.len() > 200, "the box holds the slow band");
    assert_eq!(
        r["selection"]["count"],
        selection.iter().map(|e| e.sample_rate).sum::<i64>()
    );
    assert_eq!(
        r["baseline"]["count"],
        baseline.iter().map(|e| e.sample_rate).sum::<i64>()
    );

    let top = &r["columns"][0];
    assert_eq!(
        top["column"],
        "dns.provider",
        "ranking: {:?}",
        r["columns"]
            .as_array()
            .unwrap()
            .iter()
            .take(5)
            .map(|c| (c["column"].clone(), c["score"].clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(top["values"][0]["value"], "dyn");
    let (s_sel, s_base) = (shares(&selection, "dns.provider"), shares(&baseline, "dns.provider"));
    let mut tvd = 0.0;
    for v in top["values"].as_array().unwrap() {
        let key = v["value"].to_string();
        let want_sel = s_sel.get(&key).copied().unwrap_or(0.0);
        let want_base = s_base.get(&key).copied().unwrap_or(0.0);
        assert!(
            (v["selection"].as_f64().unwrap() - want_sel).abs() < 1e-9,
            "{key}: {v} vs {want_sel}"
        );
        assert!(
            (v["baseline"].as_f64().unwrap() - want_base).abs() < 1e-9,
            "{key}: {v} vs {want_base}"
        );
        tvd += (want_sel - want_base).abs();
    }
    assert!((top["score"].as_f64().unwrap() - tvd / 2.0).abs() < 1e-9);
    assert!(s_sel[&json!("dyn").to_string()] > 0.99, "the slow band is all dyn");
    // The box's own column is not compared (it differs by construction).
    assert!(
        r["columns"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["column"] != "duration_ms")
    );

    // A group selection: the payments service is what sends payment.* fields.
    let req = json!({"start_time": format_time(T0), "end_time": format_time(T0 + HOUR), "selection": {"group": {"service.name": "payments"}}});
    let (status, r) = send_json(client.post(server.at("/api/bubbleup/incident")).json(&req)).await;
    assert_eq!(status, 200, "{r}");
    // Fields only payments sends, and its own routes, differ completely.
    let perfect: Vec<&str> = r["columns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| (c["score"].as_f64().unwrap() - 1.0).abs() < 1e-9)
        .map(|c| c["column"].as_str().unwrap())
        .collect();
    assert_eq!(perfect, vec!["http.route", "payment.amount_cents", "payment.currency"]);

    let (status, e) = send_json(
        client.post(server.at("/api/bubbleup/incident")).json(&json!({"selection": {"heatmap": {"column": "service.name", "start_time": 0, "end_time": 1, "min": 0, "max": 1}}})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().contains("not numeric"), "{e}");
}

/// A field of a generated event by its flattened name: a top-level key with dots, or the nested
/// path the dots spell.
fn field<'a>(e: &'a GenEvent, name: &str) -> Option<&'a Value> {
    e.data
        .get(name)
        .or_else(|| e.data.pointer(&format!("/{}", name.replace('.', "/"))))
        .filter(|v| !v.is_null())
}

/// The numeric columns' buckets equal a brute force over the events (20 over the population's
/// range, weighted shares per side), whether BubbleUp keeps the numbers as it reads the rows
/// once (the default where they fit in an eighth of `--query-memory-limit`) or reads them
/// twice (ranges first, as past that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_buckets_match_a_brute_force_read_once_or_twice() {
    let client = reqwest::Client::new();
    let cfg = GenConfig {
        seed: 12,
        start_us: T0,
        span_us: HOUR,
        incident: true,
    };
    let events: Vec<GenEvent> = Generator::new(cfg, 12_000).collect();
    let (t0, t1) = (T0 + HOUR * 60 / 100, T0 + HOUR * 75 / 100);
    let (lo, hi) = (1800.0, 1e9);
    let in_box = |e: &GenEvent| {
        let d = e.data["duration_ms"].as_f64().unwrap();
        e.time_us >= t0 && e.time_us < t1 && d >= lo && d <= hi
    };
    let sides: [Vec<&GenEvent>; 2] = [
        events.iter().filter(|e| in_box(e)).collect(),
        events.iter().filter(|e| !in_box(e)).collect(),
    ];
    let totals = sides
        .clone()
        .map(|s| s.iter().map(|e| e.sample_rate).sum::<i64>() as f64);
    let req = json!({
        "start_time": format_time(T0), "end_time": format_time(T0 + HOUR),
        "selection": {"heatmap": {"column": "duration_ms", "start_time": format_time(t0), "end_time": format_time(t1), "min": lo, "max": hi}},
    });
    // 12,000 rows of at least 4 numbers (asserted below) need at least 492 KB kept: read once
    // under 64 MiB (512 MiB / 8), twice under 250 KB (2 MB / 8).
    for flags in [vec![], vec!["--query-memory-limit", "2000000"]] {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec!["--flush-rows", "5000"];
        all.extend(&flags);
        let server = Server::start(dir.path(), &all).await;
        ingest(&client, &server, "nums", &events).await;
        let (status, r) = send_json(client.post(server.at("/api/bubbleup/nums")).json(&req)).await;
        assert_eq!(status, 200, "{flags:?}: {r}");
        let mut checked = 0;
        for c in r["columns"].as_array().unwrap() {
            let Some(buckets) = c["buckets"].as_array() else {
                continue;
            };
            let name = c["column"].as_str().unwrap();
            let values: Vec<f64> = events.iter().filter_map(|e| field(e, name)?.as_f64()).collect();
            let (min, max) = values
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
            let width = if max > min { (max - min) / 20.0 } else { 1.0 };
            let mut want = vec![[0.0f64; 2]; 20];
            let mut missing = [0.0f64; 2];
            for (side, evs) in sides.iter().enumerate() {
                for e in evs {
                    let w = e.sample_rate as f64 / totals[side];
                    match field(e, name).and_then(Value::as_f64) {
                        Some(v) => want[(((v - min) / width) as i64).clamp(0, 19) as usize][side] += w,
                        None => missing[side] += w,
                    }
                }
            }
            assert_eq!(buckets.len(), 20, "{flags:?} {name}");
            for (i, b) in buckets.iter().enumerate() {
                let near = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() <= 1e-9 * b.abs().max(1.0);
                assert!(
                    near(&b["lower"], min + i as f64 * width),
                    "{flags:?} {name} bucket {i}: {b}"
                );
                assert!(
                    near(&b["selection"], want[i][0]),
                    "{flags:?} {name} bucket {i}: {b} vs {:?}",
                    want[i]
                );
                assert!(
                    near(&b["baseline"], want[i][1]),
                    "{flags:?} {name} bucket {i}: {b} vs {:?}",
                    want[i]
                );
            }
            assert!(
                near_share(&c["missing"], missing),
                "{flags:?} {name}: {} vs {missing:?}",
                c["missing"]
            );
            checked += 1;
        }
        assert!(checked >= 4, "{flags:?}: only {checked} numeric columns");
    }
}

/// Whether a `{selection, baseline}` share is `want`.
fn near_share(got: &Value, want: [f64; 2]) -> bool {
    (got["selection"].as_f64().unwrap() - want[0]).abs() < 1e-9
        && (got["baseline"].as_f64().unwrap() - want[1]).abs() < 1e-9
}

fn span(trace: &str, id: &str, parent: Option<&str>, service: &str, t: i64, dur: f64) -> Value {
    let mut data = json!({"trace.trace_id": trace, "trace.span_id": id, "name": format!("op-{id}"), "service.name": service, "duration_ms": dur});
    if let Some(p) = parent {
        data["trace.parent_id"] = json!(p);
    }
    json!({"data": data, "time": format_time(t)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_lookup_returns_exactly_the_trace_and_skips_other_segments() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--flush-rows", "200"]).await;
    let client = reqwest::Client::new();
    let mut rng = sonde_gen::Rng::new(5);
    let needle = "4bf92f3577b34da6a3ce929d0e0e4736";
    // Twelve segments of other traces in "frontend"; the needle's spans in two of them, in the
    // write buffer, and in another dataset.
    for seg in 0..12 {
        let mut batch: Vec<Value> = (0..200)
            .map(|i| {
                // Random 128-bit ids, as real tracers make them: min/max statistics cannot
                // rule a trace out, only the bloom filters can.
                let t = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64() ^ i);
                span(
                    &t,
                    &format!("{:016x}", rng.next_u64()),
                    None,
                    "frontend",
                    T0 + seg * 60_000_000 + i as i64 * 1000,
                    5.5,
                )
            })
            .collect();
        if seg == 3 {
            batch[10] = span(needle, "root", None, "frontend", T0 + seg * 60_000_000, 120.5);
        }
        if seg == 7 {
            batch[20] = span(
                needle,
                "child-a",
                Some("root"),
                "frontend",
                T0 + 3 * 60_000_000 + 1000,
                40.25,
            );
        }
        let (status, r) = send_json(client.post(server.at("/1/batch/frontend")).json(&batch)).await;
        assert_eq!(status, 200, "{r}");
        for _ in 0..400 {
            let (_, d) = send_json(client.get(server.at("/api/datasets"))).await;
            if d["datasets"][0]["buffered_rows"] == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let buffered = json!([
        span(
            needle,
            "child-b",
            Some("root"),
            "frontend",
            T0 + 3 * 60_000_000 + 5000,
            60.0
        ),
        span(
            needle,
            "orphan",
            Some("lost-parent"),
            "frontend",
            T0 + 3 * 60_000_000 + 9000,
            1.5
        ),
    ]);
    send_json(client.post(server.at("/1/batch/frontend")).json(&buffered)).await;
    let backend = json!([
        span(
            needle,
            "db-call",
            Some("child-a"),
            "backend",
            T0 + 3 * 60_000_000 + 2000,
            30.0
        ),
        span("another-trace", "x", None, "backend", T0, 1.0),
    ]);
    send_json(client.post(server.at("/1/batch/backend")).json(&backend)).await;

    let (status, r) = send_json(client.get(server.at(&format!("/api/traces/frontend/{needle}")))).await;
    assert_eq!(status, 200, "{r}");
    let mut ids: Vec<&str> = r["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["trace.span_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["child-a", "child-b", "db-call", "orphan", "root"]);
    let db = r["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["trace.span_id"] == "db-call")
        .unwrap();
    assert_eq!(db["dataset"], "backend");
    assert_eq!(db["duration_ms"], 30.0);
    // The tree: root → child-a → db-call, root → child-b; the orphan is a root with a missing
    // parent. It comes flat, in depth-first order, parents named by their index in `spans`.
    let tree = r["tree"].as_array().unwrap();
    assert_eq!(tree.len(), 5, "{tree:?}");
    let id_of = |i: &Value| {
        r["spans"][i.as_u64().unwrap() as usize]["trace.span_id"]
            .as_str()
            .unwrap()
    };
    let parent_of = |id: &str| {
        let n = tree.iter().find(|n| n["span_id"] == id).unwrap();
        (!n["parent"].is_null()).then(|| id_of(&n["parent"]))
    };
    assert_eq!(parent_of("root"), None);
    assert_eq!(parent_of("child-a"), Some("root"));
    assert_eq!(parent_of("child-b"), Some("root"));
    assert_eq!(parent_of("db-call"), Some("child-a"));
    assert_eq!(parent_of("orphan"), None);
    let order: Vec<&str> = tree.iter().map(|n| n["span_id"].as_str().unwrap()).collect();
    assert_eq!(order, vec!["root", "child-a", "db-call", "child-b", "orphan"]);
    assert_eq!(
        tree.iter().find(|n| n["span_id"] == "orphan").unwrap()["missing_parent"],
        true
    );
    assert_eq!(r["meta"]["roots"], 2);

    // The trace-id index kept the scan off the ten frontend segments without the trace (their
    // files were not opened); in the two it opened, the bloom filters matched.
    let m = &r["meta"];
    assert_eq!(m["segments_total"], 12, "{m}");
    assert_eq!(m["segments_pruned_by_index"], 10, "{m}");
    assert_eq!(m["segments_scanned"], 2, "{m}");
    assert_eq!(m["row_groups_matched_by_bloom_filter"], 2, "{m}");
    assert_eq!(m["row_groups_pruned_by_bloom_filter"], 0, "{m}");

    let (status, _) = send_json(client.get(server.at("/api/traces/frontend/nosuchtrace"))).await;
    assert_eq!(status, 404);
}

/// The first `n` columns of a BubbleUp answer with their scores, in the answer's order (which
/// must be best first, equal scores by name).
fn ranking(r: &Value, n: usize) -> Vec<(String, f64)> {
    let all: Vec<(String, f64)> = r["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["column"].as_str().unwrap().to_string(), c["score"].as_f64().unwrap()))
        .collect();
    for w in all.windows(2) {
        assert!(
            w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0),
            "out of order: {w:?}"
        );
    }
    all.into_iter().take(n).collect()
}

/// A BubbleUp of the `big` dataset as the server answers it by default (sampled past
/// `--bubbleup-sample-rows`), and the same asked `"exact": true`.
async fn sampled_and_exact(client: &reqwest::Client, server: &Server, req: &Value) -> (Value, Value) {
    let ask = |req: Value| async move {
        let (status, r) = send_json(client.post(server.at("/api/bubbleup/big")).json(&req)).await;
        assert_eq!(status, 200, "{r}");
        r
    };
    let mut exact = req.clone();
    exact["exact"] = json!(true);
    (ask(req.clone()).await, ask(exact).await)
}

/// Scores closer than this are ties a sample is not asked to order (the README's rule, and
/// `benches/suite.py`'s `BUBBLE_TIE`).
const BUBBLE_TIE: f64 = 0.01;

/// The tie rule for a sampled BubbleUp: at each of the first `n` places, the sampled answer's
/// column scores, exactly, within [`BUBBLE_TIE`] of the exact answer's column at that place.
fn assert_ranks_alike(sampled: &Value, exact: &Value, n: usize) {
    let (a, b) = (ranking(sampled, n), ranking(exact, usize::MAX));
    let exact_score = |name: &str| b.iter().find(|(n, _)| n == name).map(|(_, s)| *s).unwrap();
    for (i, (name, _)) in a.iter().enumerate() {
        let (want, got) = (b[i].1, exact_score(name));
        assert!(
            (want - got).abs() <= BUBBLE_TIE,
            "place {i}: sampled {name} (exact score {got}) where the exact answer has {} ({want})\n sampled {a:?}\n   exact {:?}",
            b[i].0,
            &b[..n]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_bubbleup_ranks_the_top_columns_as_the_exact_one() {
    let dir = tempfile::tempdir().unwrap();
    // Populations over 20,000 rows are sampled: here about one row in nine of the baseline.
    // The layout is fixed, four time-ordered segments of 30,000 rows: how many rows a side
    // reads follows from the rows of the segments its box overlaps, which a compaction
    // merging them part-way through the test (every 30 s by default) would change.
    let server = Server::start(
        dir.path(),
        &[
            "--flush-rows",
            "30000",
            "--bubbleup-sample-rows",
            "20000",
            "--compaction-target-rows",
            "0",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let cfg = GenConfig {
        seed: 5,
        start_us: T0,
        span_us: HOUR,
        incident: true,
    };
    let events: Vec<GenEvent> = Generator::new(cfg, 120_000).collect();
    ingest(&client, &server, "big", &events).await;
    let mut flushed = false;
    for _ in 0..800 {
        let (_, d) = send_json(client.get(server.at("/api/datasets"))).await;
        if d["datasets"][0]["buffered_rows"] == 0 && d["datasets"][0]["segments"] == 4 {
            flushed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(flushed, "the four segments were not flushed");

    let (t0, t1) = (T0 + HOUR * 60 / 100, T0 + HOUR * 75 / 100);
    let req = json!({
        "start_time": format_time(T0), "end_time": format_time(T0 + HOUR),
        "selection": {"heatmap": {"column": "duration_ms", "start_time": format_time(t0), "end_time": format_time(t1), "min": 1800.0, "max": 1e9}},
    });
    let (sampled, exact) = sampled_and_exact(&client, &server, &req).await;

    // The sample is said, and what it read is about a tenth of the baseline; the selection
    // (small) is counted whole.
    let s = &sampled["meta"]["sampled"];
    assert!(exact["meta"].get("sampled").is_none(), "{}", exact["meta"]);
    let (sel, base) = (&s["selection_rows"], &s["baseline_rows"]);
    assert!(sel[1].as_u64().unwrap() > 500, "the box holds the slow band: {s}");
    assert_eq!(sel[0], sel[1], "{s}");
    assert!(s["selection_blocks"].is_null(), "{s}");
    assert!(s["baseline_blocks"]["every"].as_u64().unwrap() > 1, "{s}");
    assert_eq!(sel[1].as_u64().unwrap() + base[1].as_u64().unwrap(), 120_000, "{s}");
    let read = base[0].as_f64().unwrap() / base[1].as_f64().unwrap();
    assert!((0.05..0.2).contains(&read), "read {read} of the baseline: {s}");
    // The sizes are exact either way.
    assert_eq!(sampled["selection"], exact["selection"]);
    assert_eq!(sampled["baseline"], exact["baseline"]);

    // The same five columns first, in the same order: here no two are within the tie rule's
    // distance but `error` and `http.status_code`, which score the same and rank by name.
    let (a, b) = (ranking(&sampled, 5), ranking(&exact, 5));
    assert_eq!(b[0].0, "dns.provider", "{b:?}");
    eprintln!("sampled {a:?}\n  exact {:?}", ranking(&exact, 8));
    let names = |r: &[(String, f64)]| r.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "sampled {a:?}\n  exact {b:?}");
    for ((_, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() < 0.05, "scores: sampled {a:?}\n  exact {b:?}");
    }
    assert_ranks_alike(&sampled, &exact, 5);
    // The selection side of a value column is counted whole: its shares are the exact ones.
    let share = |r: &Value| r["columns"][0]["values"][0]["selection"].as_f64().unwrap();
    assert_eq!(share(&sampled), share(&exact));

    // A selection holding more than half of what is counted (the incident's whole window):
    // both sides are sampled, each at its own rate (the selection, dense in its box, at a
    // higher one), about 20,000 rows read in all, and the ranking holds.
    let req = json!({
        "start_time": format_time(T0), "end_time": format_time(T0 + HOUR),
        "selection": {"heatmap": {"column": "duration_ms", "start_time": format_time(T0 + HOUR * 55 / 100),
                                  "end_time": format_time(T0 + HOUR * 80 / 100), "min": 0.0, "max": 1e9}},
    });
    let (sampled, exact) = sampled_and_exact(&client, &server, &req).await;
    let s = &sampled["meta"]["sampled"];
    for side in ["selection", "baseline"] {
        let [read, all] = [0, 1].map(|i| s[format!("{side}_rows")][i].as_f64().unwrap());
        assert!(all > 20_000.0 && (3_000.0..12_500.0).contains(&read), "{side}: {s}");
        assert!(s[format!("{side}_blocks")]["every"].as_u64().unwrap() > 1, "{s}");
    }
    let rate =
        |side: &str| s[format!("{side}_rows")][0].as_f64().unwrap() / s[format!("{side}_rows")][1].as_f64().unwrap();
    assert!(
        rate("selection") > rate("baseline") * 1.5,
        "each side at its own rate: {s}"
    );
    assert_eq!(sampled["selection"], exact["selection"]);
    eprintln!(
        "both sampled {:?}\n  exact {:?}",
        ranking(&sampled, 6),
        ranking(&exact, 6)
    );
    assert_ranks_alike(&sampled, &exact, 5);
}

//! Precomputed per-segment partials stay exact through a dataset's whole life: answers read
//! from them equal the brute-force model after ingest (new events in the write buffer beside
//! cached segments), flushes, compaction (new segments replace cached ones), retention (cached
//! segments dropped) and restarts (the cache starts empty).

use crate::fixtures::T0;
use crate::harness::{Server, send_json};
use crate::query_diff::{Ev, check_answer, close, gen_events, model, random_spec, send};
use serde_json::{Value, json};
use sonde_gen::Rng;
use std::time::Duration;

const ROLLUP: &[&str] = &["COUNT", "SUM", "AVG", "MIN", "MAX", "COUNT_DISTINCT"];

/// `n` random specs over the hour from `t0` whose calculations all roll up (the ones
/// precomputed partials answer).
fn rollup_specs(r: &mut Rng, t0: i64, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let spec = random_spec(r, t0);
        let calcs = spec["calculations"].as_array().unwrap();
        if calcs.iter().all(|c| ROLLUP.contains(&c["op"].as_str().unwrap())) {
            out.push(spec);
        }
    }
    out
}

async fn dataset(client: &reqwest::Client, server: &Server, ds: &str) -> Value {
    let (_, d) = send_json(client.get(server.at("/api/datasets"))).await;
    d["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == ds)
        .cloned()
        .unwrap_or(Value::Null)
}

/// A server in `dir` with `extra` flags that flushes every 700 events and never compacts,
/// holding `events` in dataset `ds`, each full chunk flushed.
async fn flushed_server(
    dir: &std::path::Path,
    client: &reqwest::Client,
    ds: &str,
    events: &[Ev],
    extra: &[&str],
) -> Server {
    let mut flags = vec!["--flush-rows", "700", "--compaction-target-rows", "0"];
    flags.extend_from_slice(extra);
    let server = Server::start(dir, &flags).await;
    send_flushed(client, &server, ds, events).await;
    server
}

/// Sends `events` in chunks of the flush size, waiting for each full chunk's flush.
async fn send_flushed(client: &reqwest::Client, server: &Server, ds: &str, events: &[Ev]) {
    for chunk in events.chunks(700) {
        send(client, server, ds, chunk).await;
        if chunk.len() < 700 {
            break;
        }
        wait_for(client, server, ds, |d| d["buffered_rows"] == 0).await;
    }
}

async fn wait_for(client: &reqwest::Client, server: &Server, ds: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..600 {
        let d = dataset(client, server, ds).await;
        if done(&d) {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{ds} never got there: {}", dataset(client, server, ds).await);
}

/// Asks every spec twice, checking both answers against the model; the segments the second
/// round answered from partials.
async fn check_twice(client: &reqwest::Client, server: &Server, ds: &str, specs: &[Value], events: &[Ev]) -> u64 {
    let mut precomputed = 0;
    for round in 0..2 {
        for (i, spec) in specs.iter().enumerate() {
            let (status, got) = send_json(client.post(server.at(&format!("/api/query/{ds}"))).json(spec)).await;
            assert_eq!(status, 200, "{ds} spec {i} {spec}: {got}");
            check_answer(i, spec, &got, events);
            if round == 1 {
                precomputed += got["meta"]["segments_precomputed"].as_u64().unwrap();
            }
        }
    }
    precomputed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn precomputed_partials_stay_exact_through_ingest_compaction_retention_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut rng = Rng::new(7);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    // "old": far past a day's retention; "new": three hours ago, inside it.
    let new_t0 = now - 3 * 3_600_000_000;
    let old = gen_events(&mut rng, T0);
    let mut new = gen_events(&mut rng, new_t0);
    let old_specs = rollup_specs(&mut rng, T0, 40);
    let new_specs = rollup_specs(&mut rng, new_t0, 40);

    // 1. Ingest and flush: 8 segments each, 400 events left in each buffer.
    let flags = ["--flush-rows", "700", "--compaction-target-rows", "0"];
    let mut server = Server::start(dir.path(), &flags).await;
    send_flushed(&client, &server, "old", &old).await;
    send_flushed(&client, &server, "new", &new).await;
    assert_eq!(dataset(&client, &server, "new").await["segments"], 8);
    assert!(check_twice(&client, &server, "old", &old_specs, &old).await > 0);
    assert!(check_twice(&client, &server, "new", &new_specs, &new).await > 0);
    let api = server.api(&client);
    assert!(api.metric("sonde_partials_hits_total").await > 0 && api.metric("sonde_partials_misses_total").await > 0);
    assert!(api.metric("sonde_partials_bytes").await > 0);

    // 2. More events into the buffer, beside the cached segments.
    let more: Vec<Ev> = gen_events(&mut Rng::new(8), new_t0).into_iter().take(250).collect();
    send(&client, &server, "new", &more).await;
    new.extend(more);
    assert!(check_twice(&client, &server, "new", &new_specs, &new).await > 0);

    // 3. Compaction merges the segments into new ones (the buffers flush on the way down).
    server.stop().await;
    let flags = [
        "--flush-rows",
        "700",
        "--compaction-target-rows",
        "5000",
        "--maintenance-interval",
        "50ms",
    ];
    let mut server = Server::start(dir.path(), &flags).await;
    for ds in ["old", "new"] {
        wait_for(&client, &server, ds, |d| d["segments"].as_u64().unwrap() <= 4).await;
    }
    assert!(check_twice(&client, &server, "old", &old_specs, &old).await > 0);
    assert!(check_twice(&client, &server, "new", &new_specs, &new).await > 0);

    // 4. Retention drops every old segment while the new ones' partials are cached.
    server.stop().await;
    let flags = [
        "--flush-rows",
        "700",
        "--compaction-target-rows",
        "0",
        "--retention",
        "1d",
        "--maintenance-interval",
        "50ms",
    ];
    let mut server = Server::start(dir.path(), &flags).await;
    assert!(check_twice(&client, &server, "new", &new_specs, &new).await > 0);
    wait_for(&client, &server, "old", |d| d["rows"] == 0).await;
    check_twice(&client, &server, "old", &old_specs, &[]).await;
    assert!(check_twice(&client, &server, "new", &new_specs, &new).await > 0);

    // 5. A restart: the cache starts empty and fills again.
    server.stop().await;
    server.restart().await;
    assert!(check_twice(&client, &server, "new", &new_specs, &new).await > 0);
    check_twice(&client, &server, "old", &old_specs, &[]).await;
}

/// Whether `got` equals `want`, a percentile's value within the sketches' relative error.
fn within_sketch_error(got: &Value, want: &Value) -> bool {
    let (Value::Object(g), Value::Object(w)) = (got, want) else {
        return close(got, want);
    };
    g.len() == w.len()
        && w.iter().all(|(k, w)| {
            let Some(g) = g.get(k) else { return false };
            match (k.starts_with('P') && k.contains('('), g.as_f64(), w.as_f64()) {
                (true, Some(g), Some(w)) => (g - w).abs() <= 0.005 * w.abs() * 1.000_001 + 1e-9,
                _ => close(g, w),
            }
        })
}

/// Checks `got`, the answer to `spec`, against the model: the same groups and buckets, each
/// value equal to the model's, a percentile within the sketches' relative error. Returns the
/// number of result groups.
fn check_within_sketch_error(what: &str, spec: &Value, got: &Value, events: &[Ev]) -> usize {
    let want = model(spec, events);
    let results = got["data"]["results"].as_array().unwrap();
    assert_eq!(results.len(), want.results.len(), "{what}: {got}");
    for (g, w) in results.iter().zip(&want.results) {
        let w = Value::Object(w.clone());
        assert!(
            within_sketch_error(&g["data"], &w),
            "{what}\n got {}\nwant {w}",
            g["data"]
        );
    }
    let series = got["data"]["series"].as_array().unwrap();
    assert_eq!(series.len(), want.series.len(), "{what}: series length");
    for (s, (_, w)) in series.iter().zip(&want.series) {
        let w = Value::Object(w.clone());
        assert!(
            within_sketch_error(&s["data"], &w),
            "{what}\n got {}\nwant {w}",
            s["data"]
        );
    }
    results.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sketched_percentiles_are_within_half_a_percent_of_the_exact_ones() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut rng = Rng::new(11);
    let events = gen_events(&mut rng, T0);
    // Every percentile breakdown over more than one event is sketched.
    let server = flushed_server(dir.path(), &client, "sk", &events, &["--exact-percentile-rows", "1"]).await;
    // COUNT first, so the order (and so the groups kept) does not depend on the percentiles.
    let specs: Vec<Value> = (0..60)
        .map(|_| {
            let mut spec = random_spec(&mut rng, T0);
            let mut calcs = vec![json!({"op": "COUNT"})];
            for _ in 0..1 + rng.below(2) {
                let op = *rng.pick(&["P001", "P50", "P90", "P99", "P999"]);
                let column = *rng.pick(&["dur", "duration_ms", "bytes", "num", "status"]);
                calcs.push(json!({"op": op, "column": column}));
            }
            spec["calculations"] = json!(calcs);
            spec["orders"] = json!([]);
            spec.as_object_mut().unwrap().remove("havings");
            spec
        })
        .collect();
    let mut precomputed = 0;
    let mut approximate = 0;
    for round in 0..2 {
        for (i, spec) in specs.iter().enumerate() {
            let (status, got) = send_json(client.post(server.at("/api/query/sk")).json(spec)).await;
            assert_eq!(status, 200, "spec {i} {spec}: {got}");
            let results = check_within_sketch_error(&format!("spec {i} {spec}"), spec, &got, &events);
            if results > 0 {
                assert_eq!(got["meta"]["approximate"]["what"], "percentiles", "{}", got["meta"]);
                approximate += 1;
            }
            if round == 1 {
                precomputed += got["meta"]["segments_precomputed"].as_u64().unwrap();
            }
        }
    }
    assert!(approximate > 60, "most specs have groups: {approximate}");
    assert!(precomputed > 0, "sketches are precomputed partials too");
}

/// Percentiles of one column share one collection of values and answer as the model does;
/// a breakdown whose collections would pass `--query-memory-limit` is answered from sketches
/// and says why, while one that fits stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn percentiles_share_their_values_and_give_way_to_sketches_past_the_query_memory() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut rng = Rng::new(23);
    let events = gen_events(&mut rng, T0);
    // 6,000 events in the range: a collection counts 64 bytes an event, 384,000 bytes, so
    // one collection fits in 2,000,000 bytes and six do not.
    let server = flushed_server(dir.path(), &client, "pm", &events, &["--query-memory-limit", "2000000"]).await;
    let spec = |calcs: Vec<Value>| {
        json!({
            "start_time": sonde_gen::format_time(T0 - 600_000_000),
            "end_time": sonde_gen::format_time(T0 + 2 * 3_600_000_000),
            "breakdowns": ["svc"],
            "filters": [],
            "orders": [],
            "calculations": calcs,
        })
    };
    let pct = |op: &str, column: &str| json!({"op": op, "column": column});
    // Five percentiles of one column (and one of another): two collections.
    let shared = spec(vec![
        json!({"op": "COUNT"}),
        pct("P50", "duration_ms"),
        pct("P90", "duration_ms"),
        pct("P99", "duration_ms"),
        pct("P001", "duration_ms"),
        pct("P999", "duration_ms"),
        pct("P50", "dur"),
    ]);
    // Six columns' percentiles: six collections.
    let columns = ["status", "bytes", "dur", "num", "duration_ms", "samplerate"];
    let many = spec(
        std::iter::once(json!({"op": "COUNT"}))
            .chain(columns.iter().map(|c| pct("P99", c)))
            .collect(),
    );

    let (status, got) = send_json(client.post(server.at("/api/query/pm")).json(&shared)).await;
    assert_eq!(status, 200, "{got}");
    assert!(got["meta"]["approximate"].is_null(), "{}", got["meta"]);
    assert!(check_answer(0, &shared, &got, &events) > 0);

    let (status, got) = send_json(client.post(server.at("/api/query/pm")).json(&many)).await;
    assert_eq!(status, 200, "{got}");
    let reason = got["meta"]["approximate"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("--query-memory-limit 2000000"), "{}", got["meta"]);
    assert!(check_within_sketch_error("six columns", &many, &got, &events) > 0);
}

/// COUNT_DISTINCT rolls up from per-segment sets of distinct values where they are small, and
/// is counted from the rows where they are not: a nearly unique column's sets are too large to
/// keep, the first answer says so to the cache, and later ones precompute nothing for it. Both
/// stay exact (checked against the brute-force model), and the small sets stay precomputed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn count_distinct_sets_are_kept_where_small_and_counted_from_rows_where_not() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let events = gen_events(&mut Rng::new(21), T0);
    // An entry holds at most 5,000 bytes: 700 rows' `dur` (eighths up to 2,000: nearly one
    // value a row, 9 bytes each) do not fit; `svc`'s four values per bucket and group do.
    let server = flushed_server(dir.path(), &client, "cd", &events, &["--partials-cache-bytes", "40000"]).await;
    let spec = |column: &str, breakdown: &str| {
        json!({"calculations": [{"op": "COUNT_DISTINCT", "column": column}, {"op": "COUNT"}],
               "breakdowns": [breakdown], "granularity": 600, "filters": [], "orders": [],
               "start_time": T0 / 1_000_000, "end_time": T0 / 1_000_000 + 3600})
    };
    let small = [spec("svc", "region")];
    let large = [spec("dur", "svc")];
    assert!(check_twice(&client, &server, "cd", &small, &events).await > 0);
    assert_eq!(check_twice(&client, &server, "cd", &large, &events).await, 0);
    // Still exact, and still counted from the rows, when asked again later.
    assert_eq!(check_twice(&client, &server, "cd", &large, &events).await, 0);
    assert!(check_twice(&client, &server, "cd", &small, &events).await > 0);
}

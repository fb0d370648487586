//! Traces whose data is not a clean tree — the same spans sent twice, a span that is its own
//! ancestor, Zipkin's shared client/server ids, 64-bit ids — and traces still in the write
//! buffer: each answered with every span once, in linear size.

use crate::fixtures::T0;
use crate::harness::{Server, send_json};
use serde_json::{Value, json};
use sonde_gen::format_time;

/// Posts a batch whose events must all be accepted.
async fn post(client: &reqwest::Client, server: &Server, dataset: &str, batch: &[Value]) {
    let accepted = server.api(client).post_batch(dataset, batch).await;
    assert_eq!(accepted, batch.len() as u64);
}

fn span(trace: &str, id: &str, parent: Option<&str>, t: i64) -> Value {
    let mut data = json!({"trace.trace_id": trace, "trace.span_id": id, "name": format!("op-{id}"),
                          "service.name": "svc", "duration_ms": 1.5});
    if let Some(p) = parent {
        data["trace.parent_id"] = json!(p);
    }
    json!({"data": data, "time": format_time(t)})
}

/// The trace answer and its size in bytes.
async fn trace(client: &reqwest::Client, server: &Server, dataset: &str, id: &str) -> (u16, Value, usize) {
    let r = client
        .get(server.at(&format!("/api/traces/{dataset}/{id}")))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let len = text.len();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), len)
}

/// Every span index exactly once in the tree (as a node or a folded duplicate), parents first.
fn assert_every_span_once(r: &Value) {
    let n = r["spans"].as_array().unwrap().len();
    let mut seen = vec![0; n];
    let mut placed = vec![false; n];
    for node in r["tree"].as_array().unwrap() {
        let i = node["index"].as_u64().unwrap() as usize;
        seen[i] += 1;
        if let Some(p) = node["parent"].as_u64() {
            assert!(placed[p as usize], "parent {p} after its child {i}");
        }
        placed[i] = true;
        for d in node["duplicates"].as_array().into_iter().flatten() {
            seen[d.as_u64().unwrap() as usize] += 1;
        }
    }
    assert!(seen.iter().all(|&c| c == 1), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_span_ids_at_depth_40_answer_in_linear_size() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let chain: Vec<Value> = (0..40)
        .map(|i| {
            let parent = (i > 0).then(|| format!("s{}", i - 1));
            span(trace_id, &format!("s{i}"), parent.as_deref(), T0 + i * 1000)
        })
        .collect();
    // Each span sent twice to one dataset (a retried batch) and once more to another (the same
    // spans loaded for testing): three copies of each of 40 spans.
    post(&client, &server, "spans", &chain).await;
    post(&client, &server, "spans", &chain).await;
    post(&client, &server, "spans-copy", &chain).await;
    let (status, r, bytes) = trace(&client, &server, "spans", trace_id).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["spans"].as_array().unwrap().len(), 120);
    let tree = r["tree"].as_array().unwrap();
    assert_eq!(tree.len(), 40, "one node per span id");
    assert_every_span_once(&r);
    for (depth, node) in tree.iter().enumerate() {
        assert_eq!(node["depth"], depth as u64);
        assert_eq!(node["duplicates"].as_array().unwrap().len(), 2);
    }
    assert_eq!(r["meta"]["roots"], 1);
    assert_eq!(r["meta"]["duplicates"], 80);
    // Linear: 120 spans of a few hundred bytes each, not 2^40 paths.
    assert!(bytes < 120 * 1024, "{bytes} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_is_broken_and_marked_and_shared_halves_are_two_spans() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    // a → b → c → a (each the parent of the next), d under c.
    let cyc = "11111111111111111111111111111111";
    post(
        &client,
        &server,
        "spans",
        &[
            span(cyc, "a", Some("c"), T0),
            span(cyc, "b", Some("a"), T0 + 1000),
            span(cyc, "c", Some("b"), T0 + 2000),
            span(cyc, "d", Some("c"), T0 + 3000),
            span(cyc, "self", Some("self"), T0 + 4000),
        ],
    )
    .await;
    let (status, r, _) = trace(&client, &server, "spans", cyc).await;
    assert_eq!(status, 200, "{r}");
    assert_every_span_once(&r);
    let tree = r["tree"].as_array().unwrap();
    assert_eq!(tree.len(), 5);
    assert_eq!(r["meta"]["cycles_broken"], 2);
    let a = tree.iter().find(|n| n["span_id"] == "a").unwrap();
    assert_eq!((a["cycle"].clone(), a["parent"].clone()), (json!(true), Value::Null));
    let own = tree.iter().find(|n| n["span_id"] == "self").unwrap();
    assert_eq!(own["cycle"], true);
    let order: Vec<&str> = tree.iter().map(|n| n["span_id"].as_str().unwrap()).collect();
    assert_eq!(order, ["a", "b", "c", "d", "self"]);

    // Zipkin's shared spans: the client and server halves of one call carry one span id.
    let shared = "22222222222222222222222222222222";
    let half = |kind: &str, t: i64, dur: f64| {
        let mut s = span(shared, "call", Some("root"), t);
        s["data"]["span.kind"] = json!(kind);
        s["data"]["duration_ms"] = json!(dur);
        s
    };
    post(
        &client,
        &server,
        "spans",
        &[
            span(shared, "root", None, T0),
            // The server's clock runs a little early: its half starts first.
            half("server", T0 + 900, 8.0),
            half("client", T0 + 1000, 10.0),
            span(shared, "db", Some("call"), T0 + 1500),
        ],
    )
    .await;
    let (status, r, _) = trace(&client, &server, "spans", shared).await;
    assert_eq!(status, 200, "{r}");
    assert_every_span_once(&r);
    let tree = r["tree"].as_array().unwrap();
    assert_eq!(tree.len(), 4, "both halves are spans of their own");
    let kind_of = |n: &Value| r["spans"][n["index"].as_u64().unwrap() as usize]["span.kind"].clone();
    assert_eq!(kind_of(&tree[1]), "client");
    assert_eq!(kind_of(&tree[2]), "server");
    assert_eq!(tree[2]["shared_id"], true);
    assert_eq!(tree[2]["parent"], tree[1]["index"]);
    // The work done under the call hangs under the server half.
    assert_eq!(tree[3]["span_id"], "db");
    assert_eq!(tree[3]["parent"], tree[2]["index"]);
    assert_eq!(tree[3]["depth"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_id_is_found_by_its_16_and_32_digit_forms_in_any_case() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    // OTLP stores a 64-bit id left-padded to 128 bits.
    let otlp = json!({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "zipkin-app"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "0000000000000000abcdef0123456789", "spanId": "1111111111111111",
            "name": "GET /", "kind": 2,
            "startTimeUnixNano": "1767225600000000000", "endTimeUnixNano": "1767225600005000000"}]}]}]});
    let r = client
        .post(server.at("/v1/traces"))
        .header("content-type", "application/json")
        .body(otlp.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    // A client that sent the 64-bit form itself, in upper case.
    post(
        &client,
        &server,
        "zipkin-app",
        &[span("FEDCBA9876543210", "2222222222222222", None, T0)],
    )
    .await;
    for (id, span_id) in [
        ("abcdef0123456789", "1111111111111111"),
        ("ABCDEF0123456789", "1111111111111111"),
        ("0000000000000000ABCDEF0123456789", "1111111111111111"),
        ("fedcba9876543210", "2222222222222222"),
        ("0000000000000000fedcba9876543210", "2222222222222222"),
    ] {
        let (status, r, _) = trace(&client, &server, "zipkin-app", id).await;
        assert_eq!(status, 200, "{id}: {r}");
        assert_eq!(r["spans"][0]["trace.span_id"], span_id, "{id}");
        assert_eq!(r["spans"].as_array().unwrap().len(), 1);
    }
    let (status, r, _) = trace(&client, &server, "zipkin-app", "abcdef012345678a").await;
    assert_eq!(status, 404, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_datasets_are_named_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    post(&client, &server, "real", &[span("t", "s", None, T0)]).await;
    let answers = [
        send_json(client.get(server.at("/api/traces/nope/abc"))).await,
        send_json(client.get(server.at("/api/datasets/nope/columns"))).await,
        send_json(
            client
                .post(server.at("/api/query/nope"))
                .json(&json!({"calculations": [{"op": "COUNT"}]})),
        )
        .await,
        send_json(client.post(server.at("/api/events/nope")).json(&json!({}))).await,
    ];
    for (status, e) in answers {
        assert_eq!(status, 404, "{e}");
        let msg = e["error"].as_str().unwrap();
        assert_eq!(msg, "dataset \"nope\" does not exist");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_in_a_full_write_buffer_is_found_by_its_id() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing is flushed: every span stays in the write buffer. The memory cap per query is
    // small, so a lookup that copied or sorted the buffer would fail.
    let server = Server::start(
        dir.path(),
        &[
            "--flush-rows",
            "10000000",
            "--flush-age",
            "1h",
            "--query-memory-limit",
            "33554432",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let total = 300_000usize;
    let per_trace = 60usize;
    let mut rng = sonde_gen::Rng::new(9);
    let ids: Vec<String> = (0..total / per_trace)
        .map(|_| format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64()))
        .collect();
    for chunk in 0..total / 10_000 {
        let batch: Vec<Value> = (0..10_000)
            .map(|k| {
                let i = chunk * 10_000 + k;
                let (t, s) = (i / per_trace, i % per_trace);
                let parent = (s > 0).then(|| format!("{t:x}-{}", (s - 1) / 2));
                let mut e = span(&ids[t], &format!("{t:x}-{s}"), parent.as_deref(), T0 + i as i64 * 100);
                e["data"]["http.route"] = json!(format!("/api/v1/items/{}", s % 7));
                e
            })
            .collect();
        post(&client, &server, "buffered", &batch).await;
    }
    let (_, d) = send_json(client.get(server.at("/api/datasets"))).await;
    assert_eq!(d["datasets"][0]["buffered_rows"], total as u64, "{d}");
    for t in [0, 1234, ids.len() - 1] {
        let (status, r, _) = trace(&client, &server, "buffered", &ids[t]).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["spans"].as_array().unwrap().len(), per_trace);
        assert_eq!(r["meta"]["roots"], 1);
        assert_every_span_once(&r);
    }
}

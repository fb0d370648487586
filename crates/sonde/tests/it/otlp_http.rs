//! OTLP/HTTP's protocol details against the real binary: encodings, the response in the
//! request's encoding, 415, partial success, durability of what was acknowledged.

use crate::harness::{Server, read_segments, send_json};
use serde_json::{Value, json};
use std::io::Write;

fn testdata(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/otlp")
            .join(name),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_encodings_errors_and_partial_success() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();

    // Protobuf, gzip'd: an empty ExportTraceServiceResponse is zero bytes of protobuf.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&testdata("traces.pb")).unwrap();
    let r = client
        .post(server.at("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    assert!(r.bytes().await.unwrap().is_empty());

    // JSON, zstd, with one span over a limit: the others are stored, the answer says 1 rejected.
    let mut req: Value = serde_json::from_slice(&testdata("traces.json")).unwrap();
    req["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "big", "value": {"stringValue": "y".repeat(70_000)}}));
    let body = zstd::encode_all(req.to_string().as_bytes(), 3).unwrap();
    let (status, resp) = send_json(
        client
            .post(server.at("/v1/traces"))
            .header("content-type", "application/json")
            .header("content-encoding", "zstd")
            .header("x-honeycomb-dataset", "otlp-json")
            .body(body),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["partialSuccess"]["rejectedSpans"], "1");
    assert!(
        resp["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("--max-string-len / SONDE_MAX_STRING_LEN")
    );

    // Logs, protobuf.
    let r = client
        .post(server.at("/v1/logs"))
        .header("content-type", "application/protobuf")
        .body(testdata("logs.pb"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Wrong content type, and garbage.
    let (status, e) = send_json(
        client
            .post(server.at("/v1/traces"))
            .header("content-type", "text/plain")
            .body("hi"),
    )
    .await;
    assert_eq!(status, 415, "{e}");
    assert!(e["error"].as_str().unwrap().contains("application/x-protobuf"));
    let (status, e) = send_json(
        client
            .post(server.at("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(vec![0xff, 0xff, 0xff]),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("invalid OTLP protobuf"));

    // What was acknowledged is in the segments after a restart-flush.
    server.stop().await;
    let names = |ds: &str| -> Vec<String> {
        let mut v: Vec<String> = read_segments(dir.path(), ds)
            .iter()
            .flat_map(|b| crate::harness::column_json(b, "meta.signal_type").unwrap_or_default())
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("golden-svc"), vec!["trace"; 4]);
    assert_eq!(
        names("otlp-json"),
        vec!["trace"; 3],
        "the rejected span's siblings and annotations are stored"
    );
    assert_eq!(names("unknown_service"), vec!["log"; 2]);
}

/// One OTLP request whose spans map to two datasets is stored whole or not at all. Before,
/// each dataset was its own WAL write: with the first dataset's spans filling the write
/// buffers past `--max-buffer-bytes`, the second was refused (503) after the first was
/// stored, and the exporter's retry stored the first one twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_two_datasets_is_stored_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--max-buffer-bytes",
            "1000000",
            "--flush-age",
            "1h",
            "--flush-rows",
            "10000000",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let t0_ns: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
    let span = |i: u64, pad: usize| {
        json!({
            "traceId": format!("{:032x}", i + 1), "spanId": format!("{:016x}", i + 1), "name": "op",
            "startTimeUnixNano": (t0_ns + i * 1_000_000).to_string(),
            "endTimeUnixNano": (t0_ns + i * 1_000_000 + 500_000).to_string(),
            "attributes": [{"key": "pad", "value": {"stringValue": "p".repeat(pad)}}],
        })
    };
    let resource = |service: &str, spans: Vec<Value>| {
        json!({
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"spans": spans}],
        })
    };
    // ~2 MB for the first dataset (over the 1 MB buffer bound once stored), one span for the second.
    let body = json!({"resourceSpans": [
        resource("atomic-a", (0..40).map(|i| span(i, 50_000)).collect()),
        resource("atomic-b", vec![span(100, 10)]),
    ]})
    .to_string();
    // An exporter retries a refused request until it is taken; so does this loop.
    let mut answers = Vec::new();
    for _ in 0..100 {
        let r = client
            .post(server.at("/v1/traces"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        answers.push(r.status().as_u16());
        if r.status() == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(answers.last(), Some(&200), "never taken: {answers:?}");
    let count = |ds: &'static str| {
        let req = client.post(server.at(&format!("/api/query/{ds}"))).json(&json!({
            "calculations": [{"op": "COUNT"}],
            "start_time": "2025-12-31T23:00:00Z", "end_time": "2026-01-01T01:00:00Z",
        }));
        async move {
            let (status, r) = send_json(req).await;
            assert_eq!(status, 200, "{r}");
            r["data"]["results"][0]["data"]["COUNT"].as_i64().unwrap_or(0)
        }
    };
    assert_eq!(
        (count("atomic-a").await, count("atomic-b").await),
        (40, 1),
        "answers: {answers:?}"
    );
}

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
            .contains("max_string_len")
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

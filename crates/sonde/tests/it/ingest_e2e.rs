//! 200,000 generated events sent concurrently in every encoding the server takes all land in
//! Parquet segments, each field with the value and type it was sent with.

use crate::harness::{Server, flatten_expected, read_segments, send_json};
use futures::StreamExt;
use serde_json::Value;
use sonde_gen::{GenConfig, GenEvent, Generator, format_time};
use std::collections::HashMap;
use std::io::Write;

const N: usize = 200_000;
const SINGLE: usize = 300;
const CHUNK: usize = 1000;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn to_msgpack(v: &Value) -> rmpv::Value {
    match v {
        Value::Null => rmpv::Value::Nil,
        Value::Bool(b) => rmpv::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => rmpv::Value::Integer(i.into()),
            None => rmpv::Value::F64(n.as_f64().unwrap()),
        },
        Value::String(s) => rmpv::Value::String(s.as_str().into()),
        Value::Array(a) => rmpv::Value::Array(a.iter().map(to_msgpack).collect()),
        Value::Object(m) => rmpv::Value::Map(
            m.iter()
                .map(|(k, v)| (rmpv::Value::String(k.as_str().into()), to_msgpack(v)))
                .collect(),
        ),
    }
}

/// libhoney-go's batch format: time as msgpack's timestamp extension (type -1, 12 bytes).
fn msgpack_batch(events: &[GenEvent]) -> Vec<u8> {
    let items = events
        .iter()
        .map(|e| {
            let secs = e.time_us.div_euclid(1_000_000);
            let nanos = (e.time_us.rem_euclid(1_000_000) * 1000) as u32;
            let mut ts = nanos.to_be_bytes().to_vec();
            ts.extend_from_slice(&secs.to_be_bytes());
            rmpv::Value::Map(vec![
                ("data".into(), to_msgpack(&e.data)),
                ("time".into(), rmpv::Value::Ext(-1, ts)),
                ("samplerate".into(), rmpv::Value::Integer(e.sample_rate.into())),
            ])
        })
        .collect();
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, &rmpv::Value::Array(items)).unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_concurrent_ingest_lands_in_parquet_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    // A small flush size so the events spread over several segments.
    let mut server = Server::start(dir.path(), &["--flush-rows", "40000"]).await;
    let cfg = GenConfig {
        seed: 42,
        start_us: 1_700_000_000_000_000,
        span_us: 3_600_000_000,
        incident: true,
    };
    let events: Vec<GenEvent> = Generator::new(cfg, N as u64).collect();
    let client = reqwest::Client::new();

    // The first events go one per request through /1/events, with the envelope in headers.
    let singles = futures::stream::iter(events[..SINGLE].iter().cloned())
        .map(|e| {
            let req = client
                .post(server.at("/1/events/e2e"))
                .header("x-honeycomb-team", "any-key")
                .header("x-honeycomb-event-time", format_time(e.time_us))
                .header("x-honeycomb-samplerate", e.sample_rate.to_string())
                .header("content-type", "application/json")
                .body(e.data.to_string());
            async move { send_json(req).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for (status, body) in singles {
        assert_eq!(status, 202, "{body}");
    }

    // The rest in chunks, each chunk in one of four encodings, eight requests in flight.
    let chunks: Vec<(usize, Vec<GenEvent>)> = events[SINGLE..].chunks(CHUNK).map(|c| c.to_vec()).enumerate().collect();
    let results = futures::stream::iter(chunks)
        .map(|(i, chunk)| {
            let req = match i % 4 {
                0 => {
                    let body: Vec<Value> = chunk.iter().map(|e| e.to_batch_item()).collect();
                    client
                        .post(server.at("/1/batch/e2e"))
                        .header("content-type", "application/json")
                        .header("content-encoding", "gzip")
                        .body(gzip(serde_json::to_string(&body).unwrap().as_bytes()))
                }
                1 => {
                    let body: Vec<Value> = chunk.iter().map(|e| e.to_batch_item()).collect();
                    client
                        .post(server.at("/1/batch/E2E"))
                        .header("content-type", "application/json")
                        .header("content-encoding", "zstd")
                        .body(zstd::encode_all(serde_json::to_string(&body).unwrap().as_bytes(), 3).unwrap())
                }
                2 => client
                    .post(server.at("/1/batch/e2e"))
                    .header("content-type", "application/msgpack")
                    .body(msgpack_batch(&chunk)),
                _ => {
                    let body: String = chunk.iter().map(|e| e.to_ndjson() + "\n").collect();
                    client.post(server.at("/api/ingest/e2e")).body(body)
                }
            };
            let n = chunk.len();
            async move { (i, n, send_json(req).await) }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for (i, n, (status, body)) in results {
        assert_eq!(status, 200, "chunk {i}: {body}");
        match body {
            Value::Array(statuses) => {
                assert_eq!(statuses.len(), n);
                assert!(statuses.iter().all(|s| s["status"] == 202), "chunk {i}: {statuses:?}");
            }
            obj => assert_eq!(obj["accepted"], n, "chunk {i}: {obj}"),
        }
    }

    // Visible at once through the schema API, before any flush is forced.
    let (_, ds) = send_json(client.get(server.at("/api/datasets"))).await;
    assert_eq!(ds["datasets"][0]["name"], "e2e");
    assert_eq!(ds["datasets"][0]["rows"], N);

    server.stop().await; // graceful: flushes the rest
    let batches = read_segments(dir.path(), "e2e");
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(total, N, "every event in the segments exactly once");
    assert!(batches.len() >= 4, "spread over several segments / row groups");

    let expected: HashMap<String, &GenEvent> = events
        .iter()
        .map(|e| (e.data["request.id"].as_str().unwrap().to_string(), e))
        .collect();
    assert_eq!(expected.len(), N, "request ids are unique");
    let mut seen = 0usize;
    for batch in &batches {
        let schema = batch.schema();
        let cols: Vec<(String, Vec<Value>)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), crate::harness::column_json(batch, f.name()).unwrap()))
            .collect();
        let ids = &cols
            .iter()
            .find(|(n, _)| n == "request.id")
            .expect("request.id column")
            .1;
        for row in 0..batch.num_rows() {
            let id = ids[row].as_str().unwrap();
            let e = expected.get(id).unwrap_or_else(|| panic!("unknown request.id {id}"));
            let mut want = Vec::new();
            flatten_expected("", &e.data, &mut want);
            want.push(("timestamp".into(), Value::from(e.time_us)));
            want.push(("samplerate".into(), Value::from(e.sample_rate)));
            want.sort_by(|a, b| a.0.cmp(&b.0));
            let mut got: Vec<(String, Value)> = cols
                .iter()
                .filter(|(_, v)| !v[row].is_null())
                .map(|(n, v)| (n.clone(), v[row].clone()))
                .collect();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            // serde_json's Value equality tells 7 from 7.0, so this checks types as well.
            assert_eq!(got, want, "event {id}");
            seen += 1;
        }
    }
    assert_eq!(seen, N);
}

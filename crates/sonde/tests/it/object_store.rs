//! The same ingest-and-query run on the local data directory and on an S3-compatible server
//! (moto, from PyPI, started on loopback by the test): segments and catalog in the bucket,
//! recovery from it after a restart, answers equal to a brute-force count.

use crate::fixtures::T0;
use crate::harness::{Server, send_json};
use serde_json::json;
use sonde_gen::{GenConfig, GenEvent, Generator, format_time};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const HOUR: i64 = 3_600_000_000;
const BUCKET: &str = "sonde-test";

struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

async fn start_moto() -> Moto {
    let bin = std::env::var("SONDE_MOTO").unwrap_or_else(|_| {
        format!(
            "{}/.cache/sonde-clients-venv/bin/moto_server",
            std::env::var("HOME").unwrap()
        )
    });
    assert!(
        std::path::Path::new(&bin).exists(),
        "moto_server not found at {bin}: run `make clients-venv` (or set SONDE_MOTO)"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    // Owned by the guard at once, so every path (panics included) kills and reaps it.
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(&moto.url).send().await.is_ok() {
            let r = client.put(format!("{}/{BUCKET}", moto.url)).send().await.unwrap();
            assert!(r.status().is_success(), "create bucket: {}", r.status());
            return moto;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("moto_server did not start");
}

/// COUNT and P99(duration_ms) by service, computed from the generated events.
fn brute_force(events: &[GenEvent]) -> BTreeMap<String, (i64, f64)> {
    let mut by: BTreeMap<String, Vec<(f64, i64)>> = BTreeMap::new();
    for e in events {
        by.entry(e.data["service.name"].as_str().unwrap().to_string())
            .or_default()
            .push((e.data["duration_ms"].as_f64().unwrap(), e.sample_rate));
    }
    by.into_iter()
        .map(|(svc, mut v)| {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            let total: i64 = v.iter().map(|x| x.1).sum();
            let mut cum = 0;
            let p99 = v.iter().find(|x| {
                cum += x.1;
                cum as f64 >= 0.99 * total as f64
            });
            (svc, (total, p99.unwrap().0))
        })
        .collect()
}

async fn answers(client: &reqwest::Client, server: &Server) -> BTreeMap<String, (i64, f64)> {
    let spec = json!({"calculations": [{"op": "COUNT"}, {"op": "P99", "column": "duration_ms"}], "breakdowns": ["service.name"],
                      "start_time": format_time(T0), "end_time": format_time(T0 + HOUR)});
    let (status, r) = send_json(client.post(server.at("/api/query/objs")).json(&spec)).await;
    assert_eq!(status, 200, "{r}");
    r["data"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let d = &g["data"];
            (
                d["service.name"].as_str().unwrap().to_string(),
                (d["COUNT"].as_i64().unwrap(), d["P99(duration_ms)"].as_f64().unwrap()),
            )
        })
        .collect()
}

async fn ingest_and_query(flags: &[&str], env: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut all_flags = vec!["--flush-rows", "700", "--compaction-target-rows", "0"];
    all_flags.extend_from_slice(flags);
    let mut server = Server::start_with_env(dir.path(), &all_flags, env).await;
    let client = reqwest::Client::new();
    let events: Vec<GenEvent> = Generator::new(
        GenConfig {
            seed: 3,
            start_us: T0,
            span_us: HOUR,
            incident: true,
        },
        3500,
    )
    .collect();
    for chunk in events.chunks(700) {
        let body: String = chunk.iter().map(|e| e.to_ndjson() + "\n").collect();
        let (status, r) = send_json(client.post(server.at("/api/ingest/objs")).body(body)).await;
        assert_eq!(status, 200, "{r}");
    }
    let want = brute_force(&events);
    assert_eq!(answers(&client, &server).await, want);
    for _ in 0..400 {
        let (_, s) = send_json(client.get(server.at("/api/datasets/objs/stats"))).await;
        if s["buffered_rows"] == 0 && s["segments"].as_u64().unwrap_or(0) >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(answers(&client, &server).await, want, "from segments");
    // Recovery reads the catalog and segments back from the store.
    server.kill();
    server.restart().await;
    assert_eq!(answers(&client, &server).await, want, "after a restart");
    let (_, s) = send_json(client.get(server.at("/api/datasets/objs/stats"))).await;
    assert_eq!(s["rows"], 3500, "{s}");
    server.stop().await;
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_query_on_the_local_directory() {
    let dir = ingest_and_query(&[], &[]).await;
    assert!(dir.path().join("catalog.json").exists());
    assert!(std::fs::read_dir(dir.path().join("datasets/objs")).unwrap().count() >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_query_on_an_s3_compatible_server() {
    let moto = start_moto().await;
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", moto.url.as_str()),
    ];
    let storage = format!("s3://{BUCKET}/sonde/prod");
    let dir = ingest_and_query(&["--storage", &storage], &env).await;
    // Segments and the catalog are in the bucket, not in the data directory (which keeps the WAL).
    assert!(!dir.path().join("datasets").exists());
    assert!(!dir.path().join("catalog.json").exists());
    assert!(dir.path().join("wal").exists());
    let listing = reqwest::get(format!("{}/{BUCKET}?list-type=2&prefix=sonde/prod/", moto.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listing.contains("<Key>sonde/prod/catalog.json</Key>"), "{listing}");
    let segments = listing.matches("<Key>sonde/prod/datasets/objs/seg-").count();
    assert!(segments >= 5, "{segments} segments in {listing}");

    // A derived column made through one server is in the bucket, and a second server over the
    // same bucket (another data directory) answers with it.
    let client = reqwest::Client::new();
    let mut first = Server::start_with_env(dir.path(), &["--storage", &storage], &env).await;
    let (status, d) = send_json(
        client
            .post(first.at("/1/derived_columns/objs"))
            .json(&serde_json::json!({
                "alias": "slow", "expression": "GTE($duration_ms, 1000)"
            })),
    )
    .await;
    assert_eq!(status, 201, "{d}");
    first.stop().await;
    let other = tempfile::tempdir().unwrap();
    let mut second = Server::start_with_env(other.path(), &["--storage", &storage], &env).await;
    let (status, list) = send_json(client.get(second.at("/1/derived_columns/objs"))).await;
    assert_eq!(
        (status, list[0]["alias"].clone()),
        (200, serde_json::json!("slow")),
        "{list}"
    );
    let spec =
        serde_json::json!({"breakdowns": ["slow"], "start_time": T0 / 1_000_000, "end_time": (T0 + HOUR) / 1_000_000});
    let (status, r) = send_json(client.post(second.at("/api/query/objs")).json(&spec)).await;
    assert_eq!(status, 200, "{r}");
    let total: i64 = r["data"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["data"]["COUNT"].as_i64().unwrap())
        .sum();
    assert!(total > 0 && r["data"]["results"].as_array().unwrap().len() == 2, "{r}");
    second.stop().await;
    let listing = reqwest::get(format!(
        "{}/{BUCKET}?list-type=2&prefix=sonde/prod/documents/",
        moto.url
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        listing.contains("<Key>sonde/prod/documents/derived_columns.json</Key>"),
        "{listing}"
    );
}

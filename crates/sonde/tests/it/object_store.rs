//! The same ingest-and-query run on the local data directory and on an S3-compatible server
//! (moto, from PyPI, started on loopback by the test): segments and catalog in the bucket,
//! recovery from it after a restart, answers equal to a brute-force count.

use crate::bubbleup_traces::shares;
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

impl Moto {
    /// The variables that point a server at this moto.
    fn env(&self) -> [(&'static str, &str); 4] {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.url.as_str()),
        ]
    }

    /// The bucket through the object store client the server uses.
    fn store(&self) -> std::sync::Arc<dyn object_store::ObjectStore> {
        std::sync::Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_endpoint(&self.url)
                .with_allow_http(true)
                .with_bucket_name(BUCKET)
                .with_region("us-east-1")
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .build()
                .unwrap(),
        )
    }

    /// The bucket's listing (S3's XML) under `prefix`.
    async fn list(&self, prefix: &str) -> String {
        reqwest::get(format!("{}/{BUCKET}?list-type=2&prefix={prefix}", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
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

/// `n` generated events over the test's hour, with the incident.
fn generate(seed: u64, n: u64) -> Vec<GenEvent> {
    Generator::new(
        GenConfig {
            seed,
            start_us: T0,
            span_us: HOUR,
            incident: true,
        },
        n,
    )
    .collect()
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
    dataset_answers(client, server, "objs").await
}

async fn ingest_and_query(flags: &[&str], env: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut all_flags = vec!["--flush-rows", "700", "--compaction-target-rows", "0"];
    all_flags.extend_from_slice(flags);
    let mut server = Server::start_with_env(dir.path(), &all_flags, env).await;
    let client = reqwest::Client::new();
    let events = generate(3, 3500);
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
    let env = moto.env();
    let storage = format!("s3://{BUCKET}/sonde/prod");
    let dir = ingest_and_query(&["--storage", &storage], &env).await;
    // Segments and the catalog are in the bucket, not in the data directory (which keeps the WAL).
    assert!(!dir.path().join("datasets").exists());
    assert!(!dir.path().join("catalog.json").exists());
    assert!(dir.path().join("wal").exists());
    let listing = moto.list("sonde/prod/").await;
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
    let listing = moto.list("sonde/prod/documents/").await;
    assert!(
        listing.contains("<Key>sonde/prod/documents/derived_columns.json</Key>"),
        "{listing}"
    );
}

/// Issue 19's conditional write, on a real S3 server and on a local directory: two writers
/// from one state race for the same record of a dataset's shared catalog; exactly one wins,
/// the other is told so, reads the log again and commits after it; nothing is lost or doubled,
/// and a third reader sees both. (Sequential here: moto checks `If-None-Match` and then writes
/// in separate steps, so truly simultaneous PUTs to it prove nothing; the simultaneous race runs
/// on the in-memory store and the local directory in `sonde-storage`'s unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_racing_for_one_catalog_record_one_wins_the_other_retries() {
    use futures::StreamExt;
    use object_store::ObjectStore;
    use sonde_model::DatasetName;
    use sonde_storage::shared_catalog::{Change, CommitError, SharedCatalog};
    use sonde_storage::source::{SegmentId, SegmentMeta};
    use std::sync::Arc;

    let moto = start_moto().await;
    let s3 = moto.store();
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let segment = |id: u64| SegmentMeta {
        id: SegmentId(id),
        path: format!("segments/web/{id}.parquet"),
        rows: 100,
        ..Default::default()
    };
    let flush = |id: u64| Change::Flush {
        segments: vec![segment(id)],
        flushed_lsn: sonde_storage::Lsn(id),
    };
    for (kind, store) in [("s3 (moto)", s3), ("local directory", local)] {
        let web = DatasetName::new("web").unwrap();
        let (a, b) = (
            SharedCatalog::new(store.clone(), web.clone(), "ingest-1"),
            SharedCatalog::new(store.clone(), web.clone(), "compactor"),
        );
        let mut sa = a.load().await.unwrap();
        let epoch = a.take(&mut sa).await.unwrap();
        let mut sb = b.load().await.unwrap();
        assert_eq!(sa, sb, "{kind}");
        // Both write record 2.
        assert_eq!(a.commit(&mut sa, epoch, flush(1)).await.unwrap(), 2, "{kind}");
        let lost = b.commit(&mut sb, epoch, flush(2)).await.unwrap_err();
        assert!(matches!(lost, CommitError::Conflict { seq: 2, .. }), "{kind}: {lost}");
        assert!(lost.to_string().contains("committed record 2 of web first"), "{lost}");
        // The loser reads what it missed and commits after it.
        let seq = b.commit_with(&mut sb, 3, |s| Some((s.epoch, flush(2)))).await.unwrap();
        assert_eq!(seq, Some(3), "{kind}");
        let reader = SharedCatalog::new(store.clone(), web.clone(), "query-1")
            .load()
            .await
            .unwrap();
        let ids: Vec<u64> = reader.entry.segments.iter().map(|s| s.id.0).collect();
        assert_eq!(ids, [1, 2], "{kind}");
        assert_eq!(
            (reader.seq, reader.epoch, reader.owner.as_deref()),
            (3, 1, Some("ingest-1")),
            "{kind}"
        );
        assert_eq!(reader.entry.flushed_lsn, sonde_storage::Lsn(2), "{kind}");
        // The records are plain objects under the dataset's catalog prefix.
        let listed = store.list(Some(&"catalog/web/log".into())).count().await;
        assert_eq!(listed, 3, "{kind}");
    }
}

/// Issue 19's first slice: two ingest nodes and a query node, each with its own data directory,
/// over one bucket (moto). Each ingest node owns the dataset it took first; the other ingest
/// node and the query node pass its events on to the owner (once: a passed-on request is not
/// passed on again), and a new dataset sent to the query node goes to an ingest node. The
/// query node finds the datasets in the shared catalog and answers exactly the brute-force
/// counts, through flushes, a compaction on the ingest node (joining the flushes' row groups as
/// they are), and a SIGKILL and restart of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_nodes_and_a_query_node_share_one_bucket() {
    let moto = start_moto().await;
    let env = moto.env();
    let storage = format!("s3://{BUCKET}/cluster");
    let tuning = [
        "--flush-rows",
        "700",
        "--flush-age",
        "1s",
        "--compaction-target-rows",
        "2000",
        "--maintenance-interval",
        "500ms",
        "--catalog-refresh",
        "200ms",
        // Full row groups: compactions join the flushes' row groups as they are, over S3.
        "--row-group-rows",
        "100",
    ];
    let node = |role, name| node_flags(&storage, role, name, &tuning);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = Server::start_with_env(dirs[0].path(), &node("ingest", "ing-a"), &env).await;
    let b = Server::start_with_env(dirs[1].path(), &node("ingest", "ing-b"), &env).await;
    let q = Server::start_with_env(dirs[2].path(), &node("query", "q-1"), &env).await;
    let client = reqwest::Client::new();
    let send = |server: &Server, dataset: &str, events: &[GenEvent]| post_ndjson(&client, server, dataset, events);
    let objs = generate(3, 3500);
    let other = generate(4, 1400);
    for chunk in objs.chunks(700) {
        let (status, r) = send_json(send(&a, "objs", chunk)).await;
        assert_eq!(status, 200, "{r}");
        // Each batch its own flush: two batches flushed together would leave segments the
        // compaction planner need not merge (one of 1,400 rows, large for a target of 2,000).
        a.api(&client).wait_flushed("objs").await;
    }
    for chunk in other.chunks(700) {
        let (status, r) = send_json(send(&b, "other", chunk)).await;
        assert_eq!(status, 200, "{r}");
    }
    // The wrong node (another ingest node, or a query node) passes the events on to the
    // writer and relays its answer.
    let written_by = |r: &reqwest::Response| {
        r.headers()
            .get("x-sonde-written-by")
            .map(|v| v.to_str().unwrap().to_string())
    };
    for (server, part) in [(&b, &objs[..10]), (&q, &objs[10..20])] {
        let r = send(server, "objs", part).send().await.unwrap();
        assert_eq!((r.status().as_u16(), written_by(&r).as_deref()), (200, Some("ing-a")));
    }
    let objs: Vec<GenEvent> = objs.iter().chain(&objs[..20]).cloned().collect();
    for server in [&b, &q] {
        assert_eq!(server.api(&client).metric("sonde_requests_forwarded_total").await, 1);
    }
    // A request passed on once is not passed on again (no loops between nodes).
    let r = send(&b, "objs", &objs[..10])
        .header("x-sonde-forwarded-by", "q-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    assert!(r.text().await.unwrap().contains("ingest node ing-a"));
    // A new dataset sent to a query node goes to an ingest node (rendezvous hashing).
    let fresh = generate(6, 300);
    let r = send(&q, "newcomer", &fresh).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(matches!(written_by(&r).as_deref(), Some("ing-a" | "ing-b")), "{r:?}");

    // The query node answers exactly the brute-force answer, never more.
    eventually(&client, &q, "newcomer", brute_force(&fresh)).await;
    eventually(&client, &q, "objs", brute_force(&objs)).await;
    eventually(&client, &q, "other", brute_force(&other)).await;

    // Compaction on the ingest node (joining the flushes' row groups as they are) replaces
    // segments in the shared log; the query node follows. (A busy machine can flush two
    // batches at once, so the number of segments alone does not tell that a compaction ran.)
    let segments = |server: &Server| {
        let request = client.get(server.at("/api/datasets/objs/stats"));
        async move { send_json(request).await.1["segments"].as_u64().unwrap_or(0) }
    };
    let mut joined = 0;
    for _ in 0..300 {
        joined = a.api(&client).metric("sonde_compactions_joined_total").await;
        if joined > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(joined > 0, "no compaction on ing-a joined its segments");
    let mut followed = false;
    for _ in 0..300 {
        if segments(&q).await == segments(&a).await {
            followed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(followed, "the query node never saw the compaction");
    // Each ingest node's files carry its name; the logs are in the bucket, one per dataset.
    let listing = moto.list("cluster/").await;
    assert!(
        listing.contains("-ing-a.parquet</Key>") && listing.contains("-ing-b.parquet</Key>"),
        "{listing}"
    );
    assert!(
        listing.contains("<Key>cluster/catalog/objs/log/00000000000000000001.json</Key>"),
        "{listing}"
    );
    assert!(listing.contains("<Key>cluster/catalog/other/log/"), "{listing}");
    assert!(!listing.contains("catalog.json"), "{listing}");
    assert_eq!(dataset_answers(&client, &q, "objs").await, brute_force(&objs));

    // A SIGKILL of the ingest node: restarted (its WAL is on its own disk), it takes its
    // dataset again, and new events reach the query node with nothing lost or doubled.
    a.kill();
    a.restart().await;
    let more = generate(5, 700);
    let (status, r) = send_json(send(&a, "objs", &more)).await;
    assert_eq!(status, 200, "{r}");
    let all: Vec<GenEvent> = objs.iter().chain(&more).cloned().collect();
    eventually(&client, &q, "objs", brute_force(&all)).await;
    let r = send(&b, "objs", &more).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), written_by(&r).as_deref()),
        (200, Some("ing-a")),
        "still written by ing-a after its restart"
    );
    let all: Vec<GenEvent> = all.iter().chain(&more).cloned().collect();
    eventually(&client, &q, "objs", brute_force(&all)).await;

    // A deletion on its ingest node reaches the query node: the dataset is gone there too.
    let r = client.delete(b.at("/api/datasets/other")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut gone = false;
    for _ in 0..300 {
        if try_dataset_answers(&client, &q, "other").await.is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the query node still answers for the deleted dataset");
    let r = client.delete(q.at("/api/datasets/objs")).send().await.unwrap();
    assert_eq!(r.status(), 421, "a query node deletes nothing");
    assert_eq!(dataset_answers(&client, &q, "objs").await, brute_force(&all));
    drop((b, q));
    a.stop().await;

    // A single server pointed at the cluster's bucket would find no catalog.json and sweep
    // every segment as an orphan: it refuses to start instead, and deletes nothing.
    let before = moto.list("cluster/datasets/").await;
    let single = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "off",
            "--storage",
            &storage,
        ])
        .arg("--data-dir")
        .arg(single.path())
        .envs(env)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("--role ingest or --role query"),
        "{said}"
    );
    let after = moto.list("cluster/datasets/").await;
    assert_eq!(before.matches("<Key>").count(), after.matches("<Key>").count());
}

/// A cluster node's flags: its role and name over `storage`, then `tuning`.
fn node_flags<'a>(storage: &'a str, role: &'a str, name: &'a str, tuning: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec!["--storage", storage, "--role", role, "--node-name", name];
    flags.extend(tuning);
    flags
}

/// A request posting `events` as NDJSON to `dataset` on `server`.
fn post_ndjson(
    client: &reqwest::Client,
    server: &Server,
    dataset: &str,
    events: &[GenEvent],
) -> reqwest::RequestBuilder {
    let body: String = events.iter().map(|e| e.to_ndjson() + "\n").collect();
    client.post(server.at(&format!("/api/ingest/{dataset}"))).body(body)
}

/// COUNT and P99(duration_ms) by service over the generated hour, as one server answers.
async fn dataset_answers(client: &reqwest::Client, server: &Server, dataset: &str) -> BTreeMap<String, (i64, f64)> {
    try_dataset_answers(client, server, dataset)
        .await
        .unwrap_or_else(|| panic!("{dataset} does not exist on {}", server.url))
}

/// [`dataset_answers`], or `None` while the server does not know the dataset yet.
async fn try_dataset_answers(
    client: &reqwest::Client,
    server: &Server,
    dataset: &str,
) -> Option<BTreeMap<String, (i64, f64)>> {
    let spec = json!({"calculations": [{"op": "COUNT"}, {"op": "P99", "column": "duration_ms"}],
                      "breakdowns": ["service.name"],
                      "start_time": format_time(T0), "end_time": format_time(T0 + HOUR)});
    let (status, r) = send_json(client.post(server.at(&format!("/api/query/{dataset}"))).json(&spec)).await;
    if status == 404 {
        return None;
    }
    assert_eq!(status, 200, "{r}");
    let answers = r["data"]["results"]
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
        .collect();
    Some(answers)
}

/// Asks until the answer is `want` (30 s at most), failing at once if more events than were
/// sent are ever counted.
async fn eventually(client: &reqwest::Client, server: &Server, dataset: &str, want: BTreeMap<String, (i64, f64)>) {
    let total: i64 = want.values().map(|v| v.0).sum();
    let mut got = BTreeMap::new();
    for _ in 0..300 {
        got = try_dataset_answers(client, server, dataset).await.unwrap_or_default();
        let seen: i64 = got.values().map(|v| v.0).sum();
        assert!(seen <= total, "{dataset}: {seen} events seen, {total} sent");
        if got == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, want, "{dataset} through the query node");
}

/// Issue 19, fresh data: two query nodes answer the events two ingest nodes hold in their write
/// buffers (a flush every 1,000 events, none by age), copied every `--fresh-interval`. After
/// each acknowledged batch every query node counts exactly the events acknowledged so far,
/// never more, through the flushes in between (where the copy gives way to the flushed
/// segment); then a query node and an ingest node are SIGKILLed and restarted (the ingest node
/// on a new port, at a new epoch) with nothing lost or doubled; last, a dataset deleted and sent
/// events again is answered with those alone before any flush. Prints the freshness (ack to
/// visible on a query node) percentiles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_nodes_answer_unflushed_events_exactly_once() {
    let moto = start_moto().await;
    let env = moto.env();
    let storage = format!("s3://{BUCKET}/fresh");
    let tuning = [
        "--flush-rows",
        "1000",
        "--flush-age",
        "10m",
        "--maintenance-interval",
        "1s",
        "--compaction-target-rows",
        "5000",
    ];
    let node = |role, name| node_flags(&storage, role, name, &tuning);
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = Server::start_with_env(dirs[0].path(), &node("ingest", "ing-a"), &env).await;
    let b = Server::start_with_env(dirs[1].path(), &node("ingest", "ing-b"), &env).await;
    let mut q1 = Server::start_with_env(dirs[2].path(), &node("query", "q-1"), &env).await;
    // q-2's copies stop at 64 KiB (a few hundred events): it reads the rest of each buffer from
    // the ingest nodes as its queries run.
    let small_copies = [node("query", "q-2"), vec!["--max-buffer-bytes", "65536"]].concat();
    let q2 = Server::start_with_env(dirs[3].path(), &small_copies, &env).await;
    let client = reqwest::Client::new();
    let send = |server: &Server, dataset: &str, events: &[GenEvent]| post_ndjson(&client, server, dataset, events);
    let count = |server: &Server, dataset: &'static str| {
        let (client, url) = (client.clone(), server.url.clone());
        async move {
            let spec = json!({"calculations": [{"op": "COUNT"}],
                              "start_time": format_time(T0), "end_time": format_time(T0 + HOUR)});
            let r = client
                .post(format!("{url}/api/query/{dataset}"))
                .json(&spec)
                .send()
                .await
                .unwrap();
            if r.status() == 404 {
                return 0;
            }
            let body: serde_json::Value = r.json().await.unwrap();
            body["data"]["results"][0]["data"]["COUNT"].as_i64().unwrap_or(0)
        }
    };
    let fa = generate(11, 2400);
    let fb = generate(12, 2400);
    // COUNT weighs each event by its sample rate.
    let weight = |events: &[GenEvent]| events.iter().map(|e| e.sample_rate).sum::<i64>();
    let (mut lags, mut first) = (Vec::new(), Vec::new());
    for (i, (ca, cb)) in fa.chunks(100).zip(fb.chunks(100)).enumerate() {
        let (status, r) = send_json(send(&a, "fa", ca)).await;
        assert_eq!(status, 200, "{r}");
        let (status, r) = send_json(send(&b, "fb", cb)).await;
        assert_eq!(status, 200, "{r}");
        let acked = std::time::Instant::now();
        let sent = 100 * (i + 1);
        for q in [&q1, &q2] {
            for (dataset, events) in [("fa", &fa), ("fb", &fb)] {
                let want = weight(&events[..sent]);
                loop {
                    let seen = count(q, dataset).await;
                    assert!(
                        seen <= want,
                        "{dataset} on {}: a count of {seen} seen, {want} sent",
                        q.url
                    );
                    if seen == want {
                        break;
                    }
                    assert!(
                        acked.elapsed() < Duration::from_secs(30),
                        "{dataset} on {}: a count of {seen} of {want} after 30 s",
                        q.url
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // The first batch makes the datasets: a query node finds a new dataset when it
                // next reads the catalog (`--catalog-refresh`, 1 s), which is said apart.
                if i == 0 {
                    first.push(acked.elapsed());
                } else {
                    lags.push(acked.elapsed());
                }
            }
        }
    }
    lags.sort();
    let pct = |p: f64| lags[((lags.len() - 1) as f64 * p).round() as usize];
    println!(
        "freshness, ack to visible on a query node ({} checks): p50 {:?}, p99 {:?}, max {:?}; a new dataset's first events: {:?}",
        lags.len(),
        pct(0.5),
        pct(0.99),
        lags[lags.len() - 1],
        first
    );
    assert!(q1.api(&client).metric("sonde_fresh_copy_bytes").await > 0);
    let q2_copies = q2.api(&client).metric("sonde_fresh_copy_bytes").await;
    assert!(q2_copies > 0, "q-2 copies up to its bound");
    assert!(
        q2.api(&client).metric("sonde_fresh_rows_read_total").await > 0,
        "q-2 read the rows past its copies from the ingest nodes"
    );
    // The copies gave way to flushed segments on the way (2,400 events, a flush every 1,000).
    let stats = send_json(client.get(q2.at("/api/datasets/fa/stats"))).await.1;
    assert!(stats["segments"].as_u64().unwrap() >= 1, "{stats}");
    for q in [&q1, &q2] {
        assert_eq!(dataset_answers(&client, q, "fa").await, brute_force(&fa));
        assert_eq!(dataset_answers(&client, q, "fb").await, brute_force(&fb));
        // BubbleUp, traces and raw events too, over segments and buffer copies alike.
        views_answer_as_brute_force(&client, q, "fa", &fa).await;
    }

    // A query node killed and restarted copies the buffers again and answers everything.
    q1.kill();
    q1.restart().await;
    eventually(&client, &q1, "fa", brute_force(&fa)).await;
    eventually(&client, &q1, "fb", brute_force(&fb)).await;

    // An ingest node killed with events in its buffer: restarted (a new port, a new epoch), it
    // replays its WAL and announces its new address; the query nodes drop their copies of the
    // old epoch and copy the new one: nothing lost, nothing doubled.
    a.kill();
    // Meanwhile q-2, which cannot read the rows past its copy from the dead node, answers from
    // its copy and the segments (never more than was sent), as between two copies.
    let spec = json!({"calculations": [{"op": "COUNT"}],
                      "start_time": format_time(T0), "end_time": format_time(T0 + HOUR)});
    let r = client.post(q2.at("/api/query/fa")).json(&spec).send().await.unwrap();
    assert_eq!(r.status(), 200, "q-2 answers while ing-a is down");
    let body: serde_json::Value = r.json().await.unwrap();
    let seen = body["data"]["results"][0]["data"]["COUNT"].as_i64().unwrap();
    assert!(seen > 0 && seen <= weight(&fa), "q-2 counts {seen} with ing-a down");
    a.restart().await;
    let more = generate(13, 300);
    let (status, r) = send_json(send(&a, "fa", &more)).await;
    assert_eq!(status, 200, "{r}");
    let all: Vec<GenEvent> = fa.iter().chain(&more).cloned().collect();
    eventually(&client, &q1, "fa", brute_force(&all)).await;
    eventually(&client, &q2, "fa", brute_force(&all)).await;

    // A dataset deleted and then sent events again: gone from the query nodes, then answered
    // with the new events alone while they are still in the ingest node's buffer (no flush
    // makes it again: 300 events, a flush every 1,000 or 10 minutes).
    let r = client.delete(b.at("/api/datasets/fb")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for q in [&q1, &q2] {
        let mut gone = false;
        for _ in 0..300 {
            if try_dataset_answers(&client, q, "fb").await.is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "{} still answers for the deleted dataset", q.url);
    }
    let again = generate(14, 300);
    let (status, r) = send_json(send(&b, "fb", &again)).await;
    assert_eq!(status, 200, "{r}");
    for q in [&q1, &q2] {
        eventually(&client, q, "fb", brute_force(&again)).await;
        let stats = send_json(client.get(q.at("/api/datasets/fb/stats"))).await.1;
        assert_eq!(stats["segments"].as_u64(), Some(0), "{stats}");
    }
}

/// The views an on-call engineer opens besides breakdowns, asked of a query node and checked
/// against `events` (all of `dataset`'s events): BubbleUp of the incident's slow band (counts
/// and `dns.provider`'s shares), the trace of the first and of the last event (the one in a
/// segment, the other in the buffer's copy), and the 20 newest events of a service.
async fn views_answer_as_brute_force(client: &reqwest::Client, q: &Server, dataset: &str, events: &[GenEvent]) {
    let weight = |es: &[&GenEvent]| es.iter().map(|e| e.sample_rate).sum::<i64>();
    let (t0, t1, slow) = (T0 + HOUR * 60 / 100, T0 + HOUR * 75 / 100, 1800.0);
    let req = json!({
        "start_time": format_time(T0), "end_time": format_time(T0 + HOUR),
        "selection": {"heatmap": {"column": "duration_ms", "start_time": format_time(t0), "end_time": format_time(t1), "min": slow, "max": 1e9}},
    });
    let (status, r) = send_json(client.post(q.at(&format!("/api/bubbleup/{dataset}"))).json(&req)).await;
    assert_eq!(status, 200, "{r}");
    let in_box = |e: &GenEvent| e.time_us >= t0 && e.time_us < t1 && e.data["duration_ms"].as_f64().unwrap() >= slow;
    let (selection, baseline): (Vec<&GenEvent>, Vec<&GenEvent>) = events.iter().partition(|e| in_box(e));
    assert!(!selection.is_empty(), "the box holds the slow band");
    assert_eq!(r["selection"]["count"], weight(&selection), "{}", q.url);
    assert_eq!(r["baseline"]["count"], weight(&baseline), "{}", q.url);
    let (in_selection, in_baseline) = (shares(&selection, "dns.provider"), shares(&baseline, "dns.provider"));
    let share = |of: &std::collections::HashMap<String, f64>, value: &serde_json::Value| {
        of.get(&value.to_string()).copied().unwrap_or(0.0)
    };
    let dns = r["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["column"] == "dns.provider")
        .unwrap_or_else(|| panic!("no dns.provider in {r}"));
    for v in dns["values"].as_array().unwrap() {
        assert!(
            (v["selection"].as_f64().unwrap() - share(&in_selection, &v["value"])).abs() < 1e-9,
            "{v}"
        );
        assert!(
            (v["baseline"].as_f64().unwrap() - share(&in_baseline, &v["value"])).abs() < 1e-9,
            "{v}"
        );
    }

    for e in [&events[0], &events[events.len() - 1]] {
        let id = e.data["trace"]["trace_id"].as_str().unwrap();
        let (status, r) = send_json(client.get(q.at(&format!("/api/traces/{dataset}/{id}")))).await;
        assert_eq!(status, 200, "{r}");
        let mut got: Vec<&str> = r["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["trace.span_id"].as_str().unwrap())
            .collect();
        let mut want: Vec<&str> = events
            .iter()
            .filter(|x| x.data["trace"]["trace_id"] == id)
            .map(|x| x.data["trace"]["span_id"].as_str().unwrap())
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "trace {id} on {}", q.url);
    }

    let svc = events[0].data["service.name"].as_str().unwrap();
    let mut want: Vec<i64> = events
        .iter()
        .filter(|e| e.data["service.name"] == svc)
        .map(|e| e.time_us)
        .collect();
    want.sort_unstable_by(|a, b| b.cmp(a));
    let want: Vec<String> = want.into_iter().take(20).map(crate::fixtures::at).collect();
    let req = json!({"start_time": format_time(T0), "end_time": format_time(T0 + HOUR),
                     "filters": [{"column": "service.name", "op": "=", "value": svc}], "limit": 20});
    let (status, r) = q.api(client).post_json(&format!("/api/events/{dataset}"), req).await;
    assert_eq!(status, 200, "{r}");
    let got: Vec<&str> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap())
        .collect();
    assert_eq!(got, want, "the newest events of {svc} on {}", q.url);
}

/// Two ingest nodes (`ing-a`, `ing-b`) and a query node (`q-1`) over a moto of their own, under
/// `prefix` in its bucket, each started with `tuning`.
struct ThreeNodes {
    a: Server,
    b: Server,
    q: Server,
    _dirs: Vec<tempfile::TempDir>,
    moto: Moto,
}

async fn three_nodes(prefix: &str, tuning: &[&str]) -> ThreeNodes {
    let moto = start_moto().await;
    let env = moto.env();
    let storage = format!("s3://{BUCKET}/{prefix}");
    let node = |role, name| node_flags(&storage, role, name, tuning);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = Server::start_with_env(dirs[0].path(), &node("ingest", "ing-a"), &env).await;
    let b = Server::start_with_env(dirs[1].path(), &node("ingest", "ing-b"), &env).await;
    let q = Server::start_with_env(dirs[2].path(), &node("query", "q-1"), &env).await;
    ThreeNodes {
        a,
        b,
        q,
        _dirs: dirs,
        moto,
    }
}

/// Issue 19, a dead ingest node: two ingest nodes and a query node with a 2 s `--lease`. The
/// ingest node writing a dataset is SIGKILLed with events in its write buffer (and WAL).
/// Events sent to the query node meanwhile are refused with a 503 naming the nodes while the
/// dead node's lease holds, then taken by the other ingest node, which takes the dataset over
/// with its segments; the query node never counts more than was acknowledged. Restarted, the
/// dead node replays its WAL and hands over the events it had not flushed: every acknowledged
/// event is answered exactly once, and the dataset's events sent to the old node now go to the
/// new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_ingest_nodes_datasets_are_taken_over_and_its_wal_handed_over() {
    let tuning = [
        "--flush-rows",
        "1000",
        "--flush-age",
        "10m",
        "--lease",
        "2s",
        "--catalog-refresh",
        "200ms",
        "--maintenance-interval",
        "1s",
        "--compaction-target-rows",
        "5000",
    ];
    // Every field bound, to the test's end (`..` would drop the data directories at once).
    let ThreeNodes {
        moto,
        mut a,
        b: _b,
        q,
        _dirs,
    } = three_nodes("lease", &tuning).await;
    let client = reqwest::Client::new();
    let send = |server: &Server, events: &[GenEvent]| post_ndjson(&client, server, "d", events);
    let written_by = |r: &reqwest::Response| {
        r.headers()
            .get("x-sonde-written-by")
            .map(|v| v.to_str().unwrap().to_string())
    };
    // ing-a takes the dataset; after 2,000 events and their flushes (one per 1,000), 300 more
    // stay in its buffer.
    let first = generate(31, 2300);
    for (i, chunk) in first.chunks(500).enumerate() {
        if i == 4 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let (status, r) = send_json(send(&a, chunk)).await;
        assert_eq!(status, 200, "{r}");
    }
    eventually(&client, &q, "d", brute_force(&first)).await;
    a.kill();

    // Through the query node: refused while ing-a's lease holds, then taken by ing-b.
    let second = generate(32, 400);
    let started = std::time::Instant::now();
    let mut refused = 0;
    loop {
        let r = send(&q, &second).send().await.unwrap();
        if r.status() == 200 {
            assert_eq!(written_by(&r).as_deref(), Some("ing-b"));
            break;
        }
        let status = r.status().as_u16();
        let said = r.text().await.unwrap();
        assert_eq!(status, 503, "{said}");
        assert!(said.contains("ing-a") && said.contains("ing-b"), "{said}");
        refused += 1;
        assert!(started.elapsed() < Duration::from_secs(30), "never taken over: {said}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "taken over {:?} after the kill ({refused} requests refused meanwhile)",
        started.elapsed()
    );
    // ing-b has ing-a's segments and the new events; ing-a's unflushed events wait for it.
    let acknowledged: Vec<GenEvent> = first.iter().chain(&second).cloned().collect();
    let total = acknowledged.iter().map(|e| e.sample_rate).sum::<i64>();
    let mut seen = 0;
    for _ in 0..50 {
        let got = dataset_answers(&client, &q, "d").await;
        seen = got.values().map(|v| v.0).sum::<i64>();
        assert!(seen <= total, "{seen} counted, {total} acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen < total, "ing-a's unflushed events counted while it is down");

    // ing-a restarted: its WAL's tail is handed over, and the dataset stays ing-b's.
    a.restart().await;
    assert!(a.api(&client).metric("sonde_events_replayed_total").await >= 300);
    eventually(&client, &q, "d", brute_force(&acknowledged)).await;
    let third = generate(33, 200);
    let r = send(&a, &third).send().await.unwrap();
    assert_eq!((r.status().as_u16(), written_by(&r).as_deref()), (200, Some("ing-b")));
    let all: Vec<GenEvent> = acknowledged.iter().chain(&third).cloned().collect();
    eventually(&client, &q, "d", brute_force(&all)).await;
    // One handover record in the dataset's log, by ing-a.
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let store = moto.store();
    let records: Vec<object_store::ObjectMeta> = store
        .list(Some(&"lease/catalog/d/log".into()))
        .try_collect()
        .await
        .unwrap();
    let mut handovers = Vec::new();
    for meta in &records {
        let bytes = store.get(&meta.location).await.unwrap().bytes().await.unwrap();
        let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        if record["change"]["change"] == "handover" {
            handovers.push(record["node"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(handovers, ["ing-a"], "{} records", records.len());
}

/// Issue 19, SIGKILLs while clients send: three clients send numbered events (a `seq` each,
/// sent once, never again) in turn to both ingest nodes and the query node, while ing-a, which
/// writes the dataset, and then the query node are SIGKILLed. The clients go on: refused while
/// ing-a's lease holds, then taken by ing-b. Restarted, ing-a hands its WAL's tail over. Every
/// acknowledged event is then stored exactly once, and an event whose request failed at most
/// once (a request cut off after its events were written counts as failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_while_clients_send_lose_and_double_nothing_acknowledged() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    const CLIENTS: u64 = 3;
    const PER_BATCH: u64 = 20;
    // Long enough for ing-a's 2 s lease to run out and ing-b to take over while they send.
    const SENDING: Duration = Duration::from_secs(8);
    let tuning = [
        "--flush-rows",
        "700",
        "--flush-age",
        "10m",
        "--lease",
        "2s",
        "--catalog-refresh",
        "200ms",
        "--maintenance-interval",
        "1s",
        "--compaction-target-rows",
        "3000",
    ];
    // Every field bound, to the test's end (`..` would drop moto and the data directories).
    let ThreeNodes {
        mut a,
        b,
        mut q,
        _dirs,
        moto: _moto,
    } = three_nodes("kills", &tuning).await;
    let client = reqwest::Client::new();
    let body = |seqs: std::ops::Range<u64>| -> String {
        seqs.map(|seq| {
            json!({"timestamp": format_time(T0 + seq as i64 * 1000), "seq": seq, "service.name": format!("svc-{}", seq % 5)})
                .to_string()
                + "\n"
        })
        .collect()
    };
    // ing-a takes the dataset.
    let (status, r) = send_json(client.post(a.at("/api/ingest/kills")).body(body(0..PER_BATCH))).await;
    assert_eq!(status, 200, "{r}");

    let urls = [a.url.clone(), b.url.clone(), q.url.clone()];
    let (tried, next) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(1)));
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (client, urls, tried, next) = (client.clone(), urls.clone(), tried.clone(), next.clone());
            tokio::spawn(async move {
                // (first seq of the batch, the node that wrote it when acknowledged)
                let mut outcomes: Vec<(u64, Option<String>)> = Vec::new();
                let mut j = c;
                while started.elapsed() < SENDING {
                    let first = PER_BATCH * next.fetch_add(1, Ordering::SeqCst);
                    let (url, asked) = (&urls[(j % 3) as usize], ["ing-a", "ing-b", "q-1"][(j % 3) as usize]);
                    j += 1;
                    let sent = client
                        .post(format!("{url}/api/ingest/kills"))
                        .timeout(Duration::from_secs(20))
                        .body(body(first..first + PER_BATCH))
                        .send()
                        .await;
                    // A node that passed the request on names the writer; one that wrote
                    // the events itself does not.
                    let writer = match &sent {
                        Ok(r) if r.status() == 200 => Some(
                            r.headers()
                                .get("x-sonde-written-by")
                                .map_or(asked.to_string(), |v| v.to_str().unwrap().to_string()),
                        ),
                        _ => None,
                    };
                    outcomes.push((first, writer));
                    tried.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
                outcomes
            })
        })
        .collect();
    let wait_for = |n: u64| {
        let tried = tried.clone();
        async move {
            while tried.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(30).await;
    a.kill();
    let killed = tried.load(Ordering::SeqCst);
    wait_for(killed + 30).await;
    q.kill();
    let mut outcomes = Vec::new();
    for c in clients {
        outcomes.extend(c.await.unwrap());
    }
    outcomes.push((0, Some("ing-a".into())));
    let acked: Vec<u64> = outcomes.iter().filter(|o| o.1.is_some()).map(|o| o.0).collect();
    let by_b = outcomes.iter().filter(|o| o.1.as_deref() == Some("ing-b")).count();
    let failed = outcomes.len() - acked.len();
    println!(
        "{} batches of {PER_BATCH} acknowledged ({by_b} written by ing-b), {failed} failed (nodes down)",
        acked.len()
    );
    // The kills fell inside the run, and ing-b took the dataset over before it ended.
    assert!(
        failed > 0 && by_b > 0,
        "{} acked, {by_b} by ing-b, {failed} failed",
        acked.len()
    );

    a.restart().await;
    q.restart().await;
    // Each seq's count, read back through the query node until every acknowledged one is in.
    let stored = || async {
        let sql = "SELECT seq, COUNT(*) AS n FROM kills GROUP BY seq";
        let (status, r) = send_json(client.post(q.at("/api/sql")).json(&json!({"sql": sql}))).await;
        assert_eq!(status, 200, "{r}");
        r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| (row["seq"].as_u64().unwrap(), row["n"].as_u64().unwrap()))
            .collect::<BTreeMap<u64, u64>>()
    };
    let wanted: Vec<u64> = acked.iter().flat_map(|first| *first..*first + PER_BATCH).collect();
    let mut counts = BTreeMap::new();
    for _ in 0..300 {
        counts = stored().await;
        if let Some((seq, n)) = counts.iter().find(|(_, n)| **n > 1) {
            panic!("seq {seq} stored {n} times");
        }
        if wanted.iter().all(|s| counts.contains_key(s)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing: Vec<&u64> = wanted.iter().filter(|s| !counts.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing: {:?}…",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let sent_max = PER_BATCH * next.load(Ordering::SeqCst);
    assert!(counts.keys().all(|s| *s < sent_max));
    println!(
        "{} events stored: {} acknowledged, {} of failed requests",
        counts.len(),
        wanted.len(),
        counts.len() - wanted.len()
    );
    drop(b);
}

/// Issue 19: the differential query suite on a cluster. Two ingest and two query nodes over
/// moto; the randomized suite's events are sent through every node in turn (the dataset's
/// ingest node takes some directly, the other nodes pass theirs on), flushed every 700 events
/// and compacted on the way (what the last flush left is answered from the query nodes' copies
/// of the write buffer); then random specs are
/// asked of both query nodes, each answer checked against the brute-force model of the single
/// node's suite (`query_diff`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_differential_suite_answers_on_a_cluster_as_on_one_node() {
    use crate::query_diff::{check_answer, close, gen_events, model, random_spec, send};
    use futures::StreamExt;
    let moto = start_moto().await;
    let env = moto.env();
    let storage = format!("s3://{BUCKET}/diff");
    let tuning = [
        "--flush-rows",
        "700",
        "--flush-age",
        "10m",
        "--compaction-target-rows",
        "2800",
        "--maintenance-interval",
        "1s",
        "--catalog-refresh",
        "200ms",
        "--lease",
        "3s",
        // Every segment a task of its own, so the specs' queries spread over both query nodes.
        "--distributed-bytes-per-partition",
        "1",
    ];
    let node = |role, name| node_flags(&storage, role, name, &tuning);
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = [
        Server::start_with_env(dirs[0].path(), &node("ingest", "ing-a"), &env).await,
        Server::start_with_env(dirs[1].path(), &node("ingest", "ing-b"), &env).await,
        Server::start_with_env(dirs[2].path(), &node("query", "q-1"), &env).await,
        Server::start_with_env(dirs[3].path(), &node("query", "q-2"), &env).await,
    ];
    let client = reqwest::Client::new();
    let mut rng = sonde_gen::Rng::new(77);
    let events = gen_events(&mut rng, T0);
    for (i, chunk) in events.chunks(500).enumerate() {
        send(&client, &nodes[i % nodes.len()], "diff", chunk).await;
    }
    // Both query nodes count every event (the buffer's through their fresh copies).
    let count = json!({"calculations": [{"op": "COUNT"}], "breakdowns": ["svc"], "filters": [], "orders": [],
                       "start_time": format_time(T0), "end_time": format_time(T0 + HOUR)});
    let want = model(&count, &events).results;
    let counts_all =
        |got: &[serde_json::Value]| got.len() == want.len() && got.iter().zip(&want).all(|(g, w)| close(g, &json!(w)));
    for q in &nodes[2..] {
        let mut got = Vec::new();
        for _ in 0..300 {
            let (status, r) = send_json(client.post(q.at("/api/query/diff")).json(&count)).await;
            if status == 200 {
                got = r["data"]["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|g| g["data"].clone())
                    .collect();
                if counts_all(&got) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            counts_all(&got),
            "{} never counted every event: {got:?}, want {want:?}",
            q.url
        );
    }
    // Both query nodes know each other's worker (SQL is spread over both).
    for q in &nodes[2..] {
        let mut workers = serde_json::Value::Null;
        for _ in 0..100 {
            let (status, r) = send_json(
                client
                    .post(q.at("/api/sql"))
                    .json(&json!({"sql": "SELECT COUNT(*) AS n FROM diff"})),
            )
            .await;
            assert_eq!(status, 200, "{r}");
            workers = r["meta"]["distributed"]["workers"].clone();
            if workers == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(workers, 2, "{} never spread a query over both query nodes", q.url);
    }
    // The nodes other than the dataset's ingest node passed their requests on.
    for n in &nodes[1..] {
        assert!(
            n.api(&client).metric("sonde_requests_forwarded_total").await > 0,
            "{}",
            n.url
        );
    }
    let specs: Vec<serde_json::Value> = (0..600).map(|_| random_spec(&mut rng, T0)).collect();
    let answers = futures::stream::iter(specs.iter().enumerate())
        .map(|(i, spec)| {
            let q = &nodes[2 + i % 2];
            let req = client.post(q.at("/api/query/diff")).json(spec);
            async move { (i, send_json(req).await) }
        })
        .buffered(4)
        .collect::<Vec<_>>()
        .await;
    let (mut groups, mut spread) = (0, 0);
    for (i, (status, got)) in answers {
        assert_eq!(status, 200, "spec {i} {}: {got}", specs[i]);
        groups += check_answer(i, &specs[i], &got, &events);
        // Each spec's queries ran across the workers, none of them retried (a retry would
        // hide a plan that cannot travel).
        let used = &got["meta"]["distributed"];
        assert!(used["tasks"].as_u64().unwrap() >= 1, "spec {i}: {used}");
        assert!(
            used.get("retried").is_none() && used.get("retried_alone").is_none(),
            "spec {i}: {used}"
        );
        spread += usize::from(used["workers"] == 2);
    }
    assert!(
        groups > specs.len(),
        "the random specs should produce groups, got {groups}"
    );
    // (A spec answered from the node's precomputed partials and its fresh rows alone runs on
    // that node.)
    eprintln!("{spread} of {} specs ran on both query nodes", specs.len());
    assert!(
        spread > specs.len() / 2,
        "{spread} of {} specs used both workers",
        specs.len()
    );
    // Some of the events were in segments, some in the buffer.
    let stats = send_json(client.get(nodes[2].at("/api/datasets/diff/stats"))).await.1;
    assert!(stats["segments"].as_u64().unwrap() >= 1, "{stats}");
}

/// OTLP on a cluster: a request whose spans map to datasets of two ingest nodes (by
/// `service.name`) is taken whole by any node: a query node passes each dataset's part on to
/// its ingest node, an ingest node stores its own part and passes the other's on; every span is
/// counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_spans_for_datasets_of_two_ingest_nodes_are_taken_by_any_node() {
    let moto = start_moto().await;
    let env = moto.env();
    let storage = format!("s3://{BUCKET}/otlp");
    let node = |role, name| node_flags(&storage, role, name, &["--catalog-refresh", "200ms"]);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = Server::start_with_env(dirs[0].path(), &node("ingest", "ing-a"), &env).await;
    let b = Server::start_with_env(dirs[1].path(), &node("ingest", "ing-b"), &env).await;
    let q = Server::start_with_env(dirs[2].path(), &node("query", "q-1"), &env).await;
    let client = reqwest::Client::new();
    let t0_ns = T0 as u64 * 1000;
    let mut next_span = 0u64;
    let mut spans = |service: &str, n: u64| {
        let spans: Vec<serde_json::Value> = (0..n)
            .map(|_| {
                next_span += 1;
                json!({
                    "traceId": format!("{:032x}", next_span), "spanId": format!("{:016x}", next_span), "name": "op",
                    "startTimeUnixNano": (t0_ns + next_span * 1_000_000).to_string(),
                    "endTimeUnixNano": (t0_ns + next_span * 1_000_000 + 500_000).to_string(),
                })
            })
            .collect();
        json!({
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"spans": spans}],
        })
    };
    let export = |server: &Server, resources: Vec<serde_json::Value>| {
        client
            .post(server.at("/v1/traces"))
            .header("content-type", "application/json")
            .body(json!({ "resourceSpans": resources }).to_string())
    };
    // Each ingest node takes one service's dataset.
    for (server, service) in [(&a, "svc-a"), (&b, "svc-b")] {
        let (status, r) = send_json(export(server, vec![spans(service, 1)])).await;
        assert_eq!(status, 200, "{r}");
    }
    // Both services in one request, to the query node and to ingest node a.
    for server in [&q, &a] {
        let (status, r) = send_json(export(server, vec![spans("svc-a", 3), spans("svc-b", 2)])).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r, json!({}), "every span taken");
    }
    assert!(a.api(&client).metric("sonde_requests_forwarded_total").await >= 1);
    let spec = json!({"calculations": [{"op": "COUNT"}],
                      "start_time": format_time(T0), "end_time": format_time(T0 + HOUR)});
    for (dataset, want) in [("svc-a", 7), ("svc-b", 5)] {
        let mut seen = 0;
        for _ in 0..300 {
            let (status, r) = send_json(client.post(q.at(&format!("/api/query/{dataset}"))).json(&spec)).await;
            seen = if status == 200 {
                r["data"]["results"][0]["data"]["COUNT"].as_i64().unwrap_or(0)
            } else {
                0
            };
            assert!(seen <= want, "{dataset}: {seen} spans counted, {want} sent");
            if seen == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, want, "{dataset}");
    }
}

/// COUNT(*), SUM, MAX of duration_ms and the weighted P99 by service, by SQL on `server`, with
/// the answer's `meta.distributed`.
async fn sql_by_service(
    client: &reqwest::Client,
    server: &Server,
) -> (BTreeMap<String, (i64, f64, f64, f64)>, serde_json::Value) {
    let sql = r#"SELECT "service.name" AS svc, COUNT(*) AS n, SUM(duration_ms) AS total, MAX(duration_ms) AS top,
                 weighted_percentile(duration_ms, samplerate, 0.99) AS p99
                 FROM sqlobjs GROUP BY 1 ORDER BY 1"#;
    let (status, r) = send_json(client.post(server.at("/api/sql")).json(&json!({"sql": sql}))).await;
    assert_eq!(status, 200, "{r}");
    let rows = r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["svc"].as_str().unwrap().to_string(),
                (
                    row["n"].as_i64().unwrap(),
                    row["total"].as_f64().unwrap(),
                    row["top"].as_f64().unwrap(),
                    row["p99"].as_f64().unwrap(),
                ),
            )
        })
        .collect();
    (rows, r["meta"]["distributed"].clone())
}

/// Issue 19, fresh rows on the workers: a plan names the fresh rows by their position in the
/// query nodes' copies of the ingest node's buffer, and a worker whose own copy lacks them (here
/// q-2, which copies once an hour) reads its slice from the ingest node. Every row is counted
/// once, by both workers, and nothing is run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reads_the_fresh_rows_its_copy_lacks_from_the_ingest_node() {
    let moto = start_moto().await;
    let env = moto.env();
    let storage = format!("s3://{BUCKET}/freshscan");
    let tuning = [
        "--flush-rows",
        "100000",
        "--flush-age",
        "10m",
        "--catalog-refresh",
        "200ms",
        "--distributed-bytes-per-partition",
        "1",
    ];
    let node = |role, name| node_flags(&storage, role, name, &tuning);
    let mut q2_flags = node("query", "q-2");
    q2_flags.extend(["--fresh-interval", "1h"]);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ingest = Server::start_with_env(dirs[0].path(), &node("ingest", "ing"), &env).await;
    let q1 = Server::start_with_env(dirs[1].path(), &node("query", "q-1"), &env).await;
    let q2 = Server::start_with_env(dirs[2].path(), &q2_flags, &env).await;
    let client = reqwest::Client::new();
    let events = generate(23, 900);
    for chunk in events.chunks(300) {
        let (status, r) = send_json(post_ndjson(&client, &ingest, "freshscan", chunk)).await;
        assert_eq!(status, 200, "{r}");
    }
    let sql = r#"SELECT "service.name" AS svc, COUNT(*) AS n, SUM(duration_ms) AS total FROM freshscan GROUP BY 1 ORDER BY 1"#;
    let mut want: BTreeMap<String, (i64, f64)> = BTreeMap::new();
    for e in &events {
        let w = want
            .entry(e.data["service.name"].as_str().unwrap().to_string())
            .or_default();
        w.0 += 1;
        w.1 += e.data["duration_ms"].as_f64().unwrap();
    }
    let same = |r: &serde_json::Value| {
        let rows = r["rows"].as_array().cloned().unwrap_or_default();
        rows.len() == want.len()
            && rows.iter().zip(&want).all(|(row, (svc, (n, total)))| {
                row["svc"] == *svc.as_str()
                    && row["n"] == *n
                    && (row["total"].as_f64().unwrap() - total).abs() <= 1e-9 * total.abs().max(1.0)
            })
    };
    // Wait until q-1 has copied every event and sees q-2 as a worker.
    let mut last = serde_json::Value::Null;
    for _ in 0..300 {
        last = send_json(client.post(q1.at("/api/sql")).json(&json!({ "sql": sql })))
            .await
            .1;
        if same(&last) && last["meta"]["distributed"]["workers"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(same(&last), "q-1 answered {last}, want {want:?}");
    let used = &last["meta"]["distributed"];
    assert_eq!(used["workers"], 2, "{used}");
    assert!(used["retried"].is_null() && used["retried_alone"].is_null(), "{used}");
    let (_, stats) = send_json(client.get(ingest.at("/api/datasets/freshscan/stats"))).await;
    assert_eq!(stats["buffered_rows"], 900, "every row is fresh: {stats}");
    // q-2 copied nothing (its one round ran before the dataset existed), so its slice came from
    // the ingest node; the plan holds two slices of the 900 rows.
    assert_eq!(q2.api(&client).metric("sonde_fresh_copy_bytes").await, 0);
    let (status, r) = send_json(
        client
            .post(q1.at("/api/sql"))
            .json(&json!({"sql": format!("EXPLAIN {sql}")})),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let plan = r["rows"][1]["plan"].as_str().unwrap_or_default();
    assert!(
        plan.contains("BufferScanExec: dataset=freshscan, rows=0..450") && plan.contains("rows=450..900"),
        "{plan}"
    );
    for _ in 0..5 {
        let r = send_json(client.post(q1.at("/api/sql")).json(&json!({ "sql": sql })))
            .await
            .1;
        assert!(same(&r), "{r}");
        assert_eq!(r["meta"]["distributed"]["workers"], 2, "{r}");
        assert!(r["meta"]["distributed"]["retried_alone"].is_null(), "{r}");
    }
}

/// Issue 19, distributed SQL: three query nodes are datafusion-distributed workers over one
/// bucket, each splitting a SQL scan of many segments (`--distributed-bytes-per-partition 1`)
/// into tasks over all of them. The answer (with Sonde's weighted percentile, which each worker
/// must know) equals a brute-force computation, `meta` says how many workers and tasks ran it,
/// and `EXPLAIN` shows the stages; derived columns, Sonde's kernels included, are computed on
/// the workers. A worker SIGKILLed while queries run costs the query that meets it one retry
/// over the workers left (shown in `meta`), and the next queries leave it out at once; a node
/// with the wrong `--cluster-key` is refused by the others, and its own tasks are refused by
/// them too (those queries run again on the asking node alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_is_spread_over_the_query_nodes_and_answers_as_one_node() {
    let moto = start_moto().await;
    let env = moto.env();
    let storage = format!("s3://{BUCKET}/dist");
    let tuning = [
        "--flush-rows",
        "400",
        "--flush-age",
        "10m",
        "--compaction-target-rows",
        "0",
        "--catalog-refresh",
        "200ms",
        "--lease",
        "3s",
        "--distributed-bytes-per-partition",
        "1",
        "--cluster-key",
        "k-1",
    ];
    let node = |role, name| node_flags(&storage, role, name, &tuning);
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let ingest = Server::start_with_env(dirs[0].path(), &node("ingest", "ing"), &env).await;
    let mut queries = vec![
        Server::start_with_env(dirs[1].path(), &node("query", "q-1"), &env).await,
        Server::start_with_env(dirs[2].path(), &node("query", "q-2"), &env).await,
        // q-3 copies no fresh rows at all (`--max-buffer-bytes 0`): it reads them from the
        // ingest node as each query starts, and as a worker for the slices others plan.
        Server::start_with_env(
            dirs[3].path(),
            &[node("query", "q-3"), vec!["--max-buffer-bytes", "0"]].concat(),
            &env,
        )
        .await,
    ];
    let client = reqwest::Client::new();
    let events = generate(19, 4150);
    // 4,000 flushed into segments, 150 left in the ingest node's write buffer, which the query
    // nodes copy and name in the plan by position.
    for chunk in events[..4000].chunks(500) {
        let (status, r) = send_json(post_ndjson(&client, &ingest, "sqlobjs", chunk)).await;
        assert_eq!(status, 200, "{r}");
    }
    for _ in 0..300 {
        let (_, stats) = send_json(client.get(ingest.at("/api/datasets/sqlobjs/stats"))).await;
        if stats["buffered_rows"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, r) = send_json(post_ndjson(&client, &ingest, "sqlobjs", &events[4000..])).await;
    assert_eq!(status, 200, "{r}");
    // Brute force: rows, sum and max of duration_ms, and the weighted P99, by service.
    let brute = |events: &[GenEvent]| -> BTreeMap<String, (i64, f64, f64, f64)> {
        let mut by: BTreeMap<String, Vec<&GenEvent>> = BTreeMap::new();
        for e in events {
            by.entry(e.data["service.name"].as_str().unwrap().to_string())
                .or_default()
                .push(e);
        }
        let p99 = brute_force(events);
        by.into_iter()
            .map(|(svc, es)| {
                let d = |e: &GenEvent| e.data["duration_ms"].as_f64().unwrap();
                let total = es.iter().map(|e| d(e)).sum();
                let top = es.iter().map(|e| d(e)).fold(f64::MIN, f64::max);
                let p = p99[&svc].1;
                (svc, (es.len() as i64, total, top, p))
            })
            .collect()
    };
    let want = brute(&events);
    let same = |got: &BTreeMap<String, (i64, f64, f64, f64)>| {
        got.len() == want.len()
            && got.iter().zip(&want).all(|((gs, g), (ws, w))| {
                let near = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
                gs == ws && g.0 == w.0 && near(g.1, w.1) && g.2 == w.2 && g.3 == w.3
            })
    };
    // Every event counted once, and every worker known to q-1.
    let mut last = (BTreeMap::new(), serde_json::Value::Null);
    for _ in 0..300 {
        last = sql_by_service(&client, &queries[0]).await;
        if same(&last.0) && last.1["workers"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(same(&last.0), "q-1 answered {:?}, want {want:?}", last.0);
    let (_, stats) = send_json(client.get(ingest.at("/api/datasets/sqlobjs/stats"))).await;
    assert_eq!(stats["buffered_rows"], 150, "some rows are fresh: {stats}");
    assert_eq!(last.1["workers"], 3, "{}", last.1);
    // A query node of another build (its member file announces other plans; here nothing
    // listens at its address) is left out of the workers, not tried and found wanting by
    // every query: still 3 workers, and no query run again.
    {
        use object_store::ObjectStoreExt;
        let now = sonde_model::time::now_us();
        let member = json!({"node": "q-old", "role": "query", "url": "http://127.0.0.1:9",
                            "started_us": now, "heartbeat_us": now, "worker_url": "http://127.0.0.1:9",
                            "worker_plans": "sonde-query 0.0.1, an older build"});
        moto.store()
            .put(&"dist/nodes/q-old.json".into(), member.to_string().into_bytes().into())
            .await
            .unwrap();
        // The member files are read again every third of the lease (1 s here).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for _ in 0..3 {
            let (got, meta) = sql_by_service(&client, &queries[0]).await;
            assert!(same(&got), "q-1 answered {got:?}");
            assert_eq!(meta["workers"], 3, "{meta}");
            assert!(meta["retried"].is_null() && meta["retried_alone"].is_null(), "{meta}");
        }
    }
    assert!(last.1["tasks"].as_u64().unwrap() >= 3, "{}", last.1);
    assert!(last.1["stages"].as_u64().unwrap() >= 2, "{}", last.1);
    // Every query node coordinates too.
    for q in &queries[1..] {
        let (got, meta) = sql_by_service(&client, q).await;
        assert!(same(&got), "{} answered {got:?}", q.url);
        assert!(meta["workers"].as_u64().unwrap() >= 2, "{}: {meta}", q.url);
    }
    let q3 = queries[2].api(&client);
    assert_eq!(q3.metric("sonde_fresh_copy_bytes").await, 0, "q-3 copies nothing");
    assert!(
        q3.metric("sonde_fresh_rows_read_total").await >= 150,
        "q-3 read the fresh rows as it ran"
    );
    // EXPLAIN shows the distributed plan, stage by stage.
    let (status, r) = send_json(
        client
            .post(queries[0].at("/api/sql"))
            .json(&json!({"sql": "EXPLAIN SELECT \"service.name\", COUNT(*) FROM sqlobjs GROUP BY 1"})),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let plan = r["rows"][1]["plan"].as_str().unwrap_or_default();
    assert_eq!(r["rows"][1]["plan_type"], "distributed_plan", "{r}");
    assert!(plan.contains("DistributedExec") && plan.contains("Stage 1"), "{plan}");
    // The 150 fresh rows travel as their position in the query nodes' copies, not as rows.
    assert!(plan.contains("BufferScanExec: dataset=sqlobjs"), "{plan}");
    assert!(!plan.contains("partition_sizes"), "no rows inside the plan: {plan}");
    eprintln!("distributed SQL on 3 query nodes: {}\n{plan}", last.1);
    // EXPLAIN ANALYZE runs it across the workers and says what each step did.
    let (status, r) = send_json(
        client
            .post(queries[0].at("/api/sql"))
            .json(&json!({"sql": "EXPLAIN ANALYZE SELECT \"service.name\", COUNT(*) FROM sqlobjs GROUP BY 1"})),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let analyzed = r["rows"][0]["plan"].as_str().unwrap_or_default();
    assert!(
        analyzed.contains("Stage 1") && analyzed.contains("output_rows=") && analyzed.contains("plan_bytes_sent"),
        "{analyzed}"
    );

    // Derived columns are computed on the workers, those that are plain expressions and those
    // computed by Sonde's own kernels (found by name in each worker's registry, their pattern,
    // size, format and zone passed as literal arguments).
    for (alias, expression) in [
        ("slow", "GT($duration_ms, 1000)"),
        ("log_d", "LOG10($duration_ms)"),
        ("verb", "REG_VALUE($name, `^([A-Z]+) `)"),
        ("d_bucket", "BUCKET($duration_ms, 250, 0, 2000)"),
        ("paris_hour", r#"FORMAT_TIME("%H", EVENT_TIMESTAMP(), "Europe/Paris")"#),
    ] {
        let (status, r) = send_json(
            client
                .post(queries[0].at("/1/derived_columns/sqlobjs"))
                .json(&json!({"alias": alias, "expression": expression})),
        )
        .await;
        assert_eq!(status, 201, "{r}");
    }
    let slow = events
        .iter()
        .filter(|e| e.data["duration_ms"].as_f64().unwrap() > 1000.0)
        .count();
    for sql in [
        "SELECT COUNT(*) AS n FROM sqlobjs WHERE slow",
        "SELECT COUNT(*) AS n FROM sqlobjs WHERE log_d > 3",
    ] {
        let (status, r) = send_json(client.post(queries[0].at("/api/sql")).json(&json!({ "sql": sql }))).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["rows"][0]["n"], slow, "{sql}: {r}");
        assert_eq!(r["meta"]["distributed"]["workers"], 3, "{sql}: {r}");
    }
    // The three kernels with parameters, against the same computed from the events sent.
    let verb = regex::Regex::new("^([A-Z]+) ").unwrap();
    let paris: chrono_tz::Tz = "Europe/Paris".parse().unwrap();
    let mut want: BTreeMap<(String, i64, String), i64> = BTreeMap::new();
    for e in &events {
        let name = e.data["name"].as_str().unwrap();
        let v = verb.captures(name).map(|c| c[1].to_string()).unwrap_or_default();
        let d = e.data["duration_ms"].as_f64().unwrap().clamp(0.0, 2000.0);
        let b = ((d / 250.0).floor() * 250.0) as i64;
        let t = chrono::DateTime::from_timestamp_micros(e.time_us).unwrap();
        let h = t.with_timezone(&paris).format("%H").to_string();
        *want.entry((v, b, h)).or_default() += 1;
    }
    let sql = "SELECT COALESCE(verb, '') AS verb, d_bucket AS b, paris_hour AS h, \
               COUNT(*) AS n FROM sqlobjs GROUP BY 1, 2, 3";
    let (status, r) = send_json(client.post(queries[1].at("/api/sql")).json(&json!({ "sql": sql }))).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["meta"]["distributed"]["workers"], 3, "{r}");
    let got: BTreeMap<(String, i64, String), i64> = r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let s = |k: &str| row[k].as_str().unwrap().to_string();
            let b = row["b"].as_f64().unwrap();
            assert_eq!(b.fract(), 0.0, "{row}");
            ((s("verb"), b as i64, s("h")), row["n"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(got, want);
    assert!(want.len() > 10, "the groups are varied: {want:?}");

    // A worker SIGKILLed while q-1 asks one question after another: the query that meets it
    // (in its middle, or just after) fails there, q-3 is found unreachable and left out, and
    // that query runs again over q-1 and q-2. Every answer is whole, and the queries after it
    // use those two at once, without waiting for q-3's member file to age past --lease.
    let answers = {
        let (asking, rest) = queries.split_at_mut(1);
        let ask = async {
            let mut answers = Vec::new();
            let mut since_retry = None;
            while since_retry.is_none_or(|n| n < 5) && answers.len() < 300 {
                let (got, meta) = sql_by_service(&client, &asking[0]).await;
                if meta.get("retried").is_some() {
                    since_retry = Some(0);
                }
                since_retry = since_retry.map(|n| n + 1);
                answers.push((got, meta));
            }
            answers
        };
        let kill = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            rest[1].kill();
        };
        tokio::join!(ask, kill).0
    };
    let retried: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i].1.get("retried").is_some())
        .collect();
    assert_eq!(
        retried.len(),
        1,
        "one query met the dead worker: {:?}",
        answers.iter().map(|a| &a.1).collect::<Vec<_>>()
    );
    let r = retried[0];
    eprintln!("{} queries before the SIGKILL of q-3 met it; then: {}", r, answers[r].1);
    for (i, (got, meta)) in answers.iter().enumerate() {
        assert!(same(got), "answer {i} around the kill: {got:?} {meta}");
        assert!(meta.get("retried_alone").is_none(), "answer {i}: {meta}");
        let workers = if i < r { 3 } else { 2 };
        assert_eq!(meta["workers"], workers, "answer {i} (the retried one is {r}): {meta}");
    }
    assert_eq!(
        answers[r].1["left_out"].as_array().map(Vec::len),
        Some(1),
        "{}",
        answers[r].1
    );
    let metric = |name| {
        let (client, q) = (&client, &queries[0]);
        async move { q.api(client).metric(name).await }
    };
    assert_eq!(metric("sonde_sql_retried_on_workers_total").await, 1);
    assert!(metric("sonde_sql_distributed_total").await > answers.len() as u64);
    // After --lease it stays out: its member file has gone stale.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (got, meta) = sql_by_service(&client, &queries[0]).await;
    assert!(same(&got), "{got:?}");
    assert_eq!(meta["workers"], 2, "{meta}");
    assert!(
        meta.get("retried").is_none() && meta.get("retried_alone").is_none(),
        "{meta}"
    );

    // A node with another key: the others refuse its tasks, and it refuses theirs.
    let mut wrong: Vec<&str> = node("query", "q-4");
    let at = wrong.iter().position(|f| *f == "k-1").unwrap();
    wrong[at] = "k-other";
    queries.push(Server::start_with_env(dirs[4].path(), &wrong, &env).await);
    // (Once it has read the catalog and copied the fresh rows.)
    for _ in 0..300 {
        if same(&sql_by_service(&client, &queries[3]).await.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut refused = (false, false);
    for _ in 0..100 {
        let (got, meta) = sql_by_service(&client, &queries[3]).await;
        let (got_1, meta_1) = sql_by_service(&client, &queries[0]).await;
        assert!(same(&got) && same(&got_1), "{got:?} {got_1:?}");
        let says_key = |m: &serde_json::Value| m["retried_alone"].as_str().is_some_and(|e| e.contains("cluster"));
        refused.0 |= says_key(&meta);
        refused.1 |= says_key(&meta_1);
        if refused.0 && refused.1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refused, (true, true), "both ways refused for the key");
    let (_, meta) = sql_by_service(&client, &queries[3]).await;
    eprintln!("q-4, with another key: {meta}");
}

//! Storage lifecycle: compaction merges small segments while queries stay exact, a kill at any
//! moment of it loses and doubles nothing, retention drops old segments, deletion is final.

use crate::fixtures::T0;
use crate::harness::{Server, id_counts, send_json};
use serde_json::{Value, json};
use std::time::Duration;

fn batch(prefix: &str, from: usize, n: usize) -> Value {
    json!((from..from + n)
        .map(|i| json!({"data": {"id": format!("{prefix}-{i}"), "n": i}, "time": sonde_gen::format_time(T0 + i as i64 * 1000)}))
        .collect::<Vec<_>>())
}

async fn stats(client: &reqwest::Client, server: &Server, ds: &str) -> Value {
    send_json(client.get(server.at(&format!("/api/datasets/{ds}/stats"))))
        .await
        .1
}

fn ids_exactly_once(dir: &std::path::Path, ds: &str, expected: usize, prefix: &str) {
    let seen = id_counts(dir, ds);
    assert_eq!(seen.len(), expected, "distinct events");
    assert!(seen.values().all(|n| *n == 1), "an event was doubled");
    assert!(
        (0..expected).all(|i| seen.contains_key(&format!("{prefix}-{i}"))),
        "an event was lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_small_segments_while_queries_stay_exact() {
    // Flushes of 500 rows in row groups of 128Ki: small row groups, merged row by row.
    compaction_stays_exact(&[], false).await;
}

/// The same with row groups of 100 rows: the flushes' row groups are full, so a compaction
/// copies them as they are (decoding only where flushes overlap in time), and every answer is
/// still exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_joins_full_row_groups_as_they_are_while_queries_stay_exact() {
    compaction_stays_exact(&["--row-group-rows", "100"], true).await;
}

/// Twenty flushes of 500 events with `extra` flags, compacted while every answer is checked;
/// `joined`: whether the compactions copy row groups (`sonde_compactions_joined_total`).
async fn compaction_stays_exact(extra: &[&str], joined: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = vec![
        "--flush-rows",
        "500",
        "--compaction-target-rows",
        "4000",
        "--maintenance-interval",
        "200ms",
    ];
    flags.extend_from_slice(extra);
    let mut server = Server::start(dir.path(), &flags).await;
    let client = reqwest::Client::new();
    let mut sent = 0usize;
    for _ in 0..20 {
        let (status, _) = send_json(client.post(server.at("/1/batch/compact")).json(&batch("e", sent, 500))).await;
        assert_eq!(status, 200);
        sent += 500;
        // Every answer while flushes and merges run is exact.
        assert_eq!(server.api(&client).count("compact").await, sent as i64);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let mut last = Value::Null;
    for _ in 0..300 {
        assert_eq!(server.api(&client).count("compact").await, sent as i64);
        last = stats(&client, &server, "compact").await;
        if last["buffered_rows"] == 0
            && last["segments_pending_compaction"] == 0
            && last["segments"].as_u64().unwrap() <= 6
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Twenty flushes end as a handful of segments (how many depends on how flushes and merges
    // interleaved: at most 6 with a 4,000-row target over 10,000 rows).
    assert!(last["segments"].as_u64().unwrap() <= 6, "{last}");
    assert!(last["largest_segment_rows"].as_u64().unwrap() >= 2000, "{last}");
    assert_eq!(last["rows"], sent);
    assert!(last["compression_ratio"].as_f64().unwrap() > 1.0, "{last}");
    let metrics = client
        .get(server.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sonde_compactions_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    let joins = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sonde_compactions_joined_total "))
        .and_then(|n| n.parse::<u64>().ok());
    assert_eq!(joins.map(|n| n > 0), Some(joined), "{metrics}");
    // Twenty sends of the flush size: usually twenty flushes, fewer when a send lands while the
    // previous flush still runs (then one flush takes both), so only "many" is certain.
    assert!(
        metrics.lines().any(|l| l
            .strip_prefix("sonde_segments_flushed_total ")
            .is_some_and(|n| n.parse::<u64>().unwrap() >= 5)),
        "{metrics}"
    );
    server.stop().await;
    ids_exactly_once(dir.path(), "compact", sent, "e");
    // The merged-away files (and their index files) are gone from the disk, not just from the
    // catalog: one segment and one index file per cataloged segment remain.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("datasets/compact"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let segments = last["segments"].as_u64().unwrap() as usize;
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".parquet")).count(),
        segments,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".parquet.idx")).count(),
        segments,
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_during_compaction_lose_and_double_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--flush-rows",
        "300",
        "--compaction-target-rows",
        "3000",
        "--maintenance-interval",
        "40ms",
    ];
    let mut server = Server::start(dir.path(), &flags).await;
    let client = reqwest::Client::new();
    let mut rng = sonde_gen::Rng::new(77);
    let mut sent = 0usize;
    for round in 0..4 {
        for _ in 0..10 {
            let (status, _) = send_json(client.post(server.at("/1/batch/k")).json(&batch("k", sent, 300))).await;
            assert_eq!(status, 200);
            sent += 300;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        // Kill while merges are likely under way.
        tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        server.kill();
        server.restart().await;
        assert_eq!(server.api(&client).count("k").await, sent as i64, "round {round}");
    }
    server.stop().await;
    ids_exactly_once(dir.path(), "k", sent, "k");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_segments_and_deletion_is_final() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--flush-rows",
        "100",
        "--retention-dataset",
        "old=1h",
        "--maintenance-interval",
        "100ms",
    ];
    let mut server = Server::start(dir.path(), &flags).await;
    let client = reqwest::Client::new();
    // Events from 2026-01-01: far older than an hour.
    for ds in ["old", "kept", "doomed"] {
        let (status, _) = send_json(
            client
                .post(server.at(&format!("/1/batch/{ds}")))
                .json(&batch(ds, 0, 200)),
        )
        .await;
        assert_eq!(status, 200);
    }
    let mut old_rows = -1;
    for _ in 0..200 {
        old_rows = stats(&client, &server, "old").await["rows"].as_i64().unwrap_or(-1);
        if old_rows == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(old_rows, 0, "segments past retention are dropped");
    assert_eq!(server.api(&client).count("kept").await, 200, "no retention, no drop");

    let r = client.delete(server.at("/api/datasets/doomed")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = send_json(client.get(server.at("/api/datasets/doomed/columns"))).await;
    assert_eq!(status, 404);
    let r = client.delete(server.at("/api/datasets/doomed")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // A crash right after: the WAL still holds its events, and must not bring them back.
    server.kill();
    server.restart().await;
    let (status, _) = send_json(client.get(server.at("/api/datasets/doomed/columns"))).await;
    assert_eq!(status, 404, "a deleted dataset stays deleted across a restart");
    let (_, d) = send_json(client.get(server.at("/api/datasets"))).await;
    assert!(
        d["datasets"].as_array().unwrap().iter().all(|x| x["name"] != "doomed"),
        "{d}"
    );
    // New events create it again, with only themselves.
    send_json(client.post(server.at("/1/batch/doomed")).json(&batch("again", 0, 3))).await;
    assert_eq!(server.api(&client).count("doomed").await, 3);
    server.stop().await;
    let files = std::fs::read_dir(dir.path().join("datasets/old"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(files, 0, "expired segment files are deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_indexes_skip_segments_without_the_needle() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--flush-rows",
        "20",
        "--compaction-target-rows",
        "0",
        "--bloom-columns",
        "trace.trace_id,request.id",
    ];
    let mut server = Server::start(dir.path(), &flags).await;
    let client = reqwest::Client::new();
    const SEGMENTS: usize = 200;
    for seg in 0..SEGMENTS {
        let body: Vec<Value> = (0..20)
            .map(|i| {
                let n = seg * 20 + i;
                json!({"data": {"request.id": format!("r{n}"), "n": n}, "time": sonde_gen::format_time(T0 + n as i64 * 1000)})
            })
            .collect();
        let (status, _) = send_json(client.post(server.at("/1/batch/needles")).json(&body)).await;
        assert_eq!(status, 200);
        for _ in 0..200 {
            if stats(&client, &server, "needles").await["buffered_rows"] == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let range =
        json!({"start_time": sonde_gen::format_time(T0), "end_time": sonde_gen::format_time(T0 + 86_400_000_000)});
    let needle = |filters: Value| {
        let mut spec = range.clone();
        spec["calculations"] = json!([{"op": "COUNT"}]);
        spec["filters"] = filters;
        spec
    };
    for phase in 0..3 {
        if phase >= 1 {
            // After a restart the indexes come from the index files beside the segments…
            server.stop().await;
            if phase == 2 {
                // …or, when those are damaged, from the segments themselves.
                for e in std::fs::read_dir(dir.path().join("datasets/needles")).unwrap() {
                    let p = e.unwrap().path();
                    if p.to_string_lossy().ends_with(".idx") {
                        std::fs::write(&p, b"SONDIDX1 garbage").unwrap();
                    }
                }
            }
            server.restart().await;
        }
        let (_, r) = send_json(
            client
                .post(server.at("/api/query/needles"))
                .json(&needle(json!([{"column": "request.id", "op": "=", "value": "r1234"}]))),
        )
        .await;
        assert_eq!(r["data"]["results"][0]["data"]["COUNT"], 1, "{r}");
        assert_eq!(r["meta"]["segments_total"], SEGMENTS, "{}", r["meta"]);
        assert_eq!(r["meta"]["segments_scanned"], 1, "{}", r["meta"]);
        assert_eq!(r["meta"]["segments_pruned_by_index"], SEGMENTS - 1);
        assert_eq!(r["meta"]["rows_examined"], 20);
        let (_, r) = send_json(client.post(server.at("/api/query/needles")).json(&needle(
            json!([{"column": "request.id", "op": "in", "value": ["r5", "r3999", "nope"]}]),
        )))
        .await;
        assert_eq!(r["data"]["results"][0]["data"]["COUNT"], 2, "{r}");
        assert_eq!(r["meta"]["segments_scanned"], 2, "{}", r["meta"]);
        // A value no segment holds opens no segment at all.
        let (_, r) = send_json(
            client
                .post(server.at("/api/query/needles"))
                .json(&needle(json!([{"column": "request.id", "op": "=", "value": "absent"}]))),
        )
        .await;
        assert_eq!(r["meta"]["segments_scanned"], 0, "{}", r["meta"]);
        assert_eq!(r["data"]["results"], json!([]));
    }
}

/// Events of two ages in one dataset: `old` ones far past the retention, `new` ones inside it.
/// The server is killed again and again while flushes and retention run; every new event must
/// be found exactly once after each restart, an old one never twice, and in the end no segment
/// that lies wholly past the retention is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_during_retention_lose_and_double_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--flush-rows",
        "150",
        "--compaction-target-rows",
        "0",
        "--retention",
        "1h",
        "--maintenance-interval",
        "30ms",
    ];
    let mut server = Server::start(dir.path(), &flags).await;
    let client = reqwest::Client::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let recent = now - 600_000_000; // ten minutes ago: inside the retention
    let events = |prefix: &str, t0: i64, from: usize, n: usize| {
        json!((from..from + n)
            .map(|i| json!({"data": {"id": format!("{prefix}-{i}")}, "time": sonde_gen::format_time(t0 + i as i64 * 1000)}))
            .collect::<Vec<_>>())
    };
    let recent_count = |server: &Server| {
        let spec = json!({
            "calculations": [{"op": "COUNT"}],
            "filters": [{"column": "id", "op": "starts-with", "value": "new-"}],
            "start_time": sonde_gen::format_time(recent - 1_000_000),
            "end_time": sonde_gen::format_time(now + 3_600_000_000),
        });
        let req = client.post(server.at("/api/query/aging")).json(&spec);
        async move {
            let (status, r) = send_json(req).await;
            assert_eq!(status, 200, "{r}");
            r["data"]["results"][0]["data"]["COUNT"].as_i64().unwrap_or(0)
        }
    };
    let mut rng = sonde_gen::Rng::new(4242);
    let (mut old_sent, mut new_sent) = (0usize, 0usize);
    for round in 0..4 {
        for _ in 0..6 {
            // Whole batches of one age, so that flushes leave segments wholly old or wholly new.
            let (status, _) = send_json(
                client
                    .post(server.at("/1/batch/aging"))
                    .json(&events("old", T0, old_sent, 150)),
            )
            .await;
            assert_eq!(status, 200);
            old_sent += 150;
            let (status, _) = send_json(
                client
                    .post(server.at("/1/batch/aging"))
                    .json(&events("new", recent, new_sent, 150)),
            )
            .await;
            assert_eq!(status, 200);
            new_sent += 150;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Kill while flushes and retention passes are likely under way.
        tokio::time::sleep(Duration::from_millis(rng.below(200))).await;
        server.kill();
        server.restart().await;
        assert_eq!(recent_count(&server).await, new_sent as i64, "round {round}");
    }
    // Let retention finish: no segment may lie wholly past the retention. (A flush can put old
    // and new events in one segment; such a segment is kept whole, as retention promises.)
    let cutoff = now - 3_600_000_000;
    let mut expired_left = usize::MAX;
    for _ in 0..200 {
        let catalog: Value = serde_json::from_slice(&std::fs::read(dir.path().join("catalog.json")).unwrap()).unwrap();
        expired_left = catalog["datasets"]["aging"]["segments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["max_ts_us"].as_i64().unwrap() < cutoff)
            .count();
        if expired_left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(expired_left, 0, "segments past the retention are dropped");
    assert_eq!(recent_count(&server).await, new_sent as i64);
    server.stop().await;
    let seen = id_counts(dir.path(), "aging");
    assert!(seen.values().all(|n| *n == 1), "an event was doubled");
    assert!(
        (0..new_sent).all(|i| seen.contains_key(&format!("new-{i}"))),
        "a recent event was lost"
    );
}

//! SIGKILL at random moments — while batches stream in and flushes run — loses no
//! acknowledged event and duplicates none, and leaves no garbage in the WAL.

use crate::harness::{Server, id_counts};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ROUNDS: usize = 4;
const CLIENTS: usize = 4;
const BATCH: usize = 100;

async fn client_loop(
    url: String,
    round: usize,
    client_no: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    attempted: Arc<Mutex<Vec<String>>>,
) {
    let http = reqwest::Client::new();
    let mut seq = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let ids: Vec<String> = (0..BATCH)
            .map(|i| format!("r{round}-c{client_no}-{}", seq + i))
            .collect();
        seq += BATCH;
        let body: Vec<Value> = ids
            .iter()
            .map(|id| json!({"data": {"id": id, "n": seq, "payload": "x".repeat(200)}, "samplerate": 1}))
            .collect();
        attempted.lock().unwrap().extend(ids.iter().cloned());
        let resp = http.post(format!("{url}/1/batch/crash")).json(&body).send().await;
        let Ok(resp) = resp else { break };
        if resp.status() != 200 {
            break;
        }
        let Ok(statuses) = resp.json::<Vec<Value>>().await else {
            break;
        };
        assert!(statuses.iter().all(|s| s["status"] == 202));
        acked.lock().unwrap().extend(ids);
    }
}

async fn rows(server: &Server) -> u64 {
    let v: Value = reqwest::get(server.at("/api/datasets"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "crash")
        .map_or(0, |d| d["rows"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_acknowledged_event_and_duplicates_none() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny flushes and WAL files, so that kills land during flushes and rotations too.
    let flags = [
        "--flush-rows",
        "1500",
        "--flush-age",
        "200ms",
        "--wal-rotate-bytes",
        "200000",
    ];
    let mut server = Server::start(dir.path(), &flags).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let attempted = Arc::new(Mutex::new(Vec::new()));
    let mut rng = sonde_gen::Rng::new(20261125);
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|c| {
                tokio::spawn(client_loop(
                    server.url.clone(),
                    round,
                    c,
                    stop.clone(),
                    acked.clone(),
                    attempted.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        server.restart().await;
        // After recovery every acknowledged event is back, and nothing beyond what was sent.
        let n = rows(&server).await;
        let acked_n = acked.lock().unwrap().len() as u64;
        let attempted_n = attempted.lock().unwrap().len() as u64;
        assert!(acked_n > 0, "round {round}: nothing was acknowledged");
        assert!(
            n >= acked_n && n <= attempted_n,
            "round {round}: {n} rows, {acked_n} acked, {attempted_n} sent"
        );
    }
    server.stop().await;

    // The WAL that remains reads cleanly to its end: no garbage was kept after a torn tail.
    let replay = sonde_storage::read_wal(&dir.path().join("wal")).unwrap();
    assert_eq!(replay.torn_bytes, 0, "WAL holds garbage after recovery");

    let count = id_counts(dir.path(), "crash");
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dups.is_empty(), "duplicated events: {dups:?}");
    let acked = acked.lock().unwrap();
    let missing: Vec<_> = acked.iter().filter(|id| !count.contains_key(*id)).take(5).collect();
    assert!(
        missing.is_empty(),
        "lost {} acknowledged events, e.g. {missing:?}",
        acked.iter().filter(|id| !count.contains_key(*id)).count()
    );
    let attempted: HashSet<String> = attempted.lock().unwrap().iter().cloned().collect();
    assert!(
        count.keys().all(|id| attempted.contains(id)),
        "an event nobody sent appeared"
    );
}

//! Faults of the disk under a running or restarting server: the disk filling up (a small tmpfs
//! the test mounts), WAL records damaged on disk, segment files truncated or overwritten. In
//! every case nothing acknowledged is lost or doubled beyond the records the damage itself hit,
//! the damage is reported, and the server serves the rest.

use crate::fixtures::T0;
use crate::harness::{Server, id_counts, send_json};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn batch(prefix: &str, from: usize, n: usize) -> Value {
    json!((from..from + n)
        .map(|i| json!({"data": {"id": format!("{prefix}-{i}"), "pad": "x".repeat(200)}, "time": sonde_gen::format_time(T0 + i as i64 * 1000)}))
        .collect::<Vec<_>>())
}

/// A small tmpfs, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "mounting a tmpfs at {} failed: this test needs root (CAP_SYS_ADMIN)",
            at.display()
        );
        SmallDisk(at)
    }

    /// Fills the disk with a ballast file until writes fail, leaving about `leave` bytes free.
    fn fill(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("ballast");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        drop(f);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len.saturating_sub(leave)).unwrap();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_ingest_then_serves_again_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(dir.path().join("small"), "24m");
    let data = disk.0.join("data");
    let c = reqwest::Client::new();
    let mut acked: Vec<String> = Vec::new();
    let mut sent = 0usize;
    let mut post = async |server: &Server, acked: &mut Vec<String>| {
        let body = batch("e", sent, 100);
        sent += 100;
        let (status, r) = send_json(c.post(server.at("/1/batch/full")).json(&body)).await;
        if status == 200 {
            assert!(r.as_array().unwrap().iter().all(|s| s["status"] == 202), "{r}");
            acked.extend((sent - 100..sent).map(|i| format!("e-{i}")));
        }
        (status, r)
    };

    // 1. No free-space guard: the WAL itself meets ENOSPC, cuts the partial append, refuses.
    let flags = [
        "--min-free-disk-bytes",
        "0",
        "--flush-age",
        "1h",
        "--compaction-target-rows",
        "0",
    ];
    let mut server = Server::start(&data, &flags).await;
    for _ in 0..5 {
        assert_eq!(post(&server, &mut acked).await.0, 200);
    }
    let ballast = disk.fill(4 * 1024);
    let mut refused = 0;
    for _ in 0..5 {
        let (status, r) = post(&server, &mut acked).await;
        if status == 503 {
            refused += 1;
            assert!(r["error"].as_str().unwrap().contains("disk full"), "{r}");
        }
    }
    assert!(refused >= 4, "a full disk refuses ingest ({refused} of 5 refused)");
    std::fs::remove_file(&ballast).unwrap();
    // Room again: the same process accepts events, no restart.
    for _ in 0..5 {
        assert_eq!(post(&server, &mut acked).await.0, 200);
    }
    server.stop().await;

    // 2. With the guard (8 MiB here), ingest stops before the disk is full, and resumes.
    let flags = ["--min-free-disk-bytes", "8388608", "--compaction-target-rows", "0"];
    let mut server = Server::start(&data, &flags).await;
    assert_eq!(post(&server, &mut acked).await.0, 200);
    let ballast = disk.fill(4 * 1024 * 1024);
    let (status, r) = post(&server, &mut acked).await;
    assert_eq!(status, 503, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("--min-free-disk-bytes / SONDE_MIN_FREE_DISK_BYTES"),
        "{r}"
    );
    std::fs::remove_file(&ballast).unwrap();
    assert_eq!(post(&server, &mut acked).await.0, 200);
    server.stop().await;

    // Every acknowledged event is stored exactly once; nothing refused was stored.
    let seen = id_counts(&data, "full");
    assert!(seen.values().all(|n| *n == 1), "an event was doubled");
    let mut stored: Vec<&String> = seen.keys().collect();
    stored.sort();
    let mut want: Vec<&String> = acked.iter().collect();
    want.sort();
    assert_eq!(stored, want, "stored events are exactly the acknowledged ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_wal_records_are_skipped_reported_and_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    // Small WAL files and no flushes: every event stays in the WAL until the restart.
    let flags = [
        "--wal-rotate-bytes",
        "65536",
        "--flush-age",
        "1h",
        "--flush-rows",
        "1000000",
    ];
    let mut server = Server::start(dir.path(), &flags).await;
    let c = reqwest::Client::new();
    const BATCHES: usize = 40;
    for b in 0..BATCHES {
        let (status, _) = send_json(c.post(server.at("/1/batch/w")).json(&batch("w", b * 50, 50))).await;
        assert_eq!(status, 200);
    }
    server.kill();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    // Damage the middle of two files older than the newest (not a torn tail: intact records
    // follow in both).
    for f in [&files[0], &files[files.len() / 2]] {
        let mut bytes = std::fs::read(f).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid..mid + 16].fill(0xAB);
        std::fs::write(f, bytes).unwrap();
    }
    server.restart().await;
    assert!(
        server
            .api(&reqwest::Client::new())
            .metric("sonde_wal_corrupt_bytes_total")
            .await
            > 0
    );
    let quarantined: Vec<_> = std::fs::read_dir(dir.path().join("quarantine/wal")).unwrap().collect();
    assert_eq!(quarantined.len(), 2, "both damaged files are copied to quarantine");
    server.stop().await;
    let seen = id_counts(dir.path(), "w");
    assert!(seen.values().all(|n| *n == 1), "an event was doubled");
    // Each damage hit one record (two if it straddled a boundary): at most 4 batches are lost,
    // everything else was replayed.
    let lost = BATCHES * 50 - seen.len();
    assert!(lost > 0 && lost <= 4 * 50, "lost {lost}");
    assert!(
        seen.contains_key(&format!("w-{}", BATCHES * 50 - 1)),
        "records after the damage survive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_segments_are_quarantined_and_the_rest_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--flush-rows", "100", "--compaction-target-rows", "0"];
    let mut server = Server::start(dir.path(), &flags).await;
    let c = reqwest::Client::new();
    for b in 0..5 {
        let (status, _) = send_json(c.post(server.at("/1/batch/s")).json(&batch("s", b * 100, 100))).await;
        assert_eq!(status, 200);
        for _ in 0..200 {
            let (_, st) = send_json(c.get(server.at("/api/datasets/s/stats"))).await;
            if st["buffered_rows"] == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    server.stop().await;
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.path().join("datasets/s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 5);
    // One truncated (a half-copied file), one with its footer overwritten.
    let half = std::fs::read(&segs[1]).unwrap();
    std::fs::write(&segs[1], &half[..half.len() / 2]).unwrap();
    let mut b = std::fs::read(&segs[3]).unwrap();
    let n = b.len();
    b[n - 40..].fill(0);
    std::fs::write(&segs[3], b).unwrap();

    server.restart().await;
    let spec = json!({"calculations": [{"op": "COUNT"}], "start_time": sonde_gen::format_time(T0), "end_time": sonde_gen::format_time(T0 + 86_400_000_000)});
    let (status, r) = send_json(c.post(server.at("/api/query/s")).json(&spec)).await;
    assert_eq!(status, 200, "queries over the other segments work: {r}");
    assert_eq!(r["data"]["results"][0]["data"]["COUNT"], 300);
    let (_, st) = send_json(c.get(server.at("/api/datasets/s/stats"))).await;
    assert_eq!(st["segments"], 3, "{st}");
    let q = st["quarantined"].as_array().unwrap();
    assert_eq!(q.len(), 2, "{st}");
    assert!(
        q.iter()
            .all(|x| x["rows"] == 100 && !x["reason"].as_str().unwrap().is_empty()),
        "{st}"
    );
    assert_eq!(
        server
            .api(&reqwest::Client::new())
            .metric("sonde_segments_quarantined_total")
            .await,
        2
    );
    // The damaged files are kept, moved aside, not deleted.
    for x in q {
        assert!(dir.path().join(x["moved_to"].as_str().unwrap()).exists(), "{x}");
    }
    // New events still flow into the dataset.
    let (status, _) = send_json(c.post(server.at("/1/batch/s")).json(&batch("t", 0, 10))).await;
    assert_eq!(status, 200);
    server.stop().await;
    let seen = id_counts(dir.path(), "s");
    assert_eq!(seen.len(), 310);
    assert!(seen.values().all(|n| *n == 1));
}

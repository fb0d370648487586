//! The query API's guarantees beyond arithmetic: segment pruning by time, visibility at ack,
//! old segments with narrower types, raw events, Honeycomb's query-data flow, and SQL that
//! cannot write and cannot take the server down.

use crate::fixtures::{MINUTE, T0, at};
use crate::harness::{Server, send_json};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrow_time_ranges_open_only_overlapping_segments() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--flush-rows", "100"]).await;
    let client = reqwest::Client::new();
    // Six segments, one per ten minutes, each of 100 events.
    for seg in 0..6 {
        let batch: Vec<Value> = (0..100)
            .map(|i| json!({"data": {"seg": seg, "i": i}, "time": at(T0 + seg * 10 * MINUTE + i * 1_000_000)}))
            .collect();
        assert_eq!(
            server.api(&client).post_json("/1/batch/pruning", json!(batch)).await.0,
            200
        );
        server.api(&client).wait_flushed("pruning").await;
    }
    let (status, r) = server
        .api(&client)
        .post_json(
            "/api/query/pruning",
            json!({"calculations": [{"op": "COUNT"}], "breakdowns": ["seg"],
               "start_time": at(T0 + 20 * MINUTE), "end_time": at(T0 + 30 * MINUTE)}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["data"]["results"], json!([{"data": {"COUNT": 100, "seg": 2}}]));
    assert_eq!(r["meta"]["segments_total"], 6);
    assert_eq!(r["meta"]["segments_scanned"], 1, "{}", r["meta"]);
    assert_eq!(r["meta"]["segments_pruned"], 5);
    assert_eq!(r["meta"]["rows_examined"], 100);

    // The whole range opens them all.
    let (_, r) = server
        .api(&client)
        .post_json(
            "/api/query/pruning",
            json!({"calculations": [{"op": "COUNT"}], "start_time": at(T0), "end_time": at(T0 + 60 * MINUTE)}),
        )
        .await;
    assert_eq!(r["data"]["results"][0]["data"]["COUNT"], 600);
    assert_eq!(r["meta"]["segments_scanned"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_queryable_the_moment_they_are_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--flush-rows", "250"]).await;
    let client = reqwest::Client::new();
    let now = sonde_model::time::now_us();
    let mut sent = 0;
    for round in 0..20 {
        let n = 37 + round;
        let batch: Vec<Value> = (0..n).map(|i| json!({"data": {"round": round, "i": i}})).collect();
        assert_eq!(
            server.api(&client).post_json("/1/batch/fresh", json!(batch)).await.0,
            200
        );
        sent += n;
        // No sleep: the very next query must see every acknowledged event, whether it sits in
        // the buffer, in a frozen buffer being flushed, or in a segment.
        let (status, r) = server.api(&client).post_json("/api/query/fresh",
            json!({"calculations": [{"op": "COUNT"}], "start_time": at(now - MINUTE), "end_time": at(now + 10 * MINUTE)}),
        )
        .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["data"]["results"][0]["data"]["COUNT"], sent, "round {round}");
        let (_, sql) = server
            .api(&client)
            .post_json("/api/sql", json!({"sql": "SELECT count(*) AS n FROM fresh"}))
            .await;
        assert_eq!(sql["rows"][0]["n"], sent, "round {round} via SQL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_segments_with_narrower_types_read_through_the_widened_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    for (i, v) in [json!(7), json!(2.5), json!("seven")].iter().enumerate() {
        let body = json!([{"data": {"x": v, "n": i}, "time": at(T0 + i as i64 * MINUTE)}]);
        assert_eq!(server.api(&client).post_json("/1/batch/widen", body).await.0, 200);
        server.stop().await; // each value in its own segment
        server.restart().await;
    }
    // And one more, still in the buffer.
    let body = json!([{"data": {"x": true, "n": 3}, "time": at(T0 + 3 * MINUTE)}]);
    assert_eq!(server.api(&client).post_json("/1/batch/widen", body).await.0, 200);

    let (status, r) = server.api(&client).post_json("/api/query/widen",
        json!({"calculations": [{"op": "COUNT"}], "breakdowns": ["x"], "orders": [{"column": "x", "order": "ascending"}],
               "start_time": at(T0), "end_time": at(T0 + 10 * MINUTE)}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let xs: Vec<Value> = r["data"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["data"]["x"].clone())
        .collect();
    assert_eq!(xs, vec![json!("2.5"), json!("7"), json!("seven"), json!("true")]);
    let (_, r) = server
        .api(&client)
        .post_json("/api/sql", json!({"sql": "SELECT n, x FROM widen ORDER BY n"}))
        .await;
    assert_eq!(
        r["rows"],
        json!([{"n": 0, "x": "7"}, {"n": 1, "x": "2.5"}, {"n": 2, "x": "seven"}, {"n": 3, "x": "true"}])
    );
    // A filter on the widened column matches values that were ints on disk.
    let (_, r) = server
        .api(&client)
        .post_json(
            "/api/query/widen",
            json!({"calculations": [{"op": "COUNT"}], "filters": [{"column": "x", "op": "=", "value": 7}],
               "start_time": at(T0), "end_time": at(T0 + 10 * MINUTE)}),
        )
        .await;
    assert_eq!(r["data"]["results"][0]["data"]["COUNT"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_events_newest_first_and_the_query_data_flow() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let batch: Vec<Value> = (0..30)
        .map(|i| json!({"data": {"i": i, "kind": if i % 3 == 0 { "a" } else { "b" }, "nested": {"v": i * 10}}, "time": at(T0 + i * MINUTE)}))
        .collect();
    assert_eq!(server.api(&client).post_json("/1/batch/raw", json!(batch)).await.0, 200);
    let range = json!({"start_time": at(T0), "end_time": at(T0 + 60 * MINUTE)});

    let mut req = range.clone();
    req["filters"] = json!([{"column": "kind", "op": "=", "value": "a"}]);
    req["limit"] = json!(4);
    let (status, r) = server.api(&client).post_json("/api/events/raw", req.clone()).await;
    assert_eq!(status, 200, "{r}");
    let is: Vec<i64> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["i"].as_i64().unwrap())
        .collect();
    assert_eq!(is, vec![27, 24, 21, 18], "newest first");
    assert_eq!(r["events"][0]["nested.v"], 270);
    assert_eq!(r["events"][0]["timestamp"], at(T0 + 27 * MINUTE));
    req["offset"] = json!(4);
    req["columns"] = json!(["i"]);
    let (_, r) = server.api(&client).post_json("/api/events/raw", req).await;
    assert_eq!(
        r["events"],
        json!([
            {"i": 15, "timestamp": at(T0 + 15 * MINUTE)}, {"i": 12, "timestamp": at(T0 + 12 * MINUTE)},
            {"i": 9, "timestamp": at(T0 + 9 * MINUTE)}, {"i": 6, "timestamp": at(T0 + 6 * MINUTE)}
        ])
    );

    // Honeycomb's query-data API: save a query, ask for its results, fetch them again.
    let mut spec = range.clone();
    spec["calculations"] = json!([{"op": "COUNT"}, {"op": "MAX", "column": "i"}]);
    spec["breakdowns"] = json!(["kind"]);
    let (status, q) = server.api(&client).post_json("/1/queries/raw", spec.clone()).await;
    assert_eq!(status, 200, "{q}");
    let (status, created) = server
        .api(&client)
        .post_json("/1/query_results/raw", json!({"query_id": q["id"]}))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["complete"], true);
    let (status, fetched) =
        send_json(client.get(server.at(&format!("/1/query_results/raw/{}", created["id"].as_str().unwrap())))).await;
    assert_eq!(status, 200);
    assert_eq!(
        fetched["data"]["results"],
        json!([{"data": {"COUNT": 20, "MAX(i)": 29, "kind": "b"}}, {"data": {"COUNT": 10, "MAX(i)": 27, "kind": "a"}}])
    );
    assert!(!fetched["data"]["series"].as_array().unwrap().is_empty());
    // Honeycomb's result options: results only (no series), and a limit of its own.
    let (status, only) = server
        .api(&client)
        .post_json(
            "/1/query_results/raw",
            json!({"query_id": q["id"], "disable_series": true, "limit": 1}),
        )
        .await;
    assert_eq!(status, 201, "{only}");
    assert_eq!(only["data"]["series"], json!([]), "{only}");
    assert_eq!(
        only["data"]["results"],
        json!([{"data": {"COUNT": 20, "MAX(i)": 29, "kind": "b"}}])
    );
    assert_eq!(only["meta"]["groups_truncated"], true, "{only}");
    // Its link opens the same query in the UI, which reads `dataset` and `q` (the spec as JSON).
    let link = created["links"]["query_url"].as_str().unwrap();
    let params: std::collections::HashMap<String, String> = reqwest::Url::parse(&server.at(link))
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(params.get("dataset").map(String::as_str), Some("raw"), "{link}");
    let linked: Value = serde_json::from_str(params.get("q").expect("a q parameter")).unwrap();
    assert_eq!(linked["breakdowns"], json!(["kind"]), "{link}");
    assert_eq!(linked["calculations"], spec["calculations"], "{link}");
    let (status, e) = server
        .api(&client)
        .post_json("/1/query_results/raw", json!({"query_id": "nope"}))
        .await;
    assert_eq!(status, 404, "{e}");

    // Validation errors name the field.
    let (status, e) = server
        .api(&client)
        .post_json("/api/query/raw", json!({"breakdowns": ["nope"]}))
        .await;
    assert_eq!(status, 400);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("breakdowns[0]: unknown column \"nope\""),
        "{e}"
    );
    let (status, e) = server
        .api(&client)
        .post_json(
            "/api/query/raw",
            json!({"calculations": [{"op": "AVG", "column": "kind"}]}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().contains("needs a numeric column"), "{e}");
    let (status, _) = server.api(&client).post_json("/api/query/nosuch", json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_is_read_only_and_runaway_queries_are_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--query-timeout", "2s", "--query-memory-limit", "20000000"],
    )
    .await;
    let client = reqwest::Client::new();
    let batch: Vec<Value> = (0..2000)
        .map(|i| json!({"data": {"i": i, "s": format!("value-{i}-{}", "x".repeat(40))}, "time": at(T0 + i * 1000)}))
        .collect();
    assert_eq!(server.api(&client).post_json("/1/batch/big", json!(batch)).await.0, 200);

    for (sql, word) in [
        ("DROP TABLE big", "DDL"),
        ("CREATE TABLE t AS SELECT 1", "DDL"),
        ("INSERT INTO big (i) VALUES (1)", "DML"),
        ("COPY big TO '/tmp/x.csv'", "DML"),
        ("SET datafusion.execution.batch_size = 1", "Statement"),
    ] {
        let (status, e) = server.api(&client).post_json("/api/sql", json!({"sql": sql})).await;
        assert_eq!(status, 400, "{sql}: {e}");
        assert!(e["error"].as_str().unwrap().contains(word), "{sql}: {e}");
    }
    let (status, e) = server
        .api(&client)
        .post_json("/api/sql", json!({"sql": "SELEC 1"}))
        .await;
    assert_eq!(status, 400, "{e}");

    // 2000³ rows: only the timeout ends it.
    let (status, e) = server
        .api(&client)
        .post_json(
            "/api/sql",
            json!({"sql": "SELECT count(*) FROM big a, big b, big c WHERE a.i + b.i + c.i = -1"}),
        )
        .await;
    assert_eq!(status, 408, "{e}");
    assert!(e["error"].as_str().unwrap().contains("--query-timeout"), "{e}");

    // Four million distinct groups of long strings: far past 20 MB, and spilling is off.
    let (status, e) = server
        .api(&client)
        .post_json(
            "/api/sql",
            json!({"sql": "SELECT a.s || b.s AS k, count(*) FROM big a, big b GROUP BY 1"}),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("--query-memory-limit"), "{e}");

    // Still serving, and answering correctly, in every format.
    let (status, r) = server
        .api(&client)
        .post_json("/api/sql", json!({"sql": "SELECT count(*) AS n, max(i) AS m FROM big"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(r["rows"], json!([{"n": 2000, "m": 1999}]));
    assert_eq!(r["columns"][0], json!({"name": "n", "type": "Int64"}));
    let csv = client
        .post(server.at("/api/sql"))
        .json(&json!({"sql": "SELECT i FROM big WHERE i < 3 ORDER BY i", "format": "csv"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv, "i\n0\n1\n2\n");
    let arrow_bytes = client
        .post(server.at("/api/sql"))
        .json(&json!({"sql": "SELECT i FROM big WHERE i < 3 ORDER BY i", "format": "arrow"}))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow_bytes), None).unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 3);
}

/// A client sending its query body slowly holds no query slot while it does (with one slot,
/// other queries still run: before, the slot was taken before the body was read and they got
/// 429s), and a dataset in the path that is not even text is the client's 400, not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_hold_no_query_slot_and_bad_dataset_paths_are_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-concurrent-queries", "1"]).await;
    let client = reqwest::Client::new();
    let api = server.api(&client);
    assert_eq!(
        api.post_batch("slow", &[json!({"data": {"a": 1}, "time": at(T0)})])
            .await,
        1
    );
    let spec = json!({"calculations": [{"op": "COUNT"}], "start_time": at(T0), "end_time": at(T0 + MINUTE)});

    // Headers and the first bytes of the body, then nothing for a while.
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = spec.to_string();
    let head = format!(
        "POST /api/query/slow HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for _ in 0..3 {
        let (status, r) = api.post_json("/api/query/slow", spec.clone()).await;
        assert_eq!(status, 200, "{r}");
    }
    // The slow one is answered too once its body is complete.
    slow.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), slow.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    for (path, body) in [("/api/query/%FF", json!({})), ("/1/events/%FF", json!({"a": 1}))] {
        let (status, e) = send_json(client.post(server.at(path)).json(&body)).await;
        assert_eq!(status, 400, "{path}: {e}");
        assert!(e["error"].as_str().unwrap().contains("invalid dataset"), "{path}: {e}");
    }
}

/// Raw events look for the newest matches in the newest segments first (issue 17: a day of
/// segments then reads one or two of them). Over segments whose times all overlap, flushed out
/// of time order, with late events left in the buffer and many equal times, every page of
/// newest-first matches equals the order computed here from the events sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_matches_come_from_the_newest_segments_first_and_equal_a_brute_force_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--flush-rows", "60", "--compaction-target-rows", "0"]).await;
    let client = reqwest::Client::new();
    let mut rng = sonde_gen::Rng::new(5);
    let mut sent: Vec<(i64, &'static str)> = Vec::new();
    let event = |minute: i64, sent: &mut Vec<(i64, &'static str)>, rng: &mut sonde_gen::Rng| {
        let kind = if rng.below(40) == 0 {
            "rare"
        } else {
            ["a", "b", "c"][rng.below(3) as usize]
        };
        sent.push((T0 + minute * MINUTE, kind));
        json!({"data": {"kind": kind}, "time": at(T0 + minute * MINUTE)})
    };
    // Twelve segments of 60 events over ten hours: each leans to one hour (a shuffled order of
    // hours) and has a quarter of its events anywhere, so every segment overlaps the others.
    // Times fall on whole minutes, so many are equal.
    for hour in [3, 9, 0, 5, 1, 8, 2, 7, 4, 6, 9, 3] {
        let batch: Vec<Value> = (0..60)
            .map(|i| {
                let minute = match i % 4 {
                    0 => rng.below(600) as i64,
                    _ => hour * 60 + rng.below(60) as i64,
                };
                event(minute, &mut sent, &mut rng)
            })
            .collect();
        assert_eq!(
            server.api(&client).post_json("/1/batch/newest", json!(batch)).await.0,
            200
        );
        server.api(&client).wait_flushed("newest").await;
    }
    // Forty late events, still in the write buffer, from the middle of the range.
    let late: Vec<Value> = (0..40)
        .map(|_| {
            let minute = 200 + rng.below(200) as i64;
            event(minute, &mut sent, &mut rng)
        })
        .collect();
    assert_eq!(
        server.api(&client).post_json("/1/batch/newest", json!(late)).await.0,
        200
    );
    let (_, stats) = send_json(client.get(server.at("/api/datasets/newest/stats"))).await;
    assert!(stats["segments"].as_u64().unwrap() >= 12, "{stats}");

    for (kind, limit, offset) in [
        ("a", 5, 0),
        ("a", 30, 40),
        ("b", 100, 0),
        ("rare", 10, 0),
        ("rare", 50, 5),
        ("c", 1, 300),
    ] {
        let mut want: Vec<i64> = sent.iter().filter(|(_, k)| *k == kind).map(|(t, _)| *t).collect();
        want.sort_unstable_by(|a, b| b.cmp(a));
        let want: Vec<String> = want.into_iter().skip(offset).take(limit).map(at).collect();
        let req = json!({"start_time": at(T0), "end_time": at(T0 + 600 * MINUTE),
                         "filters": [{"column": "kind", "op": "=", "value": kind}],
                         "limit": limit, "offset": offset, "columns": ["kind"]});
        let (status, r) = server.api(&client).post_json("/api/events/newest", req).await;
        assert_eq!(status, 200, "{r}");
        let got: Vec<String> = r["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["kind"], kind, "{e}");
                e["timestamp"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(got, want, "{kind}, limit {limit}, offset {offset}");
    }
}

//! Bad input gets a clear 4xx naming the problem; the good events beside it are stored; the
//! server keeps serving.

use crate::harness::{Server, read_segments, send_json};
use serde_json::{Value, json};

fn deep(levels: usize) -> String {
    let mut s = String::from("1");
    for _ in 0..levels {
        s = format!("{{\"d\":{s}}}");
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_get_their_own_errors_and_good_ones_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--max-event-bytes", "10000", "--max-fields", "50"]).await;
    let client = reqwest::Client::new();

    let good = |i: usize| format!(r#"{{"data":{{"good":{i}}},"time":"2024-01-01T00:00:0{i}Z"}}"#);
    let too_many: String = (0..60).map(|i| format!("\"f{i}\":{i}")).collect::<Vec<_>>().join(",");
    let mut body: Vec<u8> = Vec::new();
    let items: Vec<(Vec<u8>, Option<&str>)> = vec![
        (good(1).into_bytes(), None),
        (br#"{"data":{"a":1,}}"#.to_vec(), Some("malformed JSON")),
        (b"42".to_vec(), Some("must be a JSON object")),
        (b"{\"data\":{\"s\":\"\xff\xfe\"}}".to_vec(), Some("invalid UTF-8")),
        (
            format!(r#"{{"data":{{"big":"{}"}}}}"#, "x".repeat(20_000)).into_bytes(),
            Some("--max-event-bytes / SONDE_MAX_EVENT_BYTES"),
        ),
        (
            format!(r#"{{"data":{{{too_many}}}}}"#).into_bytes(),
            Some("--max-fields / SONDE_MAX_FIELDS"),
        ),
        (
            format!(r#"{{"data":{}}}"#, deep(200)).into_bytes(),
            Some("--max-depth / SONDE_MAX_DEPTH"),
        ),
        (br#"{"data":{"x":1},"time":"yesterday"}"#.to_vec(), Some("invalid time")),
        (br#"{"data":"not an object"}"#.to_vec(), Some("\"data\" object")),
        (good(2).into_bytes(), None),
    ];
    body.push(b'[');
    for (i, (item, _)) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.push(b']');
    let (status, resp) = send_json(client.post(server.at("/1/batch/bad")).body(body)).await;
    assert_eq!(status, 200, "{resp}");
    let statuses = resp.as_array().expect("per-event statuses");
    assert_eq!(statuses.len(), items.len());
    for ((_, want), got) in items.iter().zip(statuses) {
        match want {
            None => assert_eq!(got["status"], 202, "{got}"),
            Some(text) => {
                assert_eq!(got["status"], 400, "{got}");
                let msg = got["error"].as_str().unwrap();
                assert!(msg.contains(text), "error {msg:?} should mention {text:?}");
            }
        }
    }

    // Whole-request errors: each a 4xx whose message names the problem.
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (client.post(server.at("/1/batch/bad")).body(""), 400, "empty"),
        (
            client.post(server.at("/1/batch/bad")).body("{\"data\":{}}"),
            400,
            "must be a JSON array",
        ),
        (
            client.post(server.at("/1/batch/bad")).body("[{\"data\":{}}"),
            400,
            "not closed",
        ),
        (
            client
                .post(server.at("/1/batch/bad"))
                .header("content-encoding", "br")
                .body("[]"),
            415,
            "Content-Encoding",
        ),
        (
            client
                .post(server.at("/1/batch/bad"))
                .header("content-encoding", "gzip")
                .body("[not gzip]"),
            400,
            "gzip",
        ),
        (client.post(server.at("/1/batch/bad%2Fx")).body("[]"), 400, "slashes"),
        (
            client.post(server.at("/1/batch/has%20space")).body("[]"),
            400,
            "dataset name",
        ),
        (
            client.post(server.at("/1/events/bad")).body("[1,2]"),
            400,
            "JSON object",
        ),
        (
            client.post(server.at("/1/events/bad")).body(deep(200)),
            400,
            "--max-depth / SONDE_MAX_DEPTH",
        ),
        (
            client
                .post(server.at("/1/events/bad"))
                .header("x-honeycomb-samplerate", "lots")
                .body("{}"),
            400,
            "samplerate",
        ),
        (
            client.post(server.at("/1/batch/bad")).body(vec![b' '; 40 << 20]),
            413,
            "--max-body-bytes / SONDE_MAX_BODY_BYTES",
        ),
    ];
    for (req, want_status, want_text) in cases {
        let (status, body) = send_json(req).await;
        assert_eq!(status, want_status, "{body}");
        let msg = body["error"].as_str().unwrap_or_default();
        assert!(msg.contains(want_text), "error {msg:?} should mention {want_text:?}");
    }

    // NDJSON: bad lines are reported by their line number in the body (blank lines count,
    // as in an editor), the good ones stored.
    let (status, resp) = send_json(
        client
            .post(server.at("/api/ingest/bad"))
            .body("{\"good\":3}\nnot json\n\n[1]\n{\"good\":4}\n"),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["accepted"], 2);
    assert_eq!(
        resp["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["line"].clone())
            .collect::<Vec<_>>(),
        vec![json!(2), json!(4)]
    );

    // Still serving, and exactly the good events are stored.
    let (status, _) = send_json(client.get(server.at("/health"))).await;
    assert_eq!(status, 200);
    server.stop().await;
    let mut goods: Vec<i64> = read_segments(dir.path(), "bad")
        .iter()
        .flat_map(|b| crate::harness::column_json(b, "good").unwrap())
        .filter_map(|v: Value| v.as_i64())
        .collect();
    goods.sort();
    assert_eq!(goods, vec![1, 2, 3, 4]);
}

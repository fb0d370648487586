//! API keys and the edges: a request without a key, with a wrong key, or with a key of the wrong
//! scope or dataset is refused with the right status and writes or reveals nothing; rate limits,
//! request timeouts, CORS, and the refusal to serve a non-loopback address without keys.

use crate::harness::{Server, send_json};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

/// A new key made by `sonde keys new`: (secret, keys-file line).
pub(crate) fn new_key(name: &str, scopes: &str, datasets: &str) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(["keys", "new", name, "--scopes", scopes, "--datasets", datasets])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    let (secret, line) = (lines.next().unwrap().to_string(), lines.next().unwrap().to_string());
    assert!(!line.contains(&secret), "the keys file holds a hash, not the key");
    (secret, line)
}

/// A new key made by `sonde keys new --keys-file FILE`: its line is appended to the file and
/// only the key is printed.
fn new_key_into(file: &std::path::Path, name: &str, scopes: &str, datasets: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args([
            "keys",
            "new",
            name,
            "--scopes",
            scopes,
            "--datasets",
            datasets,
            "--keys-file",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let secret = stdout.trim().to_string();
    assert!(
        secret.starts_with("sonde_") && !secret.contains('\n'),
        "only the key is printed: {stdout:?}"
    );
    let text = std::fs::read_to_string(file).unwrap();
    assert!(!text.contains(&secret), "the keys file holds a hash, not the key");
    assert!(text.ends_with('\n') && text.lines().last().unwrap().starts_with(&format!("{name} ")));
    secret
}

fn events(n: usize) -> Value {
    json!((0..n).map(|i| json!({"data": {"i": i}})).collect::<Vec<_>>())
}

struct Keys {
    ingest_prod: String,
    query_all: String,
    query_prod: String,
    admin: String,
}

async fn start(extra: &[&str]) -> (tempfile::TempDir, Server, Keys) {
    let (ingest_prod, l1) = new_key("shipper", "ingest", "prod");
    let (query_all, l2) = new_key("oncall", "query", "*");
    let (admin, l4) = new_key("ops", "admin", "*");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    // The last line left without its newline: appending must start a new line.
    std::fs::write(&file, format!("# Sonde API keys\n{l1}\n{l2}")).unwrap();
    let query_prod = new_key_into(&file, "prod-team", "query", "prod");
    let mut flags = vec!["--keys-file", file.to_str().unwrap()];
    flags.extend_from_slice(extra);
    // The admin key comes from the environment, beside the file.
    let server = Server::start_with_env(&dir.path().join("data"), &flags, &[("SONDE_KEYS", &l4)]).await;
    let keys = Keys {
        ingest_prod,
        query_all,
        query_prod,
        admin,
    };
    (dir, server, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scopes_and_datasets_are_enforced() {
    let (_dir, server, k) = start(&[]).await;
    let c = reqwest::Client::new();
    let post = |path: &str, key: Option<&str>, body: &Value| {
        let mut r = c.post(server.at(path)).json(body);
        if let Some(k) = key {
            r = r.header("X-Honeycomb-Team", k);
        }
        send_json(r)
    };

    // Ingest: no key, a wrong key, a key of the wrong scope, a key for another dataset.
    let (s, r) = post("/1/batch/prod", None, &events(3)).await;
    assert_eq!(s, 401, "{r}");
    assert!(r["error"].as_str().unwrap().contains("X-Honeycomb-Team"), "{r}");
    assert_eq!(post("/1/batch/prod", Some("sonde_wrong"), &events(3)).await.0, 401);
    let (s, r) = post("/1/batch/prod", Some(&k.query_all), &events(3)).await;
    assert_eq!(s, 403, "{r}");
    assert!(r["error"].as_str().unwrap().contains("ingest scope"), "{r}");
    let (s, r) = post("/1/batch/secret", Some(&k.ingest_prod), &events(3)).await;
    assert_eq!(s, 403, "{r}");
    assert_eq!(
        post("/api/ingest/secret", Some(&k.ingest_prod), &json!({"a": 1}))
            .await
            .0,
        403
    );
    // OTLP whose service maps to a dataset the key does not cover: nothing of it is written.
    let otlp = json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "secret"}}]},
        "scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "x",
        "startTimeUnixNano": "1767225600000000000", "endTimeUnixNano": "1767225601000000000"}]}]}]});
    assert_eq!(post("/v1/traces", Some(&k.ingest_prod), &otlp).await.0, 403);

    // The right key writes, with either header.
    assert_eq!(post("/1/batch/prod", Some(&k.ingest_prod), &events(3)).await.0, 200);
    let (s, _) = send_json(
        c.post(server.at("/1/batch/prod"))
            .bearer_auth(&k.ingest_prod)
            .json(&events(2)),
    )
    .await;
    assert_eq!(s, 200);
    // The admin key may write anywhere.
    assert_eq!(post("/1/batch/secret", Some(&k.admin), &events(4)).await.0, 200);

    // Reads.
    let count = json!({"calculations": [{"op": "COUNT"}], "time_range": 86400 * 365 * 30});
    assert_eq!(post("/api/query/prod", None, &count).await.0, 401);
    assert_eq!(post("/api/query/prod", Some(&k.ingest_prod), &count).await.0, 403);
    let (s, r) = post("/api/query/prod", Some(&k.query_prod), &count).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["data"]["results"][0]["data"]["COUNT"], 5);
    // A dataset outside the key's reach is refused whether or not it exists.
    assert_eq!(post("/api/query/secret", Some(&k.query_prod), &count).await.0, 403);
    assert_eq!(post("/api/query/nonexistent", Some(&k.query_prod), &count).await.0, 403);
    assert_eq!(post("/api/events/secret", Some(&k.query_prod), &json!({})).await.0, 403);
    assert_eq!(
        post("/api/bubbleup/secret", Some(&k.query_prod), &json!({})).await.0,
        403
    );
    let get = |path: &str, key: &str| send_json(c.get(server.at(path)).header("X-Honeycomb-Team", key));
    assert_eq!(get("/api/datasets/secret/columns", &k.query_prod).await.0, 403);
    assert_eq!(get("/api/datasets/secret/stats", &k.query_prod).await.0, 403);
    let (s, r) = get("/api/datasets", &k.query_prod).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = r["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["prod"], "a key sees only its datasets");
    let (_, r) = get("/api/datasets", &k.query_all).await;
    assert_eq!(r["datasets"].as_array().unwrap().len(), 2, "{r}");

    // SQL sees only the key's datasets: the others are not tables at all.
    let (s, r) = post(
        "/api/sql",
        Some(&k.query_prod),
        &json!({"sql": "SELECT count(*) AS n FROM secret"}),
    )
    .await;
    assert_eq!(s, 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("secret"), "{r}");
    let (s, r) = post(
        "/api/sql",
        Some(&k.query_prod),
        &json!({"sql": "SELECT count(*) AS n FROM prod"}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["rows"][0]["n"], 5);
    let (s, r) = post(
        "/api/sql",
        Some(&k.query_prod),
        &json!({"sql": "SELECT table_name FROM information_schema.tables"}),
    )
    .await;
    assert!(s != 200 || !r.to_string().contains("secret"), "{r}");
    // Nor can SQL name a file: no URL tables, no DDL, no COPY.
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'datasets/secret/seg-000000000001.parquet'",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION 'datasets/secret/'",
        "COPY prod TO '/tmp/sonde-stolen.csv'",
    ] {
        let (s, r) = post("/api/sql", Some(&k.query_all), &json!({ "sql": sql })).await;
        assert_eq!(s, 400, "{sql}: {r}");
    }
    let (s, r) = post(
        "/api/sql",
        Some(&k.query_all),
        &json!({"sql": "SELECT count(*) AS n FROM secret"}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["rows"][0]["n"], 4);

    // Metrics name every dataset: only for keys that cover them all.
    assert_eq!(c.get(server.at("/metrics")).send().await.unwrap().status(), 401);
    let m = |key: &str| c.get(server.at("/metrics")).header("X-Honeycomb-Team", key).send();
    assert_eq!(m(&k.query_prod).await.unwrap().status(), 403);
    assert_eq!(m(&k.query_all).await.unwrap().status(), 200);

    // Deletion needs the admin scope.
    let del = |key: &str| {
        c.delete(server.at("/api/datasets/secret"))
            .header("X-Honeycomb-Team", key)
            .send()
    };
    assert_eq!(del(&k.query_all).await.unwrap().status(), 403);
    assert_eq!(del(&k.ingest_prod).await.unwrap().status(), 403);
    assert_eq!(del(&k.admin).await.unwrap().status(), 200);

    // Health and the UI's files need no key (the UI asks for one when the API says 401).
    assert_eq!(c.get(server.at("/health")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(server.at("/")).send().await.unwrap().status(), 200);

    // Nothing the refused requests carried was written: prod holds exactly the 5 accepted events.
    let (_, r) = post("/api/query/prod", Some(&k.query_all), &count).await;
    assert_eq!(r["data"]["results"][0]["data"]["COUNT"], 5);
    let (_, r) = get("/api/datasets", &k.admin).await;
    assert_eq!(r["datasets"].as_array().unwrap().len(), 1, "only prod is left: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_timeouts_and_cors() {
    let (_dir, server, k) = start(&[
        // Half a request a second: a burst of one, refilled in 2 s. The timeout is 5 s so that a
        // loaded test machine's slow durable ack is not mistaken for a slow client.
        "--ingest-rate-limit",
        "0.5",
        "--request-timeout",
        "5s",
        "--cors-origin",
        "https://ui.example.com",
    ])
    .await;
    let c = reqwest::Client::new();
    let post = |key: &str| {
        send_json(
            c.post(server.at("/1/batch/prod"))
                .header("X-Honeycomb-Team", key)
                .json(&events(1)),
        )
    };
    // A burst of one, then 429 with Retry-After; the limit is per key.
    assert_eq!(post(&k.ingest_prod).await.0, 200);
    let r = c
        .post(server.at("/1/batch/prod"))
        .header("X-Honeycomb-Team", &k.ingest_prod)
        .json(&events(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert!(r.text().await.unwrap().contains("rate limit"));
    assert_eq!(post(&k.admin).await.0, 200, "another key has its own bucket");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(post(&k.ingest_prod).await.0, 200, "the bucket refills");

    // A client that never finishes its body is cut off by the request timeout, and what it sent
    // is not written. It sends with the admin key, whose bucket refilled during the sleep above.
    let addr = server.url.strip_prefix("http://").unwrap().to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST /1/batch/prod HTTP/1.1\r\nHost: x\r\nX-Honeycomb-Team: {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{{\"data\":{{\"slow\":1}}}}",
            k.admin
        )
        .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).to_string()
    })
    .await
    .unwrap();
    // The client's own read timeout (10 s) is twice the server's: an empty answer here means the
    // server never cut the slow client off.
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // CORS: the configured origin is allowed; any other gets no CORS headers.
    let preflight = |origin: &'static str| {
        c.request(reqwest::Method::OPTIONS, server.at("/api/query/prod"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization,content-type")
            .send()
    };
    let r = preflight("https://ui.example.com").await.unwrap();
    assert_eq!(
        r.headers().get("access-control-allow-origin").unwrap(),
        "https://ui.example.com"
    );
    let r = preflight("https://evil.example.net").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keys_means_loopback_only_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sonde"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "0.0.0.0:0", "--grpc-listen", "off"])
            .args(extra)
            .env("SONDE_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 64];
        let n = child.stdout.as_mut().unwrap().read(&mut first).unwrap_or(0);
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        (
            String::from_utf8_lossy(&first[..n]).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (stdout, stderr) = run(&[]);
    assert!(stdout.is_empty(), "must not listen: {stdout}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without API keys") && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
    let (stdout, stderr) = run(&["--insecure-no-auth"]);
    assert!(stdout.starts_with("sonde listening on"), "{stdout} {stderr}");
    assert!(stderr.contains("auth is OFF"), "{stderr}");
}

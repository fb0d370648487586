//! What the end-to-end tests share besides the server itself: the fixed time their events are
//! at, and the few API calls every area makes (post a batch, count, wait for a flush, read a
//! metric), each asserting what a healthy server answers.

use crate::harness::{Server, send_json};
use serde_json::{Value, json};

/// 2026-01-01T00:00:00Z in µs: the time the tests' events are at (fixed, so a test's answer
/// does not depend on the day it runs).
pub(crate) const T0: i64 = 1_767_225_600_000_000;
/// A minute in µs.
pub(crate) const MINUTE: i64 = 60_000_000;

/// RFC 3339 text of a time in µs.
pub(crate) fn at(us: i64) -> String {
    sonde_model::time::format_us(us)
}

/// POSTs JSON; the status and the JSON answer.
pub(crate) async fn post_json(client: &reqwest::Client, server: &Server, path: &str, body: Value) -> (u16, Value) {
    send_json(client.post(server.at(path)).json(&body)).await
}

/// Sends a Honeycomb batch, asserts the request was taken (200), and returns how many of its
/// events were accepted (202 each).
pub(crate) async fn post_batch(client: &reqwest::Client, server: &Server, dataset: &str, batch: &[Value]) -> u64 {
    let (status, r) = send_json(client.post(server.at(&format!("/1/batch/{dataset}"))).json(&batch)).await;
    assert_eq!(status, 200, "{r}");
    r.as_array().unwrap().iter().filter(|s| s["status"] == 202).count() as u64
}

/// COUNT over the day from [`T0`].
pub(crate) async fn count(client: &reqwest::Client, server: &Server, dataset: &str) -> i64 {
    let (status, r) = post_json(
        client,
        server,
        &format!("/api/query/{dataset}"),
        json!({"calculations": [{"op": "COUNT"}], "start_time": at(T0), "end_time": at(T0 + 86_400_000_000)}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    r["data"]["results"][0]["data"]["COUNT"].as_i64().unwrap_or(0)
}

/// Waits (up to 10 s) until the dataset has nothing left in its write buffer.
pub(crate) async fn wait_flushed(client: &reqwest::Client, server: &Server, dataset: &str) {
    for _ in 0..400 {
        let (_, d) = send_json(client.get(server.at("/api/datasets"))).await;
        let ds = d["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == dataset)
            .cloned();
        if ds.is_some_and(|x| x["buffered_rows"] == 0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("dataset {dataset} was not flushed");
}

/// A counter or gauge from `/metrics`.
pub(crate) async fn metric(server: &Server, name: &str) -> u64 {
    let text = reqwest::get(server.at("/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
        .parse()
        .unwrap()
}

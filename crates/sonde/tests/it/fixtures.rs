//! What the end-to-end tests share besides the server itself: the fixed time their events are
//! at, and a typed client for the calls every area makes (post JSON or a batch, count, wait for
//! a flush, read a metric), each asserting what a healthy server answers.

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

/// The API of one running server, as the tests use it. Made per use (`server.api(&client)`),
/// so a test can restart its server between calls.
pub(crate) struct TestClient<'a> {
    http: &'a reqwest::Client,
    server: &'a Server,
}

impl Server {
    /// This server's API through `http`.
    pub(crate) fn api<'a>(&'a self, http: &'a reqwest::Client) -> TestClient<'a> {
        TestClient { http, server: self }
    }
}

impl TestClient<'_> {
    /// POSTs JSON; the status and the JSON answer.
    pub(crate) async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        send_json(self.http.post(self.server.at(path)).json(&body)).await
    }

    /// Sends a Honeycomb batch, asserts the request was taken (200), and returns how many of
    /// its events were accepted (202 each).
    pub(crate) async fn post_batch(&self, dataset: &str, batch: &[Value]) -> u64 {
        let (status, r) = self.post_json(&format!("/1/batch/{dataset}"), json!(batch)).await;
        assert_eq!(status, 200, "{r}");
        r.as_array().unwrap().iter().filter(|s| s["status"] == 202).count() as u64
    }

    /// COUNT over the day from [`T0`].
    pub(crate) async fn count(&self, dataset: &str) -> i64 {
        let spec =
            json!({"calculations": [{"op": "COUNT"}], "start_time": at(T0), "end_time": at(T0 + 86_400_000_000)});
        let (status, r) = self.post_json(&format!("/api/query/{dataset}"), spec).await;
        assert_eq!(status, 200, "{r}");
        r["data"]["results"][0]["data"]["COUNT"].as_i64().unwrap_or(0)
    }

    /// Waits (up to 10 s) until the dataset has nothing left in its write buffer.
    pub(crate) async fn wait_flushed(&self, dataset: &str) {
        for _ in 0..400 {
            let (_, d) = send_json(self.http.get(self.server.at("/api/datasets"))).await;
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
    pub(crate) async fn metric(&self, name: &str) -> u64 {
        let text = self
            .http
            .get(self.server.at("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
            .parse()
            .unwrap()
    }
}

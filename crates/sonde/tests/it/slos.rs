//! SLOs against a brute-force count of the same events: the per-minute counters (read from
//! their document) minute by minute, compliance and budget remaining, with events that arrive
//! late and across a restart.

use crate::harness::{Server, send_json};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// An event `minutes_ago` minutes before `now_s` (plus `second` seconds into that minute), with
/// a status (none: not counted by the SLI) and a sample rate.
fn event(now_s: i64, minutes_ago: i64, second: i64, status: Option<i64>, rate: i64) -> Value {
    let minute = now_s.div_euclid(60) - minutes_ago;
    let t = minute * 60 + second;
    let mut data = json!({"route": "/pay"});
    if let Some(s) = status {
        data["status"] = json!(s);
    }
    json!({"time": sonde_model::time::format_us(t * 1_000_000), "samplerate": rate, "data": data})
}

/// Brute force: per minute, the weighted good and bad events.
fn by_minute(events: &[Value]) -> BTreeMap<i64, (u64, u64)> {
    let mut out = BTreeMap::new();
    for e in events {
        let Some(status) = e["data"]["status"].as_i64() else {
            continue;
        };
        let t = sonde_model::time::parse_time_str(e["time"].as_str().unwrap()).unwrap();
        let m = out.entry(t.div_euclid(60_000_000)).or_insert((0u64, 0u64));
        let w = e["samplerate"].as_u64().unwrap();
        if status < 500 { m.0 += w } else { m.1 += w }
    }
    out
}

fn expected(minutes: &BTreeMap<i64, (u64, u64)>, target: f64) -> (f64, f64) {
    let (good, bad) = minutes.values().fold((0u64, 0u64), |(g, b), (mg, mb)| (g + mg, b + mb));
    let q = (good + bad) as f64;
    let compliance = good as f64 / q * 100.0;
    let budget = (1.0 - target) * q;
    (compliance, (1.0 - bad as f64 / budget) * 100.0)
}

fn close(a: &Value, b: f64) -> bool {
    (a.as_f64().unwrap() - b).abs() < 1e-9
}

#[tokio::test]
async fn slo_figures_and_counters_equal_a_brute_force_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--flush-rows", "300"]).await;
    let http = reqwest::Client::new();
    let now_s = sonde_model::time::now_us() / 1_000_000;
    // Three hours, 2 to 181 minutes ago: every few events a 5xx, some without a status.
    let mut events: Vec<Value> = (0..900)
        .map(|i| {
            let status = match i % 9 {
                0 => None,
                4 => Some(503),
                _ => Some(200),
            };
            event(now_s, 2 + (i * 7) % 180, (i * 13) % 60, status, 1 + (i % 3 == 0) as i64)
        })
        .collect();
    let (status, r) = send_json(http.post(server.at("/1/batch/api")).json(&events)).await;
    assert_eq!(status, 200, "{r}");
    let (status, d) = send_json(
        http.post(server.at("/1/derived_columns/api"))
            .json(&json!({"alias": "sli.ok", "expression": "IF(EXISTS($status), LT($status, 500))"})),
    )
    .await;
    assert_eq!(status, 201, "{d}");

    // Refused by field: an SLI that does not exist, a target out of range.
    let slo = json!({"name": "Payments available", "sli": {"alias": "sli.ok"}, "time_period_days": 1, "target_per_million": 990000});
    for (change, field) in [
        (json!({"sli": {"alias": "nope"}}), "sli.alias"),
        (json!({"target_per_million": 1_000_000}), "target_per_million"),
        (json!({"time_period_days": 0}), "time_period_days"),
    ] {
        let mut bad = slo.clone();
        for (k, v) in change.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let (status, e) = send_json(http.post(server.at("/1/slos/api")).json(&bad)).await;
        assert_eq!(status, 400, "{change}: {e}");
        assert!(e["error"].as_str().unwrap().contains(field), "{change}: {e}");
    }
    let (status, s) = send_json(http.post(server.at("/1/slos/api")).json(&slo)).await;
    assert_eq!(status, 201, "{s}");
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["dataset_slugs"], json!(["api"]));

    let check = |server: &Server, events: Vec<Value>| {
        let (http, url) = (http.clone(), server.at(&format!("/1/slos/api/{id}?detailed")));
        let counters = dir.path().join(format!("documents/slo-{id}.json"));
        async move {
            let (status, got) = send_json(http.get(url)).await;
            assert_eq!(status, 200, "{got}");
            let want = by_minute(&events);
            let (compliance, budget) = expected(&want, 0.99);
            assert!(close(&got["compliance"], compliance), "{got} vs {compliance}");
            assert!(close(&got["budget_remaining"], budget), "{got} vs {budget}");
            // Minute by minute, the counters the figures came from.
            let doc: Value = serde_json::from_slice(&std::fs::read(&counters).unwrap()).unwrap();
            let kept: BTreeMap<i64, (u64, u64)> = doc["minutes"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(m, v)| (m.parse().unwrap(), (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())))
                .filter(|(_, (g, b))| g + b > 0)
                .collect();
            assert_eq!(kept, want);
        }
    };
    check(&server, events.clone()).await;

    // Late events (30 minutes old, sent now) are counted at the next read.
    let late: Vec<Value> = (0..60)
        .map(|i| event(now_s, 30, i, Some(if i % 2 == 0 { 500 } else { 200 }), 1))
        .collect();
    let (status, _) = send_json(http.post(server.at("/1/batch/api")).json(&late)).await;
    assert_eq!(status, 200);
    events.extend(late);
    check(&server, events.clone()).await;

    // After a restart, from the counters kept.
    server.stop().await;
    server.restart().await;
    check(&server, events.clone()).await;

    // The history, three days back: each day's end over the day before it, including events
    // older than the counters keep (two days old), each point against the brute force.
    let old: Vec<Value> = (0..40)
        .map(|i| event(now_s, 50 * 60, i, Some(if i % 4 == 0 { 502 } else { 200 }), 1))
        .collect();
    let (status, _) = send_json(http.post(server.at("/1/batch/api")).json(&old)).await;
    assert_eq!(status, 200);
    events.extend(old);
    let (status, h) = send_json(
        http.post(server.at("/1/reporting/slos/historical"))
            .json(&json!({"ids": [id], "start_time": now_s - 3 * 86_400, "end_time": now_s})),
    )
    .await;
    assert_eq!(status, 200, "{h}");
    let all = by_minute(&events);
    let points = h[&id].as_array().unwrap();
    assert_eq!(points.len(), 4, "{h}");
    for p in points {
        let to = p["timestamp"].as_i64().unwrap().div_euclid(60);
        let window: BTreeMap<i64, (u64, u64)> = all.range(to - 1440..to).map(|(k, v)| (*k, *v)).collect();
        let (compliance, budget) = if window.is_empty() {
            (100.0, 100.0)
        } else {
            expected(&window, 0.99)
        };
        assert!(close(&p["compliance"], compliance), "{p} vs {compliance}");
        assert!(close(&p["budget_remaining"], budget), "{p} vs {budget}");
    }
    assert!(
        points
            .iter()
            .any(|p| p["compliance"].as_f64().unwrap() < 100.0 && p["timestamp"].as_i64().unwrap() < now_s - 86_400),
        "{h}"
    );
}

/// Brute force of a burn alert at minute `now_min`: budget_rate's share of the budget used in
/// the window (per million), and exhaustion_time's minutes until the budget is gone.
fn burn(minutes: &BTreeMap<i64, (u64, u64)>, target: f64, now_min: i64, window: i64) -> (f64, f64) {
    let (good, bad) = minutes.values().fold((0u64, 0u64), |(g, b), (mg, mb)| (g + mg, b + mb));
    let budget = (1.0 - target) * (good + bad) as f64;
    let recent: u64 = minutes.range(now_min - window..now_min).map(|(_, (_, b))| b).sum();
    let left = budget - bad as f64;
    let minutes_left = if left <= 0.0 {
        0.0
    } else {
        left / (recent as f64 / window as f64)
    };
    (recent as f64 / budget * 1e6, minutes_left)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burn_alerts_fire_when_a_brute_force_count_says_they_should() {
    let (hook, got) = crate::triggers::receiver();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--trigger-min-frequency", "2s"]).await;
    let http = reqwest::Client::new();
    let now_s = sonde_model::time::now_us() / 1_000_000;
    let events: Vec<Value> = (0..900)
        .map(|i| {
            let status = match i % 9 {
                0 => None,
                4 => Some(503),
                _ => Some(200),
            };
            event(now_s, 2 + (i * 7) % 180, (i * 13) % 60, status, 1 + (i % 3 == 0) as i64)
        })
        .collect();
    let (status, _) = send_json(http.post(server.at("/1/batch/api")).json(&events)).await;
    assert_eq!(status, 200);
    let (status, _) = send_json(
        http.post(server.at("/1/derived_columns/api"))
            .json(&json!({"alias": "sli.ok", "expression": "IF(EXISTS($status), LT($status, 500))"})),
    )
    .await;
    assert_eq!(status, 201);
    let (_, slo) = send_json(http.post(server.at("/1/slos/api")).json(
        &json!({"name": "Payments", "sli": {"alias": "sli.ok"}, "time_period_days": 1, "target_per_million": 800000}),
    ))
    .await;
    let slo_id = slo["id"].as_str().unwrap().to_string();

    // Expectations from the events, at this minute (the margins below hold a minute either way).
    let minutes = by_minute(&events);
    let now_min = now_s.div_euclid(60);
    let (used_60, _) = burn(&minutes, 0.8, now_min, 60);
    let (_, left_at_60) = burn(&minutes, 0.8, now_min, 60); // exhaustion_minutes 240: a 60-minute lookback
    let (_, left_at_10) = burn(&minutes, 0.8, now_min, 10); // exhaustion_minutes 40: a 10-minute lookback
    let alerts = [
        (
            "rate-low",
            json!({"alert_type": "budget_rate", "budget_rate_window_minutes": 60,
            "budget_rate_decrease_threshold_per_million": (used_60 * 0.5) as i64}),
            true,
        ),
        (
            "rate-high",
            json!({"alert_type": "budget_rate", "budget_rate_window_minutes": 60,
            "budget_rate_decrease_threshold_per_million": ((used_60 * 1.5) as i64).min(1_000_000)}),
            false,
        ),
        (
            "exhaust-240",
            json!({"alert_type": "exhaustion_time", "exhaustion_minutes": 240}),
            left_at_60 <= 240.0,
        ),
        (
            "exhaust-40",
            json!({"alert_type": "exhaustion_time", "exhaustion_minutes": 40}),
            left_at_10 <= 40.0,
        ),
    ];
    // Both outcomes are exercised: the brute force says one exhaustion alert fires and one not.
    assert!(
        left_at_60 <= 240.0 * 0.8 && left_at_10 > 40.0 * 1.2,
        "{left_at_60} {left_at_10}"
    );
    for (name, fields, _) in &alerts {
        let (_, r) = send_json(
            http.post(server.at("/1/recipients"))
                .json(&json!({"type": "webhook", "details": {"webhook_url": format!("{hook}/{name}")}})),
        )
        .await;
        let mut body = fields.clone();
        body["slo"] = json!({"id": slo_id});
        body["recipients"] = json!([{"id": r["id"]}]);
        let (status, b) = send_json(http.post(server.at("/1/burn_alerts/api")).json(&body)).await;
        assert_eq!(status, 201, "{name}: {b}");
    }
    let (status, e) = send_json(http.post(server.at("/1/burn_alerts/api")).json(
        &json!({"alert_type": "budget_rate", "budget_rate_window_minutes": 30, "budget_rate_decrease_threshold_per_million": 5,
                "slo": {"id": slo_id}, "recipients": [{"type": "log"}]}),
    ))
    .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("budget_rate_window_minutes"),
        "{e}"
    );

    // A few evaluations (every 2 s here): each alert that holds fires once, the others never.
    tokio::time::sleep(Duration::from_secs(7)).await;
    for (name, _, fires) in &alerts {
        let path = format!("/{name}");
        let notes: Vec<Value> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.body.clone())
            .collect();
        if *fires {
            assert_eq!(notes.len(), 1, "{name}: {notes:?}");
            assert_eq!(notes[0]["status"], "TRIGGERED");
            assert_eq!(notes[0]["slo"]["id"], json!(slo_id));
        } else {
            assert!(notes.is_empty(), "{name}: {notes:?}");
        }
    }
    let (status, e) = send_json(http.delete(server.at(&format!("/1/slos/api/{slo_id}")))).await;
    assert_eq!(status, 409, "an SLO with burn alerts stays: {e}");
}

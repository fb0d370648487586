//! Triggers end to end: a real webhook receiver on loopback gets exactly the notifications an
//! incident calls for — TRIGGERED once with the offending group and OK once on resolve
//! (`on_change`), one per evaluation while firing (`on_true`) — and a SIGKILL and restart in the
//! middle of the incident neither re-fires nor loses the resolve. Frequencies of 2 s (with
//! `--trigger-min-frequency 2s`) keep it to seconds.

use crate::harness::{Server, send_json};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got: its path, headers (lower-cased) and JSON body.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Value,
}

/// A webhook receiver: a plain HTTP/1.1 server on a loopback port, answering 200 to every POST.
pub(crate) fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut headers = Vec::new();
            let mut length = 0;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.trim().split_once(':') {
                    let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                    if k == "content-length" {
                        length = v.parse().unwrap_or(0);
                    }
                    headers.push((k, v));
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).ok();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            sink.lock().unwrap().push(Received { path, headers, body });
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .ok();
        }
    });
    (url, got)
}

fn statuses(got: &Arc<Mutex<Vec<Received>>>, path: &str) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.body["status"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `n` events of `service`, errors or not, stamped now.
async fn send(http: &reqwest::Client, server: &Server, service: &str, error: bool, n: usize) {
    let batch: Vec<Value> = (0..n)
        .map(|_| json!({"data": {"service": service, "error": error}}))
        .collect();
    let (status, r) = send_json(http.post(server.at("/1/batch/shop")).json(&batch)).await;
    assert_eq!(status, 200, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_fires_once_resolves_once_and_survives_a_sigkill() {
    let (hook, got) = receiver();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        dir.path(),
        &[
            "--trigger-min-frequency",
            "2s",
            "--public-url",
            "https://sonde.example/",
        ],
    )
    .await;
    let http = reqwest::Client::new();
    send(&http, &server, "web", false, 5).await;

    // Bad triggers are refused by field.
    let base = json!({"name": "errors", "frequency": 2, "threshold": {"op": ">", "value": 5},
        "query": {"calculations": [{"op": "COUNT"}], "filters": [{"column": "error", "op": "=", "value": true}],
                  "breakdowns": ["service"], "time_range": 4}});
    for (change, field) in [
        (json!({"frequency": 1}), "frequency"),
        (json!({"threshold": {"op": "=", "value": 5}}), "threshold.op"),
        (
            json!({"query": {"calculations": [{"op": "HEATMAP", "column": "x"}], "time_range": 4}}),
            "HEATMAP",
        ),
        (
            json!({"query": {"calculations": [{"op": "COUNT"}], "time_range": 20}}),
            "time_range",
        ),
        (json!({"recipients": [{"id": "nope"}]}), "recipients[0].id"),
    ] {
        let mut bad = base.clone();
        for (k, v) in change.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let (status, e) = send_json(http.post(server.at("/1/triggers/shop")).json(&bad)).await;
        assert_eq!(status, 400, "{change}: {e}");
        assert!(e["error"].as_str().unwrap().contains(field), "{change}: {e}");
    }

    // A webhook recipient with a secret and a header of its own, for two triggers.
    let recipient = |path: &str| {
        json!({"type": "webhook", "details": {"webhook_name": path, "webhook_url": format!("{hook}{path}"),
            "webhook_secret": "s3cret", "webhook_headers": [{"header": "X-Team", "value": "shop"}]}})
    };
    let (status, r1) = send_json(http.post(server.at("/1/recipients")).json(&recipient("/change"))).await;
    assert_eq!(status, 201, "{r1}");
    let (_, r2) = send_json(http.post(server.at("/1/recipients")).json(&recipient("/true"))).await;
    let (status, e) = send_json(http.post(server.at("/1/recipients")).json(&json!({"type": "webhook",
        "details": {"webhook_url": "http://x", "webhook_headers": [{"header": "User-Agent", "value": "x"}]}})))
    .await;
    assert_eq!(status, 400, "{e}");

    // A custom payload (Honeycomb's template variables), with a variable the trigger overrides;
    // a template with a control action is refused where it is.
    let custom = |body: &str| {
        json!({"type": "webhook", "details": {"webhook_url": format!("{hook}/custom"), "webhook_payloads": {
            "template_variables": [{"name": "severity", "default_value": "info"}, {"name": "team", "default_value": "shop"}],
            "payload_templates": {"trigger": {"body": body}}}}})
    };
    let (status, e) = send_json(
        http.post(server.at("/1/recipients"))
            .json(&custom("{{ range .Result.Groups }}x{{ end }}")),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("range"), "{e}");
    let template = r#"{"text": {{ .Alert.Summary | quote }}, "status": "{{ .Alert.Status }}", "severity": "{{ .Vars.severity }}",
 "team": "{{ .Vars.team }}", "groups": {{ toJson .Result.GroupsTriggered }}, "threshold": {{ .Threshold }}}"#;
    let (status, r3) = send_json(http.post(server.at("/1/recipients")).json(&custom(template))).await;
    assert_eq!(status, 201, "{r3}");

    let mut on_change = base.clone();
    on_change["recipients"] = json!([{"id": r1["id"]}, {"type": "marker", "target": "errors trigger"},
        {"id": r3["id"], "details": {"variables": [{"name": "severity", "value": "critical"}]}}]);
    let (status, t1) = send_json(http.post(server.at("/1/triggers/shop")).json(&on_change)).await;
    assert_eq!(status, 201, "{t1}");
    assert_eq!(
        (t1["alert_type"].clone(), t1["triggered"].clone()),
        (json!("on_change"), json!(false))
    );
    let mut on_true = base.clone();
    on_true["name"] = json!("errors, every time");
    on_true["alert_type"] = json!("on_true");
    on_true["recipients"] = json!([{"id": r2["id"]}]);
    let (status, t2) = send_json(http.post(server.at("/1/triggers/shop")).json(&on_true)).await;
    assert_eq!(status, 201, "{t2}");
    let (status, e) = send_json(http.delete(server.at(&format!("/1/recipients/{}", r1["id"].as_str().unwrap())))).await;
    assert_eq!(status, 409, "a recipient in use stays: {e}");

    // Quiet: an error of `web` a second, under the threshold in any 4 s. Nothing is sent.
    for _ in 0..4 {
        send(&http, &server, "web", true, 1).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(statuses(&got, "/change"), Vec::<String>::new());

    // The incident: `pay` fails 10 times every half second.
    let incident = |server: &Server| {
        let (http, url) = (http.clone(), server.at("/1/batch/shop"));
        async move {
            let batch: Vec<Value> = (0..10)
                .map(|_| json!({"data": {"service": "pay", "error": true}}))
                .collect();
            let (status, r) = send_json(http.post(url).json(&batch)).await;
            assert_eq!(status, 200, "{r}");
        }
    };
    let start = Instant::now();
    while statuses(&got, "/change").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "no TRIGGERED within 30 s");
        incident(&server).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fired = got
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.path == "/change")
        .cloned()
        .unwrap();
    assert_eq!(fired.body["status"], "TRIGGERED", "{:?}", fired.body);
    assert_eq!(fired.body["name"], "errors");
    // Its links are absolute with --public-url, and open the query over the evaluated range.
    assert_eq!(fired.body["trigger_url"], "https://sonde.example/?dataset=shop");
    let link = reqwest::Url::parse(fired.body["result_url"].as_str().unwrap()).unwrap();
    assert_eq!(link.host_str(), Some("sonde.example"));
    let q: Value = serde_json::from_str(&link.query_pairs().find(|(k, _)| k == "q").unwrap().1).unwrap();
    assert_eq!(q["breakdowns"], json!(["service"]));
    assert_eq!(q["end_time"].as_i64().unwrap() - q["start_time"].as_i64().unwrap(), 4);
    let triggered = fired.body["result_groups_triggered"].as_array().unwrap();
    assert_eq!(triggered.len(), 1, "{:?}", fired.body);
    assert_eq!(triggered[0]["Group"], json!({"service": "pay"}));
    assert!(triggered[0]["Result"].as_f64().unwrap() > 5.0);
    let header = |k: &str| fired.headers.iter().find(|(h, _)| h == k).map(|(_, v)| v.clone());
    assert_eq!(header("x-honeycomb-webhook-token").as_deref(), Some("s3cret"));
    assert_eq!(header("x-team").as_deref(), Some("shop"));
    wait_for("the custom payload", Duration::from_secs(10), || {
        !statuses(&got, "/custom").is_empty()
    })
    .await;
    let c = got
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.path == "/custom")
        .cloned()
        .unwrap();
    assert_eq!(
        c.body,
        json!({"text": "Triggered: errors", "status": "TRIGGERED", "severity": "critical", "team": "shop",
               "groups": [{"Group": [{"Key": "service", "Value": "pay"}], "Result": triggered[0]["Result"]}], "threshold": 5.0}),
        "{:?}",
        c.body
    );
    let (_, now) = send_json(http.get(server.at(&format!("/1/triggers/shop/{}", t1["id"].as_str().unwrap())))).await;
    assert_eq!(now["triggered"], true);

    // SIGKILL in the middle of the incident, once the three TRIGGERED are recorded (a kill
    // during a send would rightly send it again), and back: it goes on, and nothing fires again.
    let t1id = t1["id"].as_str().unwrap();
    let start = Instant::now();
    loop {
        let (_, ds) = send_json(http.get(server.at(&format!("/1/triggers/shop/{t1id}/deliveries")))).await;
        if ds.as_array().unwrap().len() == 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "three deliveries recorded: {ds}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    server.restart().await;
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        incident(&server).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        statuses(&got, "/change"),
        vec!["TRIGGERED"],
        "no second TRIGGERED after the restart"
    );

    // The incident ends: one OK, then nothing more.
    wait_for("the OK", Duration::from_secs(20), || {
        statuses(&got, "/change").len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(statuses(&got, "/change"), vec!["TRIGGERED", "OK"]);
    // on_true: every evaluation while firing (about 7 s of incident at 2 s), then one OK.
    let every = statuses(&got, "/true");
    let fired_n = every.iter().filter(|s| *s == "TRIGGERED").count();
    assert!(fired_n >= 3, "on_true notified {fired_n} times: {every:?}");
    assert_eq!(every.last().map(String::as_str), Some("OK"), "{every:?}");

    // Every delivery is recorded with its outcome, and the marker recipient made a marker.
    let (_, ds) = send_json(http.get(server.at(&format!("/1/triggers/shop/{t1id}/deliveries")))).await;
    let outcomes: Vec<(String, String)> = ds
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["notification"].as_str().unwrap().to_string(),
                d["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("TRIGGERED".into(), "delivered".into()),
            ("TRIGGERED".into(), "delivered".into()),
            ("TRIGGERED".into(), "delivered".into()),
            ("OK".into(), "delivered".into()),
            ("OK".into(), "delivered".into()),
            ("OK".into(), "delivered".into())
        ],
        "{ds}"
    );
    let (_, markers) = send_json(http.get(server.at("/1/markers/shop"))).await;
    let messages: Vec<&str> = markers
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, vec!["errors trigger", "errors trigger"], "{markers}");
}

/// Sends `n` error events of `pay`, stamped `ago` seconds before now.
async fn send_at(http: &reqwest::Client, server: &Server, ago: i64, n: usize) {
    let t = sonde_model::time::now_us() - ago * 1_000_000;
    let batch: Vec<Value> = (0..n)
        .map(|_| json!({"time": sonde_model::time::format_us(t), "data": {"service": "pay", "error": true}}))
        .collect();
    let (status, r) = send_json(http.post(server.at("/1/batch/shop")).json(&batch)).await;
    assert_eq!(status, 200, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_trigger_fires_on_the_change_since_an_hour_before() {
    let (hook, got) = receiver();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--trigger-min-frequency", "2s"]).await;
    let http = reqwest::Client::new();
    send_at(&http, &server, 0, 1).await;
    let (_, r) = send_json(
        http.post(server.at("/1/recipients"))
            .json(&json!({"type": "webhook", "details": {"webhook_url": format!("{hook}/baseline")}})),
    )
    .await;
    let trigger = json!({"name": "more errors than an hour ago", "frequency": 2,
        "query": {"calculations": [{"op": "COUNT"}], "filters": [{"column": "error", "op": "=", "value": true}], "time_range": 4},
        "threshold": {"op": ">", "value": 15}, "baseline_details": {"type": "value", "offset_minutes": 60},
        "recipients": [{"id": r["id"]}]});
    let (status, t) = send_json(http.post(server.at("/1/triggers/shop")).json(&trigger)).await;
    assert_eq!(status, 201, "{t}");

    // As many errors now as an hour before: far over 15 in 4 s, but no change. Nothing fires.
    for _ in 0..12 {
        send_at(&http, &server, 0, 10).await;
        send_at(&http, &server, 3600, 10).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(statuses(&got, "/baseline"), Vec::<String>::new());
    // Errors now only: the change exceeds 15, and it fires.
    let start = Instant::now();
    while statuses(&got, "/baseline").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "no TRIGGERED within 20 s");
        send_at(&http, &server, 0, 10).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(statuses(&got, "/baseline"), vec!["TRIGGERED"]);
}

//! Stored derived columns through Honeycomb's API, and where a derived column may be used:
//! queries (breakdowns, filters, calculations, orders, havings), raw events, BubbleUp, SQL and
//! the schema; kept across a restart. Also the spec's period-over-period `compare` and
//! `usage_mode`, each checked against the same query run by hand or a count made here.

use crate::fixtures::{MINUTE, T0, at};
use crate::harness::{Server, send_json};
use serde_json::{Value, json};

fn events() -> Vec<Value> {
    // Hour 0 and hour 2 (the compare test's earlier and later periods), statuses cycling.
    (0..120)
        .map(|i| {
            let hour = if i < 60 { 0 } else { 2 };
            let status = [200, 201, 404, 500, 503][i as usize % 5];
            let name = ["GET /a", "POST /b", "GET /c"][i as usize % 3];
            json!({
                "time": at(T0 + hour * 60 * MINUTE + (i % 60) * MINUTE),
                "samplerate": if i % 3 == 0 { 4 } else { 1 },
                "data": {
                    "http.status_code": status,
                    "duration_ms": (i % 10) as f64 * 10.0,
                    "name": name,
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn stored_derived_columns_are_usable_everywhere_a_column_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--flush-rows", "50"]).await;
    let http = reqwest::Client::new();
    let api = server.api(&http);
    let evs = events();
    assert_eq!(api.post_batch("web", &evs).await, 120);

    // A mistake is refused with its position, before anything is stored.
    let (status, e) = api
        .post_json(
            "/1/derived_columns/web",
            json!({"alias": "bad", "expression": "IF(GTE($http.status_code, 500), FOO(1))"}),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["position"], 32, "{e}");
    assert!(e["error"].as_str().unwrap().contains("unknown function FOO"), "{e}");
    let (status, e) = api
        .post_json("/1/derived_columns/web", json!({"alias": "bad", "expression": "$nope"}))
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("unknown column \"nope\""), "{e}");

    let (status, kind) = api
        .post_json(
            "/1/derived_columns/web",
            json!({"alias": "kind", "expression": "IF(GTE($http.status_code, 500), \"error\", \"ok\")", "description": "server errors"}),
        )
        .await;
    assert_eq!(status, 201, "{kind}");
    assert_eq!(kind["alias"], "kind");
    assert_eq!(kind["id"].as_str().unwrap().len(), 11);
    // One derived column may name another; an environment-wide one applies to every dataset.
    let (status, _) = api
        .post_json(
            "/1/derived_columns/web",
            json!({"alias": "is_error", "expression": "$kind = \"error\""}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, secs) = api
        .post_json(
            "/1/derived_columns/__all__",
            json!({"alias": "secs", "expression": "DIV($duration_ms, 1000)"}),
        )
        .await;
    assert_eq!(status, 201, "{secs}");
    let (status, dup) = api
        .post_json("/1/derived_columns/web", json!({"alias": "kind", "expression": "1"}))
        .await;
    assert_eq!(status, 409, "{dup}");

    // Read back: all, by alias, by id.
    let (status, list) = send_json(http.get(server.at("/1/derived_columns/web"))).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let (status, one) = send_json(http.get(server.at("/1/derived_columns/web?alias=kind"))).await;
    assert_eq!((status, one["id"].clone()), (200, kind["id"].clone()));
    let (status, _) = send_json(http.get(server.at("/1/derived_columns/web?alias=none"))).await;
    assert_eq!(status, 404);
    let id = kind["id"].as_str().unwrap();
    let (status, one) = send_json(http.get(server.at(&format!("/1/derived_columns/web/{id}")))).await;
    assert_eq!((status, one["expression"].clone()), (200, kind["expression"].clone()));

    // A breakdown, a filter, an order and a having on derived columns; counts by hand.
    let range = json!({"start_time": at(T0), "end_time": at(T0 + 3 * 60 * MINUTE)});
    let mut spec = range.clone();
    spec["breakdowns"] = json!(["kind"]);
    spec["calculations"] = json!([{"op": "COUNT"}, {"op": "MAX", "column": "secs"}]);
    spec["filters"] = json!([{"column": "is_error", "op": "=", "value": true}]);
    spec["orders"] = json!([{"op": "MAX", "column": "secs", "order": "descending"}]);
    spec["havings"] = json!([{"calculate_op": "COUNT", "op": ">", "value": 0}]);
    let (status, r) = api.post_json("/api/query/web", spec).await;
    assert_eq!(status, 200, "{r}");
    let errors: i64 = evs
        .iter()
        .filter(|e| e["data"]["http.status_code"].as_i64().unwrap() >= 500)
        .map(|e| e["samplerate"].as_i64().unwrap())
        .sum();
    let results = r["data"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{r}");
    assert_eq!(results[0]["data"]["kind"], "error");
    assert_eq!(results[0]["data"]["COUNT"], errors);
    assert_eq!(results[0]["data"]["MAX(secs)"], 0.09);

    // Raw events show derived columns as columns.
    let mut req = range.clone();
    req["limit"] = json!(5);
    let (status, ev) = api.post_json("/api/events/web", req).await;
    assert_eq!(status, 200, "{ev}");
    for e in ev["events"].as_array().unwrap() {
        let code = e["http.status_code"].as_i64().unwrap();
        assert_eq!(e["kind"], if code >= 500 { "error" } else { "ok" }, "{e}");
        assert_eq!(e["is_error"], json!(code >= 500));
    }

    // BubbleUp compares a derived column like any other: errors are all "error".
    let mut bu = range.clone();
    bu["selection"] = json!({"group": {"http.status_code": 500}});
    let (status, b) = api.post_json("/api/bubbleup/web", bu).await;
    assert_eq!(status, 200, "{b}");
    let kind_report = b["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["column"] == "kind")
        .cloned();
    assert!(kind_report.is_some(), "{b}");

    // SQL sees each dataset with its derived columns.
    let (status, s) = api
        .post_json(
            "/api/sql",
            json!({"sql": "SELECT kind, count(*) AS n FROM web GROUP BY kind ORDER BY kind"}),
        )
        .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(
        s["rows"],
        json!([{"kind": "error", "n": 48}, {"kind": "ok", "n": 72}]),
        "{s}"
    );

    // Sonde's kernels are SQL functions too, their parameters literal arguments; a wrong one
    // is a clear error that names the function.
    let (status, s) = api
        .post_json(
            "/api/sql",
            json!({"sql": "SELECT sonde_reg_value(name, '^([A-Z]+) ') AS verb, \
                           sonde_bucket(duration_ms, 25, 0, 50) AS b, count(*) AS n \
                           FROM web GROUP BY 1, 2 ORDER BY 1, 2"}),
        )
        .await;
    assert_eq!(status, 200, "{s}");
    // duration_ms cycles 0..90 by 10 with i, name with i % 3: count each pair by hand.
    let mut want = std::collections::BTreeMap::new();
    for i in 0..120 {
        let verb = ["GET", "POST", "GET"][i % 3];
        let b = ((i % 10) as f64 * 10.0).clamp(0.0, 50.0);
        *want.entry((verb, ((b / 25.0).floor() * 25.0) as i64)).or_insert(0) += 1;
    }
    let want: Vec<Value> = want
        .into_iter()
        .map(|((verb, b), n)| json!({"verb": verb, "b": b as f64, "n": n}))
        .collect();
    assert_eq!(s["rows"], json!(want), "{s}");
    for (sql, says) in [
        (
            "SELECT sonde_reg_match(name, name) FROM web",
            "sonde_reg_match: parameter 1 must be a literal",
        ),
        (
            "SELECT sonde_reg_count(name, '(') FROM web",
            "sonde_reg_count: bad pattern",
        ),
        (
            "SELECT sonde_bucket(duration_ms) FROM web",
            "sonde_bucket takes 2 or 4 arguments, not 1",
        ),
        (
            "SELECT sonde_format_time(duration_ms, '%H', 'Mars/Olympus') FROM web",
            "sonde_format_time: unknown time zone",
        ),
    ] {
        let (status, e) = api.post_json("/api/sql", json!({ "sql": sql })).await;
        assert_eq!(status, 400, "{sql}: {e}");
        assert!(e["error"].as_str().unwrap().contains(says), "{sql}: {e}");
    }

    // The schema lists them, typed from their expressions.
    let (_, cols) = send_json(http.get(server.at("/api/datasets/web/columns"))).await;
    let find = |n: &str| {
        cols["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        (find("kind")["type"].clone(), find("kind")["derived"].clone()),
        (json!("string"), json!(true))
    );
    assert_eq!(find("is_error")["type"], "bool");
    assert_eq!(find("secs")["type"], "float");

    // In use by another derived column: not deleted (409). Its user goes first, then it.
    let (status, e) = send_json(http.delete(server.at(&format!("/1/derived_columns/web/{id}")))).await;
    assert_eq!(status, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("is_error"), "{e}");

    // Changed, then kept across a restart.
    let (status, changed) = send_json(
        http.put(server.at(&format!("/1/derived_columns/web/{id}")))
            .json(&json!({"alias": "kind", "expression": "IF(GTE($http.status_code, 400), \"error\", \"ok\")"})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    let (status, _) = send_json(
        http.put(server.at(&format!("/1/derived_columns/web/{id}")))
            .json(&json!({"alias": "renamed", "expression": "1"})),
    )
    .await;
    assert_eq!(status, 400);
    server.stop().await;
    server.restart().await;
    let api = server.api(&http);
    let mut spec = range.clone();
    spec["breakdowns"] = json!(["kind"]);
    let (status, r) = api.post_json("/api/query/web", spec).await;
    assert_eq!(status, 200, "{r}");
    let errors: i64 = evs
        .iter()
        .filter(|e| e["data"]["http.status_code"].as_i64().unwrap() >= 400)
        .map(|e| e["samplerate"].as_i64().unwrap())
        .sum();
    let row = r["data"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["data"]["kind"] == "error")
        .cloned();
    assert_eq!(row.unwrap()["data"]["COUNT"], errors, "{r}");
    let is_error_id = {
        let (_, one) = send_json(http.get(server.at("/1/derived_columns/web?alias=is_error"))).await;
        one["id"].as_str().unwrap().to_string()
    };
    let (status, _) = send_json(http.delete(server.at(&format!("/1/derived_columns/web/{is_error_id}")))).await;
    assert_eq!(status, 204);
    let (status, _) = send_json(http.delete(server.at(&format!("/1/derived_columns/web/{id}")))).await;
    assert_eq!(status, 204);
    let (_, list) = send_json(http.get(server.at("/1/derived_columns/web"))).await;
    assert_eq!(list, json!([]));
    assert_eq!(secs["alias"], "secs");
}

#[tokio::test]
async fn compare_answers_the_same_query_shifted_back_and_usage_mode_ignores_sample_rates() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    let api = server.api(&http);
    let evs = events();
    assert_eq!(api.post_batch("web", &evs).await, 120);

    let later = json!({
        "start_time": at(T0 + 120 * MINUTE), "end_time": at(T0 + 180 * MINUTE),
        "breakdowns": ["name"], "calculations": [{"op": "COUNT"}, {"op": "P50", "column": "duration_ms"}],
        "granularity": 600,
    });
    let mut with_compare = later.clone();
    with_compare["compare_time_offset_seconds"] = json!(7200);
    let (status, r) = api.post_json("/api/query/web", with_compare).await;
    assert_eq!(status, 200, "{r}");
    let earlier = json!({
        "start_time": at(T0), "end_time": at(T0 + 60 * MINUTE),
        "breakdowns": ["name"], "calculations": [{"op": "COUNT"}, {"op": "P50", "column": "duration_ms"}],
        "granularity": 600,
    });
    let (_, by_hand) = api.post_json("/api/query/web", earlier).await;
    let (_, main) = api.post_json("/api/query/web", later).await;
    assert_eq!(r["data"]["compare"]["offset_seconds"], 7200);
    assert_eq!(r["data"]["compare"]["results"], by_hand["data"]["results"], "{r}");
    assert_eq!(r["data"]["compare"]["series"], by_hand["data"]["series"], "{r}");
    assert_eq!(r["data"]["results"], main["data"]["results"]);
    assert!(!by_hand["data"]["results"].as_array().unwrap().is_empty());

    // An offset shorter than the range is refused.
    let mut bad = json!({"time_range": 7200, "compare_time_offset_seconds": 3600});
    let (status, e) = api.post_json("/api/query/web", bad.take()).await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("compare_time_offset_seconds"),
        "{e}"
    );

    // usage_mode: COUNT is the events stored, not the sum of their sample rates.
    let spec = json!({"start_time": at(T0), "end_time": at(T0 + 180 * MINUTE), "usage_mode": true});
    let (_, r) = api.post_json("/api/query/web", spec).await;
    assert_eq!(r["data"]["results"][0]["data"]["COUNT"], 120, "{r}");
    let spec = json!({"start_time": at(T0), "end_time": at(T0 + 180 * MINUTE)});
    let (_, r) = api.post_json("/api/query/web", spec).await;
    let weighted: i64 = evs.iter().map(|e| e["samplerate"].as_i64().unwrap()).sum();
    assert_eq!(r["data"]["results"][0]["data"]["COUNT"], weighted, "{r}");
}

#[tokio::test]
async fn named_calculations_their_own_filters_and_formulas_in_results_and_series() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--flush-rows", "50"]).await;
    let http = reqwest::Client::new();
    let api = server.api(&http);
    let evs = events();
    assert_eq!(api.post_batch("web", &evs).await, 120);
    let spec = json!({
        "start_time": at(T0), "end_time": at(T0 + 180 * MINUTE), "granularity": 3600,
        "calculations": [
            {"op": "COUNT"},
            {"op": "COUNT", "name": "errors", "filters": [{"column": "http.status_code", "op": ">=", "value": 500}]},
            {"op": "MAX", "column": "duration_ms", "name": "max_ok", "filter_combination": "OR",
             "filters": [{"column": "http.status_code", "op": "<", "value": 300}, {"column": "http.status_code", "op": "=", "value": 404}]},
        ],
        "formulas": [{"name": "error_rate", "expression": "DIV($errors, $COUNT)"}],
        "breakdowns": ["name"],
        "orders": [{"column": "error_rate", "order": "descending"}],
        "havings": [{"calculate_op": "COUNT", "column": "errors", "op": ">", "value": 0}],
    });
    let (status, r) = api.post_json("/api/query/web", spec).await;
    assert_eq!(status, 200, "{r}");
    // By hand, per name: weighted count, weighted errors, the largest duration of a non-error.
    let mut want: std::collections::BTreeMap<String, (i64, i64, f64)> = Default::default();
    for e in &evs {
        let d = &e["data"];
        let w = e["samplerate"].as_i64().unwrap();
        let code = d["http.status_code"].as_i64().unwrap();
        let g = want
            .entry(d["name"].as_str().unwrap().to_string())
            .or_insert((0, 0, f64::MIN));
        g.0 += w;
        if code >= 500 {
            g.1 += w;
        }
        if code < 300 || code == 404 {
            g.2 = g.2.max(d["duration_ms"].as_f64().unwrap());
        }
    }
    let results = r["data"]["results"].as_array().unwrap();
    assert_eq!(results.len(), want.len(), "{r}");
    let mut last = f64::INFINITY;
    for row in results {
        let d = &row["data"];
        let (count, errors, max_ok) = want[d["name"].as_str().unwrap()];
        assert_eq!(d["COUNT"], count, "{d}");
        assert_eq!(d["errors"], errors, "{d}");
        assert_eq!(d["max_ok"].as_f64().unwrap(), max_ok, "{d}");
        let rate = d["error_rate"].as_f64().unwrap();
        assert!((rate - errors as f64 / count as f64).abs() < 1e-12, "{d}");
        assert!(rate <= last, "ordered by error_rate, descending");
        last = rate;
    }
    // Per time bucket too.
    for row in r["data"]["series"].as_array().unwrap() {
        let d = &row["data"];
        let (c, e) = (d["COUNT"].as_f64().unwrap(), d["errors"].as_f64().unwrap_or(0.0));
        assert!((d["error_rate"].as_f64().unwrap_or(0.0) - e / c).abs() < 1e-12, "{row}");
    }

    // What is refused: filters without a name, a formula naming what is not a calculation.
    let (status, e) = api
        .post_json(
            "/api/query/web",
            json!({"calculations": [{"op": "COUNT", "filters": [{"column": "name", "op": "exists"}]}]}),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("calculations[0].name"), "{e}");
    let (status, e) = api
        .post_json(
            "/api/query/web",
            json!({"formulas": [{"name": "x", "expression": "DIV($nope, $COUNT)"}]}),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["position"], 4, "{e}");
}

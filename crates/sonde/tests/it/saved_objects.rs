//! The objects users keep beside their data, through Honeycomb's API shapes: markers and
//! marker settings, saved queries and their annotations. Each survives a restart, is bounded
//! by `--max-saved-objects`, refuses bad fields by name, and needs the `manage` scope to change.

use crate::fixtures::{MINUTE, T0, at};
use crate::harness::{Server, send_json};
use serde_json::{Value, json};

const S: i64 = 1_767_225_600; // T0 in unix seconds.

async fn put_json(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    send_json(http.put(url).json(&body)).await
}

#[tokio::test]
async fn markers_and_their_colours_persist_and_filter_by_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--max-saved-objects", "3"]).await;
    let http = reqwest::Client::new();
    let api = server.api(&http);

    // All fields are optional: an empty body is a marker at the time of the request.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (status, now_marker) = api.post_json("/1/markers/web", json!({})).await;
    assert_eq!(status, 201, "{now_marker}");
    let t = now_marker["start_time"].as_i64().unwrap();
    assert!(t >= before && t <= before + 60, "{now_marker}");
    assert_eq!(now_marker["id"].as_str().unwrap().len(), 11);

    let (status, deploy) = api
        .post_json(
            "/1/markers/web",
            json!({"start_time": S + 600, "end_time": S + 900, "message": "deploy #123", "type": "deploy", "url": "https://ci.example/123"}),
        )
        .await;
    assert_eq!(status, 201, "{deploy}");
    assert_eq!(deploy["end_time"], S + 900);
    let (status, env) = api
        .post_json(
            "/1/markers/__all__",
            json!({"start_time": S + 60, "message": "flag on", "type": "flag"}),
        )
        .await;
    assert_eq!(status, 201, "{env}");

    // Bad fields are refused by name, and nothing is stored.
    for (body, field) in [
        (json!({"start_time": S, "end_time": S - 1}), "end_time"),
        (json!({"url": "javascript:alert(1)"}), "url"),
        (json!({"message": "x".repeat(2000)}), "message"),
        (json!({"start_time": "yesterday"}), "marker"),
    ] {
        let (status, e) = api.post_json("/1/markers/web", body.clone()).await;
        assert_eq!(status, 400, "{body}: {e}");
        assert!(e["error"].as_str().unwrap().contains(field), "{body}: {e}");
    }
    // The bound names its flag; the environment's markers are counted on their own.
    let (status, _) = api.post_json("/1/markers/web", json!({"start_time": S})).await;
    assert_eq!(status, 201);
    let (status, e) = api.post_json("/1/markers/web", json!({"start_time": S})).await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("--max-saved-objects"), "{e}");

    // Colours by type: the dataset's setting first, then the environment's.
    let (status, s1) = api
        .post_json("/1/marker_settings/web", json!({"type": "deploy", "color": "#F96E11"}))
        .await;
    assert_eq!(status, 201, "{s1}");
    assert_eq!(s1["color"], "#F96E11", "kept as given (Terraform compares it)");
    let (status, _) = api
        .post_json(
            "/1/marker_settings/__all__",
            json!({"type": "flag", "color": "#7b1fa2"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, e) = api
        .post_json("/1/marker_settings/web", json!({"type": "deploy", "color": "#000000"}))
        .await;
    assert_eq!(status, 409, "{e}");
    let (status, e) = api
        .post_json("/1/marker_settings/web", json!({"type": "x", "color": "red"}))
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("color"), "{e}");

    // Kept across a restart.
    server.stop().await;
    server.restart().await;
    let (status, list) = send_json(http.get(server.at("/1/markers/web"))).await;
    assert_eq!(status, 200, "{list}");
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 3, "{list:?}");
    let starts: Vec<i64> = list.iter().map(|m| m["start_time"].as_i64().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "oldest first: {starts:?}");
    let got = list.iter().find(|m| m["id"] == deploy["id"]).unwrap();
    assert_eq!(got["color"], "#F96E11", "{got}");
    assert_eq!(got["message"], "deploy #123");
    let (_, envs) = send_json(http.get(server.at("/1/markers/__all__"))).await;
    assert_eq!(envs[0]["color"], "#7b1fa2", "{envs}");

    // A range keeps the markers that overlap it: the span from 600 to 900 overlaps 800..1000.
    let (_, r) =
        send_json(http.get(server.at(&format!("/1/markers/web?start_time={}&end_time={}", S + 800, S + 1000)))).await;
    let ids: Vec<&Value> = r.as_array().unwrap().iter().map(|m| &m["id"]).collect();
    assert_eq!(ids, vec![&deploy["id"]], "{r}");

    // PUT changes the fields given; DELETE answers the marker deleted.
    let id = deploy["id"].as_str().unwrap();
    let (status, changed) = put_json(
        &http,
        server.at(&format!("/1/markers/web/{id}")),
        json!({"message": "deploy #124"}),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (
            changed["message"].clone(),
            changed["start_time"].clone(),
            changed["type"].clone()
        ),
        (json!("deploy #124"), json!(S + 600), json!("deploy"))
    );
    let (status, e) = put_json(&http, server.at("/1/markers/web/nope"), json!({})).await;
    assert_eq!(status, 404, "{e}");
    let (status, gone) = send_json(http.delete(server.at(&format!("/1/markers/web/{id}")))).await;
    assert_eq!((status, gone["id"].clone()), (200, deploy["id"].clone()));
    let (_, list) = send_json(http.get(server.at("/1/markers/web"))).await;
    assert_eq!(list.as_array().unwrap().len(), 2);

    // Settings change and go.
    let sid = s1["id"].as_str().unwrap();
    let (status, s2) = put_json(
        &http,
        server.at(&format!("/1/marker_settings/web/{sid}")),
        json!({"type": "deploy", "color": "#00ff00"}),
    )
    .await;
    assert_eq!((status, s2["color"].clone()), (200, json!("#00ff00")));
    let (status, _) = send_json(http.delete(server.at(&format!("/1/marker_settings/web/{sid}")))).await;
    assert_eq!(status, 204);
    let (_, settings) = send_json(http.get(server.at("/1/marker_settings/web"))).await;
    assert_eq!(settings, json!([]));
}

#[tokio::test]
async fn saved_queries_are_immutable_durable_and_annotated() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    let api = server.api(&http);
    let evs: Vec<Value> = (0..30)
        .map(|i| json!({"time": at(T0 + i * MINUTE), "data": {"i": i, "kind": if i % 3 == 0 { "a" } else { "b" }}}))
        .collect();
    assert_eq!(api.post_batch("web", &evs).await, 30);
    let (status, _) = api
        .post_json(
            "/1/derived_columns/web",
            json!({"alias": "big", "expression": "GT($i, 20)"}),
        )
        .await;
    assert_eq!(status, 201);

    let spec = json!({"start_time": at(T0), "end_time": at(T0 + 60 * MINUTE),
        "calculations": [{"op": "COUNT"}], "breakdowns": ["kind"], "filters": [{"column": "big", "op": "=", "value": true}]});
    let (status, q1) = api.post_json("/1/queries/web", spec.clone()).await;
    assert_eq!(status, 200, "{q1}");
    // The same spec is the same saved query; another spec is another.
    let (_, again) = api.post_json("/1/queries/web", spec.clone()).await;
    assert_eq!(again["id"], q1["id"]);
    let mut other = spec.clone();
    other["breakdowns"] = json!([]);
    let (_, q2) = api.post_json("/1/queries/web", other).await;
    assert_ne!(q2["id"], q1["id"]);
    let (status, e) = api.post_json("/1/queries/web", json!({"breakdowns": ["nope"]})).await;
    assert_eq!(status, 400, "{e}");

    // Annotations: a name for a saved query of this dataset.
    let (status, e) = api
        .post_json("/1/query_annotations/web", json!({"name": "x", "query_id": "nope"}))
        .await;
    assert_eq!(status, 404, "{e}");
    assert!(e["error"].as_str().unwrap().contains("query_id"), "{e}");
    let (status, e) = api
        .post_json("/1/query_annotations/web", json!({"name": "", "query_id": q1["id"]}))
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("name"), "{e}");
    let (status, a1) = api
        .post_json(
            "/1/query_annotations/web",
            json!({"name": "Big by kind", "description": "over 20", "query_id": q1["id"]}),
        )
        .await;
    assert_eq!(status, 201, "{a1}");
    assert_eq!(a1["source"], "query");
    let (status, a2) = api
        .post_json(
            "/1/query_annotations/web",
            json!({"name": "panel", "query_id": q2["id"], "source": "board"}),
        )
        .await;
    assert_eq!(status, 201, "{a2}");

    // Everything is still there after a restart, and the saved query still runs.
    server.stop().await;
    server.restart().await;
    let id1 = q1["id"].as_str().unwrap();
    let (status, got) = send_json(http.get(server.at(&format!("/1/queries/web/{id1}")))).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        (got["breakdowns"].clone(), got["id"].clone()),
        (spec["breakdowns"].clone(), q1["id"].clone())
    );
    let (status, r) = server
        .api(&http)
        .post_json("/1/query_results/web", json!({"query_id": id1}))
        .await;
    assert_eq!(status, 201, "{r}");
    // i in 21..=29: kind "a" for 21, 24, 27.
    assert_eq!(
        r["data"]["results"],
        json!([{"data": {"COUNT": 6, "kind": "b"}}, {"data": {"COUNT": 3, "kind": "a"}}])
    );
    let (status, _) = send_json(http.get(server.at(&format!("/1/queries/other/{id1}")))).await;
    assert_eq!(status, 404);
    let (_, list) = send_json(http.get(server.at("/1/query_annotations/web"))).await;
    let names: Vec<&Value> = list.as_array().unwrap().iter().map(|a| &a["name"]).collect();
    assert_eq!(
        names,
        vec!["Big by kind"],
        "board annotations are listed only when asked for"
    );
    let (_, list) = send_json(http.get(server.at("/1/query_annotations/web?include_board_annotations=true"))).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    // PUT replaces the name and description; the query cannot change.
    let aid = a1["id"].as_str().unwrap();
    let url = server.at(&format!("/1/query_annotations/web/{aid}"));
    let (status, e) = put_json(&http, url.clone(), json!({"name": "n", "query_id": q2["id"]})).await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("query_id"), "{e}");
    let (status, changed) = put_json(&http, url.clone(), json!({"name": "Renamed", "query_id": q1["id"]})).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (changed["name"].clone(), changed["description"].clone()),
        (json!("Renamed"), json!(""))
    );
    let (_, one) = send_json(http.get(url.clone())).await;
    assert_eq!(one, changed);

    // A derived column a saved query names cannot be deleted (the query would stop running).
    let (_, cols) = send_json(http.get(server.at("/1/derived_columns/web?alias=big"))).await;
    let cid = cols["id"].as_str().unwrap();
    let (status, e) = send_json(http.delete(server.at(&format!("/1/derived_columns/web/{cid}")))).await;
    assert_eq!(status, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains(id1), "{e}");

    let (status, _) = send_json(http.delete(url.clone())).await;
    assert_eq!(status, 204);
    let (status, _) = send_json(http.get(url)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn changing_saved_objects_needs_the_manage_scope() {
    let (query_key, l1) = crate::auth::new_key("oncall", "query", "*");
    let (manage_key, l2) = crate::auth::new_key("lead", "manage", "web");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, format!("{l1}\n{l2}\n")).unwrap();
    let server = Server::start(&dir.path().join("data"), &["--keys-file", file.to_str().unwrap()]).await;
    let http = reqwest::Client::new();
    let post = |key: &str, path: &str, body: Value| {
        send_json(http.post(server.at(path)).header("X-Honeycomb-Team", key).json(&body))
    };
    let (status, e) = post(&query_key, "/1/markers/web", json!({"message": "m"})).await;
    assert_eq!(status, 403, "{e}");
    assert!(e["error"].as_str().unwrap().contains("manage"), "{e}");
    let (status, m) = post(&manage_key, "/1/markers/web", json!({"message": "m"})).await;
    assert_eq!(status, 201, "{m}");
    let (status, e) = post(&manage_key, "/1/markers/other", json!({"message": "m"})).await;
    assert_eq!(status, 403, "{e}");
    // Reading needs only the query scope.
    let (status, list) = send_json(
        http.get(server.at("/1/markers/web"))
            .header("X-Honeycomb-Team", &query_key),
    )
    .await;
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(1)));
}

/// Saves `spec` in `ds` and names it; (query id, annotation id).
async fn saved_query(api: &crate::fixtures::TestClient<'_>, ds: &str, spec: Value, name: &str) -> (String, String) {
    let (status, q) = api.post_json(&format!("/1/queries/{ds}"), spec).await;
    assert_eq!(status, 200, "{q}");
    let (status, a) = api
        .post_json(
            &format!("/1/query_annotations/{ds}"),
            json!({"name": name, "query_id": q["id"]}),
        )
        .await;
    assert_eq!(status, 201, "{a}");
    (
        q["id"].as_str().unwrap().to_string(),
        a["id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn boards_hold_panels_of_saved_queries_and_text_with_views() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    let api = server.api(&http);
    let evs: Vec<Value> = (0..10)
        .map(|i| json!({"time": at(T0 + i * MINUTE), "data": {"i": i, "svc": "a"}}))
        .collect();
    assert_eq!(api.post_batch("web", &evs).await, 10);
    assert_eq!(api.post_batch("api", &evs).await, 10);
    let range = json!({"time_range": 7200});
    let mut count = range.clone();
    count["calculations"] = json!([{"op": "COUNT"}]);
    let mut max = range.clone();
    max["calculations"] = json!([{"op": "MAX", "column": "i"}]);
    let (q1, a1) = saved_query(&api, "web", count.clone(), "count").await;
    let (q2, a2) = saved_query(&api, "web", max, "max").await;
    let (q3, a3) = saved_query(&api, "api", count, "api count").await;

    let panel = |q: &str, a: &str, x: i64, y: i64| {
        json!({"type": "query", "position": {"x_coordinate": x, "y_coordinate": y, "width": 6, "height": 6},
               "query_panel": {"query_id": q, "query_annotation_id": a, "query_style": "graph"}})
    };
    let board = json!({
        "name": "Service health", "description": "the first board", "type": "flexible",
        "tags": [{"key": "team", "value": "backend"}],
        "preset_filters": [{"column": "svc", "alias": "Service"}],
        "panels": [panel(&q1, &a1, 0, 0), panel(&q2, &a2, 6, 0), panel(&q3, &a3, 0, 6),
                   {"type": "text", "position": {"x_coordinate": 6, "y_coordinate": 6, "width": 6, "height": 3},
                    "text_panel": {"content": "# Runbook\nSee **the wiki**."}}]
    });
    let (status, b) = api.post_json("/1/boards", board.clone()).await;
    assert_eq!(status, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!(b["links"]["board_url"], format!("/?board={id}"));
    // Each query panel answers the dataset of its query.
    let datasets: Vec<&Value> = b["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["query_panel"]["dataset"])
        .collect();
    assert_eq!(
        datasets,
        vec![&json!("web"), &json!("web"), &json!("api"), &Value::Null],
        "{b}"
    );

    // Mistakes are refused by field.
    for (change, field) in [
        (json!({"name": ""}), "name"),
        (json!({"type": "classic"}), "type"),
        (json!({"tags": [{"key": "Team", "value": "x1"}]}), "tags"),
        (json!({"panels": [panel(&q1, &a1, 8, 0)]}), "x_coordinate + width"),
        (
            json!({"panels": [panel(&q1, &a1, 0, 0), panel(&q1, &a1, 6, 0)]}),
            "only be added to a board once",
        ),
        (json!({"panels": [panel("nope", &a1, 0, 0)]}), "query_id"),
        (json!({"panels": [panel(&q1, &a2, 0, 0)]}), "query_annotation_id"),
        (
            json!({"panels": [{"type": "slo", "slo_panel": {"slo_id": "x"}}]}),
            "slo_panel.slo_id",
        ),
        (
            json!({"panels": [{"type": "text", "text_panel": {"content": "x".repeat(10_001)}}]}),
            "content",
        ),
    ] {
        let mut bad = board.clone();
        for (k, v) in change.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let (status, e) = api.post_json("/1/boards", bad).await;
        assert_eq!(status, 400, "{change}: {e}");
        assert!(e["error"].as_str().unwrap().contains(field), "{change}: {e}");
    }

    // Views: named filter sets.
    let views = server.at(&format!("/1/boards/{id}/views"));
    let (status, e) = send_json(http.post(&views).json(&json!({"name": "none", "filters": []}))).await;
    assert_eq!(status, 400, "{e}");
    let (status, e) = send_json(
        http.post(&views)
            .json(&json!({"name": "x", "filters": [{"column": "svc", "operation": "~", "value": "a"}]})),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("operation"), "{e}");
    let (status, v) = send_json(
        http.post(&views)
            .json(&json!({"name": "only a", "filters": [{"column": "svc", "operation": "=", "value": "a"}]})),
    )
    .await;
    assert_eq!(status, 201, "{v}");

    // A board keeps the annotation it shows from being deleted.
    let (status, e) = send_json(http.delete(server.at(&format!("/1/query_annotations/web/{a1}")))).await;
    assert_eq!(status, 409, "{e}");

    // After a restart: the board, as answered; PUT without preset_filters keeps them, [] drops them;
    // `layout_generation: auto` places sizeless panels in rows.
    server.stop().await;
    server.restart().await;
    let (status, got) = send_json(http.get(server.at(&format!("/1/boards/{id}")))).await;
    assert_eq!((status, &got), (200, &b));
    let (_, list) = send_json(http.get(server.at("/1/boards"))).await;
    assert_eq!(list, json!([b]));
    let (_, vs) = send_json(http.get(server.at(&format!("/1/boards/{id}/views")))).await;
    assert_eq!(vs, json!([v]));
    let url = server.at(&format!("/1/boards/{id}"));
    let (status, kept) = put_json(
        &http,
        url.clone(),
        json!({"name": "Renamed", "type": "flexible", "panels": []}),
    )
    .await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(
        (kept["preset_filters"].clone(), kept["created_at"].clone()),
        (board["preset_filters"].clone(), b["created_at"].clone())
    );
    let sizeless =
        |q: &str, a: &str| json!({"type": "query", "query_panel": {"query_id": q, "query_annotation_id": a}});
    let (status, auto) = put_json(
        &http,
        url.clone(),
        json!({"name": "Auto", "layout_generation": "auto", "preset_filters": [],
               "panels": [sizeless(&q1, &a1), sizeless(&q2, &a2), sizeless(&q3, &a3)]}),
    )
    .await;
    assert_eq!(status, 200, "{auto}");
    assert_eq!(auto["preset_filters"], json!([]));
    let places: Vec<(i64, i64, i64, i64)> = auto["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let q = &p["position"];
            let n = |k: &str| q[k].as_i64().unwrap();
            (n("x_coordinate"), n("y_coordinate"), n("width"), n("height"))
        })
        .collect();
    assert_eq!(places, vec![(0, 0, 6, 6), (6, 0, 6, 6), (0, 6, 6, 6)]);
    let (status, _) = send_json(http.delete(url.clone())).await;
    assert_eq!(status, 204);
    let (status, _) = send_json(http.get(url)).await;
    assert_eq!(status, 404);
}

/// Whether every field of `sent` is in `got` with the same value (objects compared field by
/// field, so fields the server adds, such as `id` and `created_at`, do not count).
fn contains(got: &Value, sent: &Value) -> bool {
    match (got, sent) {
        (Value::Object(g), Value::Object(s)) => s.iter().all(|(k, v)| g.get(k).is_some_and(|gv| contains(gv, v))),
        (Value::Array(g), Value::Array(s)) => g.len() == s.len() && g.iter().zip(s).all(|(a, b)| contains(a, b)),
        _ => got == sent,
    }
}

/// The JSON Honeycomb's Terraform provider sends for markers, marker settings, query
/// annotations, boards, board views, recipients, triggers, SLOs and burn alerts (its Go client
/// structs marshalled, with their
/// `omitempty` rules: `"links": {}`, `"queries": null`, `"slos": null`, empty strings and zero
/// times left out) is accepted, and read back with every field it sent unchanged, so a plan
/// after an apply shows no difference.
#[tokio::test]
async fn terraform_provider_shapes_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    let api = server.api(&http);
    assert_eq!(
        api.post_batch("tf", &[json!({"time": at(T0), "data": {"status": "ok"}})])
            .await,
        1
    );

    // client/marker.go
    let marker = json!({"start_time": S, "end_time": S + 300, "message": "deploy 42", "type": "deploy", "url": "https://ci.example/42"});
    let (status, m) = api.post_json("/1/markers/tf", marker.clone()).await;
    assert_eq!(status, 201, "{m}");
    let (_, list) = send_json(http.get(server.at("/1/markers/tf"))).await;
    let read = list.as_array().unwrap().iter().find(|x| x["id"] == m["id"]).unwrap();
    assert!(contains(read, &marker), "{read} vs {marker}");
    // Update sends the whole struct back, read-only fields included.
    let mut again = read.clone();
    again["message"] = json!("deploy 43");
    let (status, u) = put_json(
        &http,
        server.at(&format!("/1/markers/tf/{}", m["id"].as_str().unwrap())),
        again.clone(),
    )
    .await;
    assert_eq!(status, 200, "{u}");
    assert_eq!(u["message"], "deploy 43");

    // client/marker_settings.go
    let setting = json!({"type": "deploy", "color": "#F96E11"});
    let (status, s) = api.post_json("/1/marker_settings/tf", setting.clone()).await;
    assert_eq!(status, 201, "{s}");
    let (_, list) = send_json(http.get(server.at("/1/marker_settings/tf"))).await;
    assert!(contains(&list[0], &setting), "{list}");

    // client/query_annotation.go (name, description and query_id always sent)
    let (_, q) = api
        .post_json(
            "/1/queries/tf",
            json!({"calculations": [{"op": "COUNT"}], "time_range": 3600}),
        )
        .await;
    let annotation = json!({"name": "Count", "description": "", "query_id": q["id"]});
    let (status, a) = api.post_json("/1/query_annotations/tf", annotation.clone()).await;
    assert_eq!(status, 201, "{a}");
    let aid = a["id"].as_str().unwrap();
    let (_, read) = send_json(http.get(server.at(&format!("/1/query_annotations/tf/{aid}")))).await;
    assert!(contains(&read, &annotation), "{read}");

    // client/board.go, a flexible board as the provider sends it
    let board = json!({
        "type": "flexible",
        "panels": [{"type": "query", "position": {"x_coordinate": 0, "y_coordinate": 0, "height": 6, "width": 8},
                    "query_panel": {"query_id": q["id"], "query_annotation_id": aid,
                                    "visualization_settings": {"hide_markers": true, "charts": [{"chart_type": "line", "chart_index": 0, "log_scale": true}]},
                                    "query_style": "combo"}}],
        "name": "TF board", "description": "made by terraform", "links": {}, "queries": null, "slos": null,
        "tags": [{"key": "team", "value": "platform"}]
    });
    let (status, b) = api.post_json("/1/boards", board.clone()).await;
    assert_eq!(status, 201, "{b}");
    let bid = b["id"].as_str().unwrap();
    let (_, read) = send_json(http.get(server.at(&format!("/1/boards/{bid}")))).await;
    let mut sent = board.clone();
    for k in ["links", "queries", "slos"] {
        sent.as_object_mut().unwrap().remove(k);
    }
    assert!(contains(&read, &sent), "{read}\nvs\n{sent}");
    let mut update = read.clone();
    update["description"] = json!("changed");
    let (status, u) = put_json(&http, server.at(&format!("/1/boards/{bid}")), update).await;
    assert_eq!((status, u["description"].clone()), (200, json!("changed")), "{u}");

    // client/recipient.go: a webhook recipient
    let recipient = json!({"type": "webhook", "details": {"webhook_name": "relay", "webhook_url": "https://relay.example/hook",
        "webhook_secret": "s3cret", "webhook_headers": [{"header": "X-Team", "value": "platform"}]}});
    let (status, r) = api.post_json("/1/recipients", recipient.clone()).await;
    assert_eq!(status, 201, "{r}");
    let rid = r["id"].as_str().unwrap();
    let (_, read) = send_json(http.get(server.at(&format!("/1/recipients/{rid}")))).await;
    assert!(contains(&read, &recipient), "{read}");

    // client/trigger.go: by query_id (the provider drops `query` when it has both), `disabled`
    // always sent, a stored recipient and an inline marker one
    let trigger = json!({"name": "Too many", "description": "tf", "disabled": false, "query_id": q["id"],
        "alert_type": "on_change", "threshold": {"op": ">", "value": 10.0, "exceeded_limit": 2}, "frequency": 900,
        "recipients": [{"id": rid}, {"type": "marker", "target": "tf trigger"}]});
    let (status, t) = api.post_json("/1/triggers/tf", trigger.clone()).await;
    assert_eq!(status, 201, "{t}");
    let tid = t["id"].as_str().unwrap();
    let (_, read) = send_json(http.get(server.at(&format!("/1/triggers/tf/{tid}")))).await;
    assert!(contains(&read, &trigger), "{read}\nvs\n{trigger}");
    let mut again = read.clone();
    again["disabled"] = json!(true);
    let (status, u) = put_json(&http, server.at(&format!("/1/triggers/tf/{tid}")), again).await;
    assert_eq!((status, u["disabled"].clone()), (200, json!(true)), "{u}");

    // client/slo.go and client/burn_alert.go
    let (status, _) = api
        .post_json(
            "/1/derived_columns/tf",
            json!({"alias": "sli", "expression": "EQUALS($status, \"ok\")"}),
        )
        .await;
    assert_eq!(status, 201);
    let slo = json!({"name": "OK", "description": "tf", "sli": {"alias": "sli"}, "time_period_days": 7, "target_per_million": 999000});
    let (status, o) = api.post_json("/1/slos/tf", slo.clone()).await;
    assert_eq!(status, 201, "{o}");
    let oid = o["id"].as_str().unwrap();
    let (_, read) = send_json(http.get(server.at(&format!("/1/slos/tf/{oid}")))).await;
    assert!(contains(&read, &slo), "{read}");
    let burn = json!({"alert_type": "exhaustion_time", "exhaustion_minutes": 60, "description": "tf",
        "slo": {"id": oid}, "recipients": [{"id": rid}]});
    let (status, b) = api.post_json("/1/burn_alerts/tf", burn.clone()).await;
    assert_eq!(status, 201, "{b}");
    let (_, read) = send_json(http.get(server.at(&format!("/1/burn_alerts/tf/{}", b["id"].as_str().unwrap())))).await;
    assert!(contains(&read, &burn), "{read}");

    // client/board_view.go
    let view = json!({"name": "errors", "filters": [{"column": "status", "operation": "=", "value": "error"}, {"column": "status", "operation": "exists"}]});
    let (status, v) = api.post_json(&format!("/1/boards/{bid}/views"), view.clone()).await;
    assert_eq!(status, 201, "{v}");
    let (_, read) =
        send_json(http.get(server.at(&format!("/1/boards/{bid}/views/{}", v["id"].as_str().unwrap())))).await;
    assert!(contains(&read, &view), "{read}");
}

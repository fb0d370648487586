//! A field that arrives as int, then float, then string ends as one string column; the
//! earlier segments keep their narrower types and every value stays readable.

use crate::harness::{Server, column_json, read_segments, send_json};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int_then_float_then_string_widens_to_string() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let sends = [json!(7), json!(2.5), json!("seven")];
    for (i, v) in sends.iter().enumerate() {
        let body = json!([{"data": {"x": v, "i": i}}]);
        let (status, resp) = send_json(client.post(server.at("/1/batch/conflict")).json(&body)).await;
        assert_eq!(status, 200, "{resp}");
        assert_eq!(resp[0]["status"], 202);
        // Each value in its own segment: a graceful restart flushes.
        server.stop().await;
        server.restart().await;
    }
    // And all three once more inside one write buffer.
    let body = json!([{"data": {"y": 1}}, {"data": {"y": 1.5}}, {"data": {"y": true}}, {"data": {"y": "one"}}]);
    send_json(client.post(server.at("/1/batch/conflict")).json(&body)).await;

    let (_, cols) = send_json(client.get(server.at("/api/datasets/conflict/columns"))).await;
    let ty = |name: &str| {
        cols["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()["type"]
            .clone()
    };
    assert_eq!(ty("x"), "string");
    assert_eq!(ty("y"), "string");
    assert_eq!(ty("i"), "int");
    server.stop().await;

    let batches = read_segments(dir.path(), "conflict");
    let mut xs: Vec<(i64, Value, String)> = Vec::new();
    let mut ys: Vec<Value> = Vec::new();
    for b in &batches {
        let is = column_json(b, "i").unwrap_or_default();
        if let Some(x) = column_json(b, "x") {
            let ty = b.schema().field_with_name("x").unwrap().data_type().to_string();
            for (i, v) in is.iter().zip(x) {
                if let Some(i) = i.as_i64() {
                    xs.push((i, v, ty.clone()));
                }
            }
        }
        if let Some(y) = column_json(b, "y") {
            ys.extend(y.into_iter().filter(|v| !v.is_null()));
        }
    }
    xs.sort_by_key(|x| x.0);
    assert_eq!(
        xs,
        vec![
            (0, json!(7), "Int64".into()),
            (1, json!(2.5), "Float64".into()),
            (2, json!("seven"), "Utf8".into())
        ]
    );
    // Inside one buffer the column widened as values came: all four kept, as text.
    assert_eq!(ys, vec![json!("1"), json!("1.5"), json!("true"), json!("one")]);
}

//! Relational fields (`root.`, `parent.`, `child.`, `any.`/`any2.`, `none.`) in filters —
//! with AND and with OR — and in breakdowns, over generated traces that hold what real ones do
//! (duplicated span ids, traces without a root, roots with an empty parent id, spans without
//! fields), each answer compared with a brute-force model that builds every trace in memory.

use crate::fixtures::{MINUTE, T0, at};
use crate::harness::Server;
use serde_json::{Value, json};
use sonde_gen::Rng;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
struct Span {
    trace: Option<String>,
    id: String,
    parent: Option<String>,
    fields: BTreeMap<&'static str, Value>,
    ts: i64,
}

fn gen_traces(r: &mut Rng) -> Vec<Span> {
    let names = ["GET /", "POST /cart", "db.query", "cache.get", "render"];
    let services = ["frontend", "cart", "db", "cache"];
    let mut out = Vec::new();
    for t in 0..160 {
        let trace = format!("{t:032x}");
        let n = 1 + r.below(12) as usize;
        let mut ids: Vec<String> = Vec::new();
        for k in 0..n {
            let id = if k > 2 && r.chance(0.05) {
                ids[1].clone() // a duplicated span id
            } else {
                format!("{:016x}", t * 100 + k)
            };
            let parent = if k == 0 {
                match r.below(10) {
                    0 => Some(format!("{:016x}", 999_999)), // no root: its parent is missing
                    1 => Some(String::new()),               // a root written with an empty parent
                    _ => None,
                }
            } else {
                Some(ids[r.below(k as u64) as usize].clone())
            };
            let mut fields = BTreeMap::new();
            fields.insert(
                "name",
                json!(if k == 0 { *r.pick(&names[..2]) } else { *r.pick(&names) }),
            );
            if r.chance(0.95) {
                fields.insert("service.name", json!(*r.pick(&services)));
            }
            fields.insert("status", json!(*r.pick(&[200, 200, 200, 404, 500, 503])));
            fields.insert("duration_ms", json!(r.below(1000) as f64 / 4.0));
            ids.push(id.clone());
            out.push(Span {
                trace: (!r.chance(0.01)).then(|| trace.clone()),
                id,
                parent,
                fields,
                ts: T0 + (t as i64 * 7 + k as i64) * MINUTE / 20,
            });
        }
    }
    out
}

fn get(s: &Span, col: &str) -> Value {
    match col {
        "trace.trace_id" => s.trace.clone().map_or(Value::Null, Value::String),
        "trace.span_id" => json!(s.id),
        "trace.parent_id" => s.parent.clone().map_or(Value::Null, Value::String),
        c => s.fields.get(c).cloned().unwrap_or(Value::Null),
    }
}

/// A filter of the model: column, op, value (the few ops these tests use).
type F = (&'static str, &'static str, Value);
/// A case: what it checks, plain filters, relational filters, OR, breakdowns.
type Case<'a> = (&'a str, Vec<F>, Vec<(&'a str, Vec<F>)>, bool, Vec<&'a str>);

fn passes(s: &Span, (col, op, v): &F) -> bool {
    let x = get(s, col);
    match *op {
        "=" => x == *v,
        "!=" => x != *v,
        ">=" => x.as_f64().is_some_and(|a| a >= v.as_f64().unwrap()),
        "does-not-exist" => x.is_null(),
        "exists" => !x.is_null(),
        _ => unreachable!(),
    }
}

/// The spans a relation links to target `t` within `all` (same trace).
fn related<'a>(rel: &str, t: &Span, all: &'a [Span]) -> Vec<&'a Span> {
    let Some(trace) = &t.trace else { return vec![] };
    all.iter()
        .filter(|s| s.trace.as_ref() == Some(trace))
        .filter(|s| match rel {
            "root" => s.parent.as_deref().is_none_or(str::is_empty),
            "parent" => t.parent.as_ref() == Some(&s.id),
            "child" => s.parent.as_ref() == Some(&t.id),
            _ => true,
        })
        .collect()
}

fn min_value(vals: impl Iterator<Item = Value>) -> Value {
    vals.filter(|v| !v.is_null())
        .min_by(|a, b| match (a, b) {
            (Value::String(x), Value::String(y)) => x.cmp(y),
            _ => a.as_f64().unwrap().total_cmp(&b.as_f64().unwrap()),
        })
        .unwrap_or(Value::Null)
}

/// COUNT per breakdown group of the model: `plain` filters on the target span, `rel` filters
/// per relation (all on one related span), combined by AND or OR; breakdowns plain or relational.
fn model(all: &[Span], plain: &[F], rel: &[(&str, Vec<F>)], or: bool, breakdowns: &[&str]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for t in all {
        let mut tests: Vec<bool> = plain.iter().map(|f| passes(t, f)).collect();
        for (r, fs) in rel {
            let prefix = r.trim_end_matches(|c: char| c.is_ascii_digit());
            let found = related(prefix, t, all).iter().any(|s| fs.iter().all(|f| passes(s, f)));
            tests.push(if *r == "none" { !found } else { found });
        }
        let keep = if or {
            tests.iter().any(|b| *b)
        } else {
            tests.iter().all(|b| *b)
        };
        if !keep {
            continue;
        }
        let key: Vec<Value> = breakdowns
            .iter()
            .map(|b| match b.split_once('.') {
                Some((r @ ("root" | "parent" | "child" | "any"), col)) => {
                    let fs: Vec<F> = rel
                        .iter()
                        .filter(|(x, _)| *x == r)
                        .flat_map(|(_, f)| f.clone())
                        .collect();
                    let matching = related(r, t, all)
                        .into_iter()
                        .filter(|s| fs.iter().all(|f| passes(s, f)));
                    min_value(matching.map(|s| get(s, col)))
                }
                _ => get(t, b),
            })
            .collect();
        *out.entry(Value::Array(key).to_string()).or_default() += 1;
    }
    out
}

fn to_json_filters(plain: &[F], rel: &[(&str, Vec<F>)]) -> Vec<Value> {
    let mut out: Vec<Value> = plain
        .iter()
        .map(|(c, o, v)| {
            if v.is_null() {
                json!({"column": c, "op": o})
            } else {
                json!({"column": c, "op": o, "value": v})
            }
        })
        .collect();
    for (r, fs) in rel {
        for (c, o, v) in fs {
            let col = format!("{r}.{c}");
            out.push(if v.is_null() {
                json!({"column": col, "op": o})
            } else {
                json!({"column": col, "op": o, "value": v})
            });
        }
    }
    out
}

#[tokio::test]
async fn relational_fields_match_a_brute_force_model_of_each_trace() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--flush-rows", "400"]).await;
    let http = reqwest::Client::new();
    let api = server.api(&http);
    let mut r = Rng::new(0x7EE5);
    let spans = gen_traces(&mut r);
    let batch: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut data = json!(s.fields);
            if let Some(t) = &s.trace {
                data["trace.trace_id"] = json!(t);
            }
            data["trace.span_id"] = json!(s.id);
            if let Some(p) = &s.parent {
                data["trace.parent_id"] = json!(p);
            }
            json!({"time": at(s.ts), "data": data})
        })
        .collect();
    assert_eq!(api.post_batch("spans", &batch).await, spans.len() as u64);

    let range = json!({"start_time": at(T0), "end_time": at(T0 + 120 * MINUTE), "limit": 1000});
    let err = json!(500);
    let cases: Vec<Case> = vec![
        (
            "root filter",
            vec![],
            vec![("root", vec![("name", "=", json!("GET /"))])],
            false,
            vec!["service.name"],
        ),
        ("root breakdown", vec![], vec![], false, vec!["root.name"]),
        (
            "root breakdown with a root filter",
            vec![],
            vec![("root", vec![("status", "=", json!(200))])],
            false,
            vec!["root.name", "name"],
        ),
        (
            "parent filter",
            vec![],
            vec![("parent", vec![("service.name", "=", json!("frontend"))])],
            false,
            vec!["name"],
        ),
        (
            "parent breakdown",
            vec![("name", "=", json!("db.query"))],
            vec![],
            false,
            vec!["parent.service.name"],
        ),
        (
            "child filter",
            vec![],
            vec![("child", vec![("status", ">=", err.clone())])],
            false,
            vec!["name"],
        ),
        (
            "child breakdown",
            vec![],
            vec![("child", vec![("status", ">=", err.clone())])],
            false,
            vec!["child.name"],
        ),
        (
            "any and a plain filter",
            vec![("name", "=", json!("db.query"))],
            vec![(
                "any",
                vec![("status", ">=", err.clone()), ("service.name", "=", json!("cart"))],
            )],
            false,
            vec![],
        ),
        (
            "any and any2, independent",
            vec![],
            vec![
                ("any", vec![("name", "=", json!("cache.get"))]),
                ("any2", vec![("status", "=", json!(503))]),
            ],
            false,
            vec!["service.name"],
        ),
        (
            "none: traces without a root",
            vec![],
            vec![("none", vec![("trace.parent_id", "does-not-exist", Value::Null)])],
            false,
            vec!["name"],
        ),
        (
            "OR of a plain and a relational filter",
            vec![("name", "=", json!("render"))],
            vec![("root", vec![("name", "=", json!("POST /cart"))])],
            true,
            vec!["name"],
        ),
        (
            "OR of two relations",
            vec![],
            vec![
                ("child", vec![("name", "=", json!("db.query"))]),
                ("none", vec![("status", ">=", err.clone())]),
            ],
            true,
            vec![],
        ),
    ];
    for (what, plain, rel, or, breakdowns) in cases {
        let mut spec = range.clone();
        spec["filters"] = json!(to_json_filters(&plain, &rel));
        spec["breakdowns"] = json!(breakdowns);
        if or {
            spec["filter_combination"] = json!("OR");
        }
        let (status, answer) = api.post_json("/api/query/spans", spec.clone()).await;
        assert_eq!(status, 200, "{what}: {answer}");
        let mut got = BTreeMap::new();
        for row in answer["data"]["results"].as_array().unwrap() {
            let key: Vec<Value> = breakdowns.iter().map(|b| row["data"][*b].clone()).collect();
            got.insert(Value::Array(key).to_string(), row["data"]["COUNT"].as_i64().unwrap());
        }
        let want = model(&spans, &plain, &rel, or, &breakdowns);
        assert_eq!(got, want, "{what}: {spec}");
        assert!(!want.is_empty(), "{what}: the case selects something");
    }

    // A relational filter of one calculation alone: COUNT counts every span, `in_cart` only
    // those whose root is "POST /cart", in the same groups.
    let mut spec = range.clone();
    spec["breakdowns"] = json!(["service.name"]);
    spec["calculations"] = json!([{"op": "COUNT"}, {"op": "COUNT", "name": "in_cart",
        "filters": [{"column": "root.name", "op": "=", "value": "POST /cart"}]}]);
    let (status, answer) = api.post_json("/api/query/spans", spec).await;
    assert_eq!(status, 200, "{answer}");
    let all = model(&spans, &[], &[], false, &["service.name"]);
    let cart = model(
        &spans,
        &[],
        &[("root", vec![("name", "=", json!("POST /cart"))])],
        false,
        &["service.name"],
    );
    for row in answer["data"]["results"].as_array().unwrap() {
        let key = Value::Array(vec![row["data"]["service.name"].clone()]).to_string();
        assert_eq!(row["data"]["COUNT"].as_i64(), all.get(&key).copied(), "{row}");
        assert_eq!(
            row["data"]["in_cart"].as_i64().unwrap_or(0),
            cart.get(&key).copied().unwrap_or(0),
            "{row}"
        );
    }
    assert_eq!(answer["data"]["results"].as_array().unwrap().len(), all.len());

    // Raw events under a relational filter are the target spans, with their own columns only.
    let mut req = range.clone();
    req["filters"] = json!([{"column": "root.name", "op": "=", "value": "GET /"}]);
    req["limit"] = json!(5000);
    let (status, ev) = api.post_json("/api/events/spans", req).await;
    assert_eq!(status, 200, "{ev}");
    let want = model(
        &spans,
        &[],
        &[("root", vec![("name", "=", json!("GET /"))])],
        false,
        &[],
    );
    assert_eq!(
        ev["events"].as_array().unwrap().len() as i64,
        want.values().sum::<i64>()
    );
    assert!(
        ev["events"][0]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("__")),
        "{}",
        ev["events"][0]
    );

    // What is refused, and why.
    let mut bad = range.clone();
    bad["breakdowns"] = json!(["none.name"]);
    let (status, e) = api.post_json("/api/query/spans", bad).await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("none."), "{e}");
}

#[tokio::test]
async fn trace_columns_come_from_the_dataset_definition() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    let api = server.api(&http);
    // Spans whose ids are in other columns than OpenTelemetry's names.
    let span = |t: &str, id: &str, parent: Option<&str>, name: &str, k: i64| {
        let mut d = json!({"traceId": t, "spanId": id, "name": name});
        if let Some(p) = parent {
            d["parentSpanId"] = json!(p);
        }
        json!({"time": at(T0 + k * MINUTE), "data": d})
    };
    let batch = vec![
        span("t1", "a", None, "GET /", 0),
        span("t1", "b", Some("a"), "db", 1),
        span("t2", "c", None, "POST /cart", 2),
        span("t2", "d", Some("c"), "db", 3),
        span("t2", "e", Some("d"), "cache", 4),
    ];
    assert_eq!(api.post_batch("custom", &batch).await, 5);
    let spec = json!({"start_time": at(T0), "end_time": at(T0 + 60 * MINUTE),
                      "filters": [{"column": "root.name", "op": "=", "value": "POST /cart"}], "breakdowns": ["parent.name"]});
    let (status, e) = api.post_json("/api/query/custom", spec.clone()).await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("dataset_definitions"), "{e}");

    let (status, def) =
        crate::harness::send_json(http.patch(server.at("/1/dataset_definitions/custom")).json(&json!({
            "trace_id": {"name": "traceId", "column_type": "column"},
            "span_id": {"name": "spanId"},
            "parent_id": {"name": "parentSpanId"},
            "service_name": {"name": "svc"},
        })))
        .await;
    assert_eq!(status, 200, "{def}");
    assert_eq!(def["trace_id"]["name"], "traceId");
    let (status, def) = crate::harness::send_json(http.get(server.at("/1/dataset_definitions/custom"))).await;
    assert_eq!((status, def["parent_id"]["name"].clone()), (200, json!("parentSpanId")));
    let (status, bad) = crate::harness::send_json(
        http.patch(server.at("/1/dataset_definitions/custom"))
            .json(&json!({"nope": {"name": "x"}})),
    )
    .await;
    assert_eq!(status, 400, "{bad}");

    let (status, r) = api.post_json("/api/query/custom", spec).await;
    assert_eq!(status, 200, "{r}");
    // Trace t2's spans: c (root, no parent), d (parent c), e (parent d).
    let got: BTreeMap<String, i64> = r["data"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["data"]["parent.name"].to_string(),
                row["data"]["COUNT"].as_i64().unwrap(),
            )
        })
        .collect();
    let want: BTreeMap<String, i64> = [
        ("null".to_string(), 1),
        ("\"POST /cart\"".to_string(), 1),
        ("\"db\"".to_string(), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "{r}");
}

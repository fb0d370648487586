//! Randomized differential test of the query API: random specs over events spread across many
//! segments and the write buffer, each answer compared with a brute-force model computed here,
//! independently of the engine.
//!
//! Float values are multiples of 1/8 so that every sum is exact whatever the order of addition:
//! orders and ties then compare exactly, and only rate means need a tolerance.

use crate::fixtures::T0;
use crate::harness::{Server, send_json};
use serde_json::{Map, Value, json};
use sonde_gen::Rng;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};

const SPAN: i64 = 3_600_000_000;
const EVENTS: usize = 6000;
const SPECS: usize = 1500;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Ty {
    Str,
    Int,
    Float,
    Bool,
}

const COLUMNS: &[(&str, Ty)] = &[
    ("svc", Ty::Str),
    ("region", Ty::Str),
    ("path", Ty::Str),
    ("status", Ty::Int),
    ("bytes", Ty::Int),
    ("dur", Ty::Float),
    ("num", Ty::Float), // int in the first half, float in the second: widened
    ("ok", Ty::Bool),
    ("duration_ms", Ty::Float),
];

pub(crate) struct Ev {
    pub(crate) ts: i64,
    rate: i64,
    f: HashMap<&'static str, Value>,
}

fn eighths(r: &mut Rng, max: u64) -> f64 {
    r.below(max * 8) as f64 / 8.0
}

/// [`EVENTS`] events over the hour from `t0`.
pub(crate) fn gen_events(r: &mut Rng, t0: i64) -> Vec<Ev> {
    (0..EVENTS)
        .map(|i| {
            let ts = t0 + (i as i64 * SPAN / EVENTS as i64) + r.below(SPAN as u64 / EVENTS as u64) as i64;
            let mut f = HashMap::new();
            if r.chance(0.95) {
                f.insert("svc", json!(*r.pick(&["api", "web", "db", "auth"])));
            }
            f.insert("region", json!(*r.pick(&["us", "eu", "ap"])));
            f.insert(
                "path",
                json!(*r.pick(&[
                    "/api/users/1",
                    "/api/orders",
                    "/health",
                    "/static/app.js",
                    "/api/users/22"
                ])),
            );
            f.insert("status", json!(*r.pick(&[200, 200, 201, 404, 500, 503])));
            if r.chance(0.8) {
                f.insert("bytes", json!(r.below(5000) as i64 - 100));
            }
            if r.chance(0.9) {
                f.insert("dur", json!(eighths(r, 2000)));
            }
            f.insert(
                "num",
                if i < EVENTS / 2 {
                    json!(r.below(50) as i64)
                } else {
                    json!(eighths(r, 50) + 0.5)
                },
            );
            f.insert("ok", json!(r.chance(0.7)));
            if r.chance(0.85) {
                f.insert("duration_ms", json!(eighths(r, 120_000)));
            }
            Ev {
                ts,
                rate: *r.pick(&[1, 1, 1, 2, 5, 10]),
                f,
            }
        })
        .collect()
}

fn ty_of(col: &str) -> Ty {
    COLUMNS
        .iter()
        .find(|(c, _)| *c == col)
        .map(|(_, t)| *t)
        .unwrap_or(Ty::Int)
}

fn value(e: &Ev, col: &str) -> Option<Value> {
    if col == "samplerate" {
        return Some(json!(e.rate));
    }
    // A float column holds ints sent before it widened; they read back as floats.
    e.f.get(col).map(|v| match (ty_of(col), v) {
        (Ty::Float, Value::Number(n)) => json!(n.as_f64().unwrap()),
        (_, v) => v.clone(),
    })
}

// ---------------------------------------------------------------------------------------------
// Random specs

fn literal_for(r: &mut Rng, col: &str) -> Value {
    match col {
        "svc" => json!(*r.pick(&["api", "web", "db", "auth", "nope"])),
        "region" => json!(*r.pick(&["us", "eu", "ap"])),
        "path" => json!(*r.pick(&["/api/users/1", "/api", "/health", "users", ".js", "/api/orders"])),
        "status" => json!(*r.pick(&[200, 201, 404, 500, 503, 300])),
        "bytes" => json!(r.below(5000) as i64 - 100),
        "dur" | "duration_ms" => json!(eighths(r, 2000)),
        "num" => json!(eighths(r, 50)),
        "samplerate" => json!(*r.pick(&[1, 2, 5, 10])),
        "ok" => json!(r.chance(0.5)),
        _ => json!(0),
    }
}

fn random_filter(r: &mut Rng) -> Value {
    let cols = [
        "svc",
        "region",
        "path",
        "status",
        "bytes",
        "dur",
        "num",
        "ok",
        "samplerate",
    ];
    let col = *r.pick(&cols);
    let ty = if col == "samplerate" { Ty::Int } else { ty_of(col) };
    let ops: &[&str] = match ty {
        Ty::Str => &[
            "=",
            "!=",
            ">",
            "<",
            "starts-with",
            "does-not-start-with",
            "ends-with",
            "does-not-end-with",
            "contains",
            "does-not-contain",
            "exists",
            "does-not-exist",
            "in",
            "not-in",
        ],
        Ty::Bool => &["=", "!=", "exists", "does-not-exist", "in", "not-in"],
        _ => &[
            "=",
            "!=",
            ">",
            ">=",
            "<",
            "<=",
            "exists",
            "does-not-exist",
            "in",
            "not-in",
        ],
    };
    let op = *r.pick(ops);
    match op {
        "exists" | "does-not-exist" => json!({"column": col, "op": op}),
        "in" | "not-in" => {
            let n = 1 + r.below(3) as usize;
            let vals: Vec<Value> = (0..n).map(|_| literal_for(r, col)).collect();
            json!({"column": col, "op": op, "value": vals})
        }
        _ => json!({"column": col, "op": op, "value": literal_for(r, col)}),
    }
}

fn random_calc(r: &mut Rng) -> Value {
    let numeric = ["status", "bytes", "dur", "num", "duration_ms", "samplerate"];
    let op = *r.pick(&[
        "COUNT",
        "COUNT",
        "SUM",
        "AVG",
        "MIN",
        "MAX",
        "COUNT_DISTINCT",
        "P50",
        "P90",
        "P99",
        "P001",
        "P999",
        "HEATMAP",
        "RATE_AVG",
        "RATE_SUM",
        "RATE_MAX",
        "CONCURRENCY",
    ]);
    match op {
        "COUNT" | "CONCURRENCY" => json!({"op": op}),
        "COUNT_DISTINCT" => json!({"op": op, "column": *r.pick(&["svc", "status", "path", "ok", "dur", "num"])}),
        _ => json!({"op": op, "column": *r.pick(&numeric)}),
    }
}

fn simple(op: &str) -> bool {
    !matches!(op, "HEATMAP" | "RATE_AVG" | "RATE_SUM" | "RATE_MAX" | "CONCURRENCY")
}

/// A random spec over (about) the hour from `t0`.
pub(crate) fn random_spec(r: &mut Rng, t0: i64) -> Value {
    let ncalc = 1 + r.below(3) as usize;
    let calcs: Vec<Value> = (0..ncalc).map(|_| random_calc(r)).collect();
    let nf = r.below(4) as usize;
    let filters: Vec<Value> = (0..nf).map(|_| random_filter(r)).collect();
    let nb = r.below(3) as usize;
    let mut breakdowns: Vec<&str> = Vec::new();
    for _ in 0..nb {
        let b = *r.pick(&["svc", "region", "path", "status", "ok", "num"]);
        if !breakdowns.contains(&b) {
            breakdowns.push(b);
        }
    }
    let start = t0 + r.below(SPAN as u64 / 2) as i64 - 300_000_000;
    let end = start + 60_000_000 + r.below(SPAN as u64) as i64;
    let mut spec = json!({
        "calculations": calcs,
        "filters": filters,
        "breakdowns": breakdowns,
        "start_time": sonde_gen::format_time(start),
        "end_time": sonde_gen::format_time(end),
    });
    if r.chance(0.3) {
        spec["filter_combination"] = json!("OR");
    }
    if r.chance(0.5) {
        spec["granularity"] = json!(*r.pick(&[30, 60, 120, 300, 600]));
    }
    if r.chance(0.6) {
        spec["limit"] = json!(1 + r.below(12));
    }
    let simple_calcs: Vec<&Value> = calcs.iter().filter(|c| simple(c["op"].as_str().unwrap())).collect();
    let mut orders = Vec::new();
    for _ in 0..r.below(3) {
        let dir = *r.pick(&["ascending", "descending"]);
        if r.chance(0.5) && !simple_calcs.is_empty() {
            let c = *r.pick(&simple_calcs);
            let mut o = json!({"op": c["op"], "order": dir});
            if let Some(col) = c.get("column") {
                o["column"] = col.clone();
            }
            orders.push(o);
        } else if !breakdowns.is_empty() {
            orders.push(json!({"column": *r.pick(&breakdowns), "order": dir}));
        }
    }
    spec["orders"] = json!(orders);
    if r.chance(0.3) && !simple_calcs.is_empty() {
        let c = *r.pick(&simple_calcs);
        let mut h = json!({"calculate_op": c["op"], "op": *r.pick(&["=", "!=", ">", ">=", "<", "<="]), "value": r.below(200) as i64});
        if let Some(col) = c.get("column") {
            h["column"] = col.clone();
        }
        spec["havings"] = json!([h]);
    }
    spec
}

// ---------------------------------------------------------------------------------------------
// The brute-force model

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn lit_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn cmp_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64().unwrap().total_cmp(&y.as_f64().unwrap()),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => panic!("comparing {a} with {b}"),
    }
}

fn literal_matches(v: &Value, lit: &Value, ty: Ty) -> Ordering {
    match ty {
        Ty::Str => v.as_str().unwrap().as_bytes().cmp(lit_text(lit).as_bytes()),
        Ty::Bool => v.as_bool().unwrap().cmp(&lit.as_bool().unwrap()),
        _ => num(v).unwrap().total_cmp(&num(lit).unwrap()),
    }
}

fn filter_matches(e: &Ev, f: &Value) -> bool {
    let col = f["column"].as_str().unwrap();
    let ty = if col == "samplerate" { Ty::Int } else { ty_of(col) };
    let op = f["op"].as_str().unwrap();
    let v = value(e, col);
    let negated = matches!(
        op,
        "!=" | "does-not-start-with" | "does-not-end-with" | "does-not-contain" | "not-in"
    );
    match op {
        "exists" => return v.is_some(),
        "does-not-exist" => return v.is_none(),
        _ => {}
    }
    let Some(v) = v else { return negated };
    let lit = &f["value"];
    let positive = match op {
        "=" | "!=" => literal_matches(&v, lit, ty) == Ordering::Equal,
        ">" => literal_matches(&v, lit, ty) == Ordering::Greater,
        ">=" => literal_matches(&v, lit, ty) != Ordering::Less,
        "<" => literal_matches(&v, lit, ty) == Ordering::Less,
        "<=" => literal_matches(&v, lit, ty) != Ordering::Greater,
        "starts-with" | "does-not-start-with" => v.as_str().unwrap().starts_with(&lit_text(lit)),
        "ends-with" | "does-not-end-with" => v.as_str().unwrap().ends_with(&lit_text(lit)),
        "contains" | "does-not-contain" => v.as_str().unwrap().contains(&lit_text(lit)),
        "in" | "not-in" => lit
            .as_array()
            .unwrap()
            .iter()
            .any(|l| literal_matches(&v, l, ty) == Ordering::Equal),
        other => panic!("op {other}"),
    };
    positive != negated
}

fn calc_key(c: &Value) -> String {
    match c.get("column").and_then(|c| c.as_str()) {
        Some(col) if !matches!(c["op"].as_str().unwrap(), "COUNT" | "CONCURRENCY") => {
            format!("{}({col})", c["op"].as_str().unwrap())
        }
        _ => c["op"].as_str().unwrap().to_string(),
    }
}

fn pct(op: &str) -> Option<f64> {
    Some(match op {
        "P001" => 0.001,
        "P50" => 0.5,
        "P90" => 0.9,
        "P99" => 0.99,
        "P999" => 0.999,
        _ => return None,
    })
}

fn int_result(col: &str) -> bool {
    matches!(col, "status" | "bytes" | "samplerate")
}

/// A plain aggregate over some events.
fn aggregate(op: &str, col: Option<&str>, evs: &[&Ev]) -> Value {
    let vals = |c: &str| -> Vec<(f64, i64)> {
        evs.iter()
            .filter_map(|e| value(e, c).map(|v| (num(&v).unwrap(), e.rate)))
            .collect()
    };
    match op {
        "COUNT" => json!(evs.iter().map(|e| e.rate).sum::<i64>()),
        "SUM" => {
            let c = col.unwrap();
            let v = vals(c);
            if v.is_empty() {
                Value::Null
            } else if int_result(c) {
                json!(v.iter().map(|(x, r)| *x as i64 * r).sum::<i64>())
            } else {
                json!(v.iter().map(|(x, r)| x * *r as f64).sum::<f64>())
            }
        }
        "AVG" => {
            let v = vals(col.unwrap());
            let d: i64 = v.iter().map(|(_, r)| r).sum();
            if d == 0 {
                Value::Null
            } else {
                json!(v.iter().map(|(x, r)| x * *r as f64).sum::<f64>() / d as f64)
            }
        }
        "MIN" => vals(col.unwrap())
            .iter()
            .map(|(x, _)| *x)
            .reduce(f64::min)
            .map_or(Value::Null, |x| json!(x)),
        "MAX" => vals(col.unwrap())
            .iter()
            .map(|(x, _)| *x)
            .reduce(f64::max)
            .map_or(Value::Null, |x| json!(x)),
        "COUNT_DISTINCT" => {
            let set: HashSet<String> = evs
                .iter()
                .filter_map(|e| value(e, col.unwrap()))
                .map(|v| match v {
                    Value::Number(n) => format!("{}", n.as_f64().unwrap()),
                    other => other.to_string(),
                })
                .collect();
            json!(set.len())
        }
        p => {
            let p = pct(p).unwrap();
            let mut v = vals(col.unwrap());
            if v.is_empty() {
                return Value::Null;
            }
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            let total: i64 = v.iter().map(|(_, r)| r).sum();
            let target = p * total as f64;
            let mut cum = 0i64;
            for (x, r) in &v {
                cum += r;
                if cum as f64 >= target {
                    return json!(x);
                }
            }
            json!(v.last().unwrap().0)
        }
    }
}

fn rate_base(op: &str) -> &'static str {
    match op {
        "RATE_AVG" => "AVG",
        "RATE_SUM" => "SUM",
        _ => "MAX",
    }
}

/// The model's answer: results per group, and per (bucket start, group) the series.
pub(crate) struct ModelOut {
    pub(crate) results: Vec<Map<String, Value>>,
    pub(crate) series: Vec<(i64, Map<String, Value>)>,
}

/// The brute-force answer to `spec` over `events`.
pub(crate) fn model(spec: &Value, events: &[Ev]) -> ModelOut {
    let start = sonde_model::time::parse_time_value(&spec["start_time"]).unwrap();
    let end = sonde_model::time::parse_time_value(&spec["end_time"]).unwrap();
    let span = end - start;
    let g_s = spec
        .get("granularity")
        .and_then(|g| g.as_i64())
        .unwrap_or_else(|| auto_granularity(span));
    let g_us = g_s * 1_000_000;
    let buckets = (span + g_us - 1) / g_us;
    let any = spec.get("filter_combination").is_some_and(|c| c == "OR");
    let filters = spec["filters"].as_array().unwrap();
    let matched: Vec<&Ev> = events
        .iter()
        .filter(|e| e.ts >= start && e.ts < end)
        .filter(|e| {
            if filters.is_empty() {
                true
            } else if any {
                filters.iter().any(|f| filter_matches(e, f))
            } else {
                filters.iter().all(|f| filter_matches(e, f))
            }
        })
        .collect();
    let breakdowns: Vec<&str> = spec["breakdowns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    let mut calcs: Vec<Value> = Vec::new();
    for c in spec["calculations"].as_array().unwrap() {
        if !calcs.iter().any(|x| calc_key(x) == calc_key(c)) {
            calcs.push(c.clone());
        }
    }
    let key_of = |e: &Ev| -> Vec<Value> { breakdowns.iter().map(|b| value(e, b).unwrap_or(Value::Null)).collect() };
    let mut groups: BTreeMap<String, (Vec<Value>, Vec<&Ev>)> = BTreeMap::new();
    for e in &matched {
        let k = key_of(e);
        groups
            .entry(Value::Array(k.clone()).to_string())
            .or_insert((k, vec![]))
            .1
            .push(e);
    }
    // Plain aggregates per group, then havings.
    // (breakdown values, plain aggregates, weighted count, events) per group.
    type Row<'a> = (Vec<Value>, Map<String, Value>, i64, Vec<&'a Ev>);
    let mut rows: Vec<Row> = Vec::new();
    'groups: for (_, (k, evs)) in groups {
        let mut m = Map::new();
        for c in &calcs {
            let op = c["op"].as_str().unwrap();
            if simple(op) {
                m.insert(
                    calc_key(c),
                    aggregate(op, c.get("column").and_then(|c| c.as_str()), &evs),
                );
            }
        }
        for h in spec.get("havings").and_then(|h| h.as_array()).into_iter().flatten() {
            let mut hc = json!({"op": h["calculate_op"]});
            if let Some(col) = h.get("column") {
                hc["column"] = col.clone();
            }
            let Some(v) = m[&calc_key(&hc)].as_f64() else {
                continue 'groups;
            };
            let x = h["value"].as_f64().unwrap();
            let keep = match h["op"].as_str().unwrap() {
                "=" => v == x,
                "!=" => v != x,
                ">" => v > x,
                ">=" => v >= x,
                "<" => v < x,
                _ => v <= x,
            };
            if !keep {
                continue 'groups;
            }
        }
        let count = evs.iter().map(|e| e.rate).sum();
        rows.push((k, m, count, evs));
    }
    // Orders, then breakdowns ascending as the tie-break; nulls last everywhere.
    let orders = spec["orders"].as_array().unwrap();
    let first_simple = calcs.iter().find(|c| simple(c["op"].as_str().unwrap()));
    let null_last = |a: &Value, b: &Value, desc: bool| -> Ordering {
        match (a.is_null(), b.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ => {
                let o = cmp_values(a, b);
                if desc { o.reverse() } else { o }
            }
        }
    };
    rows.sort_by(|a, b| {
        let mut o = Ordering::Equal;
        if orders.is_empty() {
            o = match first_simple {
                Some(c) => null_last(&a.1[&calc_key(c)], &b.1[&calc_key(c)], true),
                None => b.2.cmp(&a.2),
            };
        }
        for ord in orders {
            if o != Ordering::Equal {
                break;
            }
            let desc = ord.get("order").is_none_or(|d| d == "descending");
            o = if ord.get("op").is_some() {
                let k = calc_key(ord);
                null_last(&a.1[&k], &b.1[&k], desc)
            } else {
                let col = ord["column"].as_str().unwrap();
                let i = breakdowns.iter().position(|b| *b == col).unwrap();
                let desc = ord.get("order").is_some_and(|d| d == "descending");
                null_last(&a.0[i], &b.0[i], desc)
            };
        }
        for i in 0..breakdowns.len() {
            if o != Ordering::Equal {
                break;
            }
            o = null_last(&a.0[i], &b.0[i], false);
        }
        o
    });
    let limit = spec.get("limit").and_then(|l| l.as_u64()).unwrap_or(100) as usize;
    rows.truncate(limit);

    let bucket = |ts: i64| (ts - start) / g_us;
    let mut series: BTreeMap<(i64, usize), Map<String, Value>> = BTreeMap::new();
    let mut results: Vec<Map<String, Value>> = Vec::new();
    let heat_events: Vec<&Ev> = rows.iter().flat_map(|r| r.3.iter().copied()).collect();
    for (gi, (k, m, _, evs)) in rows.iter().enumerate() {
        let mut res = m.clone();
        for (i, b) in breakdowns.iter().enumerate() {
            res.insert(b.to_string(), k[i].clone());
        }
        let mut by_bucket: BTreeMap<i64, Vec<&Ev>> = BTreeMap::new();
        for e in evs {
            by_bucket.entry(bucket(e.ts)).or_default().push(e);
        }
        let has_series_agg = calcs.iter().any(|c| c["op"] != "HEATMAP");
        if has_series_agg {
            for (t, bevs) in &by_bucket {
                let row = series.entry((*t, gi)).or_default();
                for c in &calcs {
                    let op = c["op"].as_str().unwrap();
                    if simple(op) {
                        row.insert(
                            calc_key(c),
                            aggregate(op, c.get("column").and_then(|c| c.as_str()), bevs),
                        );
                    }
                }
            }
        }
        for c in &calcs {
            let op = c["op"].as_str().unwrap();
            let key = calc_key(c);
            match op {
                "RATE_AVG" | "RATE_SUM" | "RATE_MAX" => {
                    let col = c["column"].as_str();
                    let base: BTreeMap<i64, Option<f64>> = by_bucket
                        .iter()
                        .map(|(t, b)| (*t, aggregate(rate_base(op), col, b).as_f64()))
                        .collect();
                    let mut rates = Vec::new();
                    for (t, v) in &base {
                        let prev = base.get(&(t - 1)).copied().flatten();
                        let r = match (v, prev) {
                            (Some(v), Some(p)) => Some((v - p) / g_s as f64),
                            _ => None,
                        };
                        if let Some(r) = r {
                            rates.push(r);
                        }
                        series
                            .entry((*t, gi))
                            .or_default()
                            .insert(key.clone(), r.map_or(Value::Null, |r| json!(r)));
                    }
                    res.insert(
                        key,
                        if rates.is_empty() {
                            Value::Null
                        } else {
                            json!(rates.iter().sum::<f64>() / rates.len() as f64)
                        },
                    );
                }
                "CONCURRENCY" => {
                    let spans: Vec<&&Ev> = evs
                        .iter()
                        .filter(|e| {
                            value(e, "duration_ms")
                                .and_then(|d| d.as_f64())
                                .is_some_and(|d| d >= 0.0)
                        })
                        .collect();
                    let mut starts: HashMap<i64, i64> = HashMap::new();
                    let mut ends: HashMap<i64, i64> = HashMap::new();
                    for e in spans {
                        let d = value(e, "duration_ms").unwrap().as_f64().unwrap();
                        *starts.entry(bucket(e.ts)).or_default() += e.rate;
                        *ends.entry((e.ts + (d * 1000.0) as i64 - start) / g_us).or_default() += e.rate;
                    }
                    let (mut s, mut f, mut peak) = (0i64, 0i64, None::<i64>);
                    for t in 0..buckets {
                        s += starts.get(&t).copied().unwrap_or(0);
                        if t > 0 {
                            f += ends.get(&(t - 1)).copied().unwrap_or(0);
                        }
                        let now = s - f;
                        if now > 0 || series.contains_key(&(t, gi)) {
                            series.entry((t, gi)).or_default().insert(key.clone(), json!(now));
                            peak = Some(peak.map_or(now, |p| p.max(now)));
                        }
                    }
                    res.insert(key, peak.map_or(Value::Null, |p| json!(p)));
                }
                _ => {}
            }
        }
        results.push(res);
    }
    // HEATMAP: one value range over the events of the groups shown.
    for c in calcs.iter().filter(|c| c["op"] == "HEATMAP") {
        let col = c["column"].as_str().unwrap();
        let key = calc_key(c);
        let vals: Vec<f64> = heat_events
            .iter()
            .filter_map(|e| value(e, col))
            .map(|v| v.as_f64().unwrap())
            .collect();
        if rows.is_empty() {
            continue;
        }
        let (Some(lo), Some(hi)) = (
            vals.iter().copied().reduce(f64::min),
            vals.iter().copied().reduce(f64::max),
        ) else {
            for r in &mut results {
                r.insert(key.clone(), Value::Null);
            }
            continue;
        };
        let width = if hi > lo { (hi - lo) / 50.0 } else { 1.0 };
        for (gi, (_, _, _, evs)) in rows.iter().enumerate() {
            let mut total = vec![0i64; 50];
            let mut per: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
            for e in evs {
                let Some(v) = value(e, col) else { continue };
                let b = (((v.as_f64().unwrap() - lo) / width) as i64).clamp(0, 49) as usize;
                total[b] += e.rate;
                per.entry(bucket(e.ts)).or_insert_with(|| vec![0; 50])[b] += e.rate;
            }
            for (t, counts) in per {
                series.entry((t, gi)).or_default().insert(
                    key.clone(),
                    json!({"min": lo, "max": hi, "bucket_width": width, "counts": counts}),
                );
            }
            results[gi].insert(
                key.clone(),
                json!({"min": lo, "max": hi, "bucket_width": width, "counts": total}),
            );
        }
    }
    let series = series
        .into_iter()
        .map(|((t, gi), mut m)| {
            for (i, b) in breakdowns.iter().enumerate() {
                m.insert(b.to_string(), rows[gi].0[i].clone());
            }
            (start + t * g_us, m)
        })
        .collect();
    ModelOut { results, series }
}

fn auto_granularity(span_us: i64) -> i64 {
    let span_s = (span_us as f64 / 1e6).max(1.0);
    for g in [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200] {
        if span_s / g as f64 <= 300.0 {
            return g;
        }
    }
    unreachable!()
}

/// Equal values (numbers within a rounding error).
pub(crate) fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| close(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

/// Sends `events` to dataset `ds`.
pub(crate) async fn send(client: &reqwest::Client, server: &Server, ds: &str, events: &[Ev]) {
    for chunk in events.chunks(250) {
        let body: Vec<Value> = chunk
            .iter()
            .map(|e| json!({"data": e.f, "time": sonde_gen::format_time(e.ts), "samplerate": e.rate}))
            .collect();
        let (status, resp) = send_json(client.post(server.at(&format!("/1/batch/{ds}"))).json(&body)).await;
        assert_eq!(status, 200, "{resp}");
    }
}

/// Asserts that `got` (the engine's answer to `spec`) equals the brute-force model over
/// `events`; the number of result groups.
pub(crate) fn check_answer(i: usize, spec: &Value, got: &Value, events: &[Ev]) -> usize {
    let want = model(spec, events);
    let results: Vec<Map<String, Value>> = got["data"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"].as_object().unwrap().clone())
        .collect();
    assert_eq!(
        results.len(),
        want.results.len(),
        "spec {i} {spec}\n got {results:?}\nwant {:?}",
        want.results
    );
    for (g, w) in results.iter().zip(&want.results) {
        assert!(
            close(&Value::Object(g.clone()), &Value::Object(w.clone())),
            "spec {i} {spec}\n got {g:?}\nwant {w:?}"
        );
    }
    let series = got["data"]["series"].as_array().unwrap();
    assert_eq!(series.len(), want.series.len(), "spec {i} {spec}: series length");
    for (s, (t, w)) in series.iter().zip(&want.series) {
        assert_eq!(s["time"], json!(sonde_model::time::format_us(*t)), "spec {i} {spec}");
        assert!(
            close(&s["data"], &Value::Object(w.clone())),
            "spec {i} {spec}\n got {}\nwant {w:?}",
            s["data"]
        );
    }
    results.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_specs_match_a_brute_force_model() {
    // Twice: the second answers read the per-segment partials the first ones computed.
    random_specs_against_the_model(&[], 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_specs_match_a_brute_force_model_without_precomputed_partials() {
    random_specs_against_the_model(&["--partials-cache-bytes", "0"], 1).await;
}

async fn random_specs_against_the_model(flags: &[&str], passes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(99);
    let events = gen_events(&mut rng, T0);
    // Flushes every 700 events: many segments, the last events stay in the write buffer; no
    // compaction, so that the second pass reads the same segments as the first.
    let mut args = vec!["--flush-rows", "700", "--compaction-target-rows", "0"];
    args.extend(flags);
    let server = Server::start(dir.path(), &args).await;
    let client = reqwest::Client::new();
    // Chunks of exactly the flush size, each flushed before the next is sent: 8 segments, and
    // the last 400 events stay in the write buffer.
    for chunk in events.chunks(700) {
        send(&client, &server, "diff", chunk).await;
        if chunk.len() < 700 {
            break;
        }
        let mut flushed = false;
        for _ in 0..400 {
            let (_, d) = send_json(client.get(server.at("/api/datasets"))).await;
            if d["datasets"][0]["buffered_rows"] == 0 {
                flushed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(flushed, "a full buffer was not flushed");
    }
    let (_, d) = send_json(client.get(server.at("/api/datasets"))).await;
    assert_eq!(d["datasets"][0]["segments"], 8, "{d}");
    assert_eq!(d["datasets"][0]["buffered_rows"], 400, "{d}");

    let specs: Vec<Value> = (0..SPECS).map(|_| random_spec(&mut rng, T0)).collect();
    use futures::StreamExt;
    for pass in 0..passes {
        let answers = futures::stream::iter(specs.iter().enumerate())
            .map(|(i, spec)| {
                let req = client.post(server.at("/api/query/diff")).json(spec);
                async move { (i, send_json(req).await) }
            })
            .buffered(4)
            .collect::<Vec<_>>()
            .await;
        let mut checked_groups = 0usize;
        let mut precomputed = 0u64;
        for (i, (status, got)) in answers {
            let spec = &specs[i];
            assert_eq!(status, 200, "spec {i} {spec}: {got}");
            checked_groups += check_answer(i, spec, &got, &events);
            precomputed += got["meta"]["segments_precomputed"].as_u64().unwrap();
        }
        assert!(
            checked_groups > SPECS,
            "the random specs should produce groups, got {checked_groups}"
        );
        match (flags.is_empty(), pass) {
            (false, _) => assert_eq!(precomputed, 0, "partials are off"),
            (true, 0) => {}
            // A third of the specs roll up only (COUNT, SUM, AVG, MIN, MAX), and about one in
            // two of those has a segment wholly inside its range.
            (true, _) => assert!(
                precomputed > SPECS as u64 / 4,
                "a second pass reads partials: {precomputed}"
            ),
        }
    }
}

//! Differential test of the derived-column language: a few thousand generated expressions
//! (every function, infix forms, nulls, mixed types, a widened column) over generated events,
//! each evaluated here row at a time by a reference evaluator written from the README's rules,
//! and by the server through the API (as query-scoped `calculated_fields`, shown as columns of
//! the raw events, and as breakdowns); the answers must be equal.
//!
//! The reference walks the checked tree (`sonde_model::derived::check`: names, arity and the
//! types the language gives each node); evaluation, coercions, comparisons and every function
//! are its own.

use crate::fixtures::{MINUTE, T0, at};
use crate::harness::Server;
use serde_json::{Value, json};
use sonde_gen::Rng;
use sonde_model::ColumnType;
use sonde_model::derived::{Func, Lit, Typed, TypedNode, check, parse};
use std::collections::{BTreeMap, HashMap};

const EVENTS: usize = 240;
const EXPRESSIONS: usize = 2400;
const PER_QUERY: usize = 100;

struct Ev {
    ts_us: i64,
    fields: BTreeMap<&'static str, Value>,
}

fn gen_events(r: &mut Rng) -> Vec<Ev> {
    let strings = [
        "200",
        "abc",
        "",
        "true",
        "1.5",
        "Hello World",
        "GET /api/users/12",
        "é ü",
        "-3",
        "a1b22c333",
    ];
    let times = [
        "2026-01-01T00:00:01.5Z",
        "2025-12-31T23:00:00+02:00",
        "not a time",
        "2026-01-01T10:00:00Z",
    ];
    (0..EVENTS)
        .map(|n| {
            let mut f = BTreeMap::new();
            f.insert("id", json!(n));
            if r.chance(0.9) {
                f.insert("s", json!(*r.pick(&strings)));
            }
            if r.chance(0.85) {
                f.insert("i", json!(r.below(40) as i64 - 8));
            }
            if r.chance(0.85) {
                f.insert("f", json!((r.below(400) as f64 - 100.0) / 8.0));
            }
            if r.chance(0.9) {
                f.insert("b", json!(r.chance(0.5)));
            }
            // Integers first, floats later: the column widens to float.
            f.insert(
                "w",
                if n < EVENTS / 2 {
                    json!(r.below(20) as i64)
                } else {
                    json!(r.below(80) as f64 / 4.0)
                },
            );
            if r.chance(0.8) {
                f.insert("t", json!(*r.pick(&times)));
            }
            Ev {
                ts_us: T0 + n as i64 * MINUTE / 7,
                fields: f,
            }
        })
        .collect()
}

fn schema() -> BTreeMap<String, ColumnType> {
    [
        ("id", ColumnType::Int),
        ("s", ColumnType::String),
        ("i", ColumnType::Int),
        ("f", ColumnType::Float),
        ("b", ColumnType::Bool),
        ("w", ColumnType::Float),
        ("t", ColumnType::String),
        ("samplerate", ColumnType::Int),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Expressions

#[derive(Clone, Copy, PartialEq)]
enum Want {
    Any,
    Num,
    Str,
    Bool,
}

fn generate(r: &mut Rng, depth: u32, want: Want) -> String {
    if depth == 0 || r.chance(0.3) {
        return leaf(r, want);
    }
    let d = depth - 1;
    let any = |r: &mut Rng| generate(r, d, Want::Any);
    let num = |r: &mut Rng| generate(r, d, Want::Num);
    let st = |r: &mut Rng| generate(r, d, Want::Str);
    let bo = |r: &mut Rng| generate(r, d, Want::Bool);
    let pick = match want {
        Want::Num => *r.pick(&[
            "SUM",
            "SUB",
            "MUL",
            "DIV",
            "MOD",
            "MIN",
            "MAX",
            "LOG10",
            "BUCKET",
            "INT",
            "FLOAT",
            "LENGTH",
            "REG_COUNT",
            "UNIX_TIMESTAMP",
            "EVENT_TIMESTAMP",
            "IF",
            "+",
            "*",
            "-",
            "/",
        ]),
        Want::Str => *r.pick(&[
            "STRING",
            "CONCAT",
            "TO_LOWER",
            "REG_VALUE",
            "FORMAT_TIME",
            "IF",
            "SWITCH",
            "COALESCE",
            "MIN",
        ]),
        Want::Bool => *r.pick(&[
            "LT",
            "LTE",
            "GT",
            "GTE",
            "EQUALS",
            "IN",
            "EXISTS",
            "NOT",
            "AND",
            "OR",
            "BOOL",
            "STARTS_WITH",
            "ENDS_WITH",
            "CONTAINS",
            "REG_MATCH",
            "<",
            ">=",
            "=",
            "!=",
            "!",
            "AND_OP",
            "OR_OP",
        ]),
        Want::Any => *r.pick(&[
            "IF", "SWITCH", "COALESCE", "SUM", "CONCAT", "EQUALS", "INT", "BOOL", "MAX",
        ]),
    };
    match pick {
        "SUM" | "MUL" => {
            let n = 1 + r.below(3) as usize;
            let args: Vec<String> = (0..n).map(|_| if r.chance(0.2) { any(r) } else { num(r) }).collect();
            format!("{pick}({})", args.join(", "))
        }
        "SUB" | "DIV" | "MOD" => format!("{pick}({}, {})", num(r), num(r)),
        "+" | "*" | "-" | "/" => format!("({} {pick} {})", num(r), num(r)),
        "MIN" | "MAX" => {
            let n = 1 + r.below(3) as usize;
            let args: Vec<String> = if want == Want::Str {
                (0..n).map(|_| st(r)).collect()
            } else {
                (0..n).map(|_| num(r)).collect()
            };
            format!("{pick}({})", args.join(", "))
        }
        "LOG10" | "INT" | "FLOAT" => format!("{pick}({})", if r.chance(0.3) { any(r) } else { num(r) }),
        "BUCKET" => {
            if r.chance(0.5) {
                format!("BUCKET({}, {})", num(r), r.pick(&["2.5", "5", "0.5", "10"]))
            } else {
                format!("BUCKET({}, 5, -10, 20)", num(r))
            }
        }
        "LENGTH" => {
            if r.chance(0.5) {
                format!("LENGTH({}, \"bytes\")", st(r))
            } else {
                format!("LENGTH({})", st(r))
            }
        }
        "REG_COUNT" | "REG_VALUE" | "REG_MATCH" => {
            let re = *r.pick(&[
                r"`\d+`",
                r"`(\d)(\d)?`",
                r"`[a-z]+`",
                r"`^$`",
                r"`(?i)hello (\w+)`",
                r#""l+""#,
            ]);
            format!("{pick}({}, {re})", if r.chance(0.8) { st(r) } else { any(r) })
        }
        "UNIX_TIMESTAMP" => format!(
            "UNIX_TIMESTAMP({})",
            if r.chance(0.7) { "$t".to_string() } else { st(r) }
        ),
        "EVENT_TIMESTAMP" => "EVENT_TIMESTAMP()".into(),
        "FORMAT_TIME" => {
            let fmt = *r.pick(&[r#""%Y-%m-%d %H:%M""#, r#""%H""#, r#"`%a %j %s`"#]);
            let ts = if r.chance(0.6) {
                "EVENT_TIMESTAMP()".to_string()
            } else {
                num(r)
            };
            if r.chance(0.5) {
                format!("FORMAT_TIME({fmt}, {ts}, \"Australia/Sydney\")")
            } else {
                format!("FORMAT_TIME({fmt}, {ts})")
            }
        }
        "STRING" => format!("STRING({})", any(r)),
        "CONCAT" => {
            let n = 1 + r.below(3) as usize;
            let args: Vec<String> = (0..n).map(|_| any(r)).collect();
            format!("CONCAT({})", args.join(", "))
        }
        "TO_LOWER" => format!("TO_LOWER({})", st(r)),
        "IF" => {
            let w = if want == Want::Any {
                *r.pick(&[Want::Num, Want::Str, Want::Any])
            } else {
                want
            };
            let mut out = format!(
                "IF({}, {}",
                if r.chance(0.7) { bo(r) } else { any(r) },
                generate(r, d, w)
            );
            if r.chance(0.4) {
                out += &format!(", {}, {}", bo(r), generate(r, d, w));
            }
            if r.chance(0.6) {
                out += &format!(", {}", generate(r, d, w));
            }
            out + ")"
        }
        "SWITCH" => {
            let mut out = format!("SWITCH({}, \"abc\", {}, \"200\", {}", st(r), st(r), st(r));
            if r.chance(0.5) {
                out += &format!(", {}", st(r));
            }
            out + ")"
        }
        "COALESCE" => {
            let n = 1 + r.below(3) as usize;
            let args: Vec<String> = (0..n).map(|_| if want == Want::Str { st(r) } else { any(r) }).collect();
            format!("COALESCE({})", args.join(", "))
        }
        "LT" | "LTE" | "GT" | "GTE" | "EQUALS" => format!("{pick}({}, {})", any(r), any(r)),
        "<" | ">=" | "=" | "!=" => format!("({} {pick} {})", any(r), any(r)),
        "IN" => format!("IN({}, {}, {})", any(r), leaf(r, Want::Any), leaf(r, Want::Any)),
        "EXISTS" | "NOT" | "BOOL" => format!("{pick}({})", any(r)),
        "!" => format!("!{}", bo(r)),
        "AND" | "OR" => {
            let n = 1 + r.below(3) as usize;
            let args: Vec<String> = (0..n).map(|_| if r.chance(0.7) { bo(r) } else { any(r) }).collect();
            format!("{pick}({})", args.join(", "))
        }
        "AND_OP" => format!("({} AND {})", bo(r), bo(r)),
        "OR_OP" => format!("({} OR {})", bo(r), bo(r)),
        "STARTS_WITH" | "ENDS_WITH" | "CONTAINS" => {
            let p = *r.pick(&[r#""a""#, r#""""#, r#""200""#, r#""World""#, "$s"]);
            format!("{pick}({}, {p})", if r.chance(0.8) { st(r) } else { any(r) })
        }
        other => unreachable!("{other}"),
    }
}

fn leaf(r: &mut Rng, want: Want) -> String {
    let options: &[&str] = match want {
        Want::Num => &[
            "$i",
            "$f",
            "$w",
            "$id",
            "3",
            "-2",
            "0",
            "0.25",
            "-1.5",
            "$samplerate",
            "$s",
        ],
        Want::Str => &[
            "$s",
            "$t",
            "\"abc\"",
            "\"\"",
            "\"200\"",
            "`X y`",
            "\"-3\"",
            "\"\\u00e9\"",
        ],
        Want::Bool => &["$b", "true", "false", "$i", "$s"],
        Want::Any => &[
            "$s", "$i", "$f", "$b", "$w", "null", "1", "2.5", "\"true\"", "\"200\"", "200", "true",
        ],
    };
    r.pick(options).to_string()
}

// ---------------------------------------------------------------------------------------------
// The reference evaluator

#[derive(Debug, Clone, PartialEq)]
enum V {
    Null,
    B(bool),
    I(i64),
    F(f64),
    S(String),
}

fn field(e: &Ev, col: &str) -> V {
    if col == "samplerate" {
        return V::I(1);
    }
    match (schema()[col], e.fields.get(col)) {
        (_, None) => V::Null,
        (ColumnType::Float, Some(v)) => V::F(v.as_f64().unwrap()),
        (ColumnType::Int, Some(v)) => V::I(v.as_i64().unwrap()),
        (ColumnType::Bool, Some(v)) => V::B(v.as_bool().unwrap()),
        (ColumnType::String, Some(v)) => V::S(v.as_str().unwrap().to_string()),
    }
}

fn truthy(v: &V) -> bool {
    match v {
        V::B(b) => *b,
        V::I(i) => *i != 0,
        V::F(f) => *f != 0.0,
        V::S(s) => s == "true",
        V::Null => false,
    }
}

fn text(v: &V) -> Option<String> {
    match v {
        V::Null => None,
        V::B(b) => Some(b.to_string()),
        V::I(i) => Some(i.to_string()),
        V::F(f) => Some(format!("{f}")),
        V::S(s) => Some(s.clone()),
    }
}

fn num(v: &V) -> Option<f64> {
    match v {
        V::Null => None,
        V::B(b) => Some(if *b { 1.0 } else { 0.0 }),
        V::I(i) => Some(*i as f64),
        V::F(f) => Some(*f),
        V::S(s) => Some(s.parse::<f64>().ok().filter(|f| f.is_finite()).unwrap_or(0.0)),
    }
}

/// `v` as a value of `to` (the widening conversions).
fn to(v: V, to: Option<ColumnType>) -> V {
    match (v, to) {
        (V::Null, _) | (_, None) => V::Null,
        (v, Some(ColumnType::String)) => V::S(text(&v).unwrap()),
        (V::B(b), Some(ColumnType::Int)) => V::I(b as i64),
        (v @ (V::B(_) | V::I(_)), Some(ColumnType::Float)) => V::F(num(&v).unwrap()),
        (v, _) => v,
    }
}

fn compare(op: Func, a: &V, b: &V) -> bool {
    use std::cmp::Ordering::*;
    let ord = match (a, b) {
        (V::I(x), V::I(y)) => x.cmp(y),
        (V::I(_) | V::F(_), V::I(_) | V::F(_)) => match num(a).unwrap().partial_cmp(&num(b).unwrap()) {
            Some(o) => o,
            None => return false,
        },
        (V::S(x), V::S(y)) => x.as_bytes().cmp(y.as_bytes()),
        (V::B(x), V::B(y)) if op == Func::Equals => x.cmp(y),
        _ => return false,
    };
    match op {
        Func::Lt => ord == Less,
        Func::Lte => ord != Greater,
        Func::Gt => ord == Greater,
        Func::Gte => ord != Less,
        _ => ord == Equal,
    }
}

fn non_empty(v: &V) -> bool {
    !matches!(v, V::Null) && *v != V::S(String::new())
}

fn eval(t: &Typed, e: &Ev) -> V {
    let args = match &t.node {
        TypedNode::Column(c) => return field(e, c),
        TypedNode::Lit(l) => {
            return match l {
                Lit::Null => V::Null,
                Lit::Bool(b) => V::B(*b),
                Lit::Int(i) => V::I(*i),
                Lit::Float(f) => V::F(*f),
                Lit::Str(s) => V::S(s.clone()),
            };
        }
        TypedNode::Call(_, args) => args,
    };
    let TypedNode::Call(func, _) = &t.node else {
        unreachable!()
    };
    let ev = |i: usize| eval(&args[i], e);
    let f = |i: usize| num(&ev(i));
    let float = |x: Option<f64>| x.map_or(V::Null, V::F);
    let lit_str = |i: usize| args[i].as_str().unwrap().to_string();
    match func {
        Func::If => {
            let mut k = 0;
            while k + 1 < args.len() {
                if truthy(&ev(k)) {
                    return to(ev(k + 1), t.ty);
                }
                k += 2;
            }
            if args.len() % 2 == 1 {
                to(ev(args.len() - 1), t.ty)
            } else {
                V::Null
            }
        }
        Func::Switch => {
            let x = ev(0);
            let mut k = 1;
            while k + 1 < args.len() {
                if compare(Func::Equals, &x, &ev(k)) {
                    return to(ev(k + 1), t.ty);
                }
                k += 2;
            }
            if (args.len() - 1) % 2 == 1 {
                to(ev(args.len() - 1), t.ty)
            } else {
                V::Null
            }
        }
        Func::Coalesce => (0..args.len()).map(ev).find(non_empty).map_or(V::Null, |v| to(v, t.ty)),
        Func::Lt | Func::Lte | Func::Gt | Func::Gte | Func::Equals => V::B(compare(*func, &ev(0), &ev(1))),
        Func::NotEquals => V::B(!compare(Func::Equals, &ev(0), &ev(1))),
        Func::In => V::B((1..args.len()).any(|k| compare(Func::Equals, &ev(0), &ev(k)))),
        Func::Exists => V::B(ev(0) != V::Null),
        Func::Not => V::B(!truthy(&ev(0))),
        Func::And => V::B((0..args.len()).all(|k| truthy(&ev(k)))),
        Func::Or => V::B((0..args.len()).any(|k| truthy(&ev(k)))),
        Func::Bool => V::B(truthy(&ev(0))),
        Func::Sum => float(
            (0..args.len())
                .map(f)
                .try_fold(None::<f64>, |acc, x| x.map(|x| Some(acc.map_or(x, |a| a + x))))
                .flatten(),
        ),
        Func::Mul => float(
            (0..args.len())
                .map(f)
                .try_fold(None::<f64>, |acc, x| x.map(|x| Some(acc.map_or(x, |a| a * x))))
                .flatten(),
        ),
        Func::Sub => float(f(0).zip(f(1)).map(|(a, b)| a - b)),
        Func::Div => float(f(0).zip(f(1)).filter(|(_, b)| *b != 0.0).map(|(a, b)| a / b)),
        Func::Mod => float(f(0).zip(f(1)).filter(|(_, b)| *b != 0.0).map(|(a, b)| a % b)),
        Func::Min | Func::Max => {
            let vals: Vec<V> = (0..args.len())
                .filter(|k| args[*k].ty.is_some())
                .map(|k| to(ev(k), t.ty))
                .filter(|v| *v != V::Null)
                .collect();
            let key = |a: &V, b: &V| match (a, b) {
                (V::I(x), V::I(y)) => x.cmp(y),
                (V::F(x), V::F(y)) => x.total_cmp(y),
                (V::S(x), V::S(y)) => x.as_bytes().cmp(y.as_bytes()),
                _ => unreachable!("one type"),
            };
            let best = if *func == Func::Min {
                vals.into_iter().min_by(key)
            } else {
                vals.into_iter().max_by(key)
            };
            best.unwrap_or(V::Null)
        }
        Func::Log10 => float(f(0).filter(|x| *x > 0.0).map(f64::log10)),
        Func::Bucket => {
            let size = args[1].as_f64().unwrap();
            let range = (args.len() == 4).then(|| (args[2].as_f64().unwrap(), args[3].as_f64().unwrap()));
            float(f(0).map(|x| match range {
                None => (x / size).floor() * size,
                Some((lo, hi)) => lo + ((x.clamp(lo, hi) - lo) / size).floor() * size,
            }))
        }
        Func::Int => match ev(0) {
            V::Null => V::Null,
            V::I(i) => V::I(i),
            V::B(b) => V::I(b as i64),
            v => {
                let x = num(&v).unwrap().trunc();
                if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&x) {
                    V::I(x as i64)
                } else {
                    V::Null
                }
            }
        },
        Func::Float => float(f(0)),
        Func::String => V::S(text(&ev(0)).unwrap_or_default()),
        Func::Concat => V::S((0..args.len()).filter_map(|k| text(&ev(k))).collect()),
        Func::ToLower => match ev(0) {
            V::S(s) => V::S(s.to_lowercase()),
            _ => V::Null,
        },
        Func::StartsWith | Func::EndsWith | Func::Contains => match (ev(0), ev(1)) {
            (V::S(s), V::S(p)) => V::B(match func {
                Func::StartsWith => s.starts_with(&p),
                Func::EndsWith => s.ends_with(&p),
                _ => s.contains(&p),
            }),
            _ => V::B(false),
        },
        Func::Length => match ev(0) {
            V::S(s) if args.len() == 2 && lit_str(1) == "bytes" => V::I(s.len() as i64),
            V::S(s) => V::I(s.chars().count() as i64),
            _ => V::Null,
        },
        Func::RegMatch | Func::RegValue | Func::RegCount => {
            let re = regex::Regex::new(&lit_str(1)).unwrap();
            match (func, ev(0)) {
                (Func::RegMatch, V::S(s)) => V::B(!s.is_empty() && re.is_match(&s)),
                (Func::RegMatch, _) => V::B(false),
                (Func::RegValue, V::S(s)) if !s.is_empty() => re
                    .captures(&s)
                    .and_then(|c| if c.len() > 1 { c.get(1) } else { c.get(0) })
                    .map_or(V::Null, |m| V::S(m.as_str().to_string())),
                (Func::RegValue, _) => V::Null,
                (_, V::S(s)) => V::I(re.find_iter(&s).count() as i64),
                _ => V::Null,
            }
        }
        Func::UnixTimestamp => match ev(0) {
            V::S(s) => chrono::DateTime::parse_from_rfc3339(&s).map_or(V::Null, |d| {
                V::F(d.timestamp() as f64 + f64::from(d.timestamp_subsec_nanos()) / 1e9)
            }),
            _ => V::Null,
        },
        Func::EventTimestamp => V::F(e.ts_us as f64 / 1e6),
        Func::IngestTimestamp => unreachable!("refused"),
        Func::FormatTime => {
            let Some(secs) = f(1).filter(|s| s.is_finite()) else {
                return V::Null;
            };
            let whole = secs.floor();
            let nanos = ((secs - whole) * 1e9).round().min(999_999_999.0) as u32;
            let Some(utc) = chrono::DateTime::from_timestamp(whole as i64, nanos) else {
                return V::Null;
            };
            let fmt = lit_str(0);
            V::S(match args.get(2) {
                Some(z) => {
                    let tz: chrono_tz::Tz = z.as_str().unwrap().parse().unwrap();
                    utc.with_timezone(&tz).format(&fmt).to_string()
                }
                None => utc.format(&fmt).to_string(),
            })
        }
    }
}

fn as_json(v: &V) -> Value {
    match v {
        V::Null => Value::Null,
        V::B(b) => json!(b),
        V::I(i) => json!(i),
        V::F(f) if f.is_finite() => json!(f),
        V::F(_) => Value::Null,
        V::S(s) => json!(s),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        _ => a == b,
    }
}

#[tokio::test]
async fn expressions_match_a_row_at_a_time_reference() {
    let dir = tempfile::tempdir().unwrap();
    // The first half is flushed into segments (at 120 rows), the second stays buffered.
    let server = Server::start(dir.path(), &["--flush-rows", "120"]).await;
    let http = reqwest::Client::new();
    let api = server.api(&http);
    let mut r = Rng::new(0xD3_21_7E);
    let events = gen_events(&mut r);
    let batch = |evs: &[Ev]| -> Vec<Value> {
        evs.iter()
            .map(|e| json!({"time": at(e.ts_us), "data": e.fields}))
            .collect()
    };
    assert_eq!(
        api.post_batch("dc", &batch(&events[..EVENTS / 2])).await,
        (EVENTS / 2) as u64
    );
    api.wait_flushed("dc").await;
    assert_eq!(
        api.post_batch("dc", &batch(&events[EVENTS / 2..EVENTS - 1])).await,
        (EVENTS / 2 - 1) as u64
    );

    let schema = schema();
    let mut exprs: Vec<(String, Typed)> = Vec::new();
    let mut refused = 0;
    while exprs.len() < EXPRESSIONS {
        let want = *r.pick(&[Want::Any, Want::Num, Want::Str, Want::Bool]);
        let text = generate(&mut r, 4, want);
        match parse(&text).and_then(|a| check(&a, &schema)) {
            Ok(t) => exprs.push((text, t)),
            Err(_) => refused += 1,
        }
    }
    assert_eq!(api.post_batch("dc", &batch(&events[EVENTS - 1..])).await, 1);
    assert!(
        refused < EXPRESSIONS / 2,
        "the generator mostly writes valid expressions ({refused} refused)"
    );
    let mut funcs_seen = std::collections::HashSet::new();
    for (_, t) in &exprs {
        for f in sonde_model::derived::FUNCTIONS {
            if let Some(func) = Func::by_name(f.name).filter(|g| t.calls(*g)) {
                funcs_seen.insert(func.name());
            }
        }
    }
    assert!(
        funcs_seen.len() >= 38,
        "every function but INGEST_TIMESTAMP is exercised: {funcs_seen:?}"
    );

    let range = json!({"start_time": at(T0), "end_time": at(T0 + 3_600_000_000)});
    let mut checked = 0;
    for (q, chunk) in exprs.chunks(PER_QUERY).enumerate() {
        let fields: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(k, (text, _))| json!({"name": format!("d{k}"), "expression": text}))
            .collect();
        let mut columns = vec![json!("id")];
        columns.extend((0..chunk.len()).map(|k| json!(format!("d{k}"))));
        let mut body = range.clone();
        body["calculated_fields"] = json!(fields);
        body["columns"] = json!(columns);
        body["limit"] = json!(1000);
        let (status, answer) = api.post_json("/api/events/dc", body).await;
        assert_eq!(status, 200, "{answer}");
        let rows = answer["events"].as_array().unwrap();
        assert_eq!(rows.len(), EVENTS);
        let by_id: HashMap<i64, &Value> = rows.iter().map(|row| (row["id"].as_i64().unwrap(), row)).collect();
        for e in &events {
            let row = by_id[&e.fields["id"].as_i64().unwrap()];
            for (k, (text, t)) in chunk.iter().enumerate() {
                let want = as_json(&eval(t, e));
                let got = row.get(format!("d{k}")).cloned().unwrap_or(Value::Null);
                assert!(
                    same(&got, &want),
                    "{text}\n  event {:?}\n  engine {got}, reference {want}",
                    e.fields
                );
                checked += 1;
            }
        }

        // The same fields as breakdowns: counts per value, and a filter on one of them.
        let k = q % chunk.len();
        let mut spec = range.clone();
        spec["calculated_fields"] = json!(fields);
        spec["breakdowns"] = json!([format!("d{k}")]);
        spec["limit"] = json!(1000);
        let (status, answer) = api.post_json("/api/query/dc", spec).await;
        assert_eq!(status, 200, "{answer}");
        let mut want: HashMap<String, i64> = HashMap::new();
        for e in &events {
            *want.entry(as_json(&eval(&chunk[k].1, e)).to_string()).or_default() += 1;
        }
        let mut got: HashMap<String, i64> = HashMap::new();
        for row in answer["data"]["results"].as_array().unwrap() {
            let v = &row["data"][format!("d{k}")];
            // Floats print alike on both sides once parsed back from JSON.
            let key = match v.as_f64() {
                Some(x) if v.is_f64() => json!(x).to_string(),
                _ => v.to_string(),
            };
            got.insert(key, row["data"]["COUNT"].as_i64().unwrap());
        }
        assert_eq!(got, want, "breakdown by {}", chunk[k].0);
    }
    assert_eq!(checked, EXPRESSIONS * EVENTS);
}

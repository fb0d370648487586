//! Flattening: a JSON object becomes a flat list of dotted field names with typed values.
//!
//! `{"http": {"status": 200, "tags": ["a"]}}` becomes `http.status = 200` (int) and
//! `http.tags = "[\"a\"]"` (string): objects are flattened up to [`Limits::flatten_depth`]
//! levels, arrays and deeper objects are kept as their JSON text, `null` fields are dropped
//! (absence is null). Every limit is checked here, and an error names the limit.

use crate::{EventError, FieldValue, SAMPLE_RATE_COLUMN, TIMESTAMP_COLUMN};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Per-event limits. Each has a name used in error messages and in configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest accepted event, in bytes of its encoded form (`max_event_bytes`).
    pub max_event_bytes: usize,
    /// Most fields in one event after flattening (`max_fields_per_event`).
    pub max_fields_per_event: usize,
    /// Longest field name after flattening, in bytes (`max_field_name_len`).
    pub max_field_name_len: usize,
    /// Longest string value, in bytes (`max_string_len`).
    pub max_string_len: usize,
    /// Deepest nesting of objects and arrays in an event (`max_depth`).
    pub max_depth: usize,
    /// Objects nested up to this many levels become dotted columns; deeper ones are kept as
    /// JSON text (`flatten_depth`).
    pub flatten_depth: usize,
}

impl Limits {
    /// The defaults, each defined here once (the command line shows and uses these).
    pub const DEFAULT: Limits = Limits {
        max_event_bytes: 1024 * 1024,
        max_fields_per_event: 2000,
        max_field_name_len: 256,
        max_string_len: 64 * 1024,
        max_depth: 64,
        flatten_depth: 5,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

impl Limits {
    /// The error for a body nested deeper than the JSON parser allows (it stops at 128 levels,
    /// before our own `max_depth` could be checked).
    pub fn depth_error(&self) -> EventError {
        EventError::Limit {
            what: "event is nested deeper than the parser follows".to_string(),
            limit: self.max_depth,
            name: "--max-depth / SONDE_MAX_DEPTH",
        }
    }

    /// Checks an event's nesting depth (a flat object is 1).
    pub fn check_depth(&self, depth: usize) -> Result<(), EventError> {
        if depth > self.max_depth {
            return Err(EventError::Limit {
                what: format!("event is nested {depth} levels deep"),
                limit: self.max_depth,
                name: "--max-depth / SONDE_MAX_DEPTH",
            });
        }
        Ok(())
    }

    /// Checks the length of field `name`'s string value.
    pub fn check_string(&self, name: &str, len: usize) -> Result<(), EventError> {
        if len > self.max_string_len {
            return Err(EventError::Limit {
                what: format!("field {:?} has a string of {len} bytes", truncate(name)),
                limit: self.max_string_len,
                name: "--max-string-len / SONDE_MAX_STRING_LEN",
            });
        }
        Ok(())
    }

    /// Checks a flattened field name's length.
    pub fn check_field_name(&self, name: &str) -> Result<(), EventError> {
        if name.len() > self.max_field_name_len {
            return Err(EventError::Limit {
                what: format!("field name {:?} is {} bytes long", truncate(name), name.len()),
                limit: self.max_field_name_len,
                name: "--max-field-name-len / SONDE_MAX_FIELD_NAME_LEN",
            });
        }
        Ok(())
    }

    /// Checks that an event holding `fields` fields may take one more.
    pub fn check_room_for_field(&self, fields: usize) -> Result<(), EventError> {
        if fields >= self.max_fields_per_event {
            return Err(EventError::Limit {
                what: format!("event has more than {} fields", self.max_fields_per_event),
                limit: self.max_fields_per_event,
                name: "--max-fields / SONDE_MAX_FIELDS",
            });
        }
        Ok(())
    }

    /// Checks an event's encoded size.
    pub fn check_event_bytes(&self, bytes: usize) -> Result<(), EventError> {
        if bytes > self.max_event_bytes {
            return Err(EventError::Limit {
                what: format!("event is {bytes} bytes"),
                limit: self.max_event_bytes,
                name: "--max-event-bytes / SONDE_MAX_EVENT_BYTES",
            });
        }
        Ok(())
    }
}

/// Flattens one event's data object. `data` must be a JSON object.
pub fn flatten_event(data: &Value, limits: &Limits) -> Result<Vec<(String, FieldValue)>, EventError> {
    let Value::Object(map) = data else {
        return Err(EventError::NotAnObject(json_kind(data)));
    };
    limits.check_depth(value_depth(data))?;
    let mut out = Flattened {
        fields: Vec::with_capacity(map.len()),
        index: HashMap::new(),
        limits,
    };
    out.object("", map, 1)?;
    Ok(out.fields)
}

struct Flattened<'a> {
    fields: Vec<(String, FieldValue)>,
    /// Position of each name in `fields`, so that a name reached twice (`"a.b"` and
    /// `{"a":{"b":…}}`) keeps one entry: the later value wins, as in a JSON object.
    index: HashMap<String, usize>,
    limits: &'a Limits,
}

impl Flattened<'_> {
    fn object(&mut self, prefix: &str, map: &Map<String, Value>, level: usize) -> Result<(), EventError> {
        for (key, value) in map {
            if key.is_empty() {
                // A column without a name cannot be asked for (found by fuzzing: `{"": 1}`).
                return Err(EventError::BadField {
                    name: if prefix.is_empty() {
                        String::new()
                    } else {
                        format!("{prefix}.")
                    },
                    reason: "field names must not be empty",
                });
            }
            let name = if prefix.is_empty() {
                if key == TIMESTAMP_COLUMN || key == SAMPLE_RATE_COLUMN {
                    // The reserved columns come from the event's envelope; a data field of the
                    // same name is kept beside them rather than overwriting them.
                    format!("data.{key}")
                } else {
                    key.clone()
                }
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                Value::Null => {}
                Value::Object(inner) if level < self.limits.flatten_depth && !inner.is_empty() => {
                    self.object(&name, inner, level + 1)?
                }
                other => {
                    let v = self.scalar(&name, other)?;
                    self.push(name, v)?;
                }
            }
        }
        Ok(())
    }

    fn scalar(&self, name: &str, v: &Value) -> Result<FieldValue, EventError> {
        let fv = match v {
            Value::Bool(b) => FieldValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => FieldValue::Int(i),
                None => FieldValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => FieldValue::Str(s.clone()),
            // Arrays and objects below the flattening depth are kept whole, as JSON text.
            other => FieldValue::Str(other.to_string()),
        };
        if let FieldValue::Str(s) = &fv {
            self.limits.check_string(name, s.len())?;
        }
        Ok(fv)
    }

    fn push(&mut self, name: String, v: FieldValue) -> Result<(), EventError> {
        self.limits.check_field_name(&name)?;
        if let Some(&i) = self.index.get(&name) {
            self.fields[i].1 = v;
            return Ok(());
        }
        self.limits.check_room_for_field(self.fields.len())?;
        self.index.insert(name.clone(), self.fields.len());
        self.fields.push((name, v));
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The nesting depth of a JSON value: 0 for a scalar, 1 for a flat object or array.
pub fn value_depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(value_depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A short name for a JSON value's kind, for error messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn flat(v: Value) -> Vec<(String, FieldValue)> {
        flatten_event(&v, &Limits::default()).unwrap()
    }

    /// Regression from `make fuzz` (events_json): an empty key became a column named "".
    #[test]
    fn empty_field_names_are_refused_at_any_depth() {
        for (v, name) in [
            (json!({"": 1}), ""),
            (json!({"a": {"": 1}}), "a."),
            (json!({"a": 1, "": {"b": 2}}), ""),
        ] {
            match flatten_event(&v, &Limits::default()) {
                Err(EventError::BadField { name: n, .. }) => assert_eq!(n, name, "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
    }

    #[test]
    fn nested_objects_become_dotted_names() {
        let f = flat(json!({"a": 1, "http": {"status": 200, "ok": true, "tags": ["x", 1]}, "n": null}));
        assert_eq!(
            f,
            vec![
                ("a".into(), FieldValue::Int(1)),
                ("http.ok".into(), FieldValue::Bool(true)),
                ("http.status".into(), FieldValue::Int(200)),
                ("http.tags".into(), FieldValue::Str("[\"x\",1]".into())),
            ]
        );
    }

    #[test]
    fn deeper_than_flatten_depth_is_json_text() {
        let limits = Limits {
            flatten_depth: 2,
            ..Limits::default()
        };
        let f = flatten_event(&json!({"a": {"b": {"c": 1}}}), &limits).unwrap();
        assert_eq!(f, vec![("a.b".into(), FieldValue::Str("{\"c\":1}".into()))]);
    }

    #[test]
    fn limits_are_named() {
        let limits = Limits {
            max_fields_per_event: 2,
            ..Limits::default()
        };
        let e = flatten_event(&json!({"a":1,"b":2,"c":3}), &limits).unwrap_err();
        assert!(e.to_string().contains("--max-fields / SONDE_MAX_FIELDS"), "{e}");
        let e = flatten_event(&json!({"s": "x".repeat(70_000)}), &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("--max-string-len"), "{e}");
        let e = flatten_event(&json!({"x".repeat(300): 1}), &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("--max-field-name-len"), "{e}");
        let mut deep = json!(1);
        for _ in 0..70 {
            deep = json!({ "d": deep });
        }
        let e = flatten_event(&deep, &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("--max-depth"), "{e}");
        assert!(flatten_event(&json!([1]), &Limits::default()).is_err());
    }

    #[test]
    fn reserved_names_are_kept_aside() {
        let f = flat(json!({"timestamp": "x", "samplerate": 3}));
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["data.samplerate", "data.timestamp"]);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            (-1e9f64..1e9).prop_map(|f| json!(f)),
            "[a-z]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]{1,2}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Looks a dotted name up in the original value, following objects only.
    fn lookup<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
        let mut cur = v;
        for part in name.split('.') {
            cur = cur.as_object()?.get(part)?;
        }
        Some(cur)
    }

    proptest! {
        #[test]
        fn every_flattened_field_comes_from_the_input(m in prop::collection::btree_map("[a-c]{1,2}", arb_json(), 0..6)) {
            let v = Value::Object(m.into_iter().collect());
            let fields = flat(v.clone());
            let mut names: Vec<_> = fields.iter().map(|(n, _)| n.clone()).collect();
            names.sort();
            names.dedup();
            prop_assert_eq!(names.len(), fields.len(), "names are unique");
            for (name, fv) in &fields {
                let orig = lookup(&v, name).expect("flattened name must exist in the input");
                match (orig, fv) {
                    (Value::Bool(b), FieldValue::Bool(x)) => prop_assert_eq!(b, x),
                    (Value::Number(n), FieldValue::Int(i)) => prop_assert_eq!(n.as_i64(), Some(*i)),
                    (Value::Number(n), FieldValue::Float(f)) => prop_assert_eq!(n.as_f64(), Some(*f)),
                    (Value::String(s), FieldValue::Str(x)) => prop_assert_eq!(s, x),
                    (Value::Array(_) | Value::Object(_), FieldValue::Str(x)) => {
                        prop_assert_eq!(&serde_json::from_str::<Value>(x).unwrap(), orig)
                    }
                    (o, f) => prop_assert!(false, "{o:?} became {f:?}"),
                }
            }
        }

        #[test]
        fn every_scalar_leaf_is_kept(m in prop::collection::btree_map("[a-c]{1,2}", arb_json(), 0..6)) {
            let v = Value::Object(m.into_iter().collect());
            let fields = flat(v.clone());
            // Every non-null scalar reachable through objects alone (within the depth) appears.
            fn leaves(prefix: &str, v: &Value, level: usize, out: &mut Vec<String>) {
                if let Value::Object(m) = v {
                    for (k, x) in m {
                        let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        match x {
                            Value::Null => {}
                            Value::Object(i) if level < 5 && !i.is_empty() => leaves(&name, x, level + 1, out),
                            _ => out.push(name),
                        }
                    }
                }
            }
            let mut expected = Vec::new();
            leaves("", &v, 1, &mut expected);
            for name in expected {
                prop_assert!(fields.iter().any(|(n, _)| *n == name), "missing {}", name);
            }
        }
    }
}

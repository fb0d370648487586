//! Request bodies → events: decompression, JSON / msgpack / NDJSON decoding, per-event
//! isolation.
//!
//! A batch is split into items *before* any item is parsed, by a byte-level scanner
//! ([`split_json_array`]), so that one item with invalid UTF-8, malformed JSON or a nesting
//! depth past the parser's recursion limit gets its own error while the others are stored.

use crate::error::ApiError;
use serde_json::{Map, Value};
use sonde_model::parse::{Parsed, Shape, parse_flat};
use sonde_model::{Event, EventError, Limits, flatten_event, time};
use std::io::Read;

/// Undoes `Content-Encoding` (none, `gzip`, `zstd`), refusing output past `max_body_bytes` —
/// checked while inflating, so a zip bomb costs at most the limit.
pub fn decompress(encoding: Option<&str>, body: &[u8], max_body_bytes: usize) -> Result<Vec<u8>, ApiError> {
    let enc = encoding.map(|e| e.trim().to_ascii_lowercase());
    let reader: Box<dyn Read + '_> = match enc.as_deref() {
        None | Some("") | Some("identity") => {
            return if body.len() > max_body_bytes {
                Err(ApiError::body_too_large(body.len(), max_body_bytes))
            } else {
                Ok(body.to_vec())
            };
        }
        Some("gzip") | Some("x-gzip") => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Some("zstd") => Box::new(
            zstd::stream::read::Decoder::new(body)
                .map_err(|e| ApiError::bad_request(format!("body is not valid zstd: {e}")))?,
        ),
        Some(other) => {
            return Err(ApiError::unsupported_media(format!(
                "unsupported Content-Encoding {other:?}: use gzip, zstd or none"
            )));
        }
    };
    let mut out = Vec::with_capacity(body.len() * 4);
    let name = enc.unwrap_or_default();
    reader
        .take(max_body_bytes as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::bad_request(format!("body is not valid {name}: {e}")))?;
    if out.len() > max_body_bytes {
        return Err(ApiError::body_too_large(out.len(), max_body_bytes));
    }
    Ok(out)
}

/// Splits a JSON array into the byte ranges of its items without parsing them.
/// Errors only when the body as a whole is not an array.
pub fn split_json_array(body: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut i = skip_ws(body, 0);
    if body.get(i) != Some(&b'[') {
        return Err("batch body must be a JSON array".into());
    }
    i += 1;
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let mut start: Option<usize> = None;
    while i < body.len() {
        let c = body[i];
        if in_str {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => {
                in_str = true;
                start.get_or_insert(i);
            }
            b'{' | b'[' => {
                depth += 1;
                start.get_or_insert(i);
            }
            b'}' | b']' if depth > 0 => depth -= 1,
            b']' => {
                if let Some(s) = start.take() {
                    items.push(trim(&body[s..i]));
                } else if !items.is_empty() {
                    return Err("batch array has a trailing comma".into());
                }
                if skip_ws(body, i + 1) != body.len() {
                    return Err("unexpected data after the batch array".into());
                }
                return Ok(items);
            }
            b',' if depth == 0 => match start.take() {
                Some(s) => items.push(trim(&body[s..i])),
                None => return Err("batch array has an empty item".into()),
            },
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ => {
                start.get_or_insert(i);
            }
        }
        i += 1;
    }
    Err("batch array is not closed (truncated body?)".into())
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn trim(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(0, |p| p + 1);
    &b[..end]
}

/// Parses one JSON value, turning the parser's recursion limit into our named depth limit.
pub fn parse_json(bytes: &[u8], limits: &Limits) -> Result<Value, EventError> {
    limits.check_event_bytes(bytes.len())?;
    serde_json::from_slice(bytes).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            limits.depth_error()
        } else if std::str::from_utf8(bytes).is_err() {
            EventError::Json(format!("invalid UTF-8 ({e})"))
        } else {
            EventError::Json(e.to_string())
        }
    })
}

/// Parses a sample rate given as a JSON number (Honeycomb clients send integers; a value
/// below 1 means unsampled).
pub fn parse_sample_rate(v: &Value) -> Result<i64, EventError> {
    match v {
        Value::Null => Ok(1),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(i.max(1)),
            (None, Some(f)) if f.is_finite() => Ok((f.round() as i64).max(1)),
            _ => Err(EventError::BadSampleRate(n.to_string())),
        },
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(|i| i.max(1))
            .map_err(|_| EventError::BadSampleRate(s.clone())),
        other => Err(EventError::BadSampleRate(other.to_string())),
    }
}

/// Builds an event from its data object and envelope.
pub fn make_event(data: &Value, time_us: i64, sample_rate: i64, limits: &Limits) -> Result<Event, EventError> {
    Ok(Event {
        timestamp_us: time_us,
        sample_rate,
        fields: flatten_event(data, limits)?,
    })
}

/// One Honeycomb batch item: `{"data": {…}, "time": …, "samplerate": N}`.
pub fn batch_item(item: Value, now_us: i64, limits: &Limits) -> Result<Event, EventError> {
    let Value::Object(mut m) = item else {
        return Err(EventError::NotAnObject(sonde_model::flatten::json_kind(&item)));
    };
    let data = m.remove("data").unwrap_or(Value::Null);
    if !data.is_object() {
        return Err(EventError::Json(format!(
            "batch item needs a \"data\" object, got {}",
            sonde_model::flatten::json_kind(&data)
        )));
    }
    let time_us = envelope_time(m.get("time"), now_us, true)?;
    let rate = parse_sample_rate(m.get("samplerate").unwrap_or(&Value::Null))?;
    make_event(&data, time_us, rate, limits)
}

/// One Honeycomb batch item from its text, parsed and flattened in one pass where it can be
/// (see [`sonde_model::parse`]); the same event as [`batch_item`] over the parsed item.
pub fn batch_item_text(raw: &[u8], now_us: i64, limits: &Limits) -> Result<Event, EventError> {
    match parse_flat(raw, Shape::BatchItem, limits) {
        Ok(Parsed::Flat {
            fields,
            time,
            samplerate,
        }) => flat_event(fields, time, samplerate, now_us, true),
        // A refusal gets the tree path's verdict and message, which is the reference: the one
        // pass stops at the first problem, and a later duplicate `data` key, say, would have
        // replaced the object it was in (found by fuzzing).
        Ok(Parsed::Tree) | Err(_) => batch_item(parse_json(raw, limits)?, now_us, limits),
    }
}

/// An event's time from its envelope value: absent or null is `now_us`, and so is an empty
/// string when `blank_is_now` (batch items, as Honeycomb's API has it).
fn envelope_time(t: Option<&Value>, now_us: i64, blank_is_now: bool) -> Result<i64, EventError> {
    match t {
        None | Some(Value::Null) => Ok(now_us),
        Some(Value::String(s)) if s.is_empty() && blank_is_now => Ok(now_us),
        Some(t) => time::parse_time_value(t),
    }
}

/// The event of a one-pass parse (time as [`envelope_time`] reads it; the sample rate
/// defaults to 1).
fn flat_event(
    fields: Vec<(String, sonde_model::FieldValue)>,
    time: Option<Value>,
    samplerate: Option<Value>,
    now_us: i64,
    blank_time_is_now: bool,
) -> Result<Event, EventError> {
    Ok(Event {
        timestamp_us: envelope_time(time.as_ref(), now_us, blank_time_is_now)?,
        sample_rate: parse_sample_rate(samplerate.as_ref().unwrap_or(&Value::Null))?,
        fields,
    })
}

/// One NDJSON line from its text, parsed and flattened in one pass where it can be; the same
/// event as [`ndjson_event`] over the parsed object.
pub fn ndjson_line(raw: &[u8], now_us: i64, limits: &Limits) -> Result<Event, EventError> {
    match parse_flat(raw, Shape::Line, limits) {
        Ok(Parsed::Flat {
            fields,
            time,
            samplerate,
        }) => flat_event(fields, time, samplerate, now_us, false),
        // As for batch items: a refusal gets the tree path's verdict and message.
        Ok(Parsed::Tree) | Err(_) => match parse_json(raw, limits)? {
            Value::Object(m) => ndjson_event(m, now_us, limits),
            other => Err(EventError::NotAnObject(sonde_model::flatten::json_kind(&other))),
        },
    }
}

/// One NDJSON event: a flat or nested object whose `timestamp` (or `time`) key is its time and
/// whose `samplerate` key is its sample rate; both are taken out of the data.
pub fn ndjson_event(mut obj: Map<String, Value>, now_us: i64, limits: &Limits) -> Result<Event, EventError> {
    let t = obj.remove("timestamp").or_else(|| obj.remove("time"));
    let time_us = envelope_time(t.as_ref(), now_us, false)?;
    let rate = match obj.remove("samplerate") {
        Some(v) => parse_sample_rate(&v)?,
        None => 1,
    };
    make_event(&Value::Object(obj), time_us, rate, limits)
}

/// Converts a msgpack value to JSON, with msgpack's timestamp extension (type -1) as RFC3339.
pub fn msgpack_to_json(v: rmpv::Value) -> Result<Value, EventError> {
    use rmpv::Value as M;
    Ok(match v {
        M::Nil => Value::Null,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(x), _) => Value::from(x),
            (None, Some(x)) => Value::from(x as f64),
            _ => return Err(EventError::Json("msgpack integer out of range".into())),
        },
        M::F32(f) => serde_json::Number::from_f64(f as f64).map_or(Value::Null, Value::Number),
        M::F64(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        M::String(s) => match s.into_str() {
            Some(s) => Value::String(s),
            None => return Err(EventError::Json("msgpack string is not valid UTF-8".into())),
        },
        M::Binary(b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
        M::Array(a) => Value::Array(a.into_iter().map(msgpack_to_json).collect::<Result<_, _>>()?),
        M::Map(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                let key = match k {
                    M::String(s) => s
                        .into_str()
                        .ok_or_else(|| EventError::Json("msgpack key is not valid UTF-8".into()))?,
                    other => other.to_string(),
                };
                out.insert(key, msgpack_to_json(v)?);
            }
            Value::Object(out)
        }
        M::Ext(-1, bytes) => Value::String(time::format_us(msgpack_timestamp(&bytes)?)),
        M::Ext(t, _) => return Err(EventError::Json(format!("unsupported msgpack extension type {t}"))),
    })
}

/// Decodes msgpack's timestamp extension (4, 8 or 12 bytes) to µs since the epoch.
fn msgpack_timestamp(b: &[u8]) -> Result<i64, EventError> {
    let (secs, nanos): (i64, u32) = match b.len() {
        4 => (u32::from_be_bytes(b.try_into().unwrap()) as i64, 0),
        8 => {
            let x = u64::from_be_bytes(b.try_into().unwrap());
            ((x & 0x3_ffff_ffff) as i64, (x >> 34) as u32)
        }
        12 => (
            i64::from_be_bytes(b[4..12].try_into().unwrap()),
            u32::from_be_bytes(b[0..4].try_into().unwrap()),
        ),
        n => return Err(EventError::BadTime(format!("msgpack timestamp of {n} bytes"))),
    };
    Ok(secs * 1_000_000 + (nanos / 1000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_items_without_parsing_them() {
        let body = br#" [ {"a":"x,]}"} , 3,"s\"]",[1,[2]] ,{"bad": } ] "#;
        let items = split_json_array(body).unwrap();
        let items: Vec<&str> = items.iter().map(|i| std::str::from_utf8(i).unwrap()).collect();
        assert_eq!(
            items,
            vec![r#"{"a":"x,]}"}"#, "3", r#""s\"]""#, "[1,[2]]", r#"{"bad": }"#]
        );
        assert_eq!(split_json_array(b"[]").unwrap().len(), 0);
        assert!(split_json_array(b"{}").is_err());
        assert!(split_json_array(b"[1,").is_err());
        assert!(split_json_array(b"[1,]").is_err());
        assert!(split_json_array(b"[1] x").is_err());
    }

    #[test]
    fn msgpack_timestamps() {
        assert_eq!(
            msgpack_timestamp(&1_700_000_000u32.to_be_bytes()).unwrap(),
            1_700_000_000_000_000
        );
        let x: u64 = (123_456_000u64 << 34) | 1_700_000_000;
        assert_eq!(msgpack_timestamp(&x.to_be_bytes()).unwrap(), 1_700_000_000_123_456);
    }

    #[test]
    fn zip_bomb_is_refused_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
        let gz = enc.finish().unwrap();
        let err = decompress(Some("gzip"), &gz, 1 << 20).unwrap_err();
        assert!(err.message.contains("max_body_bytes"), "{}", err.message);
    }
}

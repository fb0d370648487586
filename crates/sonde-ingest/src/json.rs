//! Honeycomb's batch format in JSON: `[{"data": {…}, "time": …, "samplerate": N}, …]`.
//!
//! A batch is split into items *before* any item is parsed, by a byte-level scanner
//! ([`split_json_array`]), so that one item with invalid UTF-8, malformed JSON or a nesting
//! depth past the parser's recursion limit gets its own error while the others are stored.
//! Each item is then parsed and flattened in one pass ([`crate::onepass`]) where it can be.

use crate::envelope::{batch_item, flat_event};
use crate::onepass::{Parsed, Shape, parse_flat};
use crate::{BodyError, Decoded, EncodedBatch};
use serde_json::Value;
use sonde_model::{EncodedEvents, Event, EventError, Limits};

/// Decodes a batch body: its good items encoded ([`crate::onepass::encode_flat`] where it can, else the owned
/// path), and one refusal or `None` per item, in order. Errors only when the body as a whole is
/// not a JSON array.
pub fn decode_batch_encoded(body: &[u8], now_us: i64, limits: &Limits) -> Result<EncodedBatch, BodyError> {
    let items = split_json_array(body).map_err(|e| BodyError::Malformed(format!("malformed batch: {e}")))?;
    // Encoded events take about the bytes of their JSON text (names and strings as they are,
    // numbers in 8 bytes, no quotes or punctuation).
    let mut out = EncodedBatch {
        events: EncodedEvents::with_capacity(body.len()),
        refusals: Vec::with_capacity(items.len()),
    };
    for raw in items {
        out.decode(raw, Shape::BatchItem, limits, now_us, || {
            batch_item_text(raw, now_us, limits)
        });
    }
    Ok(out)
}

/// Decodes a batch body: one outcome per item, in order (the events of
/// [`decode_batch_encoded`], as owned events). Errors only when the body as a whole is not a
/// JSON array.
pub fn decode_batch(body: &[u8], now_us: i64, limits: &Limits) -> Result<Decoded, BodyError> {
    Ok(decode_batch_encoded(body, now_us, limits)?.into_decoded())
}

/// One Honeycomb batch item from its text, parsed and flattened in one pass where it can be;
/// the same event as [`batch_item`] over the parsed item.
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
    // A plain byte loop: jumping through strings with memchr2 was measured slower (1.3×), as
    // an event's strings are short.
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        assert!(
            split_json_array(br#"["a\"]"#).is_err(),
            "the quote is escaped: never closed"
        );
        assert!(split_json_array(br#"["a\"#).is_err());
    }

    proptest! {
        /// Any array serde_json writes (strings with quotes, backslashes and brackets inside)
        /// splits into the texts of its items.
        #[test]
        fn splits_what_serde_json_writes(items in prop::collection::vec(
            prop_oneof![
                "[a-z\\\\\"\\[\\]{},é ]{0,12}".prop_map(Value::from),
                prop::collection::btree_map("[a\\\\\"]{1,3}", "[\\\\\"x\\]]{0,4}", 0..3)
                    .prop_map(|m| serde_json::json!({"data": m})),
            ], 0..6)) {
            let body = serde_json::to_vec(&items).unwrap();
            let parts = split_json_array(&body).unwrap();
            let parsed: Vec<Value> = parts.iter().map(|p| serde_json::from_slice(p).unwrap()).collect();
            prop_assert_eq!(parsed, items);
        }
    }
}

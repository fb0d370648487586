//! Honeycomb's batch format in JSON: `[{"data": {…}, "time": …, "samplerate": N}, …]`.
//!
//! Items are read where they lie: the one-pass parser ([`crate::onepass`]) parses, flattens and
//! encodes an object item and says where it ended, so a batch of good items is read once. An
//! item it does not take (invalid UTF-8, malformed JSON, a nesting depth past the parser's
//! recursion limit, a name given twice…) is delimited by a byte-level scan instead and goes the
//! owned way, so that it gets its own error while the others are stored. A body that is not a
//! well-formed array is handed to [`split_json_array`], which says what is wrong with it.

use crate::envelope::{batch_item, flat_event};
use crate::onepass::{Parsed, Shape, Text, encode_flat_prefix, parse_flat};
use crate::{BodyError, Decoded, EncodedBatch};
use serde_json::Value;
use sonde_model::{EncodedEvents, Event, EventError, Limits};

/// Decodes a batch body: its good items encoded ([`crate::onepass::encode_flat`] where it can, else the owned
/// path), and one refusal or `None` per item, in order. Errors only when the body as a whole is
/// not a JSON array.
pub fn decode_batch_encoded(body: &[u8], now_us: i64, limits: &Limits) -> Result<EncodedBatch, BodyError> {
    match decode_in_place(body, now_us, limits) {
        Some(out) => Ok(out),
        None => decode_split(body, now_us, limits),
    }
}

/// The batch read item by item where the items lie (see the module docs); `None` when the body
/// is not a well-formed array.
fn decode_in_place(body: &[u8], now_us: i64, limits: &Limits) -> Option<EncodedBatch> {
    let mut out = EncodedBatch {
        events: EncodedEvents::with_capacity(body.len()),
        refusals: Vec::new(),
    };
    let mut i = skip_ws(body, 0);
    if body.get(i) != Some(&b'[') {
        return None;
    }
    // Checked once here, the body's UTF-8 is not checked again string by string.
    let utf8 = std::str::from_utf8(body).ok();
    i = skip_json_ws(body, i + 1);
    if body.get(i) == Some(&b']') {
        return (skip_ws(body, i + 1) == body.len()).then_some(out);
    }
    loop {
        // `i` is at an item's first byte.
        if matches!(body.get(i), None | Some(b',') | Some(b']')) {
            return None;
        }
        let mark = out.events.mark();
        // An item starts after ASCII (`[`, `,`, whitespace), so at a character's start.
        let text = Text::of(body, utf8, i..body.len());
        let fast = encode_flat_prefix(text, Shape::BatchItem, limits, now_us, &mut out.events).map(|used| i + used);
        let next = match fast {
            Some(j) if matches!(body.get(j), Some(b',') | Some(b']')) => {
                out.refusals.push(None);
                j
            }
            _ => {
                // Something after the object (`{…} x,`) makes the whole item a refusal.
                out.events.truncate(mark);
                let end = item_end(body, i);
                if end == body.len() {
                    return None;
                }
                let raw = trim(&body[i..end]);
                out.decode(Text::Bytes(raw), Shape::BatchItem, limits, now_us, || {
                    batch_item_text(raw, now_us, limits)
                });
                end
            }
        };
        if body[next] == b']' {
            return (skip_ws(body, next + 1) == body.len()).then_some(out);
        }
        i = skip_json_ws(body, next + 1);
    }
}

/// The batch split into items first, then each decoded: what [`decode_in_place`] hands over
/// when the body is not a well-formed array (the splitter says why).
fn decode_split(body: &[u8], now_us: i64, limits: &Limits) -> Result<EncodedBatch, BodyError> {
    let items = split_json_array(body).map_err(|e| BodyError::Malformed(format!("malformed batch: {e}")))?;
    // Encoded events take about the bytes of their JSON text (names and strings as they are,
    // numbers in 8 bytes, no quotes or punctuation).
    let mut out = EncodedBatch {
        events: EncodedEvents::with_capacity(body.len()),
        refusals: Vec::with_capacity(items.len()),
    };
    for raw in items {
        out.decode(Text::Bytes(raw), Shape::BatchItem, limits, now_us, || {
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
    let mut items = Vec::new();
    loop {
        // `i` is at the `[` or the `,` before the next item.
        i = skip_json_ws(body, i + 1);
        match body.get(i) {
            Some(b']') if items.is_empty() => {}
            Some(b']') => return Err("batch array has a trailing comma".into()),
            Some(b',') => return Err("batch array has an empty item".into()),
            _ => {
                let end = item_end(body, i);
                if end == body.len() {
                    break;
                }
                items.push(trim(&body[i..end]));
                i = end;
            }
        }
        if body[i] == b']' {
            if skip_ws(body, i + 1) != body.len() {
                return Err("unexpected data after the batch array".into());
            }
            return Ok(items);
        }
    }
    Err("batch array is not closed (truncated body?)".into())
}

/// Where the array item starting at `i` ends: its `,` or the array's `]`, past strings (with
/// their escapes) and nested objects and arrays, without parsing; the body's end when neither
/// comes. A plain byte loop: jumping through strings with memchr2 was measured slower (1.3×),
/// as an event's strings are short.
fn item_end(body: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
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
        } else {
            match c {
                b'"' => in_str = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth > 0 => depth -= 1,
                b']' | b',' if depth == 0 => return i,
                _ => {}
            }
        }
        i += 1;
    }
    body.len()
}

/// Past JSON's whitespace (the splitter's, which takes any other byte as the start of an item).
fn skip_json_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
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

    /// The outcomes of a decoded batch, comparable: each item's event or error message.
    fn outcomes(b: &EncodedBatch) -> Vec<Result<Event, String>> {
        let mut events = b.events.to_events().into_iter();
        b.refusals
            .iter()
            .map(|r| match r {
                None => Ok(events.next().unwrap()),
                Some(e) => Err(e.to_string()),
            })
            .collect()
    }

    /// Reading items where they lie gives what splitting first gives, item for item, or hands
    /// the body to the splitter when it is not a well-formed array.
    fn same_as_split(body: &[u8]) {
        let limits = Limits::default();
        let split = decode_split(body, 7, &limits);
        match decode_in_place(body, 7, &limits) {
            Some(b) => {
                let split = split.unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
                assert_eq!(outcomes(&b), outcomes(&split), "{}", String::from_utf8_lossy(body));
                assert_eq!(b.events.as_bytes(), split.events.as_bytes());
            }
            None => assert!(split.is_err(), "{}", String::from_utf8_lossy(body)),
        }
    }

    #[test]
    fn items_read_in_place_decode_as_split_items_do() {
        for body in [
            &br#"[{"data":{"a":1}},{"data":{"b":"x,]}"}}]"#[..],
            br#" [ {"data":{"a":1}} , 3 , {"data":{"a":1}} x , {"data":{"a":{"b":1},"a.b":2}},{"data":{"c":[1,[2]]}} ] "#,
            b"[\x0c{\"data\":{}}]",
            b"[{\"data\":{\"a\":1}}\x0c,{\"data\":{\"a\":2}}]",
            br#"[{"data":{"a":1},"time":"2026-01-01T00:00:00Z","samplerate":4},{"data":{"a":1},"data":{"b":2}}]"#,
            br#"[{"data":{"s":""]"}},{"data":{"bad": }},{"data":{"a":1}}]"#,
            b"[ ]",
            b"[]  ",
            b"[",
            b"[1,]",
            b"[1,,2]",
            b"[{\"data\":{}}] x",
            br#"[{"data":{"a":1}}"#,
            br#"[{"data":{"a":"unclosed}]"#,
            b"{}",
            b"\x0c[{\"data\":{}}]",
        ] {
            same_as_split(body);
        }
    }

    proptest! {
        /// Arrays of batch items and other values, with whitespace of every kind between them,
        /// decode alike both ways.
        #[test]
        fn in_place_and_split_agree(items in prop::collection::vec(
            prop_oneof![
                prop::collection::btree_map("[a-c.]{1,3}", prop_oneof![
                    any::<i64>().prop_map(Value::from),
                    "[a\\\\\"\\]x,]{0,4}".prop_map(Value::from),
                    Just(serde_json::json!({"n": [1, {"m": 2}]})),
                ], 0..4).prop_map(|m| serde_json::json!({"data": m})),
                Just(serde_json::json!(3)),
                Just(serde_json::json!({"nodata": 1})),
            ], 0..6), seps in prop::collection::vec("[ \t\r\n\x0c]{0,2}", 14)) {
            let mut body = format!("{}[", seps[0]);
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&seps[1 + (2 * i) % 12]);
                body.push_str(&item.to_string());
                body.push_str(&seps[2 + (2 * i) % 12]);
            }
            body.push(']');
            body.push_str(&seps[13]);
            same_as_split(body.as_bytes());
        }

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

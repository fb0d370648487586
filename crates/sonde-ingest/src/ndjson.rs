//! Newline-delimited JSON: one object per line, the object itself the event's data (with its
//! `timestamp`/`time` and `samplerate` keys as the envelope, see [`crate::envelope`]).

use crate::envelope::{flat_event, line_object};
use crate::json::parse_json;
use crate::onepass::{Parsed, Shape, Text, parse_flat};
use crate::{Decoded, EncodedBatch};
use serde_json::Value;
use sonde_model::{EncodedEvents, Event, EventError, Limits};

/// A decoded NDJSON body: the outcome of each non-blank line, and where that line is.
#[derive(Debug)]
pub struct Lines {
    /// 1-based line numbers in the body (blank lines are skipped but counted), one per outcome.
    pub line_numbers: Vec<usize>,
    /// One outcome per non-blank line, in order.
    pub decoded: Decoded,
}

/// [`Lines`] with the good events encoded (the server's path).
#[derive(Debug)]
pub struct EncodedLines {
    /// 1-based line numbers in the body, one per refusal entry.
    pub line_numbers: Vec<usize>,
    /// The events kept and one refusal or `None` per non-blank line, in order.
    pub batch: EncodedBatch,
}

/// Decodes an NDJSON body. Blank lines are skipped, and still counted, so that an error's line
/// number is the one an editor shows.
pub fn decode(body: &[u8], now_us: i64, limits: &Limits) -> Lines {
    let EncodedLines { line_numbers, batch } = decode_encoded(body, now_us, limits);
    Lines {
        line_numbers,
        decoded: batch.into_decoded(),
    }
}

/// [`decode`], with the good events encoded: each line in one pass straight into the encoding
/// ([`crate::onepass::encode_flat`]) where it can be, else through [`line_event`].
pub fn decode_encoded(body: &[u8], now_us: i64, limits: &Limits) -> EncodedLines {
    let mut out = EncodedLines {
        line_numbers: Vec::new(),
        batch: EncodedBatch {
            events: EncodedEvents::with_capacity(body.len()),
            refusals: Vec::new(),
        },
    };
    // Checked once here, the body's UTF-8 is not checked again string by string (lines split
    // at `\n`, so on character boundaries).
    let utf8 = std::str::from_utf8(body).ok();
    let mut start = 0;
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let range = start..start + line.len();
        start = range.end + 1;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        out.line_numbers.push(i + 1);
        out.batch
            .decode(Text::of(body, utf8, range), Shape::Line, limits, now_us, || {
                line_event(line, now_us, limits)
            });
    }
    out
}

/// One NDJSON line from its text, parsed and flattened in one pass where it can be; the same
/// event as [`line_object`] over the parsed object.
pub fn line_event(raw: &[u8], now_us: i64, limits: &Limits) -> Result<Event, EventError> {
    match parse_flat(raw, Shape::Line, limits) {
        Ok(Parsed::Flat {
            fields,
            time,
            samplerate,
        }) => flat_event(fields, time, samplerate, now_us, false),
        // As for batch items: a refusal gets the tree path's verdict and message.
        Ok(Parsed::Tree) | Err(_) => match parse_json(raw, limits)? {
            Value::Object(m) => line_object(m, now_us, limits),
            other => Err(EventError::NotAnObject(sonde_model::flatten::json_kind(&other))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_the_line_number_an_editor_shows() {
        let body = b"{\"a\":1}\nnot json\n\n  \n[1]\r\n{\"a\":2}";
        let lines = decode(body, 0, &Limits::default());
        assert_eq!(lines.line_numbers, [1, 2, 5, 6]);
        let ok: Vec<bool> = lines.decoded.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, false, true]);
    }
}

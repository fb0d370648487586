//! NDJSON lines to events (time and sample rate taken from reserved fields): the one-pass
//! decoder checked against the tree path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_ingest::envelope::line_object;
use sonde_ingest::json::parse_json;
use sonde_ingest::ndjson::{decode, line_event};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let limits = common::limits();
    let now = 1_767_225_600_000_000;
    for line in data.split(|b| *b == b'\n') {
        let one_pass = line_event(line, now, &limits);
        let tree = parse_json(line, &limits).and_then(|v| match v {
            serde_json::Value::Object(m) => line_object(m, now, &limits),
            other => Err(sonde_model::EventError::NotAnObject(sonde_model::flatten::json_kind(&other))),
        });
        common::check_same(line, &one_pass, &tree);
        if let Ok(e) = &one_pass {
            common::check_event(e, &limits);
        }
    }
    // Line numbers are the body's own: increasing, one per outcome, none past the last line.
    let lines = decode(data, now, &limits);
    assert_eq!(lines.line_numbers.len(), lines.decoded.len());
    // The encoded path behind `decode` gives each line the owned path's outcome.
    let body: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    for (n, encoded) in lines.line_numbers.iter().zip(&lines.decoded) {
        let line = body[n - 1];
        common::check_same(line, encoded, &line_event(line, now, &limits));
    }
    assert!(lines.line_numbers.windows(2).all(|w| w[0] < w[1]));
    let total = data.split(|b| *b == b'\n').count();
    assert!(lines.line_numbers.last().is_none_or(|n| *n <= total));
});

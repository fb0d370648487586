//! NDJSON lines to events (time and sample rate taken from reserved fields): the one-pass
//! decoder checked against the tree path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_server::decode::{ndjson_event, ndjson_line, parse_json};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let limits = common::limits();
    let now = 1_767_225_600_000_000;
    for line in data.split(|b| *b == b'\n') {
        let one_pass = ndjson_line(line, now, &limits);
        let tree = parse_json(line, &limits).and_then(|v| match v {
            serde_json::Value::Object(m) => ndjson_event(m, now, &limits),
            other => Err(sonde_model::EventError::NotAnObject(sonde_model::flatten::json_kind(&other))),
        });
        common::check_same(line, &one_pass, &tree);
        if let Ok(e) = &one_pass {
            common::check_event(e, &limits);
        }
    }
});

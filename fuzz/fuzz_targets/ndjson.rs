//! NDJSON lines to events (time and sample rate taken from reserved fields).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_server::decode::{ndjson_event, parse_json};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let limits = common::limits();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(serde_json::Value::Object(m)) = parse_json(line, &limits)
            && let Ok(e) = ndjson_event(m, 1_767_225_600_000_000, &limits)
        {
            common::check_event(&e, &limits);
        }
    }
});

//! msgpack bodies (libhoney-go's encoding, with its time extension) to events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_ingest::envelope::batch_item;
use sonde_ingest::msgpack::msgpack_to_json;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let limits = common::limits();
    let Ok(v) = rmpv::decode::read_value_with_max_depth(&mut &data[..], limits.max_depth + 2) else {
        return;
    };
    let items = match v {
        rmpv::Value::Array(items) => items,
        one => vec![one],
    };
    for item in items {
        if let Ok(json) = msgpack_to_json(item)
            && let Ok(e) = batch_item(json, 1_767_225_600_000_000, &limits)
        {
            common::check_event(&e, &limits);
        }
    }
});

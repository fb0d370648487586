//! Honeycomb batches: the byte-level array splitter, the JSON parser, the batch item decoder,
//! and the decompressors with their inflated-size limit (zip bombs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_server::decode::{batch_item, decompress, parse_json, split_json_array};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let limits = common::limits();
    for enc in ["gzip", "zstd", "deflate"] {
        if let Ok(plain) = decompress(Some(enc), data, 1 << 16) {
            assert!(plain.len() <= 1 << 16, "inflated past the limit");
        }
    }
    let Ok(items) = split_json_array(data) else { return };
    for raw in items {
        if let Ok(v) = parse_json(raw, &limits)
            && let Ok(e) = batch_item(v, 1_767_225_600_000_000, &limits)
        {
            common::check_event(&e, &limits);
        }
    }
});

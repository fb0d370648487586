//! Honeycomb batches: the byte-level array splitter, the one-pass batch item decoder checked
//! against the tree path (parse, then flatten), and the decompressors with their inflated-size
//! limit (zip bombs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_ingest::decompress;
use sonde_ingest::envelope::batch_item;
use sonde_ingest::json::{batch_item_text, parse_json, split_json_array};

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
    let now = 1_767_225_600_000_000;
    for raw in items {
        let one_pass = batch_item_text(raw, now, &limits);
        let tree = parse_json(raw, &limits).and_then(|v| batch_item(v, now, &limits));
        common::check_same(raw, &one_pass, &tree);
        if let Ok(e) = &one_pass {
            common::check_event(e, &limits);
        }
    }
});

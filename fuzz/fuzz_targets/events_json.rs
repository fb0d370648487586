//! Honeycomb batches: the byte-level array splitter, the one-pass batch item decoder checked
//! against the tree path (parse, then flatten), the encoded batch path against both, and the decompressors with their inflated-size
//! limit (zip bombs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_ingest::decompress;
use sonde_ingest::envelope::batch_item;
use sonde_ingest::json::{batch_item_text, decode_batch, parse_json, split_json_array};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let limits = common::limits();
    for enc in ["gzip", "zstd", "deflate"] {
        if let Ok(plain) = decompress(Some(enc), data.to_vec(), 1 << 16) {
            assert!(plain.len() <= 1 << 16, "inflated past the limit");
        }
    }
    let Ok(items) = split_json_array(data) else { return };
    let now = 1_767_225_600_000_000;
    // The whole batch through the encoded path: item by item the owned path's outcome.
    let batch = decode_batch(data, now, &limits).expect("split, so an array");
    assert_eq!(batch.len(), items.len());
    for (raw, encoded) in items.into_iter().zip(&batch) {
        let one_pass = batch_item_text(raw, now, &limits);
        let tree = parse_json(raw, &limits).and_then(|v| batch_item(v, now, &limits));
        common::check_same(raw, &one_pass, &tree);
        common::check_same(raw, encoded, &one_pass);
        if let Ok(e) = &one_pass {
            common::check_event(e, &limits);
        }
    }
});

//! Flattening of arbitrary JSON, timestamps and dataset names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_model::{DatasetName, flatten_event, time};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let limits = common::limits();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(fields) = flatten_event(&v, &limits) {
            assert!(fields.len() <= limits.max_fields_per_event);
            for (name, _) in &fields {
                assert!(name.len() <= limits.max_field_name_len, "{name:?}");
            }
        }
        let _ = time::parse_time_value(&v);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = time::parse_time_str(s);
        if let Ok(d) = DatasetName::new(s) {
            // A valid name never escapes the data directory.
            assert!(!d.as_str().contains('/') && !d.as_str().starts_with('.') && !d.as_str().is_empty());
        }
    }
});

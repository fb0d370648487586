// Shared by the targets; not every target uses every helper.
#![allow(dead_code)]

//! Shared checks: what every decoded event must satisfy, whatever the input.

use sonde_model::{Event, Limits};

/// Small limits, so the fuzzer reaches them often.
pub fn limits() -> Limits {
    Limits {
        max_event_bytes: 4096,
        max_fields_per_event: 64,
        max_field_name_len: 32,
        max_string_len: 256,
        max_depth: 8,
        flatten_depth: 3,
    }
}

/// An accepted event respects every limit it was decoded under.
pub fn check_event(e: &Event, limits: &Limits) {
    assert!(e.fields.len() <= limits.max_fields_per_event, "{} fields", e.fields.len());
    assert!(e.sample_rate >= 1, "sample rate {}", e.sample_rate);
    for (name, value) in &e.fields {
        assert!(!name.is_empty() && name.len() <= limits.max_field_name_len, "field name {name:?}");
        if let sonde_model::FieldValue::Str(s) = value {
            assert!(s.len() <= limits.max_string_len, "string of {} bytes", s.len());
        }
    }
}

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

/// The one-pass decoder (`parse_flat`) and the tree path (parse, then flatten) agree: both
/// accept or both refuse, and an accepted event has the same time, sample rate and field
/// names; values too unless a key has a dot (then two spellings of one name may meet, and
/// the paths legitimately keep different ones: text order against sorted order).
pub fn check_same(raw: &[u8], one_pass: &Result<Event, sonde_model::EventError>, tree: &Result<Event, sonde_model::EventError>) {
    match (one_pass, tree) {
        (Ok(a), Ok(b)) => {
            assert_eq!((a.timestamp_us, a.sample_rate), (b.timestamp_us, b.sample_rate));
            let sorted = |e: &Event| {
                let mut f = e.fields.clone();
                f.sort_by(|x, y| x.0.cmp(&y.0));
                f
            };
            let (fa, fb) = (sorted(a), sorted(b));
            let names = |f: &[(String, sonde_model::FieldValue)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
            assert_eq!(names(&fa), names(&fb));
            if !raw.contains(&b'.') {
                assert_eq!(fa, fb);
            }
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("one pass {a:?}, tree {b:?}"),
    }
}

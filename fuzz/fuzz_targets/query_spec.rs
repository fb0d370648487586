//! Honeycomb query specifications: parsing and planning against a fixed schema.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_model::ColumnType;
use sonde_model::spec::QuerySpec;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<QuerySpec>(data) else { return };
    let columns: BTreeMap<String, ColumnType> = [
        ("service.name", ColumnType::String),
        ("duration_ms", ColumnType::Float),
        ("http.status_code", ColumnType::Int),
        ("error", ColumnType::Bool),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect();
    if let Ok(plan) = sonde_model::spec::plan(&spec, &columns, 1_767_225_600_000_000) {
        // A plan's range is never inverted and its buckets are positive.
        assert!(plan.start_us <= plan.end_us, "{} > {}", plan.start_us, plan.end_us);
        assert!(plan.granularity_s > 0);
    }
});

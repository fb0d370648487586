//! Derived-column expressions: any text is parsed and checked against a fixed schema without
//! panicking, an error points inside the text, and a checked tree's column set names only
//! the schema's columns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_model::ColumnType;
use sonde_model::derived::{check, parse};
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let columns: BTreeMap<String, ColumnType> = [
        ("name", ColumnType::String),
        ("duration_ms", ColumnType::Float),
        ("status", ColumnType::Int),
        ("error", ColumnType::Bool),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect();
    let chars = text.chars().count();
    match parse(text).and_then(|ast| check(&ast, &columns)) {
        Ok(t) => assert!(t.columns().iter().all(|c| columns.contains_key(c)), "{:?}", t.columns()),
        Err(e) => assert!(e.position <= chars.max(sonde_model::derived::MAX_EXPRESSION_CHARS), "{e:?} in {chars} chars"),
    }
});

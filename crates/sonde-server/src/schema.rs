//! Schema API: datasets and their columns, from the catalog and the write buffers.

use crate::{AppState, error::ApiError};
use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use sonde_model::{DatasetName, SAMPLE_RATE_COLUMN, TIMESTAMP_COLUMN, time::format_us};
use std::sync::Arc;

/// `GET /api/datasets`.
pub(crate) async fn datasets(State(state): State<Arc<AppState>>) -> Json<Value> {
    let list: Vec<Value> = state
        .storage
        .datasets()
        .into_iter()
        .map(|d| {
            json!({
                "name": d.name.as_str(),
                "rows": d.segment_rows + d.buffered_rows,
                "segment_rows": d.segment_rows,
                "buffered_rows": d.buffered_rows,
                "segments": d.segments,
                "bytes_on_disk": d.segment_bytes,
                "first_event": d.time_bounds.map(|b| format_us(b.0)),
                "last_event": d.time_bounds.map(|b| format_us(b.1)),
            })
        })
        .collect();
    Json(json!({ "datasets": list }))
}

/// `GET /api/datasets/{dataset}/columns`: name, type, first and last seen (event time).
pub(crate) async fn columns(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ds = DatasetName::new(&raw)?;
    let snap = state
        .storage
        .snapshot(&ds)
        .ok_or_else(|| ApiError::not_found(format!("dataset {ds:?} does not exist")))?;
    let bounds = state.storage.dataset_info(&ds).and_then(|i| i.time_bounds);
    let mut cols = vec![
        json!({"name": TIMESTAMP_COLUMN, "type": "timestamp", "reserved": true,
               "first_seen": bounds.map(|b| format_us(b.0)), "last_seen": bounds.map(|b| format_us(b.1))}),
        json!({"name": SAMPLE_RATE_COLUMN, "type": "int", "reserved": true,
               "first_seen": bounds.map(|b| format_us(b.0)), "last_seen": bounds.map(|b| format_us(b.1))}),
    ];
    cols.extend(snap.columns.iter().map(|(name, c)| {
        json!({"name": name, "type": c.ty.name(), "first_seen": format_us(c.first_seen_us), "last_seen": format_us(c.last_seen_us)})
    }));
    Ok(Json(json!({ "dataset": ds.as_str(), "columns": cols })))
}

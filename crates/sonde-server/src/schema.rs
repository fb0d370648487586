//! Schema API: datasets and their columns, from the catalog and the write buffers.

use crate::extract::{Admin, Authorized, Query};
use crate::{AppState, error::ApiError};
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use sonde_model::{SAMPLE_RATE_COLUMN, TIMESTAMP_COLUMN, time::format_us};
use std::sync::Arc;

/// `GET /api/datasets`.
pub(crate) async fn datasets(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
) -> Result<Json<Value>, ApiError> {
    let caller = &access.caller;
    let list: Vec<Value> = state
        .storage
        .datasets()
        .into_iter()
        .filter(|d| caller.covers(d.name.as_str()))
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
    Ok(Json(json!({ "datasets": list })))
}

/// `GET /api/datasets/{dataset}/columns`: name, type, first and last seen (event time).
pub(crate) async fn columns(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
) -> Result<Json<Value>, ApiError> {
    let ds = access.dataset()?;
    let snap = state
        .storage
        .snapshot(ds)
        .ok_or_else(|| ApiError::no_such_dataset(ds))?;
    let bounds = state.storage.dataset_info(ds).and_then(|i| i.time_bounds);
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

/// `GET /api/datasets/{dataset}/stats`: segments, rows, bytes, compression, time span, pending compaction.
pub(crate) async fn stats(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
) -> Result<Json<Value>, ApiError> {
    let ds = access.dataset()?;
    let s = state
        .storage
        .dataset_stats(ds)
        .ok_or_else(|| ApiError::no_such_dataset(ds))?;
    let i = &s.info;
    Ok(Json(json!({
        "dataset": ds.as_str(),
        "segments": i.segments,
        "rows": i.segment_rows + i.buffered_rows,
        "segment_rows": i.segment_rows,
        "buffered_rows": i.buffered_rows,
        "bytes_on_disk": i.segment_bytes,
        "bytes_in_memory_form": s.raw_bytes,
        "compression_ratio": if i.segment_bytes > 0 { s.raw_bytes as f64 / i.segment_bytes as f64 } else { 0.0 },
        "bytes_per_event": if i.segment_rows > 0 { i.segment_bytes as f64 / i.segment_rows as f64 } else { 0.0 },
        "largest_segment_rows": s.largest_segment_rows,
        "segments_pending_compaction": s.segments_pending_compaction,
        // Damaged segments found at start, moved to quarantine/ (their events are not queried).
        "quarantined": state.storage.quarantined().into_iter().filter(|q| q.dataset == ds.as_str()).collect::<Vec<_>>(),
        "first_event": i.time_bounds.map(|b| format_us(b.0)),
        "last_event": i.time_bounds.map(|b| format_us(b.1)),
    })))
}

/// `DELETE /api/datasets/{dataset}`: drops the dataset's segments and buffered events.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    access: Authorized<Admin>,
) -> Result<Json<Value>, ApiError> {
    let ds = access.dataset()?;
    if state.storage.delete_dataset(ds).await? {
        Ok(Json(json!({"deleted": ds.as_str()})))
    } else {
        Err(ApiError::no_such_dataset(ds))
    }
}

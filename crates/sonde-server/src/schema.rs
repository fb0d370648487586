//! Schema API: datasets and their columns, from the catalog and the write buffers. Every answer
//! is a typed struct, so its shape is written once, here.

use crate::extract::{Admin, Authorized, Query};
use crate::{AppState, error::ApiError};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use sonde_model::{SAMPLE_RATE_COLUMN, TIMESTAMP_COLUMN, time::format_us};
use sonde_storage::{DatasetInfo, Quarantined};
use std::sync::Arc;

/// `GET /api/datasets`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct DatasetList {
    datasets: Vec<DatasetSummary>,
}

/// One dataset in the list.
#[derive(Debug, Serialize)]
struct DatasetSummary {
    name: String,
    rows: u64,
    segment_rows: u64,
    buffered_rows: u64,
    segments: usize,
    bytes_on_disk: u64,
    first_event: Option<String>,
    last_event: Option<String>,
}

impl From<DatasetInfo> for DatasetSummary {
    fn from(d: DatasetInfo) -> Self {
        DatasetSummary {
            name: d.name.to_string(),
            rows: d.segment_rows + d.buffered_rows,
            segment_rows: d.segment_rows,
            buffered_rows: d.buffered_rows,
            segments: d.segments,
            bytes_on_disk: d.segment_bytes,
            first_event: d.time_bounds.map(|b| format_us(b.0)),
            last_event: d.time_bounds.map(|b| format_us(b.1)),
        }
    }
}

/// `GET /api/datasets`.
pub(crate) async fn datasets(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
) -> Result<Json<DatasetList>, ApiError> {
    let datasets = state
        .storage
        .datasets()
        .into_iter()
        .filter(|d| access.caller.covers(d.name.as_str()))
        .map(DatasetSummary::from)
        .collect();
    Ok(Json(DatasetList { datasets }))
}

/// `GET /api/datasets/{dataset}/columns`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct ColumnList {
    dataset: String,
    columns: Vec<ColumnInfo>,
}

/// One column: its type and when it was first and last seen (event time).
#[derive(Debug, Serialize)]
struct ColumnInfo {
    name: String,
    #[serde(rename = "type")]
    ty: &'static str,
    /// Set for `timestamp` and `samplerate`, which every dataset has.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    reserved: bool,
    first_seen: Option<String>,
    last_seen: Option<String>,
    /// Set for derived columns, computed from the others at read time.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    derived: bool,
    /// A derived column's expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    expression: Option<String>,
    /// A derived column's description.
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// Why a derived column cannot be used with this dataset's columns, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `GET /api/datasets/{dataset}/columns`: name, type, first and last seen (event time).
pub(crate) async fn columns(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
) -> Result<Json<ColumnList>, ApiError> {
    let ds = access.dataset()?;
    let snap = state
        .storage
        .snapshot(ds)
        .ok_or_else(|| ApiError::no_such_dataset(ds))?;
    let bounds = state.storage.dataset_info(ds).and_then(|i| i.time_bounds);
    let reserved = |name: &str, ty| ColumnInfo {
        name: name.to_string(),
        ty,
        reserved: true,
        first_seen: bounds.map(|b| format_us(b.0)),
        last_seen: bounds.map(|b| format_us(b.1)),
        derived: false,
        expression: None,
        description: None,
        error: None,
    };
    let mut columns = vec![
        reserved(TIMESTAMP_COLUMN, "timestamp"),
        reserved(SAMPLE_RATE_COLUMN, "int"),
    ];
    columns.extend(snap.columns.iter().map(|(name, c)| ColumnInfo {
        name: name.clone(),
        ty: c.ty.name(),
        reserved: false,
        first_seen: Some(format_us(c.first_seen_us)),
        last_seen: Some(format_us(c.last_seen_us)),
        derived: false,
        expression: None,
        description: None,
        error: None,
    }));
    // Derived columns, typed from their expressions over these columns.
    let types = snap.queryable_columns();
    let stored = crate::derived::load(&state).await?.for_dataset(ds.as_str());
    for d in &stored {
        let checked = sonde_model::spec::check_derived(&types, &stored, &d.alias);
        columns.retain(|c| c.name != d.alias); // a derived column wins over a column of its name
        columns.push(ColumnInfo {
            name: d.alias.clone(),
            ty: match &checked {
                Ok(t) => t.ty.unwrap_or(sonde_model::ColumnType::String).name(),
                Err(_) => "string",
            },
            reserved: false,
            first_seen: None,
            last_seen: None,
            derived: true,
            expression: Some(d.expression.clone()),
            description: Some(d.description.clone()).filter(|s| !s.is_empty()),
            error: checked
                .err()
                .map(|e| format!("{} (at character {})", e.message, e.position)),
        });
    }
    Ok(Json(ColumnList {
        dataset: ds.to_string(),
        columns,
    }))
}

/// `GET /api/datasets/{dataset}/stats`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct DatasetStatsAnswer {
    dataset: String,
    segments: usize,
    rows: u64,
    segment_rows: u64,
    buffered_rows: u64,
    bytes_on_disk: u64,
    bytes_in_memory_form: u64,
    compression_ratio: f64,
    bytes_per_event: f64,
    largest_segment_rows: u64,
    segments_pending_compaction: usize,
    /// Damaged segments found at start, moved to quarantine/ (their events are not queried).
    quarantined: Vec<Quarantined>,
    first_event: Option<String>,
    last_event: Option<String>,
}

/// `GET /api/datasets/{dataset}/stats`: segments, rows, bytes, compression, time span, pending compaction.
pub(crate) async fn stats(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
) -> Result<Json<DatasetStatsAnswer>, ApiError> {
    let ds = access.dataset()?;
    let s = state
        .storage
        .dataset_stats(ds)
        .ok_or_else(|| ApiError::no_such_dataset(ds))?;
    let i = &s.info;
    let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    Ok(Json(DatasetStatsAnswer {
        dataset: ds.to_string(),
        segments: i.segments,
        rows: i.segment_rows + i.buffered_rows,
        segment_rows: i.segment_rows,
        buffered_rows: i.buffered_rows,
        bytes_on_disk: i.segment_bytes,
        bytes_in_memory_form: s.raw_bytes,
        compression_ratio: ratio(s.raw_bytes, i.segment_bytes),
        bytes_per_event: ratio(i.segment_bytes, i.segment_rows),
        largest_segment_rows: s.largest_segment_rows,
        segments_pending_compaction: s.segments_pending_compaction,
        quarantined: state
            .storage
            .quarantined()
            .into_iter()
            .filter(|q| q.dataset == ds.as_str())
            .collect(),
        first_event: i.time_bounds.map(|b| format_us(b.0)),
        last_event: i.time_bounds.map(|b| format_us(b.1)),
    }))
}

/// `DELETE /api/datasets/{dataset}`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct Deleted {
    deleted: String,
}

/// `DELETE /api/datasets/{dataset}`: drops the dataset's segments and buffered events.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    access: Authorized<Admin>,
) -> Result<Json<Deleted>, ApiError> {
    let ds = access.dataset()?.clone();
    // On its own task: a client that gives up (or the request timeout) must not cancel the
    // deletion between its catalog write and the release of the storage's flush lock.
    let storage = state.storage.clone();
    let name = ds.clone();
    let deleted = tokio::spawn(async move { storage.delete_dataset(&name).await })
        .await
        .map_err(|e| ApiError::internal(format!("deleting the dataset failed: {e}")))??;
    if deleted {
        Ok(Json(Deleted {
            deleted: ds.to_string(),
        }))
    } else {
        Err(ApiError::no_such_dataset(&ds))
    }
}

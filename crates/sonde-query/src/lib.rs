//! Sonde's query engine: every question about a dataset, answered over DataFusion.
//!
//! ```text
//! QuerySpec (JSON) ──▶ spec::plan (validate against the schema) ──▶ engine: a few DataFrame
//! queries over a DatasetTable ──▶ series + results + meta (JSON)
//! SQL ──▶ read-only SessionContext with every dataset registered ──▶ Arrow batches
//! ```
//!
//! - [`table::DatasetTable`] — one dataset (segments + write buffer) as a DataFusion table,
//!   pruning segments by time before any file is opened.
//! - [`spec`] — Honeycomb's query specification and its validation.
//! - [`engine::QueryEngine`] — runs specs, raw-event listings and SQL, each under a timeout and
//!   a memory cap.
//! - [`udaf`] — the sample-rate weighted exact percentile; [`sketch`] and [`distinct`] — the
//!   mergeable percentile sketches and sets of distinct values precomputed partials hold.
//! - [`bubbleup`] — selection vs baseline across every column, in one pass.
//! - [`memory`] — the process-wide memory bound every request draws from, and each request's
//!   answer cap and deadline.
//! - [`distributed`] — on a query node of a cluster: SQL spread over the query nodes'
//!   datafusion-distributed workers, and this node's own worker.
//! - [`buffer_scan`] — on a query node of a cluster: the fresh rows copied from ingest nodes,
//!   named in a distributed plan by their position rather than carried by it.

pub mod bubbleup;
pub mod buffer_scan;
pub mod chunk_cache;
pub mod derived;
pub mod distinct;
pub mod distributed;
pub mod engine;
pub mod json;
pub mod memory;
pub mod partials;
pub mod sketch;
/// Honeycomb's query specification; it lives in `sonde-model` so that it needs no engine.
pub use sonde_model::spec;
pub mod table;
pub mod udaf;
mod varint;

#[cfg(test)]
mod plan_shape_tests;
#[cfg(test)]
mod source_tests;

pub use bubbleup::BubbleUpRequest;
pub use engine::{
    Approximate, EngineConfig, EventsRequest, QueryData, QueryEngine, QueryError, QueryMeta, QueryResult, SqlFormat,
};
pub use memory::{MemoryBudget, RequestBudget};
pub use spec::QuerySpec;

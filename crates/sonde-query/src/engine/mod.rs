//! The query engine: Honeycomb query specs, raw events and SQL over DataFusion.
//!
//! This file holds the engine itself (sessions, tables from a [`DatasetSource`] snapshot, the
//! deadline and memory bound around every DataFusion step, error classification) and the spec
//! entry point; each kind of question has its own file: `breakdown` (results, series, rates,
//! concurrency, heatmaps), `events` (raw events), `sql`, `bubbleup_driver` (the two populations
//! of a BubbleUp), `trace` (trace trees), with the spec-to-expression helpers in `exprs`.
//!
//! A spec runs as a few DataFusion queries over the same filtered dataset table:
//!
//! 1. **results** — one row per group (breakdown values) with every plain aggregate, then
//!    HAVING, ORDER BY (with the breakdowns as a tie-break, so the order is total) and LIMIT;
//! 2. **series** — the same aggregates per `(time bucket, group)`, restricted to the groups of
//!    step 1 when the limit cut some off;
//! 3. only when asked: the value range and histogram of each HEATMAP column, and the span end
//!    buckets for CONCURRENCY.
//!
//! Sample rates weight everything as Honeycomb's do: COUNT is the sum of sample rates, SUM and
//! AVG weight each value by its rate, percentiles treat a value as repeated rate times
//! ([`crate::udaf`]); MIN, MAX and COUNT_DISTINCT are not corrected. Time buckets are integer
//! offsets from the start of the range: bucket `b` holds `[start + b·g, start + (b+1)·g)`.

use crate::bubbleup::{self, BubbleUpRequest};
use crate::chunk_cache::ChunkCache;
use crate::json;
use crate::memory::{self, BudgetExceeded, MemoryBudget, RequestBudget};
use crate::partials::{PartialsCache, PartialsStats};
use crate::spec::{self, CalcOp, FilterOp, Literal, OrderKey, Plan, QuerySpec};
use crate::table::{DatasetTable, STORE_URL, ScanStats};
use crate::udaf::{weighted_percentile, weighted_percentiles};
use arrow::array::{Array, AsArray, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::{count_distinct, max, min, sum};
use datafusion::logical_expr::{SortExpr, when};
use datafusion::prelude::{Expr, SQLOptions, SessionConfig, SessionContext, cast, ident, lit};
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sonde_model::definitions::Definitions;
use sonde_model::derived::Typed;
use sonde_model::trace::SpanRef;
use sonde_model::{ColumnType, DatasetName, SAMPLE_RATE_COLUMN, TIMESTAMP_COLUMN};
use sonde_storage::DatasetSource;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod breakdown;
mod bubbleup_driver;
mod events;
mod exprs;
mod precomputed;
mod spread;
mod sql;
mod trace;

use breakdown::*;
use exprs::*;

/// Errors of the query layer, each mapped to one HTTP status at the edge.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The dataset does not exist.
    #[error("dataset \"{0}\" does not exist")]
    NoSuchDataset(String),
    /// The query specification is invalid.
    #[error("invalid query: {0}")]
    Invalid(#[from] spec::SpecError),
    /// SQL that cannot run: parse or plan error, or a write.
    #[error("{0}")]
    Sql(String),
    /// The query ran past the timeout.
    #[error("query exceeded the timeout of {0:?} (--query-timeout / SONDE_QUERY_TIMEOUT)")]
    Timeout(Duration),
    /// The query needed more memory than the cap.
    #[error(
        "query exceeded the memory cap of {limit} bytes (--query-memory-limit / SONDE_QUERY_MEMORY_LIMIT): {detail}"
    )]
    Memory {
        /// The cap.
        limit: usize,
        /// DataFusion's message.
        detail: String,
    },
    /// The answer would exceed the request's own cap.
    #[error(
        "the answer exceeds the limit of {limit} bytes (--max-answer-bytes / SONDE_MAX_ANSWER_BYTES) while \
         building {what}: ask for less (a LIMIT, a narrower time range or fewer groups) or raise the limit"
    )]
    AnswerTooLarge {
        /// The cap.
        limit: usize,
        /// What was being built.
        what: String,
    },
    /// The server's memory bound for requests is in use by other requests.
    #[error("{0}")]
    Overloaded(#[from] BudgetExceeded),
    /// Nothing matched what was looked up (a trace id, say).
    #[error("{0}")]
    NotFound(String),
    /// Data the query needs cannot be had now (an ingest node's fresh rows, on a query node of
    /// a cluster); the same query may succeed shortly.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (a bug, or an I/O failure).
    #[error("query failed: {0}")]
    Internal(String),
}

/// Query layer results.
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Longest a query may run.
    pub timeout: Duration,
    /// Most memory one query may hold (hash tables, sorts, percentile buffers).
    pub memory_limit: usize,
    /// Parallelism of one query.
    pub target_partitions: usize,
    /// Most memory for Parquet footers and page indexes kept across queries (0: none, so every
    /// query re-reads the footers of the files it opens).
    pub metadata_cache_bytes: usize,
    /// Most memory for column-chunk byte ranges kept across queries (0: no cache).
    pub chunk_cache_bytes: usize,
    /// Most memory all requests together may hold: queries' operators, answers being built,
    /// BubbleUp's counters, trace trees, decompressed bodies (`--memory-limit`).
    pub memory_budget: usize,
    /// Largest answer one request may build, in bytes of Arrow data collected and of JSON
    /// text (`--max-answer-bytes`).
    pub max_answer_bytes: usize,
    /// BubbleUp counts about this many rows once the population holds more: a side holding at
    /// most half of them whole, the rest from a systematic sample; 0: always exact
    /// (`--bubbleup-sample-rows`).
    pub bubbleup_sample_rows: u64,
    /// Most memory for precomputed per-segment partial aggregates ([`crate::partials`]);
    /// 0: none, every breakdown scans every segment it covers (`--partials-cache-bytes`).
    pub partials_cache_bytes: usize,
    /// A breakdown's percentiles are exact up to this many events in its range (and while
    /// their values fit in `memory_limit`), and come from mergeable sketches above it (within
    /// [`crate::sketch::ALPHA`] of the value, marked in `meta.approximate`); 0: always exact
    /// (`--exact-percentile-rows`).
    pub exact_percentile_rows: u64,
}

impl EngineConfig {
    /// Default of `timeout` (the command line's default too: each default is defined once).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default of `memory_limit`: half of `memory_budget`, which a query draws from (a quarter
    /// of the default memory plan: one query holding all of the requests' share beside a flush
    /// and a compaction took the process past 1.5 GiB).
    pub const DEFAULT_MEMORY_LIMIT: usize = Self::DEFAULT_MEMORY_BUDGET / 2;
    /// Default of `metadata_cache_bytes`: a sixteenth of the `sonde` binary's default memory
    /// plan (1 GiB in all).
    pub const DEFAULT_METADATA_CACHE_BYTES: usize = 64 << 20;
    /// Default of `chunk_cache_bytes`: a thirty-second of the default memory plan.
    pub const DEFAULT_CHUNK_CACHE_BYTES: usize = 32 << 20;
    /// Default of `memory_budget`: half of the default memory plan.
    pub const DEFAULT_MEMORY_BUDGET: usize = 512 << 20;
    /// Default of `max_answer_bytes`.
    pub const DEFAULT_MAX_ANSWER_BYTES: usize = 128 << 20;
    /// Default of `bubbleup_sample_rows`: about what BubbleUp reads and counts in half a
    /// second on this project's 2-core reference machine.
    pub const DEFAULT_BUBBLEUP_SAMPLE_ROWS: u64 = 500_000;
    /// Default of `partials_cache_bytes`: a thirty-second of the default memory plan. A
    /// breakdown's partials are a few kilobytes per segment, so this holds thousands of
    /// (segment, query shape) pairs.
    pub const DEFAULT_PARTIALS_CACHE_BYTES: usize = 32 << 20;
    /// Default of `exact_percentile_rows`: about what an exact percentile breakdown reads in a
    /// second on this project's 2-core reference machine.
    pub const DEFAULT_EXACT_PERCENTILE_ROWS: u64 = 10_000_000;
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            timeout: Self::DEFAULT_TIMEOUT,
            memory_limit: Self::DEFAULT_MEMORY_LIMIT,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            metadata_cache_bytes: Self::DEFAULT_METADATA_CACHE_BYTES,
            chunk_cache_bytes: Self::DEFAULT_CHUNK_CACHE_BYTES,
            memory_budget: Self::DEFAULT_MEMORY_BUDGET,
            max_answer_bytes: Self::DEFAULT_MAX_ANSWER_BYTES,
            bubbleup_sample_rows: Self::DEFAULT_BUBBLEUP_SAMPLE_ROWS,
            partials_cache_bytes: Self::DEFAULT_PARTIALS_CACHE_BYTES,
            exact_percentile_rows: Self::DEFAULT_EXACT_PERCENTILE_ROWS,
        }
    }
}

/// The answer to a query spec: `{"data": {"series", "results"}, "meta": {…}}`.
#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    /// The answer's rows.
    pub data: QueryData,
    /// What the query touched and how long it took.
    pub meta: QueryMeta,
}

/// A query's rows: one per group, and one per (time bucket, group).
#[derive(Debug, Clone, Serialize)]
pub struct QueryData {
    /// Per time bucket and group: `{"time", "data": {breakdowns…, calculations…}}`, by time.
    pub series: Vec<Value>,
    /// Per group, in the spec's order: `{"data": {breakdowns…, calculations…}}`.
    pub results: Vec<Value>,
    /// With `compare_time_offset_seconds`: the same query over the earlier range (its series
    /// at that range's own times; the groups are that range's own top groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<Compared>,
}

/// The answer of the same query over an earlier range.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    /// How much earlier, in seconds.
    pub offset_seconds: i64,
    /// Its series, at the earlier range's times (add the offset to draw them over the main).
    pub series: Vec<Value>,
    /// Its results per group.
    pub results: Vec<Value>,
}

/// What a query touched and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct QueryMeta {
    /// Events read (after segment pruning).
    pub rows_examined: u64,
    /// Segments of the dataset.
    pub segments_total: usize,
    /// Segments opened.
    pub segments_scanned: usize,
    /// Segments skipped by their time bounds, statistics or indexes.
    pub segments_pruned: usize,
    /// Of those, skipped by an id index.
    pub segments_pruned_by_index: usize,
    /// Segments answered from precomputed partial aggregates instead of being read (they are
    /// not in `segments_scanned`; see `--partials-cache-bytes`).
    pub segments_precomputed: usize,
    /// What in the answer is approximate, and why (absent: everything is exact).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approximate: Option<Approximate>,
    /// Time taken.
    pub elapsed_ms: f64,
    /// Seconds per time bucket.
    pub granularity: i64,
    /// The range queried (RFC 3339).
    pub start_time: String,
    /// Its end (exclusive).
    pub end_time: String,
    /// Groups answered.
    pub groups: usize,
    /// Whether the limit cut groups off.
    pub groups_truncated: bool,
    /// What the query used of a cluster's workers: on a query node of a cluster, the
    /// aggregates a specification needs run across the workers as SQL does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distributed: Option<crate::distributed::Distribution>,
}

/// Which parts of an answer are approximate.
#[derive(Debug, Clone, Serialize)]
pub struct Approximate {
    /// The approximate calculations' kind: `"percentiles"`.
    pub what: &'static str,
    /// Largest relative error of each approximate value.
    pub relative_error: f64,
    /// Why: the events in the range, and the limit above which they are approximated.
    pub reason: String,
}

/// A raw-events request: the spec's filters and time range, newest first, paged.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct EventsRequest {
    /// Filters and time range.
    #[serde(flatten)]
    pub population: spec::Population,
    /// Events per page (default 100, at most 10,000).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Events to skip (for paging).
    #[serde(default)]
    pub offset: Option<u64>,
    /// Columns to return (default: all).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
}

/// How `/api/sql` encodes its answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SqlFormat {
    /// `{"columns": [...], "rows": [{...}], "meta": {...}}`.
    #[default]
    Json,
    /// CSV with a header line.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
}

impl SqlFormat {
    /// The answer's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            SqlFormat::Json => "application/json",
            SqlFormat::Csv => "text/csv; charset=utf-8",
            SqlFormat::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// The query engine over a source of datasets (the local storage, or later a catalog in object
/// storage plus ingest nodes' fresh batches).
#[derive(Debug)]
pub struct QueryEngine {
    source: Arc<dyn DatasetSource>,
    /// Shared across queries: the object store registry and the Parquet footer cache.
    shared: Arc<RuntimeEnv>,
    /// The column-chunk cache queries read through, if enabled.
    chunks: Option<Arc<ChunkCache>>,
    /// The store queries read segments through: the storage's, behind the chunk cache if any.
    store: Arc<dyn ObjectStore>,
    /// The process-wide memory bound every request draws from.
    budget: Arc<MemoryBudget>,
    /// Per-segment partial aggregates of earlier breakdowns.
    partials: PartialsCache,
    config: EngineConfig,
    /// This node's part in distributed SQL, on a query node of a cluster.
    cluster: Option<crate::distributed::Cluster>,
    /// On a query node of a cluster: reads the fresh rows a snapshot names but this node's copy
    /// does not hold (from the ingest node), and those of a plan from another node.
    fresh: Option<Arc<dyn crate::buffer_scan::FreshReader>>,
}

const SR: &str = SAMPLE_RATE_COLUMN;

impl QueryEngine {
    /// Creates an engine reading from `source`.
    pub fn new(source: Arc<dyn DatasetSource>, config: EngineConfig) -> Result<QueryEngine> {
        let shared = RuntimeEnvBuilder::new()
            .with_metadata_cache_limit(config.metadata_cache_bytes)
            .build_arc()
            .map_err(internal)?;
        let url = ObjectStoreUrl::parse(STORE_URL).map_err(internal)?;
        let chunks = (config.chunk_cache_bytes > 0)
            .then(|| Arc::new(ChunkCache::new(source.segment_store(), config.chunk_cache_bytes)));
        let store: Arc<dyn ObjectStore> = match &chunks {
            Some(c) => c.clone(),
            None => source.segment_store(),
        };
        shared.register_object_store(url.as_ref(), store.clone());
        Ok(QueryEngine {
            source,
            shared,
            chunks,
            store,
            budget: MemoryBudget::new(config.memory_budget),
            partials: PartialsCache::new(config.partials_cache_bytes),
            config,
            cluster: None,
            fresh: None,
        })
    }

    /// Gives this engine (a query node of a cluster) the reader of ingest nodes' fresh rows:
    /// where a snapshot names rows past this node's copy of an ingest node's buffer (the copies
    /// stop at `--max-buffer-bytes`), a query reads them from the ingest node as it starts.
    pub fn with_fresh_reader(mut self, fresh: Arc<dyn crate::buffer_scan::FreshReader>) -> QueryEngine {
        self.fresh = Some(fresh);
        self
    }

    /// Makes this engine a worker and coordinator of distributed SQL (a query node of a
    /// cluster): [`Self::worker_routes`] must then be served where `config.self_url` points,
    /// and [`Self::peers`] kept up to date. Needs [`Self::with_fresh_reader`] first: a plan from
    /// another node names fresh rows, which this node's worker reads through it (see
    /// [`crate::buffer_scan`]).
    pub fn with_cluster(mut self, config: crate::distributed::ClusterConfig) -> Result<QueryEngine> {
        let fresh = self.fresh.clone().ok_or_else(|| {
            QueryError::Internal("a query node's engine needs its reader of fresh rows before its worker".into())
        })?;
        let cluster = crate::distributed::Cluster::new(
            config,
            self.shared.clone(),
            self.config.memory_limit,
            self.budget.clone(),
            fresh,
        )
        .map_err(internal)?;
        self.cluster = Some(cluster);
        Ok(self)
    }

    /// The workers distributed SQL may use, when this engine is part of a cluster.
    pub fn peers(&self) -> Option<crate::distributed::Peers> {
        self.cluster.as_ref().map(|c| c.peers.clone())
    }

    /// Distributed SQL coordinated here (queries, and those run again), when this engine is
    /// part of a cluster.
    pub fn distributed_counts(&self) -> Option<crate::distributed::DistributedTotals> {
        self.cluster.as_ref().map(|c| c.counts.totals())
    }

    /// Where the other query nodes reach this node's worker, when this engine is part of a cluster.
    pub fn worker_url(&self) -> Option<url::Url> {
        self.cluster.as_ref().map(|c| c.config.self_url.clone())
    }

    /// The gRPC service other query nodes send tasks to, when this engine is part of a cluster.
    pub fn worker_routes(&self) -> Option<tonic::service::Routes> {
        self.cluster.as_ref().map(|c| c.routes())
    }

    /// The column-chunk cache's hits, misses and bytes held, when it is enabled.
    pub fn chunk_cache_stats(&self) -> Option<(u64, u64, usize)> {
        self.chunks.as_ref().map(|c| {
            (
                c.stats.hits.load(std::sync::atomic::Ordering::Relaxed),
                c.stats.misses.load(std::sync::atomic::Ordering::Relaxed),
                c.bytes(),
            )
        })
    }

    /// The precomputed partials' hits, misses and size.
    pub fn partials_stats(&self) -> PartialsStats {
        self.partials.stats()
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The process-wide memory bound (for other request paths, e.g. decompression, and metrics).
    pub fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// A new request's budget: its answer cap, its share of the process bound, its deadline.
    pub fn request(&self) -> RequestBudget {
        RequestBudget::new(&self.budget, self.config.max_answer_bytes, self.config.timeout)
    }

    /// A session for one query: its own memory pool (the per-query cap), the shared object
    /// stores, and Sonde's functions.
    fn session(&self) -> Result<SessionContext> {
        self.session_with_pushdown(true)
    }

    /// A session whose Parquet scans evaluate filters while decoding (`pushdown`) or after.
    /// Decoding with a row filter pays when it keeps few rows (the other columns are then
    /// decoded only where it held) and costs when it keeps most, as `!=` usually does.
    fn session_with_pushdown(&self, pushdown: bool) -> Result<SessionContext> {
        let mut state = datafusion::execution::SessionStateBuilder::new()
            .with_config(self.session_config(pushdown))
            .with_runtime_env(self.runtime()?)
            .with_default_features()
            .build();
        // The same functions a distributed worker registers (`distributed::register_functions`).
        crate::distributed::register_functions(&mut state).map_err(internal)?;
        Ok(SessionContext::new_with_state(state))
    }

    /// A query's runtime: its own memory pool (the per-query cap), the shared stores and caches.
    fn runtime(&self) -> Result<Arc<RuntimeEnv>> {
        crate::distributed::query_runtime(&self.shared, self.config.memory_limit, &self.budget).map_err(internal)
    }

    fn session_config(&self, pushdown: bool) -> SessionConfig {
        let mut config = SessionConfig::new().with_target_partitions(self.config.target_partitions.max(1));
        let opts = config.options_mut();
        opts.execution.parquet.pushdown_filters = pushdown;
        opts.execution.parquet.reorder_filters = true;
        config
    }

    fn snapshot(&self, dataset: &DatasetName) -> Result<sonde_storage::source::DatasetSnapshot> {
        self.source
            .snapshot(dataset)
            .ok_or_else(|| QueryError::NoSuchDataset(dataset.to_string()))
    }

    /// The table of a dataset as it stands, with every fresh row a query node's snapshot names.
    async fn table(&self, dataset: &DatasetName) -> Result<Arc<DatasetTable>> {
        let snapshot = self.snapshot_with_fresh_rows(dataset).await?;
        self.table_of(snapshot)
    }

    fn table_of(&self, snapshot: sonde_storage::source::DatasetSnapshot) -> Result<Arc<DatasetTable>> {
        let cache = self.shared.cache_manager.get_file_metadata_cache();
        let index = self.source.segment_index();
        Ok(Arc::new(
            DatasetTable::new(snapshot, self.store.clone(), cache, index).map_err(internal)?,
        ))
    }

    /// A snapshot of `dataset` holding every row it names. On a query node of a cluster whose
    /// copy of the ingest node's buffer stopped at `--max-buffer-bytes`, the rows past the copy
    /// are read from the ingest node, so that every acknowledged event is answered, up to half
    /// `--query-memory-limit` of them (past it the query is refused, naming both flags). An
    /// ingest node that flushed since the snapshot answers "moved": this node reads the flush's
    /// record within a round of its copies (`--fresh-interval`), so another snapshot is taken
    /// 250 ms later, three times at most. One that cannot be reached leaves the snapshot with
    /// the copy alone, as between two copies (the README's cluster costs). Without a reader (a
    /// single node) there are none to read.
    async fn snapshot_with_fresh_rows(&self, dataset: &DatasetName) -> Result<sonde_storage::source::DatasetSnapshot> {
        use crate::buffer_scan::FreshError;
        let mut tries = 0;
        loop {
            let mut snapshot = self.snapshot(dataset)?;
            let (Some((from, to)), Some(reader), Some(mut at)) =
                (snapshot.fresh_rows_missing(), &self.fresh, snapshot.fresh.clone())
            else {
                return Ok(snapshot);
            };
            match reader.read(dataset, &at, from, to, self.config.memory_limit / 2).await {
                Ok(read) => {
                    snapshot.add_fresh_rows(read.batches);
                    return Ok(snapshot);
                }
                Err(FreshError::Unreachable(e)) => {
                    tracing::warn!(%dataset, node = %at.owner.node, error = %e,
                        "the fresh events past this node's copy cannot be read; answering from the copy");
                    at.rows = from;
                    snapshot.fresh = (from > 0).then_some(at);
                    return Ok(snapshot);
                }
                Err(FreshError::Moved(_)) if tries < 3 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    return Err(QueryError::Unavailable(format!(
                        "dataset {dataset}: {} fresh events past this query node's copy of ingest node {}'s buffer \
                         (the copies stop at --max-buffer-bytes) could not be read: {e}; they are read from \
                         the ingest node up to half --query-memory-limit, and answered from segments once flushed",
                        to - from,
                        at.owner.node
                    )));
                }
            }
        }
    }

    /// Runs `fut` in the time the request has left, mapping DataFusion's errors.
    async fn timed<T>(
        &self,
        req: &RequestBudget,
        fut: impl std::future::Future<Output = Result<T, DataFusionError>>,
    ) -> Result<T> {
        match tokio::time::timeout(req.remaining(), fut).await {
            Err(_) => Err(QueryError::Timeout(req.timeout())),
            Ok(r) => r.map_err(|e| self.df_error(e)),
        }
    }

    /// Runs a physical plan to completion in the time the request has left, every batch
    /// counted against its budget as it arrives (an answer never grows past its cap unseen).
    async fn collect_plan(
        &self,
        req: &RequestBudget,
        plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        task: Arc<datafusion::execution::TaskContext>,
        what: &str,
    ) -> Result<Vec<RecordBatch>> {
        use futures::StreamExt;
        let held = std::sync::atomic::AtomicUsize::new(0);
        let run = async {
            let mut stream = datafusion::physical_plan::execute_stream(plan, task)?;
            let mut out = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let bytes = memory::batch_bytes(&batch);
                req.account(bytes, what)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                held.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                out.push(batch);
            }
            Ok::<_, DataFusionError>(out)
        };
        let collected = self.timed(req, run).await;
        if collected.is_err() {
            // The rows collected so far are dropped: a retry must not pay for them twice.
            req.release(held.into_inner());
        }
        collected
    }

    /// [`Self::collect_plan`] for a DataFrame.
    async fn collect(&self, req: &RequestBudget, df: DataFrame, what: &str) -> Result<Vec<RecordBatch>> {
        let task = Arc::new(df.task_ctx());
        let plan = self.timed(req, df.create_physical_plan()).await?;
        self.collect_plan(req, plan, task, what).await
    }

    /// Sorts a DataFusion error into what it means for the user: the memory cap, the process
    /// bound, an answer too large, a mistake in the query, or a failure of ours.
    fn df_error(&self, e: DataFusionError) -> QueryError {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(detail) => QueryError::Memory {
                limit: self.config.memory_limit,
                detail: detail.clone(),
            },
            DataFusionError::External(inner) => {
                if let Some(b) = inner.downcast_ref::<BudgetExceeded>() {
                    QueryError::Overloaded(b.clone())
                } else if let Some(q) = inner.downcast_ref::<QueryError>() {
                    match q {
                        QueryError::AnswerTooLarge { limit, what } => QueryError::AnswerTooLarge {
                            limit: *limit,
                            what: what.clone(),
                        },
                        QueryError::Overloaded(b) => QueryError::Overloaded(b.clone()),
                        QueryError::Timeout(d) => QueryError::Timeout(*d),
                        other => QueryError::Internal(other.to_string()),
                    }
                } else {
                    QueryError::Internal(inner.to_string())
                }
            }
            root @ (DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)) => QueryError::Sql(root.to_string()),
            root => QueryError::Internal(root.to_string()),
        }
    }

    /// Validates a spec against a dataset's schema (and its derived columns) without running it.
    pub fn validate(&self, dataset: &DatasetName, spec: &QuerySpec, defs: &Definitions) -> Result<Plan> {
        // The schema only: the columns this node knows, without reading any fresh rows.
        let snapshot = self.snapshot(dataset)?;
        self.plan(&*self.table_of(snapshot)?, dataset, spec, defs)
    }

    fn plan(&self, table: &DatasetTable, dataset: &DatasetName, spec: &QuerySpec, defs: &Definitions) -> Result<Plan> {
        let columns = queryable_columns(table);
        let stored = defs.for_dataset(dataset.as_str());
        Ok(spec::plan_with(spec, &columns, &stored, sonde_model::time::now_us())?)
    }

    /// The dataset as a DataFrame for one question: its table, with `derived` columns added
    /// (computed inside the scan, so filters on them still push down to the columns they
    /// read) and, in usage mode, every sample rate read as 1.
    fn frame(
        &self,
        ctx: &SessionContext,
        table: &Arc<DatasetTable>,
        derived: &[(String, Typed)],
        usage_mode: bool,
    ) -> Result<DataFrame> {
        let mut df = ctx.read_table(table.clone()).map_err(|e| self.df_error(e))?;
        for (name, t) in derived {
            df = df
                .with_column(name, crate::derived::compile(t))
                .map_err(|e| self.df_error(e))?;
        }
        if usage_mode {
            df = df.with_column(SR, lit(1i64)).map_err(|e| self.df_error(e))?;
        }
        Ok(df)
    }

    /// The dataset as a DataFrame for a plan: [`Self::frame`] with the plan's derived columns,
    /// then, for each relation its relational fields use (`root.`, `parent.`, …), the related
    /// spans joined on: per target span, whether one was found (a marker the WHERE clause
    /// tests) and its breakdown values (`root.name`).
    ///
    /// Each relation is one aggregate over the same dataset (the time range and that
    /// relation's filters, all on the same span) keyed by what links it to a target span — the
    /// trace id (`root.`, `any.`, `none.`), the trace and the parent's span id (`parent.`), the
    /// trace and the span's own id as a parent (`child.`) — so duplicated ids never multiply
    /// target spans, then left-joined: with OR, a relation is one more alternative. Where
    /// several related spans match, the breakdown value is the smallest of theirs (Honeycomb
    /// takes "the first found"; this is the same answer every time).
    async fn plan_frame(
        &self,
        ctx: &SessionContext,
        table: &Arc<DatasetTable>,
        plan: &Plan,
        derived: &[(String, Typed)],
        req: &RequestBudget,
    ) -> Result<DataFrame> {
        use datafusion::functions_aggregate::expr_fn::count;
        use datafusion::logical_expr::JoinType;
        use spec::Relation;
        // The trace columns, by the names the dataset's definition gives them.
        let (trace, span, parent) = (&*plan.trace.trace_id, &*plan.trace.span_id, &*plan.trace.parent_id);
        let mut df = self.frame(ctx, table, derived, plan.usage_mode)?;
        for (k, r) in plan.relations.iter().enumerate() {
            let mut related = time_clause(plan, table).into_iter().collect::<Vec<_>>();
            if r.relation == Relation::Root {
                related.push(ident(parent).is_null().or(ident(parent).eq(lit(""))));
            }
            related.extend(r.filters.iter().map(filter_expr));
            let (theirs, ours): (Vec<&str>, Vec<&str>) = match r.relation {
                Relation::Parent => (vec![trace, span], vec![trace, parent]),
                Relation::Child => (vec![trace, parent], vec![trace, span]),
                _ => (vec![trace], vec![trace]),
            };
            let key = |i: usize| format!("__rel{k}_key{i}");
            let group: Vec<Expr> = theirs
                .iter()
                .enumerate()
                .map(|(i, c)| ident(*c).alias(key(i)))
                .collect();
            let mut aggs: Vec<Expr> = r
                .breakdowns
                .iter()
                .map(|b| min(ident(b)).alias(format!("{}.{b}", r.relation.prefix())))
                .collect();
            aggs.push(count(lit(1i64)).alias(relation_marker(k)));
            let mut right = self.frame(ctx, table, derived, false)?;
            if let Some(p) = related.into_iter().reduce(Expr::and) {
                right = right.filter(p).map_err(|e| self.df_error(e))?;
            }
            // A filter-only `root.` or `any.` relation under AND means "the trace id is one of
            // those of the matching related spans": asked first, those ids become an IN list
            // on the target spans, which the segments' id indexes use to open only the
            // segments holding them. With more ids than that, the join below runs instead.
            if !plan.any
                && r.calc.is_none()
                && r.breakdowns.is_empty()
                && !r.filters.is_empty()
                && matches!(r.relation, Relation::Root | Relation::Any(_))
            {
                let ids = right
                    .clone()
                    .aggregate(vec![ident(trace).alias("id")], vec![])
                    .and_then(|d| d.limit(0, Some(Self::RELATED_ID_LIST + 1)))
                    .map_err(|e| self.df_error(e))?;
                let batches = self.collect(req, ids, "the related spans' trace ids").await?;
                if batches.iter().map(|b| b.num_rows()).sum::<usize>() <= Self::RELATED_ID_LIST {
                    let mut list: Vec<Expr> = Vec::new();
                    for b in &batches {
                        let col = arrow::compute::cast(b.column(0), &DataType::Utf8).map_err(internal)?;
                        let ids = col.as_string::<i32>();
                        list.extend(ids.iter().flatten().map(|id| lit(id.to_string())));
                    }
                    let keep = if list.is_empty() {
                        lit(false)
                    } else {
                        ident(trace).in_list(list, false)
                    };
                    df = df
                        .filter(keep)
                        .and_then(|d| d.with_column(&relation_marker(k), lit(1i64)))
                        .map_err(|e| self.df_error(e))?;
                    continue;
                }
            }
            let right = right.aggregate(group, aggs).map_err(|e| self.df_error(e))?;
            let on: Vec<Expr> = ours
                .iter()
                .enumerate()
                .map(|(i, c)| ident(*c).eq(ident(key(i))))
                .collect();
            df = df.join_on(right, JoinType::Left, on).map_err(|e| self.df_error(e))?;
        }
        Ok(df)
    }

    /// What an exact percentile may hold per event in its range, per collection of values
    /// (see `breakdown::calc_aggregate`), as its aggregate reports it to the memory pool at
    /// worst: a value and its weight (16 bytes) in vectors grown by doubling (up to 32), in
    /// both grouping sets of the results and the series.
    const EXACT_PERCENTILE_BYTES: u64 = 64;

    /// Most trace ids a filter-only `root.`/`any.` relation is turned into a list of, to prune
    /// segments by their id indexes (see [`Self::plan_frame`]).
    const RELATED_ID_LIST: usize = 10_000;

    /// Runs a Honeycomb query specification within the request's budget; `derived` holds the
    /// stored derived columns its names may refer to.
    pub async fn query(
        &self,
        dataset: &DatasetName,
        spec: &QuerySpec,
        defs: &Definitions,
        req: &RequestBudget,
    ) -> Result<QueryResult> {
        let started = Instant::now();
        let table = self.table(dataset).await?;
        let mut plan = self.plan(&table, dataset, spec, defs)?;
        // Percentiles over more events than answer exactly in time, or whose values would not
        // fit in a query's memory, come from sketches.
        let in_range = table.rows_in_range(plan.start_us, plan.end_us - 1);
        let limit = self.config.exact_percentile_rows;
        let exact_bytes = in_range
            .saturating_mul(breakdown::percentile_collections(&plan))
            .saturating_mul(Self::EXACT_PERCENTILE_BYTES);
        let reason = if limit == 0 || exact_bytes == 0 {
            None
        } else if in_range > limit {
            Some(format!(
                "{in_range} events in the range, more than are answered exactly (--exact-percentile-rows {limit})"
            ))
        } else if exact_bytes > self.config.memory_limit as u64 {
            Some(format!(
                "{in_range} events in the range: exact percentiles would hold about {exact_bytes} bytes, more \
                 than one query may use (--query-memory-limit {})",
                self.config.memory_limit
            ))
        } else {
            None
        };
        plan.sketched = reason.is_some();
        let approximate = reason.map(|reason| Approximate {
            what: "percentiles",
            relative_error: crate::sketch::ALPHA,
            reason,
        });
        let stats = table.stats();
        let mut out = self.run_plan(&table, &plan, req).await?;
        let compare = match plan.compare_offset_s {
            Some(offset) => {
                let shift = offset * 1_000_000;
                let earlier = Plan {
                    start_us: plan.start_us - shift,
                    end_us: plan.end_us - shift,
                    compare_offset_s: None,
                    ..plan.clone()
                };
                let c = self.run_plan(&table, &earlier, req).await?;
                out.distributed = crate::distributed::Distribution::merged(out.distributed.take(), c.distributed);
                Some(Compared {
                    offset_seconds: offset,
                    series: c.series,
                    results: c.results,
                })
            }
            None => None,
        };
        let scan: ScanStats = stats.lock().unwrap().clone();
        let meta = QueryMeta {
            rows_examined: scan.rows_examined,
            segments_total: scan.segments_total,
            segments_scanned: scan.segments_scanned,
            segments_pruned: scan
                .segments_total
                .saturating_sub(scan.segments_scanned + scan.segments_precomputed),
            segments_pruned_by_index: scan.segments_pruned_by_index,
            segments_precomputed: scan.segments_precomputed,
            approximate,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
            granularity: plan.granularity_s,
            start_time: sonde_model::time::format_us(plan.start_us),
            end_time: sonde_model::time::format_us(plan.end_us),
            groups: out.groups,
            groups_truncated: out.truncated,
            distributed: out.distributed,
        };
        Ok(QueryResult {
            data: QueryData {
                series: out.series,
                results: out.results,
                compare,
            },
            meta,
        })
    }

    /// One run of a validated plan over the table.
    async fn run_plan(&self, table: &Arc<DatasetTable>, plan: &Plan, req: &RequestBudget) -> Result<Output> {
        // COUNT_DISTINCT from sets of distinct values where partials answer the plan, so that
        // it rolls up from them (see `precomputed::distinct_sets_apply`).
        if !precomputed::distinct_sets_apply(self, table, plan) {
            return self.run_plan_once(table, plan, req).await;
        }
        let with_sets = Plan {
            distinct_sets: true,
            ..plan.clone()
        };
        let held = req.held();
        match self.run_plan_once(table, &with_sets, req).await {
            // Sets too large for the answer's cap: counted from the rows instead, now and from
            // then on, with what the attempt held given back.
            Err(QueryError::AnswerTooLarge { .. }) => {
                precomputed::refuse_sets(self, table, plan);
                req.release(req.held().saturating_sub(held));
                self.run_plan_once(table, plan, req).await
            }
            other => other,
        }
    }

    /// [`Self::run_plan`] as the plan says, with no second attempt.
    async fn run_plan_once(&self, table: &Arc<DatasetTable>, plan: &Plan, req: &RequestBudget) -> Result<Output> {
        let ctx = self.session_with_pushdown(selective(plan))?;
        let base = self
            .plan_frame(&ctx, table, plan, &plan.derived, req)
            .await?
            .filter(where_clause(plan, table))
            .map_err(|e| self.df_error(e))?;
        let run = Run {
            plan,
            engine: self,
            table,
            req,
            used: Default::default(),
        };
        run.execute(base).await
    }
}

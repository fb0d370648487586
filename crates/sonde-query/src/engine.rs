//! The query engine: Honeycomb query specs, raw events and SQL over DataFusion.
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
use crate::memory::{self, BudgetExceeded, BudgetedPool, MemoryBudget, RequestBudget};
use crate::spec::{self, CalcOp, FilterOp, Literal, OrderKey, Plan, QuerySpec};
use crate::table::{DatasetTable, STORE_URL, ScanStats};
use crate::udaf::weighted_percentile;
use arrow::array::{Array, AsArray, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::functions_aggregate::expr_fn::{count_distinct, max, min, sum};
use datafusion::logical_expr::{SortExpr, when};
use datafusion::prelude::{Expr, SQLOptions, SessionConfig, SessionContext, cast, ident, lit};
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sonde_model::trace::SpanRef;
use sonde_model::{ColumnType, DatasetName, SAMPLE_RATE_COLUMN, TIMESTAMP_COLUMN};
use sonde_storage::Storage;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            timeout: Duration::from_secs(30),
            memory_limit: 2 << 30,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            metadata_cache_bytes: 256 << 20,
            chunk_cache_bytes: 256 << 20,
            memory_budget: 4 << 30,
            max_answer_bytes: 128 << 20,
        }
    }
}

/// The answer to a query spec.
#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    /// `series` and `results`.
    pub data: Value,
    /// What the query touched and how long it took.
    pub meta: Value,
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

/// The query engine over a storage.
#[derive(Debug)]
pub struct QueryEngine {
    storage: Arc<Storage>,
    /// Shared across queries: the object store registry and the Parquet footer cache.
    shared: Arc<RuntimeEnv>,
    /// The column-chunk cache queries read through, if enabled.
    chunks: Option<Arc<ChunkCache>>,
    /// The store queries read segments through: the storage's, behind the chunk cache if any.
    store: Arc<dyn ObjectStore>,
    /// The process-wide memory bound every request draws from.
    budget: Arc<MemoryBudget>,
    config: EngineConfig,
}

const SR: &str = SAMPLE_RATE_COLUMN;

impl QueryEngine {
    /// Creates an engine reading from `storage`.
    pub fn new(storage: Arc<Storage>, config: EngineConfig) -> Result<QueryEngine> {
        let shared = RuntimeEnvBuilder::new()
            .with_metadata_cache_limit(config.metadata_cache_bytes)
            .build_arc()
            .map_err(internal)?;
        let url = ObjectStoreUrl::parse(STORE_URL).map_err(internal)?;
        let chunks = (config.chunk_cache_bytes > 0)
            .then(|| Arc::new(ChunkCache::new(storage.object_store(), config.chunk_cache_bytes)));
        let store: Arc<dyn ObjectStore> = match &chunks {
            Some(c) => c.clone(),
            None => storage.object_store(),
        };
        shared.register_object_store(url.as_ref(), store.clone());
        Ok(QueryEngine {
            storage,
            shared,
            chunks,
            store,
            budget: MemoryBudget::new(config.memory_budget),
            config,
        })
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
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(BudgetedPool::new(
                self.config.memory_limit,
                self.budget.clone(),
            )))
            // No spilling: a query over its cap fails with a clear error instead of filling the
            // disk the WAL and segments live on.
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .with_object_store_registry(self.shared.object_store_registry.clone())
            .build_arc()
            .map_err(internal)?;
        let mut config = SessionConfig::new().with_target_partitions(self.config.target_partitions.max(1));
        let opts = config.options_mut();
        opts.execution.parquet.pushdown_filters = pushdown;
        opts.execution.parquet.reorder_filters = true;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        ctx.register_udaf(weighted_percentile());
        Ok(ctx)
    }

    fn table(&self, dataset: &DatasetName) -> Result<Arc<DatasetTable>> {
        let snapshot = self
            .storage
            .snapshot(dataset)
            .ok_or_else(|| QueryError::NoSuchDataset(dataset.to_string()))?;
        let cache = self.shared.cache_manager.get_file_metadata_cache();
        let index = self.storage.index_cache();
        Ok(Arc::new(
            DatasetTable::new(snapshot, self.store.clone(), cache, index).map_err(internal)?,
        ))
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
        let run = async {
            let mut stream = datafusion::physical_plan::execute_stream(plan, task)?;
            let mut out = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                req.account(memory::batch_bytes(&batch), what)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                out.push(batch);
            }
            Ok::<_, DataFusionError>(out)
        };
        self.timed(req, run).await
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

    /// Validates a spec against a dataset's schema without running it.
    pub fn validate(&self, dataset: &DatasetName, spec: &QuerySpec) -> Result<Plan> {
        let table = self.table(dataset)?;
        let columns = queryable_columns(&table);
        Ok(spec::plan(spec, &columns, sonde_model::time::now_us())?)
    }

    /// Runs a Honeycomb query specification within the request's budget.
    pub async fn query(&self, dataset: &DatasetName, spec: &QuerySpec, req: &RequestBudget) -> Result<QueryResult> {
        let started = Instant::now();
        let table = self.table(dataset)?;
        let columns = queryable_columns(&table);
        let plan = spec::plan(spec, &columns, sonde_model::time::now_us())?;
        let ctx = self.session_with_pushdown(selective(&plan))?;
        let stats = table.stats();
        let base = ctx
            .read_table(table.clone())
            .and_then(|df| df.filter(where_clause(&plan, &table)))
            .map_err(|e| self.df_error(e))?;
        let run = Run {
            plan: &plan,
            engine: self,
            table: &table,
            req,
        };
        let out = run.execute(base).await?;
        let scan: ScanStats = stats.lock().unwrap().clone();
        let meta = json!({
            "rows_examined": scan.rows_examined,
            "segments_total": scan.segments_total,
            "segments_scanned": scan.segments_scanned,
            "segments_pruned": scan.segments_total.saturating_sub(scan.segments_scanned),
            "segments_pruned_by_index": scan.segments_pruned_by_index,
            "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
            "granularity": plan.granularity_s,
            "start_time": sonde_model::time::format_us(plan.start_us),
            "end_time": sonde_model::time::format_us(plan.end_us),
            "groups": out.groups,
            "groups_truncated": out.truncated,
        });
        Ok(QueryResult {
            data: json!({"series": out.series, "results": out.results}),
            meta,
        })
    }

    /// Raw events matching filters and a time range, newest first, as the answer's JSON text
    /// (`{"events": [...], "meta": {...}}`), built within the request's budget.
    pub async fn events(&self, dataset: &DatasetName, req: &EventsRequest, budget: &RequestBudget) -> Result<Vec<u8>> {
        let started = Instant::now();
        let table = self.table(dataset)?;
        let columns = queryable_columns(&table);
        let spec = req.population.spec(req.limit);
        let plan = spec::plan(&spec, &columns, sonde_model::time::now_us())?;
        if let Some(cols) = &req.columns {
            for (i, c) in cols.iter().enumerate() {
                if c != TIMESTAMP_COLUMN && !columns.contains_key(c) {
                    return Err(spec::SpecError {
                        field: format!("columns[{i}]"),
                        message: format!("unknown column {c:?}"),
                    }
                    .into());
                }
            }
        }
        let ctx = self.session()?;
        let stats = table.stats();
        let offset = req.offset.unwrap_or(0) as usize;
        let newest_first = || vec![ident(TIMESTAMP_COLUMN).sort(false, false)];
        // First the times of the newest matches alone (the filter's columns and the timestamp),
        // then whole events only from the oldest of those times on: time-sorted segments let
        // the second scan skip every page before it, so the other columns are decoded for a
        // sliver of the rows instead of every match.
        let wanted = offset + plan.limit;
        let times = ctx
            .read_table(table.clone())
            .and_then(|df| df.filter(where_clause(&plan, &table)))
            .and_then(|df| df.select(vec![ident(TIMESTAMP_COLUMN)]))
            .and_then(|df| df.sort(newest_first()))
            .and_then(|df| df.limit(0, Some(wanted)))
            .map_err(|e| self.df_error(e))?;
        let times = self.collect(budget, times, "the newest matches' times").await?;
        let found: usize = times.iter().map(|b| b.num_rows()).sum();
        let cutoff = (found == wanted && wanted > 0)
            .then(|| times.iter().rev().find(|b| b.num_rows() > 0))
            .flatten()
            .and_then(|b| {
                let ts = b.column(0).as_any().downcast_ref::<TimestampMicrosecondArray>()?;
                ts.is_valid(b.num_rows() - 1).then(|| ts.value(b.num_rows() - 1))
            });
        let mut filter = where_clause(&plan, &table);
        if let Some(t) = cutoff {
            filter = filter.and(ident(TIMESTAMP_COLUMN).gt_eq(ts_lit(t)));
        }
        let mut df = ctx
            .read_table(table.clone())
            .and_then(|df| df.filter(filter))
            .and_then(|df| df.sort(newest_first()))
            .and_then(|df| df.limit(offset, Some(plan.limit)))
            .map_err(|e| self.df_error(e))?;
        if let Some(cols) = &req.columns {
            let mut sel = vec![ident(TIMESTAMP_COLUMN)];
            sel.extend(cols.iter().filter(|c| *c != TIMESTAMP_COLUMN).map(ident));
            df = df.select(sel).map_err(|e| self.df_error(e))?;
        }
        let batches = self.collect(budget, df, "raw events").await?;
        let scan = stats.lock().unwrap().clone();
        #[derive(Serialize)]
        struct Answer<'a> {
            events: json::Rows<'a>,
            meta: Value,
        }
        let answer = Answer {
            // Absent fields are left out of each event, as they were never sent.
            events: json::Rows {
                batches: &batches,
                skip_nulls: true,
            },
            meta: json!({
                "rows_examined": scan.rows_examined,
                "segments_scanned": scan.segments_scanned,
                "segments_total": scan.segments_total,
                "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
                "start_time": sonde_model::time::format_us(plan.start_us),
                "end_time": sonde_model::time::format_us(plan.end_us),
            }),
        };
        json::to_bytes(&answer, budget)
    }

    /// Runs read-only SQL over the datasets `visible` admits (each is a table named after it;
    /// the others do not exist for this query) and encodes the answer in `format`, all within
    /// the request's budget: the rows collected and the text written both count against it.
    pub async fn sql(
        &self,
        sql: &str,
        format: SqlFormat,
        visible: &(dyn Fn(&str) -> bool + Sync),
        budget: &RequestBudget,
    ) -> Result<Vec<u8>> {
        let started = Instant::now();
        let (schema, batches) = self.sql_batches(sql, visible, budget).await?;
        match format {
            SqlFormat::Json => {
                #[derive(Serialize)]
                struct Column {
                    name: String,
                    r#type: String,
                }
                #[derive(Serialize)]
                struct Answer<'a> {
                    columns: Vec<Column>,
                    rows: json::Rows<'a>,
                    meta: Value,
                }
                let answer = Answer {
                    columns: schema
                        .fields()
                        .iter()
                        .map(|f| Column {
                            name: f.name().clone(),
                            r#type: f.data_type().to_string(),
                        })
                        .collect(),
                    rows: json::Rows {
                        batches: &batches,
                        skip_nulls: false,
                    },
                    meta: json!({
                        "rows": batches.iter().map(|b| b.num_rows()).sum::<usize>(),
                        "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
                    }),
                };
                json::to_bytes(&answer, budget)
            }
            SqlFormat::Csv => {
                let mut out = json::BudgetWriter::new(budget);
                let written = {
                    let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
                    batches.iter().try_for_each(|b| w.write(b))
                };
                match written {
                    Ok(()) => out.finish(),
                    Err(e) => Err(out.fail(e)),
                }
            }
            SqlFormat::Arrow => {
                let mut out = json::BudgetWriter::new(budget);
                let written = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema).and_then(|mut w| {
                    batches.iter().try_for_each(|b| w.write(b))?;
                    w.finish()
                });
                match written {
                    Ok(()) => out.finish(),
                    Err(e) => Err(out.fail(e)),
                }
            }
        }
    }

    async fn sql_batches(
        &self,
        sql: &str,
        visible: &(dyn Fn(&str) -> bool + Sync),
        budget: &RequestBudget,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let ctx = self.session()?;
        for info in self.storage.datasets().into_iter().filter(|i| visible(i.name.as_str())) {
            let table = self.table(&info.name)?;
            ctx.register_table(datafusion::common::TableReference::bare(info.name.as_str()), table)
                .map_err(internal)?;
        }
        let opts = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self
            .timed(budget, ctx.sql_with_options(sql, opts))
            .await
            .map_err(|e| match e {
                QueryError::Internal(m) => QueryError::Sql(m),
                other => other,
            })?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = self.collect(budget, df, "the SQL result's rows").await?;
        Ok((schema, batches))
    }
}

impl QueryEngine {
    fn population(&self, table: &DatasetTable, spec: QuerySpec) -> Result<(Plan, BTreeMap<String, ColumnType>)> {
        let mut columns = queryable_columns(table);
        let plan = spec::plan(&spec, &columns, sonde_model::time::now_us())?;
        columns.remove(SR);
        Ok((plan, columns))
    }

    /// BubbleUp: compares a selection with the rest of the population across every column
    /// (see [`crate::bubbleup`]).
    pub async fn bubbleup(
        &self,
        dataset: &DatasetName,
        req: &BubbleUpRequest,
        budget: &RequestBudget,
    ) -> Result<Value> {
        use futures::StreamExt;
        let started = Instant::now();
        let table = self.table(dataset)?;
        let spec = req.population.spec(None);
        let (plan, columns) = self.population(&table, spec)?;
        let bad = |field: &str, message: String| {
            QueryError::Invalid(spec::SpecError {
                field: field.into(),
                message,
            })
        };
        // The selection as a boolean expression, and the columns it is made of (not compared:
        // a box on duration_ms differs in duration_ms by construction).
        let (selected, excluded): (Expr, Vec<String>) = match &req.selection {
            bubbleup::Selection::Heatmap {
                column,
                start_time,
                end_time,
                min: lo,
                max: hi,
            } => {
                match columns.get(column) {
                    Some(ColumnType::Int | ColumnType::Float) => {}
                    Some(t) => {
                        return Err(bad(
                            "selection.heatmap.column",
                            format!("{column:?} is {t}, not numeric"),
                        ));
                    }
                    None => return Err(bad("selection.heatmap.column", format!("unknown column {column:?}"))),
                }
                let t0 = sonde_model::time::parse_time_value(start_time)
                    .map_err(|e| bad("selection.heatmap.start_time", e.to_string()))?;
                let t1 = sonde_model::time::parse_time_value(end_time)
                    .map_err(|e| bad("selection.heatmap.end_time", e.to_string()))?;
                let e = ident(TIMESTAMP_COLUMN)
                    .gt_eq(ts_lit(t0))
                    .and(ident(TIMESTAMP_COLUMN).lt(ts_lit(t1)))
                    .and(as_f64(column).gt_eq(lit(*lo)))
                    .and(as_f64(column).lt_eq(lit(*hi)));
                (e, vec![column.clone()])
            }
            bubbleup::Selection::Group(values) => {
                if values.is_empty() {
                    return Err(bad("selection.group", "needs at least one column".into()));
                }
                let mut parts = Vec::new();
                for (col, v) in values {
                    let Some(ty) = columns.get(col) else {
                        return Err(bad("selection.group", format!("unknown column {col:?}")));
                    };
                    parts.push(if v.is_null() {
                        ident(col).is_null()
                    } else {
                        let f = spec::plan(
                            &QuerySpec {
                                filters: vec![spec::Filter {
                                    column: col.clone(),
                                    op: "=".into(),
                                    value: Some(v.clone()),
                                }],
                                time_range: Some(1),
                                ..Default::default()
                            },
                            &BTreeMap::from([(col.clone(), *ty)]),
                            0,
                        )?;
                        filter_expr(&f.filters[0])
                    });
                }
                (
                    parts.into_iter().reduce(Expr::and).unwrap(),
                    values.keys().cloned().collect(),
                )
            }
        };
        let compared: Vec<(String, ColumnType)> = columns
            .iter()
            .filter(|(n, _)| !excluded.contains(n))
            .map(|(n, t)| (n.clone(), *t))
            .collect();
        let ctx = self.session()?;
        let base = ctx
            .read_table(table.clone())
            .and_then(|df| df.filter(where_clause(&plan, &table)))
            .map_err(|e| self.df_error(e))?;

        // Pass 1: the range of every numeric column over the population, in one query.
        let numeric: Vec<&(String, ColumnType)> = compared.iter().filter(|(_, t)| bubbleup::is_numeric(*t)).collect();
        let mut ranges: HashMap<String, (f64, f64)> = HashMap::new();
        if !numeric.is_empty() {
            let aggs: Vec<Expr> = numeric
                .iter()
                .enumerate()
                .flat_map(|(i, (n, _))| {
                    [
                        min(as_f64(n)).alias(format!("lo{i}")),
                        max(as_f64(n)).alias(format!("hi{i}")),
                    ]
                })
                .collect();
            let df = base.clone().aggregate(vec![], aggs).map_err(|e| self.df_error(e))?;
            let batches = self.collect(budget, df, "BubbleUp's value ranges").await?;
            if let Some(b) = batches.iter().find(|b| b.num_rows() > 0) {
                for (i, (n, _)) in numeric.iter().enumerate() {
                    let lo = json::cell(b.column_by_name(&format!("lo{i}")).unwrap().as_ref(), 0).as_f64();
                    let hi = json::cell(b.column_by_name(&format!("hi{i}")).unwrap().as_ref(), 0).as_f64();
                    ranges.insert(n.clone(), (lo.unwrap_or(0.0), hi.unwrap_or(0.0)));
                }
            }
        }

        // Pass 2: one stream over the population, every column's counters updated per batch.
        // Their distinct values share half the answer's cap (the report built from them is
        // far smaller than they are).
        let per_column = (budget.cap() / 2 / compared.len().max(1))
            .clamp(bubbleup::MIN_DISTINCT_BYTES, bubbleup::MAX_DISTINCT_BYTES);
        let mut counters: Vec<bubbleup::Counter> = compared
            .iter()
            .map(|(n, t)| match (bubbleup::is_numeric(*t), ranges.get(n)) {
                (true, Some((lo, hi))) => bubbleup::Counter::numeric(*lo, *hi),
                (true, None) => bubbleup::Counter::numeric(0.0, 0.0),
                _ => bubbleup::Counter::categorical(per_column),
            })
            .collect();
        let mut select: Vec<Expr> = compared.iter().map(|(n, _)| ident(n)).collect();
        select.push(ident(SR));
        select.push(selected.alias("__selected"));
        let df = base.select(select).map_err(|e| self.df_error(e))?;
        let mut totals = [0i64; 2];
        let mut events = 0u64;
        // The counters' bytes, held in the request's budget as they grow.
        let mut held = 0usize;
        let stream_all = async {
            let mut stream = df.execute_stream().await?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let sel = batch.column_by_name("__selected").unwrap().as_boolean().clone();
                let w = bubbleup::weights(batch.column_by_name(SR).unwrap())?;
                for i in 0..batch.num_rows() {
                    totals[if sel.is_valid(i) && sel.value(i) { 0 } else { 1 }] += w[i];
                }
                events += batch.num_rows() as u64;
                for (c, (name, _)) in counters.iter_mut().zip(&compared) {
                    c.add(batch.column_by_name(name).unwrap(), &sel, &w)?;
                }
                let now: usize = counters.iter().map(|c| c.bytes()).sum();
                if now > held {
                    budget
                        .account(now - held, "BubbleUp's value counters")
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    held = now;
                }
            }
            Ok::<(), DataFusionError>(())
        };
        self.timed(budget, stream_all).await?;

        let top = req.top_values.unwrap_or(bubbleup::DEFAULT_TOP_VALUES).clamp(1, 100);
        let mut reports: Vec<(f64, String, Value)> = counters
            .iter()
            .zip(&compared)
            .map(|(c, (name, ty))| {
                let (score, mut v) = c.report(totals, top);
                v["column"] = json!(name);
                v["type"] = json!(ty.name());
                v["score"] = json!(score);
                (score, name.clone(), v)
            })
            .collect();
        reports.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        Ok(json!({
            "selection": {"count": totals[0]},
            "baseline": {"count": totals[1]},
            "columns": reports.into_iter().map(|r| r.2).collect::<Vec<_>>(),
            "meta": {
                "events_examined": events,
                "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
                "start_time": sonde_model::time::format_us(plan.start_us),
                "end_time": sonde_model::time::format_us(plan.end_us),
                "measure": "total variation distance between the selection's and the baseline's distributions",
            }
        }))
    }

    /// Every span of a trace, across every dataset with a `trace.trace_id` column, with its
    /// tree ([`sonde_model::trace`]: each span once, whatever duplicates, shared ids or cycles
    /// the data holds), as the answer's JSON text. The id is looked up in every form it may have
    /// been stored in (16 or 32 hex digits, either case). Segments whose id index or bloom
    /// filter rules it out are not read, and buffered events are filtered by it before anything
    /// else touches them.
    pub async fn trace(
        &self,
        trace_id: &str,
        visible: &(dyn Fn(&str) -> bool + Sync),
        budget: &RequestBudget,
    ) -> Result<Vec<u8>> {
        const TRACE_ID: &str = "trace.trace_id";
        let started = Instant::now();
        let forms = sonde_model::trace::trace_id_forms(trace_id);
        let id_filter = ident(TRACE_ID).in_list(forms.iter().map(|f| lit(f.clone())).collect(), false);
        let mut spans: Vec<Value> = Vec::new();
        let mut meta = TraceMeta::default();
        for info in self.storage.datasets().into_iter().filter(|i| visible(i.name.as_str())) {
            let table = self.table(&info.name)?;
            if table.snapshot().columns.get(TRACE_ID).map(|c| c.ty) != Some(ColumnType::String) {
                continue;
            }
            let ctx = self.session()?;
            let df = ctx
                .read_table(table.clone())
                .and_then(|df| df.filter(id_filter.clone()))
                .map_err(|e| self.df_error(e))?;
            let task = Arc::new(df.task_ctx());
            let plan = self.timed(budget, df.create_physical_plan()).await?;
            let batches = self
                .collect_plan(budget, plan.clone(), task, "the trace's spans")
                .await?;
            meta.add(plan.as_ref());
            let stats = table.stats().lock().unwrap().clone();
            meta.segments_total += stats.segments_total;
            meta.segments_scanned += stats.segments_scanned;
            meta.segments_pruned_by_index += stats.segments_pruned_by_index;
            meta.datasets_searched += 1;
            let cells: usize = batches.iter().map(|b| b.num_rows() * b.num_columns()).sum();
            budget.account(cells.saturating_mul(128), "the trace's spans")?;
            for mut row in json::rows(&batches) {
                if let Value::Object(m) = &mut row {
                    m.retain(|_, v| !v.is_null());
                    m.insert("dataset".into(), json!(info.name.as_str()));
                }
                spans.push(row);
            }
            budget.check_time()?;
        }
        if spans.is_empty() {
            return Err(QueryError::NotFound(format!(
                "no spans with trace.trace_id = {trace_id:?}"
            )));
        }
        // By time (parsed: RFC3339 text with and without fractions does not sort as text).
        spans.sort_by_cached_key(|s| {
            s["timestamp"]
                .as_str()
                .and_then(|t| sonde_model::time::parse_time_str(t).ok())
                .unwrap_or(0)
        });
        let refs: Vec<SpanRef<'_>> = spans.iter().map(span_ref).collect();
        let (nodes, tree) = sonde_model::trace::build(&refs);
        #[derive(Serialize)]
        struct Node<'a> {
            index: usize,
            span_id: Option<&'a str>,
            parent: Option<usize>,
            depth: usize,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            missing_parent: bool,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            cycle: bool,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            shared_id: bool,
            #[serde(skip_serializing_if = "<[usize]>::is_empty")]
            duplicates: &'a [usize],
        }
        #[derive(Serialize)]
        struct Answer<'a> {
            trace_id: &'a str,
            spans: &'a [Value],
            tree: Vec<Node<'a>>,
            meta: Value,
        }
        let answer = Answer {
            trace_id,
            spans: &spans,
            tree: nodes
                .iter()
                .map(|n| Node {
                    index: n.index,
                    span_id: refs[n.index].span_id,
                    parent: n.parent,
                    depth: n.depth,
                    missing_parent: n.missing_parent,
                    cycle: n.cycle,
                    shared_id: n.shared_id,
                    duplicates: &n.duplicates,
                })
                .collect(),
            meta: json!({
                "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
                "spans": spans.len(),
                "roots": tree.roots,
                "duplicates": tree.duplicates,
                "cycles_broken": tree.cycles,
                "shared_ids": tree.shared,
                "max_depth": tree.max_depth,
                "trace_id_forms": forms,
                "datasets_searched": meta.datasets_searched,
                "segments_total": meta.segments_total,
                "segments_scanned": meta.segments_scanned,
                "segments_pruned_by_index": meta.segments_pruned_by_index,
                "row_groups_pruned_by_bloom_filter": meta.bloom_pruned,
                "row_groups_matched_by_bloom_filter": meta.bloom_matched,
                "row_groups_pruned_by_statistics": meta.stats_pruned,
                "bytes_scanned": meta.bytes_scanned,
            }),
        };
        json::to_bytes(&answer, budget)
    }
}

/// What the tree builder needs of a span: its ids, its kind and a fingerprint of its content
/// (every field but the dataset it was found in, so a copy loaded into another dataset is a
/// copy).
fn span_ref(s: &Value) -> SpanRef<'_> {
    use std::hash::{Hash, Hasher};
    let text = |k: &str| s.get(k).and_then(|v| v.as_str());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Value::Object(m) = s {
        for (k, v) in m.iter().filter(|(k, _)| k.as_str() != "dataset") {
            k.hash(&mut h);
            v.to_string().hash(&mut h);
        }
    }
    SpanRef {
        span_id: text("trace.span_id"),
        parent_id: text("trace.parent_id"),
        kind: text("span.kind"),
        fingerprint: h.finish(),
    }
}

/// Scan metrics of a trace lookup, read from DataFusion's Parquet scan after execution.
#[derive(Debug, Default)]
struct TraceMeta {
    datasets_searched: usize,
    segments_total: usize,
    segments_scanned: usize,
    segments_pruned_by_index: usize,
    bloom_pruned: usize,
    bloom_matched: usize,
    stats_pruned: usize,
    bytes_scanned: usize,
}

impl TraceMeta {
    fn add(&mut self, plan: &dyn datafusion::physical_plan::ExecutionPlan) {
        use datafusion::physical_plan::metrics::MetricValue;
        if let Some(metrics) = plan.metrics() {
            for m in metrics.iter() {
                match m.value() {
                    MetricValue::PruningMetrics { name, pruning_metrics }
                        if name == "row_groups_pruned_bloom_filter" =>
                    {
                        self.bloom_pruned += pruning_metrics.pruned();
                        self.bloom_matched += pruning_metrics.matched();
                    }
                    MetricValue::PruningMetrics { name, pruning_metrics } if name == "row_groups_pruned_statistics" => {
                        self.stats_pruned += pruning_metrics.pruned();
                    }
                    MetricValue::Count { name, count } if name == "bytes_scanned" => {
                        self.bytes_scanned += count.value()
                    }
                    _ => {}
                }
            }
        }
        for child in plan.children() {
            self.add(child.as_ref());
        }
    }
}

/// The columns a query may name: the dataset's, plus `samplerate`.
fn queryable_columns(table: &DatasetTable) -> BTreeMap<String, ColumnType> {
    let mut columns: BTreeMap<String, ColumnType> = table
        .snapshot()
        .columns
        .iter()
        .map(|(n, c)| (n.clone(), c.ty))
        .collect();
    columns.insert(SR.into(), ColumnType::Int);
    columns
}

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::Internal(e.to_string())
}

fn ts_lit(us: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into())))
}

fn lit_of(l: &Literal) -> Expr {
    match l {
        Literal::Bool(b) => lit(*b),
        Literal::Int(i) => lit(*i),
        Literal::Float(f) => lit(*f),
        Literal::Str(s) => lit(s.clone()),
    }
}

/// The WHERE clause: the time range and the filters.
/// The spec's filters and time range as one predicate. When every event of the table lies
/// inside the time range, the range is left out: it would hold for every row, yet the scan would
/// still decode and compare the timestamp column of every row to find that out.
fn where_clause(plan: &Plan, table: &DatasetTable) -> Expr {
    let covered = table
        .data_time_bounds()
        .is_none_or(|(lo, hi)| lo >= plan.start_us && hi < plan.end_us);
    let time = (!covered).then(|| {
        ident(TIMESTAMP_COLUMN)
            .gt_eq(ts_lit(plan.start_us))
            .and(ident(TIMESTAMP_COLUMN).lt(ts_lit(plan.end_us)))
    });
    let filters: Vec<Expr> = plan.filters.iter().map(filter_expr).collect();
    let combined = if plan.any {
        filters.into_iter().reduce(Expr::or)
    } else {
        filters.into_iter().reduce(Expr::and)
    };
    match (time, combined) {
        (Some(t), Some(f)) => t.and(f),
        (Some(t), None) => t,
        (None, Some(f)) => f,
        (None, None) => lit(true),
    }
}

fn filter_expr(f: &spec::PlanFilter) -> Expr {
    use datafusion::functions::string::expr_fn::{contains, ends_with, starts_with};
    let c = ident(&f.column);
    // A comparison of an int column with a float literal compares as floats.
    let num = |c: Expr| match (&f.ty, f.values.first()) {
        (ColumnType::Int, Some(Literal::Float(_))) => cast(c, DataType::Float64),
        _ => c,
    };
    let v = || lit_of(&f.values[0]);
    let positive = match f.op {
        FilterOp::Eq | FilterOp::Ne => num(c.clone()).eq(v()),
        FilterOp::Gt => num(c.clone()).gt(v()),
        FilterOp::Ge => num(c.clone()).gt_eq(v()),
        FilterOp::Lt => num(c.clone()).lt(v()),
        FilterOp::Le => num(c.clone()).lt_eq(v()),
        FilterOp::StartsWith | FilterOp::NotStartsWith => starts_with(c.clone(), v()),
        FilterOp::EndsWith | FilterOp::NotEndsWith => ends_with(c.clone(), v()),
        FilterOp::Contains | FilterOp::NotContains => contains(c.clone(), v()),
        FilterOp::Exists | FilterOp::NotExists => c.clone().is_not_null(),
        FilterOp::In | FilterOp::NotIn => {
            let as_float = f.ty == ColumnType::Int && f.values.iter().any(|l| matches!(l, Literal::Float(_)));
            let list = f
                .values
                .iter()
                .map(|l| match (as_float, l) {
                    (true, Literal::Int(i)) => lit(*i as f64),
                    _ => lit_of(l),
                })
                .collect();
            let col = if as_float {
                cast(c.clone(), DataType::Float64)
            } else {
                c.clone()
            };
            col.in_list(list, false)
        }
    };
    if f.op == FilterOp::NotExists {
        c.is_null()
    } else if f.op.matches_absent() {
        // Negations also match events without the field: NOT(x) alone would be null there.
        c.clone().is_null().or(Expr::Not(Box::new(positive)))
    } else {
        positive
    }
}

/// What running a spec produced.
struct Output {
    series: Vec<Value>,
    results: Vec<Value>,
    groups: usize,
    truncated: bool,
}

struct Run<'a> {
    plan: &'a Plan,
    engine: &'a QueryEngine,
    table: &'a DatasetTable,
    req: &'a RequestBudget,
}

fn b_alias(i: usize) -> String {
    format!("b{i}")
}
fn c_alias(i: usize) -> String {
    format!("c{i}")
}

/// The bucket of the event's timestamp, as an integer offset from the range start.
fn bucket_expr(plan: &Plan, extra_us: Option<Expr>) -> Expr {
    let ts = cast(ident(TIMESTAMP_COLUMN), DataType::Int64);
    let ts = match extra_us {
        Some(e) => ts + e,
        None => ts,
    };
    (ts - lit(plan.start_us)) / lit(plan.granularity_s * 1_000_000)
}

fn as_f64(name: &str) -> Expr {
    cast(ident(name), DataType::Float64)
}

/// Aggregates of the plain calculation `i`, and the expression giving its value from them.
fn aggregate_of(op: CalcOp, column: Option<&str>, alias: &str) -> (Vec<Expr>, Expr) {
    let out = |e: Expr| (vec![e.alias(alias)], ident(alias));
    match op {
        CalcOp::Count => out(sum(ident(SR))),
        CalcOp::Sum => out(sum(ident(column.unwrap()) * ident(SR))),
        CalcOp::Avg => {
            let c = column.unwrap();
            let n = format!("{alias}_n");
            let d = format!("{alias}_d");
            let weight = when(ident(c).is_not_null(), ident(SR)).end().expect("case builder");
            (
                vec![sum(as_f64(c) * as_f64(SR)).alias(&n), sum(weight).alias(&d)],
                (ident(&n) / cast(ident(&d), DataType::Float64)).alias(alias),
            )
        }
        CalcOp::Min => out(min(ident(column.unwrap()))),
        CalcOp::Max => out(max(ident(column.unwrap()))),
        CalcOp::CountDistinct => out(count_distinct(ident(column.unwrap()))),
        CalcOp::Percentile(p) => out(weighted_percentile().call(vec![as_f64(column.unwrap()), ident(SR), lit(p)])),
        // Rates are derived from the per-bucket value of their base aggregate.
        CalcOp::RateAvg => aggregate_of(CalcOp::Avg, column, alias),
        CalcOp::RateSum => aggregate_of(CalcOp::Sum, column, alias),
        CalcOp::RateMax => aggregate_of(CalcOp::Max, column, alias),
        // CONCURRENCY counts the spans starting in each bucket here (their ends separately).
        CalcOp::Concurrency => out(sum(when(concurrency_span(), ident(SR)).end().expect("case builder"))),
        CalcOp::Heatmap => unreachable!("heatmaps are computed by their own query"),
    }
}

/// The spans CONCURRENCY counts: those with a non-negative duration.
fn concurrency_span() -> Expr {
    ident("duration_ms")
        .is_not_null()
        .and(ident("duration_ms").gt_eq(lit(0)))
}

/// One group's breakdown values, as JSON (the group key).
type GroupKey = Vec<Value>;

fn group_of(batch: &RecordBatch, row: usize, n: usize) -> GroupKey {
    (0..n)
        .map(|i| json::cell(batch.column_by_name(&b_alias(i)).unwrap().as_ref(), row))
        .collect()
}

impl Run<'_> {
    fn group_exprs(&self) -> Vec<Expr> {
        self.plan
            .breakdowns
            .iter()
            .enumerate()
            .map(|(i, (name, _))| ident(name).alias(b_alias(i)))
            .collect()
    }

    /// The results' aggregates (the hidden count, each plain calculation's, each HEATMAP's
    /// value range) and the expressions finishing them per group (breakdowns first).
    fn result_aggregates(&self) -> (Vec<Expr>, Vec<Expr>) {
        let plan = self.plan;
        let mut aggs = vec![sum(ident(SR)).alias("hidden_count")];
        let mut finals: Vec<Expr> = (0..plan.breakdowns.len()).map(|i| ident(b_alias(i))).collect();
        for (i, c) in plan.calcs.iter().enumerate() {
            let column = c.column.as_ref().map(|(n, _)| n.as_str());
            if c.op.is_simple() {
                let (a, f) = aggregate_of(c.op, column, &c_alias(i));
                aggs.extend(a);
                finals.push(f);
            } else if c.op == CalcOp::Heatmap {
                let col = column.expect("HEATMAP has a column");
                aggs.push(min(as_f64(col)).alias(heat_lo(i)));
                aggs.push(max(as_f64(col)).alias(heat_hi(i)));
                finals.extend([ident(heat_lo(i)), ident(heat_hi(i))]);
            }
        }
        finals.push(ident("hidden_count"));
        (aggs, finals)
    }

    /// The results' aggregates per time bucket and group, when every calculation rolls up from
    /// them (COUNT, SUM, AVG, MIN, MAX, and HEATMAP's value range); `None` otherwise, and for
    /// breakdowns with many groups (see `DatasetTable::many_groups`), whose groups times
    /// buckets would be nearly as many rows as the events.
    fn fine_aggregates(&self, base: &DataFrame, aggs: &[Expr]) -> Result<Option<DataFrame>> {
        let plan = self.plan;
        let rolls_up = plan.calcs.iter().all(|c| {
            matches!(
                c.op,
                CalcOp::Count | CalcOp::Sum | CalcOp::Avg | CalcOp::Min | CalcOp::Max | CalcOp::Heatmap
            )
        });
        if !rolls_up || plan.breakdowns.iter().any(|(b, _)| self.table.many_groups(b)) {
            return Ok(None);
        }
        let mut gexprs = vec![bucket_expr(plan, None).alias("t")];
        gexprs.extend(self.group_exprs());
        Ok(Some(self.df(base.clone().aggregate(gexprs, aggs.to_vec()))?))
    }

    async fn collect(&self, df: DataFrame) -> Result<Vec<RecordBatch>> {
        self.engine.collect(self.req, df, "the query's aggregates").await
    }

    /// Holds what `rows` rows of `cells` JSON values each will cost once built (a `Value` in a
    /// map is about 128 bytes with its key), before building them.
    fn account_json(&self, rows: usize, cells: usize, what: &str) -> Result<()> {
        self.req
            .account(rows.saturating_mul(cells.max(1)).saturating_mul(128), what)
    }

    fn df<T>(&self, r: Result<T, DataFusionError>) -> Result<T> {
        r.map_err(|e| self.engine.df_error(e))
    }

    async fn execute(&self, base: DataFrame) -> Result<Output> {
        let plan = self.plan;
        let nb = plan.breakdowns.len();

        // 1. Results: plain aggregates per group, HAVING, ORDER BY, LIMIT. Each HEATMAP's value
        //    range comes along (per group; combined below over the groups that made the cut).
        let (aggs, finals) = self.result_aggregates();
        // When every calculation rolls up from partial aggregates per time bucket and group,
        // one scan computes those ("fine"), and the results and the series are both answered
        // from that small table instead of scanning the events twice.
        let fine = match self.fine_aggregates(&base, &aggs)? {
            // Collected (and counted against the request) rather than `cache()`d, which would
            // hold the partials outside every budget.
            Some(f) => {
                let schema: SchemaRef = Arc::new(f.schema().as_arrow().clone());
                let state = f.clone().into_parts().0;
                let batches = self.collect(f).await?;
                let table = datafusion::datasource::MemTable::try_new(schema, vec![batches]);
                Some(self.df(table.and_then(|t| SessionContext::new_with_state(state).read_table(Arc::new(t))))?)
            }
            None => None,
        };
        let mut results_df = match &fine {
            Some(f) => {
                let groups: Vec<Expr> = (0..nb).map(|i| ident(b_alias(i))).collect();
                self.df(f.clone().aggregate(groups, aggs.iter().map(rollup).collect()))?
            }
            None => self.df(base.clone().aggregate(self.group_exprs(), aggs))?,
        };
        results_df = self.df(results_df.select(finals))?;
        // Without breakdowns SQL answers one row even when nothing matched; no events, no group.
        results_df = self.df(results_df.filter(ident("hidden_count").is_not_null()))?;
        for h in &plan.havings {
            let c = ident(c_alias(h.calc));
            let v = lit(h.value);
            let cond = match h.op {
                FilterOp::Eq => c.eq(v),
                FilterOp::Ne => c.not_eq(v),
                FilterOp::Gt => c.gt(v),
                FilterOp::Ge => c.gt_eq(v),
                FilterOp::Lt => c.lt(v),
                _ => c.lt_eq(v),
            };
            results_df = self.df(results_df.filter(cond))?;
        }
        let mut sort: Vec<SortExpr> = plan
            .orders
            .iter()
            .map(|(k, desc)| {
                let e = match k {
                    OrderKey::Calc(i) => ident(c_alias(*i)),
                    OrderKey::Breakdown(i) => ident(b_alias(*i)),
                };
                e.sort(!desc, false)
            })
            .collect();
        if plan.orders.is_empty() {
            sort.push(ident("hidden_count").sort(false, false));
        }
        sort.extend((0..nb).map(|i| ident(b_alias(i)).sort(true, false)));
        results_df = self.df(results_df.sort(sort))?;
        results_df = self.df(results_df.limit(0, Some(plan.limit + 1)))?;
        let batches = self.collect(results_df).await?;

        let mut groups: Vec<GroupKey> = Vec::new();
        let mut results: Vec<Map<String, Value>> = Vec::new();
        // Per HEATMAP calculation: the value range over the groups kept.
        let mut heat_range: Vec<(Option<f64>, Option<f64>)> = vec![(None, None); plan.calcs.len()];
        'rows: for b in &batches {
            for row in 0..b.num_rows() {
                if groups.len() == plan.limit + 1 {
                    break 'rows;
                }
                for (i, c) in plan.calcs.iter().enumerate() {
                    if c.op == CalcOp::Heatmap && groups.len() < plan.limit {
                        let cell = |name: String| json::cell(b.column_by_name(&name).unwrap().as_ref(), row).as_f64();
                        let (lo, hi) = &mut heat_range[i];
                        if let Some(v) = cell(heat_lo(i)) {
                            *lo = Some(lo.map_or(v, |l: f64| l.min(v)));
                        }
                        if let Some(v) = cell(heat_hi(i)) {
                            *hi = Some(hi.map_or(v, |h: f64| h.max(v)));
                        }
                    }
                }
                let key = group_of(b, row, nb);
                let mut m = Map::new();
                for (i, (name, _)) in plan.breakdowns.iter().enumerate() {
                    m.insert(name.clone(), key[i].clone());
                }
                for (i, c) in plan.calcs.iter().enumerate() {
                    if c.op.is_simple() {
                        m.insert(
                            c.key.clone(),
                            json::cell(b.column_by_name(&c_alias(i)).unwrap().as_ref(), row),
                        );
                    }
                }
                groups.push(key);
                results.push(m);
            }
        }
        let truncated = groups.len() > plan.limit;
        groups.truncate(plan.limit);
        results.truncate(plan.limit);
        let group_index: HashMap<String, usize> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (Value::Array(g.clone()).to_string(), i))
            .collect();

        // Later queries only need the groups that made the cut (past the limit and havings).
        let restricted = if truncated || !plan.havings.is_empty() {
            self.df(base.filter(group_filter(plan, &groups)))?
        } else {
            base
        };

        // 2. Series: the same aggregates (and the bases of rates) per bucket and group.
        let mut series: BTreeMap<(i64, usize), Map<String, Value>> = BTreeMap::new();
        let mut per_bucket: Vec<HashMap<(usize, i64), Option<f64>>> = vec![HashMap::new(); plan.calcs.len()];
        if !groups.is_empty() {
            let mut aggs = Vec::new();
            let mut finals: Vec<Expr> = vec![ident("t")];
            finals.extend((0..nb).map(|i| ident(b_alias(i))));
            for (i, c) in plan.calcs.iter().enumerate() {
                if c.op != CalcOp::Heatmap {
                    let (a, f) = aggregate_of(c.op, c.column.as_ref().map(|(n, _)| n.as_str()), &c_alias(i));
                    aggs.extend(a);
                    finals.push(f);
                }
            }
            if !aggs.is_empty() {
                let df = match &fine {
                    // Rows of groups that did not make the cut are skipped below.
                    Some(f) => f.clone(),
                    None => {
                        let mut gexprs = vec![bucket_expr(plan, None).alias("t")];
                        gexprs.extend(self.group_exprs());
                        self.df(restricted.clone().aggregate(gexprs, aggs))?
                    }
                };
                let df = self.df(df.select(finals))?;
                let batches = self.collect(df).await?;
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                self.account_json(
                    rows,
                    nb + plan.calcs.len() + 2,
                    "the time series (groups × time buckets)",
                )?;
                for b in batches {
                    let t_col = b.column_by_name("t").unwrap().clone();
                    for row in 0..b.num_rows() {
                        let Some(t) = json::cell(t_col.as_ref(), row).as_i64() else {
                            continue;
                        };
                        let key = Value::Array(group_of(&b, row, nb)).to_string();
                        let Some(&g) = group_index.get(&key) else { continue };
                        let m = series.entry((t, g)).or_default();
                        for (i, c) in plan.calcs.iter().enumerate() {
                            if c.op == CalcOp::Heatmap {
                                continue;
                            }
                            let v = json::cell(b.column_by_name(&c_alias(i)).unwrap().as_ref(), row);
                            if c.op.is_simple() {
                                m.insert(c.key.clone(), v);
                            } else {
                                per_bucket[i].insert((g, t), v.as_f64());
                            }
                        }
                    }
                }
            }
        }

        // 3a. Rates: per-second change of the base aggregate between adjacent buckets.
        let g_s = plan.granularity_s as f64;
        for (i, c) in plan.calcs.iter().enumerate() {
            if !matches!(c.op, CalcOp::RateAvg | CalcOp::RateSum | CalcOp::RateMax) {
                continue;
            }
            let mut rates_per_group: Vec<Vec<f64>> = vec![Vec::new(); groups.len()];
            for (&(g, t), v) in &per_bucket[i] {
                let prev = per_bucket[i].get(&(g, t - 1)).copied().flatten();
                let rate = match (v, prev) {
                    (Some(v), Some(p)) => Some((v - p) / g_s),
                    _ => None,
                };
                if let Some(r) = rate {
                    rates_per_group[g].push(r);
                }
                series
                    .entry((t, g))
                    .or_default()
                    .insert(c.key.clone(), rate.map_or(Value::Null, float));
            }
            for (g, rates) in rates_per_group.iter().enumerate() {
                let mean = (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64);
                results[g].insert(c.key.clone(), mean.map_or(Value::Null, float));
            }
        }

        // 3b. CONCURRENCY: spans started up to a bucket minus spans ended before it.
        if let Some((i, c)) = plan.calcs.iter().enumerate().find(|(_, c)| c.op == CalcOp::Concurrency) {
            let end_us = cast(ident("duration_ms") * lit(1000.0), DataType::Int64);
            let mut gexprs = vec![bucket_expr(plan, Some(end_us)).alias("t")];
            gexprs.extend(self.group_exprs());
            let df = self.df(restricted
                .clone()
                .filter(concurrency_span())
                .and_then(|d| d.aggregate(gexprs, vec![sum(ident(SR)).alias("ended")])))?;
            let mut ended: HashMap<(usize, i64), i64> = HashMap::new();
            for b in self.collect(df).await? {
                let t_col = b.column_by_name("t").unwrap().clone();
                let e_col = b.column_by_name("ended").unwrap().clone();
                for row in 0..b.num_rows() {
                    let key = Value::Array(group_of(&b, row, nb)).to_string();
                    if let (Some(&g), Some(t), Some(e)) = (
                        group_index.get(&key),
                        json::cell(t_col.as_ref(), row).as_i64(),
                        json::cell(e_col.as_ref(), row).as_i64(),
                    ) {
                        *ended.entry((g, t)).or_default() += e;
                    }
                }
            }
            let buckets = plan.buckets();
            for (g, result) in results.iter_mut().enumerate() {
                let (mut started, mut finished, mut peak) = (0i64, 0i64, None::<i64>);
                for t in 0..buckets {
                    started += per_bucket[i].get(&(g, t)).copied().flatten().unwrap_or(0.0) as i64;
                    if t > 0 {
                        finished += ended.get(&(g, t - 1)).copied().unwrap_or(0);
                    }
                    let now = started - finished;
                    if now > 0 || series.contains_key(&(t, g)) {
                        series
                            .entry((t, g))
                            .or_default()
                            .insert(c.key.clone(), Value::from(now));
                        peak = Some(peak.map_or(now, |p| p.max(now)));
                    }
                }
                result.insert(c.key.clone(), peak.map_or(Value::Null, Value::from));
            }
        }

        // 3c. HEATMAP: value range over the filtered events, then a histogram per bucket and group.
        for (i, c) in plan.calcs.iter().enumerate() {
            if c.op != CalcOp::Heatmap || groups.is_empty() {
                continue;
            }
            let col = c.column.as_ref().unwrap().0.clone();
            let (Some(lo), Some(hi)) = heat_range[i] else {
                for r in &mut results {
                    r.insert(c.key.clone(), Value::Null);
                }
                continue;
            };
            let width = heatmap_width(lo, hi);
            let vb = cast((as_f64(&col) - lit(lo)) / lit(width), DataType::Int64);
            let mut gexprs = vec![bucket_expr(plan, None).alias("t"), vb.alias("v")];
            gexprs.extend(self.group_exprs());
            let df = self.df(restricted
                .clone()
                .filter(ident(&col).is_not_null())
                .and_then(|d| d.aggregate(gexprs, vec![sum(ident(SR)).alias("n")])))?;
            let nbk = spec::HEATMAP_BUCKETS;
            let mut hist: BTreeMap<(i64, usize), Vec<i64>> = BTreeMap::new();
            let mut totals: Vec<Vec<i64>> = vec![vec![0; nbk]; groups.len()];
            for b in self.collect(df).await? {
                for row in 0..b.num_rows() {
                    let key = Value::Array(group_of(&b, row, nb)).to_string();
                    let (Some(&g), Some(t), Some(v), Some(n)) = (
                        group_index.get(&key),
                        json::cell(b.column_by_name("t").unwrap().as_ref(), row).as_i64(),
                        json::cell(b.column_by_name("v").unwrap().as_ref(), row).as_i64(),
                        json::cell(b.column_by_name("n").unwrap().as_ref(), row).as_i64(),
                    ) else {
                        continue;
                    };
                    let v = (v.max(0) as usize).min(nbk - 1);
                    hist.entry((t, g)).or_insert_with(|| vec![0; nbk])[v] += n;
                    totals[g][v] += n;
                }
            }
            self.account_json(hist.len() + totals.len(), nbk, "heatmap histograms")?;
            for ((t, g), counts) in hist {
                series
                    .entry((t, g))
                    .or_default()
                    .insert(c.key.clone(), heatmap_json(lo, hi, width, &counts));
            }
            for (g, counts) in totals.iter().enumerate() {
                results[g].insert(c.key.clone(), heatmap_json(lo, hi, width, counts));
            }
        }

        let series_json: Vec<Value> = series
            .into_iter()
            .map(|((t, g), mut m)| {
                for (i, (name, _)) in plan.breakdowns.iter().enumerate() {
                    m.insert(name.clone(), groups[g][i].clone());
                }
                json!({"time": sonde_model::time::format_us(plan.start_us + t * plan.granularity_s * 1_000_000), "data": m})
            })
            .collect();
        let groups_n = results.len();
        Ok(Output {
            series: series_json,
            results: results.into_iter().map(|m| json!({ "data": m })).collect(),
            groups: groups_n,
            truncated,
        })
    }
}

/// The partial aggregate rolling `agg` (an aggregate aliased `name`) up over rows of partial
/// results that carry it as column `name`: sums of sums, minimum of minimums, and so on.
fn rollup(agg: &Expr) -> Expr {
    let Expr::Alias(alias) = agg else {
        unreachable!("aggregates here are aliased")
    };
    let Expr::AggregateFunction(f) = alias.expr.as_ref() else {
        unreachable!("aggregates here are aggregate functions")
    };
    let col = ident(&alias.name);
    match f.func.name() {
        "sum" => sum(col),
        "min" => min(col),
        "max" => max(col),
        other => unreachable!("{other} does not roll up"),
    }
    .alias(&alias.name)
}

/// Whether the filters are likely to keep few rows: some filter every event must pass is an
/// equality or a list of values. (`!=`, ranges, `exists` and the negations usually keep most.)
fn selective(plan: &Plan) -> bool {
    let narrow = |f: &spec::PlanFilter| matches!(f.op, FilterOp::Eq | FilterOp::In | FilterOp::StartsWith);
    if plan.any {
        !plan.filters.is_empty() && plan.filters.iter().all(narrow)
    } else {
        plan.filters.iter().any(narrow)
    }
}

fn heat_lo(i: usize) -> String {
    format!("h{i}_lo")
}

fn heat_hi(i: usize) -> String {
    format!("h{i}_hi")
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// Width of a HEATMAP value bucket: the range split in [`spec::HEATMAP_BUCKETS`] (1 when all
/// values are equal).
pub fn heatmap_width(lo: f64, hi: f64) -> f64 {
    if hi > lo {
        (hi - lo) / spec::HEATMAP_BUCKETS as f64
    } else {
        1.0
    }
}

/// A HEATMAP value: `{"min", "max", "bucket_width", "counts"}`; `counts[i]` is the sample-rate
/// weighted number of events with `min + i·bucket_width <= value < min + (i+1)·bucket_width`
/// (the last bucket also holds `max`).
fn heatmap_json(lo: f64, hi: f64, width: f64, counts: &[i64]) -> Value {
    json!({"min": lo, "max": hi, "bucket_width": width, "counts": counts})
}

/// Restricts events to the given groups (for series when the limit cut groups off).
fn group_filter(plan: &Plan, groups: &[GroupKey]) -> Expr {
    // Per breakdown, the values the kept groups have: a superset of the groups (rows of other
    // combinations are dropped when they are matched to groups), and a flat expression — one
    // `OR` per group would nest 10,000 deep and overflow the stack of whoever walks it.
    let mut parts = Vec::new();
    for (i, (name, ty)) in plan.breakdowns.iter().enumerate() {
        let mut seen = std::collections::HashSet::new();
        let mut values = Vec::new();
        let mut nulls = false;
        for g in groups {
            let v = &g[i];
            if v.is_null() {
                nulls = true;
                continue;
            }
            if !seen.insert(v.to_string()) {
                continue;
            }
            values.push(match (ty, v) {
                (ColumnType::Bool, Value::Bool(b)) => lit(*b),
                (ColumnType::Int, v) => lit(v.as_i64().unwrap_or_default()),
                (ColumnType::Float, v) => lit(v.as_f64().unwrap_or_default()),
                (_, Value::String(s)) => lit(s.clone()),
                (_, other) => lit(other.to_string()),
            });
        }
        let present = (!values.is_empty()).then(|| ident(name).in_list(values, false));
        parts.push(match (present, nulls) {
            (Some(p), true) => p.or(ident(name).is_null()),
            (Some(p), false) => p,
            (None, true) => ident(name).is_null(),
            (None, false) => lit(false),
        });
    }
    parts.into_iter().reduce(Expr::and).unwrap_or(lit(true))
}

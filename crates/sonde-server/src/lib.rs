//! Sonde's HTTP API (axum): ingest, schema, health and metrics on one port.
//!
//! Ingest requests flow: body (size-limited) → [`sonde_ingest::decompress`] → split into events →
//! each event decoded and flattened on its own (a bad one gets its own 4xx) → the good ones go
//! to [`sonde_storage::Storage::ingest`] as one WAL record → the answer is sent only after that
//! returns, so a 2xx means durable.
//!
//! | route | what |
//! |---|---|
//! | `POST /1/events/{dataset}` | one event (Honeycomb) |
//! | `POST /1/batch/{dataset}` | a batch (Honeycomb), per-event statuses |
//! | `POST /api/ingest/{dataset}` | NDJSON |
//! | `POST /v1/traces`, `POST /v1/logs` | OTLP/HTTP, protobuf or JSON (and OTLP/gRPC on its own port, where a query node of a cluster also serves its distributed-SQL worker, whose list of peers [`workers`] keeps) |
//! | `POST /api/query/{dataset}` | Honeycomb query specification → series + results |
//! | `POST /api/events/{dataset}` | raw events, newest first |
//! | `POST /api/sql` | read-only SQL (JSON, CSV, Arrow IPC) |
//! | `POST /api/bubbleup/{dataset}` | selection vs baseline across every column |
//! | `GET /api/traces/{dataset}/{trace_id}` | a trace's spans and tree, across datasets |
//! | `POST /1/queries/{dataset}`, `GET /1/queries/{dataset}/{id}`, `POST /1/query_results/{dataset}`, `GET /1/query_results/{dataset}/{id}` | Honeycomb's query-data API: saved (immutable) queries and their results |
//! | `/1/query_annotations/{dataset}[/{id}]` | names and descriptions of saved queries (GET, POST, PUT, DELETE) |
//! | `/1/markers/{dataset}[/{id}]`, `/1/marker_settings/{dataset}[/{id}]` | markers (deploys, incidents) and their colours by type |
//! | `/1/boards[/{id}]`, `/1/boards/{id}/views[/{view}]` | boards of saved queries and text on a 12-column grid, and their filter sets |
//! | `/1/triggers/{dataset}[/{id}]`, `…/{id}/deliveries`, `/1/recipients[/{id}]` | triggers (a query on a schedule, a threshold, notifications) and where they notify; the scheduler is [`alerts`] |
//! | `/1/slos/{dataset}[/{id}]` (`?detailed`), `POST /1/reporting/slos/historical` | SLOs over a derived column's good/bad, from per-minute counters kept up to date |
//! | `GET /api/slos/{dataset}/{id}` | an SLO's page: figures, hourly burndown and burn rate, daily compliance |
//! | `/1/burn_alerts/{dataset}[/{id}]`, `…/{id}/deliveries` | burn alerts on an SLO's error budget, evaluated by [`alerts`] |
//! | `/1/derived_columns/{dataset}[/{id}]`, `/1/dataset_definitions/{dataset}` | derived columns, and which columns mean what |
//! | `GET /api/datasets`, `GET /api/datasets/{dataset}/columns`, `…/stats` | schema and storage facts |
//! | `DELETE /api/datasets/{dataset}` | delete a dataset |
//! | `GET /health`, `GET /metrics`, `GET /api/meta` | liveness, Prometheus metrics, the query operators the server takes |
//! | `GET /`, `GET /assets/…` | the web UI, embedded at build time |
//!
//! Every route but `/health`, `/api/meta` and the UI's files checks the caller's API key when keys are
//! configured ([`auth`]): `ingest` routes need the ingest scope, reads the query scope, changes
//! to saved objects (markers, annotations, derived columns) the manage scope, deletion of a
//! dataset the admin scope, each for the dataset named. Queries also take one of
//! `max_concurrent_queries` slots; every request is bounded by `request_timeout` (slow bodies
//! included).

pub mod alerts;
pub mod auth;
mod boards;
mod burn_alerts;
mod definitions;
mod derived;
pub mod error;
mod extract;
mod forward;
pub mod fresh;
mod ingest;
mod markers;
mod objects;
pub mod otlp;
mod queries;
mod query;
mod query_annotations;
mod recipients;
mod schema;
mod slos;
mod templates;
mod triggers;
pub mod ui;
pub mod workers;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post, put};
use sonde_model::Limits;
use sonde_storage::Storage;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use error::ApiError;

pub use queries::QueryResults;

/// Server settings beyond storage.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body, compressed or not (`max_body_bytes`).
    pub max_body_bytes: usize,
    /// Per-event limits.
    pub limits: Limits,
    /// Longest any request may take, reading its body included (408 after it).
    pub request_timeout: Duration,
    /// Queries running at once; more wait up to `QUERY_SLOT_WAIT`, then get a 429.
    pub max_concurrent_queries: usize,
    /// Origins allowed to call the API from a browser (CORS); empty: none (same origin only).
    pub cors_origins: Vec<String>,
    /// Serve the UI from this directory instead of the embedded build (for UI work).
    pub ui_dir: Option<std::path::PathBuf>,
    /// Most objects of each kind (markers, saved queries, annotations…) one dataset may hold.
    pub max_saved_objects: usize,
    /// The shortest frequency a trigger may have (Honeycomb's is a minute).
    pub min_trigger_frequency: Duration,
    /// Where users reach this server (`https://sonde.example.com`), for the links in
    /// notifications; empty: the links are paths.
    pub public_url: String,
}

/// How long a query waits for a free slot before it is refused.
const QUERY_SLOT_WAIT: Duration = Duration::from_secs(2);

impl ServerConfig {
    /// Default of `max_body_bytes` (the command line's default too: each default is defined once).
    pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
    /// Default of `request_timeout`.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default of `max_concurrent_queries`.
    pub const DEFAULT_MAX_CONCURRENT_QUERIES: usize = 16;
    /// Default of `max_saved_objects`.
    pub const DEFAULT_MAX_SAVED_OBJECTS: usize = 10_000;
    /// Default of `min_trigger_frequency`.
    pub const DEFAULT_MIN_TRIGGER_FREQUENCY: Duration = Duration::from_secs(60);
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            limits: Limits::default(),
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            max_concurrent_queries: Self::DEFAULT_MAX_CONCURRENT_QUERIES,
            cors_origins: Vec::new(),
            ui_dir: None,
            max_saved_objects: Self::DEFAULT_MAX_SAVED_OBJECTS,
            min_trigger_frequency: Self::DEFAULT_MIN_TRIGGER_FREQUENCY,
            public_url: String::new(),
        }
    }
}

/// HTTP-level counters for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Ingest requests answered 2xx.
    pub ingest_requests: AtomicU64,
    /// Events refused individually (4xx in a batch).
    pub events_rejected: AtomicU64,
    /// Requests refused as a whole.
    pub requests_rejected: AtomicU64,
    /// Ingest requests passed on to another node of a cluster.
    pub requests_forwarded: AtomicU64,
    /// Requests for an ingest node's buffered events that failed (a query node).
    pub fresh_failures: AtomicU64,
}

/// Shared state of the handlers.
#[derive(Debug)]
pub struct AppState {
    /// The storage engine.
    pub storage: Arc<Storage>,
    /// The query engine.
    pub engine: Arc<sonde_query::QueryEngine>,
    /// The query results of Honeycomb's query-data API computed lately.
    pub results: QueryResults,
    /// Settings.
    pub config: ServerConfig,
    /// Counters.
    pub stats: HttpStats,
    /// API keys and per-key rate limits.
    pub access: auth::Access,
    /// One permit per query allowed to run at once (`config.max_concurrent_queries`).
    query_slots: Arc<tokio::sync::Semaphore>,
    /// One lock per SLO, so its counters are brought up to date once at a time.
    slo_locks: slos::SloLocks,
    /// Passes ingest requests on to the node of a cluster that writes their dataset.
    forwarder: forward::Forwarder,
}

impl AppState {
    /// The handlers' state over a storage and its query engine.
    pub fn new(
        storage: Arc<Storage>,
        engine: Arc<sonde_query::QueryEngine>,
        config: ServerConfig,
        access: auth::Access,
    ) -> AppState {
        let slots = config.max_concurrent_queries.max(1);
        let config_timeout = config.request_timeout;
        AppState {
            storage,
            engine,
            results: QueryResults::default(),
            config,
            stats: HttpStats::default(),
            access,
            query_slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            slo_locks: slos::SloLocks::default(),
            forwarder: forward::Forwarder::new(config_timeout),
        }
    }

    /// Waits briefly for a query slot; the slot is held until the returned permit drops.
    pub(crate) async fn query_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        match tokio::time::timeout(QUERY_SLOT_WAIT, self.query_slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::too_many(
                format!(
                    "too many queries running (the limit is {}, set with --max-concurrent-queries / SONDE_MAX_CONCURRENT_QUERIES)",
                    self.config.max_concurrent_queries
                ),
                1,
            )),
        }
    }
}

/// The caller of a request, from its API key (401 when auth is on and the key is missing or
/// unknown).
impl FromRequestParts<Arc<AppState>> for auth::Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        state.access.caller(&parts.headers)
    }
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    let timeout =
        tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, state.config.request_timeout);
    let cors = cors_layer(&state.config.cors_origins);
    let app = Router::new()
        .route("/", get(ui::index))
        .route("/assets/{*path}", get(ui::file))
        .route("/health", get(health))
        .route("/api/meta", get(meta))
        .route("/metrics", get(metrics))
        .merge(ingest_routes(state.clone()))
        .route("/api/query/{dataset}", post(query::query))
        .route("/api/events/{dataset}", post(query::events))
        .route("/api/sql", post(query::sql))
        .route("/api/bubbleup/{dataset}", post(query::bubbleup))
        .route("/api/traces/{dataset}/{trace_id}", get(query::trace))
        .route("/1/queries/{dataset}", post(queries::create_query))
        .route("/1/queries/{dataset}/{id}", get(queries::get_query))
        .route("/1/query_results/{dataset}", post(queries::create_result))
        .route("/1/query_results/{dataset}/{id}", get(queries::get_result))
        .route(
            "/1/query_annotations/{dataset}",
            get(query_annotations::list).post(query_annotations::create),
        )
        .route(
            "/1/query_annotations/{dataset}/{id}",
            get(query_annotations::get_one)
                .put(query_annotations::update)
                .delete(query_annotations::delete),
        )
        .route("/1/boards", get(boards::list).post(boards::create))
        .route(
            "/1/boards/{id}",
            get(boards::get_one).put(boards::update).delete(boards::delete),
        )
        .route(
            "/1/boards/{id}/views",
            get(boards::list_views).post(boards::create_view),
        )
        .route(
            "/1/boards/{id}/views/{view}",
            get(boards::get_view)
                .put(boards::update_view)
                .delete(boards::delete_view),
        )
        .route("/1/triggers/{dataset}", get(triggers::list).post(triggers::create))
        .route(
            "/1/triggers/{dataset}/{id}",
            get(triggers::get_one).put(triggers::update).delete(triggers::delete),
        )
        .route("/1/triggers/{dataset}/{id}/deliveries", get(alerts::deliveries))
        .route("/1/slos/{dataset}", get(slos::list).post(slos::create))
        .route(
            "/1/slos/{dataset}/{id}",
            get(slos::get_one).put(slos::update).delete(slos::delete),
        )
        .route("/1/reporting/slos/historical", post(slos::history))
        .route("/api/slos/{dataset}/{id}", get(slos::page))
        .route(
            "/1/burn_alerts/{dataset}",
            get(burn_alerts::list).post(burn_alerts::create),
        )
        .route(
            "/1/burn_alerts/{dataset}/{id}",
            get(burn_alerts::get_one)
                .put(burn_alerts::update)
                .delete(burn_alerts::delete),
        )
        .route("/1/burn_alerts/{dataset}/{id}/deliveries", get(alerts::deliveries))
        .route("/1/recipients", get(recipients::list).post(recipients::create))
        .route(
            "/1/recipients/{id}",
            get(recipients::get_one)
                .put(recipients::update)
                .delete(recipients::delete),
        )
        .route("/1/recipients/{id}/triggers", get(recipients::triggers_of))
        .route("/1/markers/{dataset}", get(markers::list).post(markers::create))
        .route(
            "/1/markers/{dataset}/{id}",
            put(markers::update).delete(markers::delete),
        )
        .route(
            "/1/marker_settings/{dataset}",
            get(markers::list_settings).post(markers::create_setting),
        )
        .route(
            "/1/marker_settings/{dataset}/{id}",
            put(markers::update_setting).delete(markers::delete_setting),
        )
        .route("/1/derived_columns/{dataset}", get(derived::list).post(derived::create))
        .route(
            "/1/derived_columns/{dataset}/{id}",
            get(derived::get_one).put(derived::update).delete(derived::delete),
        )
        .route(
            "/1/dataset_definitions/{dataset}",
            get(definitions::get).patch(definitions::patch),
        )
        .route("/internal/v1/buffer/{dataset}", get(fresh::buffer))
        .route("/api/datasets", get(schema::datasets))
        .route("/api/datasets/{dataset}/columns", get(schema::columns))
        .route("/api/datasets/{dataset}/stats", get(schema::stats))
        .route("/api/datasets/{dataset}", axum::routing::delete(schema::delete))
        // Ingest handlers enforce `max_body_bytes` themselves, with an error that names it.
        .layer(DefaultBodyLimit::disable())
        .layer(timeout)
        .with_state(state);
    match cors {
        Some(c) => app.layer(c),
        None => app,
    }
}

/// The ingest routes, under one layer that counts every refused request
/// (`sonde_requests_rejected_total`), whatever refused it: auth, limits, decoding, storage.
fn ingest_routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    async fn count_refusals(
        State(state): State<Arc<AppState>>,
        response: axum::response::Response,
    ) -> axum::response::Response {
        if response.status().is_client_error() || response.status().is_server_error() {
            state.stats.requests_rejected.fetch_add(1, Ordering::Relaxed);
        }
        response
    }
    Router::new()
        .route("/1/events/{dataset}", post(ingest::single_event))
        .route("/1/batch/{dataset}", post(ingest::batch))
        .route("/api/ingest/{dataset}", post(ingest::ndjson))
        .route("/v1/traces", post(otlp::http_export::<sonde_ingest::otlp::Traces>))
        .route("/v1/logs", post(otlp::http_export::<sonde_ingest::otlp::Logs>))
        .route("/v1/metrics", post(otlp::http_metrics))
        .layer(axum::middleware::map_response_with_state(state, count_refusals))
}

/// `GET /api/meta`: the query operators this server takes and what each needs, so clients (the
/// UI) list them rather than keep a copy. Public, like `/health`: it says nothing about data.
async fn meta() -> axum::Json<sonde_query::spec::Operators> {
    axum::Json(sonde_query::spec::operators())
}

/// CORS for the configured origins only; with none, no CORS headers at all, so browsers keep
/// other sites' pages from reading the API.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method};
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers([
                axum::http::header::CONTENT_TYPE,
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_ENCODING,
                HeaderName::from_static("x-honeycomb-team"),
                HeaderName::from_static("x-honeycomb-dataset"),
            ]),
    )
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// `/metrics` names every dataset, so it needs a query key that covers them all.
async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    caller: auth::Caller,
) -> Result<String, ApiError> {
    state.access.require(&caller, auth::Scope::Query, None)?;
    if !caller.covers_all() {
        return Err(ApiError::forbidden(
            "/metrics needs an API key that covers every dataset",
        ));
    }
    let s = &state.storage.stats;
    let h = &state.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let counters: [(&str, &str, u64); 15] = [
        (
            "sonde_events_ingested_total",
            "Events acknowledged.",
            load(&s.events_ingested),
        ),
        (
            "sonde_events_rejected_total",
            "Events refused individually.",
            load(&h.events_rejected),
        ),
        (
            "sonde_ingest_requests_total",
            "Ingest requests acknowledged.",
            load(&h.ingest_requests),
        ),
        (
            "sonde_requests_rejected_total",
            "Ingest requests refused whole.",
            load(&h.requests_rejected),
        ),
        (
            "sonde_wal_syncs_total",
            "WAL group commits (fsyncs).",
            load(&s.wal_syncs),
        ),
        ("sonde_wal_records_total", "WAL records written.", load(&s.wal_records)),
        (
            "sonde_segments_flushed_total",
            "Parquet segments written.",
            load(&s.segments_flushed),
        ),
        (
            "sonde_events_replayed_total",
            "Events replayed from the WAL at start.",
            load(&s.events_replayed),
        ),
        (
            "sonde_wal_torn_bytes_total",
            "Bytes cut from a torn WAL tail at start.",
            load(&s.wal_torn_bytes),
        ),
        (
            "sonde_compactions_total",
            "Merges of small segments into one.",
            load(&s.compactions),
        ),
        (
            "sonde_compactions_joined_total",
            "Merges that copied their segments' row groups as they are (decoding only where they overlap in time).",
            load(&s.compactions_joined),
        ),
        (
            "sonde_segments_expired_total",
            "Segments dropped by retention.",
            load(&s.segments_expired),
        ),
        (
            "sonde_wal_corrupt_bytes_total",
            "Bytes of damaged WAL records skipped at start (files copied to quarantine/wal).",
            load(&s.wal_corrupt_bytes),
        ),
        (
            "sonde_segments_quarantined_total",
            "Damaged segments moved to quarantine/ at start.",
            state.storage.quarantined().len() as u64,
        ),
        (
            "sonde_segment_files_deleted_total",
            "Segment files deleted once unreferenced.",
            load(&s.segment_files_deleted),
        ),
    ];
    // Counters and single gauges: HELP, TYPE and the value.
    let mut out = String::new();
    let mut single = |name: &str, help: &str, kind: &str, v: u64| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
    };
    for (name, help, v) in counters {
        single(name, help, "counter", v);
    }
    single(
        "sonde_requests_forwarded_total",
        "Ingest requests passed on to the node of the cluster that writes their dataset.",
        "counter",
        load(&h.requests_forwarded),
    );
    single(
        "sonde_fresh_copy_bytes",
        "Bytes of a query node's copies of its ingest nodes' write buffers (bounded by --max-buffer-bytes).",
        "gauge",
        state.storage.fresh_bytes() as u64,
    );
    single(
        "sonde_fresh_rows_read_total",
        "Fresh rows a query node read from ingest nodes as queries ran (those its copies lack).",
        "counter",
        state.storage.stats.fresh_rows_read.load(Ordering::Relaxed),
    );
    single(
        "sonde_fresh_failures_total",
        "Requests for an ingest node's buffered events that failed (the copy waits for the next round).",
        "counter",
        load(&h.fresh_failures),
    );
    let budget = state.engine.memory_budget();
    single(
        "sonde_request_memory_bytes",
        "Bytes held by requests now (queries' operators, answers, bodies), within --memory-limit.",
        "gauge",
        budget.used() as u64,
    );
    single(
        "sonde_request_memory_peak_bytes",
        "Most bytes requests held at once since start.",
        "gauge",
        budget.peak() as u64,
    );
    single(
        "sonde_request_memory_limit_bytes",
        "The bound on bytes requests may hold (--memory-limit).",
        "gauge",
        budget.limit() as u64,
    );
    single(
        "sonde_request_memory_refused_total",
        "Reservations refused because requests together held --memory-limit.",
        "counter",
        budget.refused(),
    );
    if let Some((hits, misses, bytes)) = state.engine.chunk_cache_stats() {
        single(
            "sonde_chunk_cache_hits_total",
            "Column-chunk reads answered from memory.",
            "counter",
            hits,
        );
        single(
            "sonde_chunk_cache_misses_total",
            "Column-chunk reads from the store.",
            "counter",
            misses,
        );
        single(
            "sonde_chunk_cache_bytes",
            "Bytes held by the column-chunk cache.",
            "gauge",
            bytes as u64,
        );
    }
    if let Some(totals) = state.engine.distributed_counts() {
        single(
            "sonde_sql_distributed_total",
            "Queries this query node coordinated across the cluster's workers (SQL, and each aggregate query of a query specification).",
            "counter",
            totals.queries,
        );
        single(
            "sonde_sql_retried_alone_total",
            "Distributed queries that failed and were run again on this node alone.",
            "counter",
            totals.retried_alone,
        );
        single(
            "sonde_sql_retried_on_workers_total",
            "Distributed queries that failed, left out the workers that could not be reached, and were run again over the others.",
            "counter",
            totals.retried_on_workers,
        );
    }
    let partials = state.engine.partials_stats();
    single(
        "sonde_partials_hits_total",
        "Segments a breakdown answered from precomputed partial aggregates.",
        "counter",
        partials.hits,
    );
    single(
        "sonde_partials_misses_total",
        "Segments whose partial aggregates a breakdown computed (then kept, room permitting).",
        "counter",
        partials.misses,
    );
    single(
        "sonde_partials_bytes",
        "Bytes held by the precomputed partials (--partials-cache-bytes).",
        "gauge",
        partials.bytes as u64,
    );
    let stats: Vec<_> = state
        .storage
        .datasets()
        .iter()
        .filter_map(|d| state.storage.dataset_stats(&d.name))
        .collect();
    type Gauge = fn(&sonde_storage::DatasetStats) -> u64;
    let gauges: [(&str, &str, Gauge); 5] = [
        ("sonde_dataset_rows", "Events stored per dataset.", |d| {
            d.info.segment_rows + d.info.buffered_rows
        }),
        (
            "sonde_dataset_buffered_rows",
            "Events in the write buffer per dataset.",
            |d| d.info.buffered_rows,
        ),
        ("sonde_dataset_segments", "Segments per dataset.", |d| {
            d.info.segments as u64
        }),
        ("sonde_dataset_bytes", "Bytes of segments on disk per dataset.", |d| {
            d.info.segment_bytes
        }),
        (
            "sonde_dataset_pending_compaction",
            "Segments compaction would merge now.",
            |d| d.segments_pending_compaction as u64,
        ),
    ];
    for (name, help, f) in gauges {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for d in &stats {
            out.push_str(&format!("{name}{{dataset=\"{}\"}} {}\n", d.info.name, f(d)));
        }
    }
    Ok(out)
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

//! The `sonde` binary: a thin command line over the library crates.
//!
//! - `sonde serve` — the server (ingest, query, UI) over a data directory.
//! - `sonde gen N` — generate deterministic demo events as NDJSON, or post them to a server.
//! - `sonde ingest FILE` — send an NDJSON file to a running server.
//! - `sonde doctor` — what `serve` would run with (same flags), and what would stop it.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use sonde_gen::{GenConfig, Generator};
use sonde_model::Limits;
use sonde_query::EngineConfig;
use sonde_server::{AppState, ServerConfig};
use sonde_storage::{Durability, Role, Storage, StorageConfig};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod doctor;
mod memory_plan;

use memory_plan::MemoryPlan;

/// `sonde --version`: the crate version, the commit built and the cargo profile
/// (`0.1.0 (commit 1a2b3c4d5e, release)`), set by `build.rs`.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SONDE_GIT_COMMIT"),
    ", ",
    env!("SONDE_BUILD_PROFILE"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "sonde",
    version = VERSION,
    about = "Event-based observability: ingest wide events, ask anything, fast"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: Honeycomb events API, NDJSON ingest, schema, health and metrics.
    Serve(Box<ServeArgs>),
    /// Check what `serve` would run with, given the same flags and environment: build, machine,
    /// data directory and free disk, storage, limits, auth. Exits 1 if something would stop it.
    Doctor(Box<ServeArgs>),
    /// Generate deterministic wide events (with an incident) as NDJSON, or post them.
    Gen(GenArgs),
    /// Send an NDJSON file (one event per line; `-` for stdin) to a running server.
    Ingest(IngestArgs),
    /// Run a Honeycomb query specification (a JSON file, `-` for stdin) against a running server.
    Query(QueryArgs),
    /// Run read-only SQL against a running server.
    Sql(SqlArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Make a new API key: prints the key (shown only this once) and the line to add to the
    /// keys file, which holds only the key's SHA-256.
    New {
        /// A name for the key, used in errors and rate limits (never the key itself).
        name: String,
        /// Comma-separated scopes: ingest, query, manage, admin.
        #[arg(long, default_value = "ingest")]
        scopes: String,
        /// Comma-separated datasets the key reaches, or `*` for all.
        #[arg(long, default_value = "*")]
        datasets: String,
        /// Append the key's line to this keys file (made if missing) instead of printing it, so
        /// only the key itself is printed.
        #[arg(long)]
        keys_file: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct QueryArgs {
    /// Dataset to query.
    dataset: String,
    /// Query specification file (JSON), `-` for stdin.
    spec: PathBuf,
    /// Server address.
    #[arg(long, env = "SONDE_URL", default_value = "http://127.0.0.1:4318")]
    url: String,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct SqlArgs {
    /// The SQL statement (quote column names with dots: "service.name").
    sql: String,
    /// Server address.
    #[arg(long, env = "SONDE_URL", default_value = "http://127.0.0.1:4318")]
    url: String,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// Acknowledge after the WAL record is fsynced (no acknowledged event is ever lost).
    Fsync,
    /// Acknowledge after the WAL write, without fsync (a machine crash can lose recent acks).
    None,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Data directory: WAL, catalog and Parquet segments.
    #[arg(long, env = "SONDE_DATA_DIR", default_value = "./sonde-data")]
    data_dir: PathBuf,
    /// Address to listen on. 4318 is OTLP/HTTP's port, so OpenTelemetry SDKs find Sonde by default.
    #[arg(long, env = "SONDE_LISTEN", default_value = "127.0.0.1:4318")]
    listen: String,
    /// Where segments and the catalog live: empty for the data directory, or `s3://bucket/prefix`
    /// (credentials, region and `AWS_ENDPOINT_URL` for S3-compatible stores from the usual
    /// `AWS_*` variables). The WAL always stays in the data directory.
    #[arg(long, env = "SONDE_STORAGE")]
    storage: Option<String>,
    /// This process's part in a cluster over one `--storage` bucket: `all` does everything on
    /// its own; `ingest` takes events for the datasets it owns and commits segments to the
    /// shared catalog; `query` takes no events and answers queries over what the ingest nodes
    /// flushed.
    #[arg(long, env = "SONDE_ROLE", value_enum, default_value = "all")]
    role: RoleArg,
    /// This node's name in the shared catalog and its segment files (keep it across restarts
    /// of an ingest node); default: the host name.
    #[arg(long, env = "SONDE_NODE_NAME")]
    node_name: Option<String>,
    /// Whether this node evaluates triggers and SLO burn alerts on their schedule. Default: on
    /// for `--role all`; off for the cluster roles, so that each alert fires from one node only
    /// (turn it on for exactly one query node, which sees every dataset).
    #[arg(long, env = "SONDE_ALERTS", value_enum)]
    alerts: Option<OnOff>,
    /// How often a query node reads the shared catalog for newly flushed segments.
    #[arg(long, env = "SONDE_CATALOG_REFRESH", default_value_t = Dur(StorageConfig::DEFAULT_CATALOG_REFRESH))]
    catalog_refresh: Dur,
    /// How long an ingest node keeps its datasets without writing its member file to the
    /// bucket (it writes it every third of this): past it, the next ingest node given events
    /// for one of them takes it over, and the node hands over what it had not flushed when it
    /// restarts.
    #[arg(long, env = "SONDE_LEASE", default_value_t = Dur(StorageConfig::DEFAULT_LEASE))]
    lease: Dur,
    /// How often a query node copies the events its ingest nodes hold in their write buffers, so
    /// that it answers them before they are flushed.
    #[arg(long, env = "SONDE_FRESH_INTERVAL", default_value = "250ms")]
    fresh_interval: Dur,
    /// The base URL at which query nodes reach this ingest node (written to its member file in
    /// the bucket); default: `http://` and the address it listens on (with the node's name in
    /// place of an unspecified address such as 0.0.0.0).
    #[arg(long, env = "SONDE_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// The API key a query node sends to ingest nodes when it copies their write buffers (a key
    /// with the query scope, needed when the ingest nodes check keys), and to other query nodes'
    /// workers with distributed SQL tasks; a query node's worker runs only tasks carrying it.
    #[arg(long, env = "SONDE_CLUSTER_KEY", hide_env_values = true)]
    cluster_key: Option<String>,
    /// On a query node: SQL over more Parquet than this many bytes times the query parallelism
    /// is split into tasks spread over the query nodes' workers (each node's worker listens on
    /// its --grpc-listen address; with `off` the node runs its queries alone).
    #[arg(long, env = "SONDE_DISTRIBUTED_BYTES_PER_PARTITION", default_value_t = 16 << 20)]
    distributed_bytes_per_partition: usize,
    /// Address for OTLP/gRPC (4317 is its standard port); `off` disables it.
    #[arg(long, env = "SONDE_GRPC_LISTEN", default_value = "127.0.0.1:4317")]
    grpc_listen: GrpcListen,
    /// When ingest is acknowledged. `none` trades durability for speed.
    #[arg(long, env = "SONDE_DURABILITY", value_enum, default_value = "fsync")]
    durability: DurabilityArg,
    /// Flush a dataset's write buffer to a segment at this many events.
    #[arg(long, env = "SONDE_FLUSH_ROWS", default_value_t = StorageConfig::DEFAULT_FLUSH_ROWS)]
    flush_rows: usize,
    /// ... or when its oldest event has waited this long (e.g. `500ms`, `10s`, `5m`).
    /// Longer means fewer, larger segments; queries see buffered events either way.
    #[arg(long, env = "SONDE_FLUSH_AGE", default_value_t = Dur(StorageConfig::DEFAULT_FLUSH_AGE))]
    flush_age: Dur,
    /// Compaction merges small segments into ones of about this many rows (0 disables it).
    /// Larger segments make queries cheaper; merging costs CPU and I/O in the background.
    #[arg(long, env = "SONDE_COMPACTION_TARGET_ROWS", default_value_t = StorageConfig::DEFAULT_COMPACTION_TARGET_ROWS)]
    compaction_target_rows: u64,
    /// How often compaction and retention run.
    #[arg(long, env = "SONDE_MAINTENANCE_INTERVAL", default_value_t = Dur(StorageConfig::DEFAULT_MAINTENANCE_INTERVAL))]
    maintenance_interval: Dur,
    /// Drop segments wholly older than this (e.g. `30d`); default: keep everything.
    #[arg(long, env = "SONDE_RETENTION")]
    retention: Option<Dur>,
    /// Retention for one dataset, `NAME=DURATION` (repeatable; comma-separated in the variable).
    #[arg(long, env = "SONDE_RETENTION_DATASET", value_delimiter = ',', value_parser = parse_dataset_retention)]
    retention_dataset: Vec<(sonde_model::DatasetName, Duration)>,
    /// The memory this server plans for, in bytes: write buffers a quarter, requests half, the
    /// caches the rest. A part's own flag, when given, takes its place.
    #[arg(long, env = "SONDE_SERVER_MEMORY", default_value_t = MemoryPlan::DEFAULT_SERVER_MEMORY)]
    server_memory: usize,
    /// Refuse ingest (503 + Retry-After) while the write buffers hold more than this many bytes
    /// (flushes start at half of it) [default: a quarter of --server-memory].
    #[arg(long, env = "SONDE_MAX_BUFFER_BYTES")]
    max_buffer_bytes: Option<usize>,
    /// Below this much free space on the data directory's disk, ingest answers 503 with
    /// `Retry-After` until space is freed (0: no check).
    #[arg(long, env = "SONDE_MIN_FREE_DISK_BYTES", default_value_t = StorageConfig::DEFAULT_MIN_FREE_DISK_BYTES)]
    min_free_disk_bytes: u64,
    /// Memory for the per-segment id indexes (`--bloom-columns`), in bytes: about 2.7 bytes per
    /// event with unique trace ids, so 256 MiB holds about 100M events' worth; past it a trace
    /// lookup reads the index files again [default: an eighth of --server-memory].
    #[arg(long, env = "SONDE_INDEX_CACHE_BYTES")]
    index_cache_bytes: Option<usize>,
    /// Start a new WAL file past this size.
    #[arg(long, env = "SONDE_WAL_ROTATE_BYTES", default_value_t = StorageConfig::DEFAULT_WAL_ROTATE_BYTES)]
    wal_rotate_bytes: u64,
    /// Rows per Parquet row group.
    #[arg(long, env = "SONDE_ROW_GROUP_ROWS", default_value_t = StorageConfig::DEFAULT_ROW_GROUP_ROWS)]
    row_group_rows: usize,
    /// Columns that get Parquet bloom filters (comma-separated), for fast id lookups.
    #[arg(
        long,
        env = "SONDE_BLOOM_COLUMNS",
        value_delimiter = ',',
        default_value = StorageConfig::DEFAULT_BLOOM_COLUMNS
    )]
    bloom_columns: Vec<String>,
    /// Largest request body in bytes, before and after decompression.
    #[arg(long, env = "SONDE_MAX_BODY_BYTES", default_value_t = ServerConfig::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Largest single event in bytes.
    #[arg(long, env = "SONDE_MAX_EVENT_BYTES", default_value_t = Limits::DEFAULT.max_event_bytes)]
    max_event_bytes: usize,
    /// Most fields in one event (after flattening).
    #[arg(long, env = "SONDE_MAX_FIELDS", default_value_t = Limits::DEFAULT.max_fields_per_event)]
    max_fields: usize,
    /// Longest field name in bytes (after flattening).
    #[arg(long, env = "SONDE_MAX_FIELD_NAME_LEN", default_value_t = Limits::DEFAULT.max_field_name_len)]
    max_field_name_len: usize,
    /// Longest string value in bytes.
    #[arg(long, env = "SONDE_MAX_STRING_LEN", default_value_t = Limits::DEFAULT.max_string_len)]
    max_string_len: usize,
    /// Deepest nesting of objects and arrays accepted in an event.
    #[arg(long, env = "SONDE_MAX_DEPTH", default_value_t = Limits::DEFAULT.max_depth)]
    max_depth: usize,
    /// Nested objects are flattened to dotted names up to this depth; deeper ones are kept as JSON.
    #[arg(long, env = "SONDE_FLATTEN_DEPTH", default_value_t = Limits::DEFAULT.flatten_depth)]
    flatten_depth: usize,
    /// Longest a query may run before it is stopped with an error.
    #[arg(long, env = "SONDE_QUERY_TIMEOUT", default_value_t = Dur(EngineConfig::DEFAULT_TIMEOUT))]
    query_timeout: Dur,
    /// Most memory one query may use, in bytes; past it the query fails with an error
    /// [default: a quarter of --server-memory, half of what requests have].
    #[arg(long, env = "SONDE_QUERY_MEMORY_LIMIT")]
    query_memory_limit: Option<usize>,
    /// Most memory all requests together may hold, in bytes: queries' operators, answers being
    /// built and sent, BubbleUp's counters, trace trees, decompressed bodies. A request that
    /// would pass it is refused with 503 and `Retry-After` and the server stays up. The write
    /// buffers (`--max-buffer-bytes`) and caches come on top [default: half of --server-memory].
    #[arg(long, env = "SONDE_MEMORY_LIMIT")]
    memory_limit: Option<usize>,
    /// Largest answer one request may build, in bytes (the rows collected, and again the text
    /// sent); past it the request is refused with 400 naming this flag.
    #[arg(long, env = "SONDE_MAX_ANSWER_BYTES", default_value_t = EngineConfig::DEFAULT_MAX_ANSWER_BYTES)]
    max_answer_bytes: usize,
    /// BubbleUp over a population whose segments hold more rows than this counts about this
    /// many: a small side whole, the rest from a systematic sample (the answer says so in
    /// `meta.sampled`); a request's `"exact": true` or 0 here counts every row.
    #[arg(long, env = "SONDE_BUBBLEUP_SAMPLE_ROWS", default_value_t = EngineConfig::DEFAULT_BUBBLEUP_SAMPLE_ROWS)]
    bubbleup_sample_rows: u64,
    /// Memory for Parquet footers and page indexes kept across queries, in bytes (0: re-read
    /// them on every query) [default: a sixteenth of --server-memory].
    #[arg(long, env = "SONDE_METADATA_CACHE_BYTES")]
    metadata_cache_bytes: Option<usize>,
    /// Memory for column chunks kept across queries, in bytes (0: no cache). Most useful with
    /// `--storage s3://…`, where every chunk read is a request [default: a thirty-second of
    /// --server-memory].
    #[arg(long, env = "SONDE_CHUNK_CACHE_BYTES")]
    chunk_cache_bytes: Option<usize>,
    /// Memory for precomputed per-segment partial aggregates of breakdowns (COUNT, SUM, AVG,
    /// MIN, MAX, percentile sketches and sets of distinct values per time bucket and group), in
    /// bytes (0: off, every query scans every segment)
    /// [default: a thirty-second of --server-memory].
    #[arg(long, env = "SONDE_PARTIALS_CACHE_BYTES")]
    partials_cache_bytes: Option<usize>,
    /// A breakdown's percentiles are exact up to this many events in its range (and while
    /// their values fit in `--query-memory-limit`); above it they come from mergeable sketches
    /// within 0.5% of the value, marked in `meta.approximate` (0: always exact).
    #[arg(long, env = "SONDE_EXACT_PERCENTILE_ROWS", default_value_t = EngineConfig::DEFAULT_EXACT_PERCENTILE_ROWS)]
    exact_percentile_rows: u64,
    /// Log format.
    #[arg(long, env = "SONDE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// API keys file (`sonde keys new` prints its lines). With keys, every request must carry
    /// one; `SONDE_KEYS` may hold the same lines, separated by newlines or `;`.
    #[arg(long, env = "SONDE_KEYS_FILE")]
    keys_file: Option<PathBuf>,
    /// Serve without API keys on a non-loopback address. Anyone who can reach the port can then
    /// read and write every dataset.
    #[arg(long, env = "SONDE_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// Ingest requests per second allowed per API key (0: unlimited).
    #[arg(long, env = "SONDE_INGEST_RATE_LIMIT", default_value_t = 0.0)]
    ingest_rate_limit: f64,
    /// Query requests per second allowed per API key (0: unlimited).
    #[arg(long, env = "SONDE_QUERY_RATE_LIMIT", default_value_t = 0.0)]
    query_rate_limit: f64,
    /// Longest any request may take, reading its body included; slower ones get a 408.
    #[arg(long, env = "SONDE_REQUEST_TIMEOUT", default_value_t = Dur(ServerConfig::DEFAULT_REQUEST_TIMEOUT))]
    request_timeout: Dur,
    /// Queries running at once; others wait up to 2 s for a slot, then get a 429.
    #[arg(long, env = "SONDE_MAX_CONCURRENT_QUERIES", default_value_t = ServerConfig::DEFAULT_MAX_CONCURRENT_QUERIES)]
    max_concurrent_queries: usize,
    /// Most objects of each kind (markers, marker settings, saved queries, query annotations,
    /// derived columns) one dataset may hold; each kind is one document, read and written whole.
    #[arg(long, env = "SONDE_MAX_SAVED_OBJECTS", default_value_t = ServerConfig::DEFAULT_MAX_SAVED_OBJECTS)]
    max_saved_objects: usize,
    /// The shortest frequency a trigger may have. Honeycomb's is a minute (the default); lower
    /// it for quick feedback while writing triggers, or for tests.
    #[arg(long, env = "SONDE_TRIGGER_MIN_FREQUENCY", default_value_t = Dur(ServerConfig::DEFAULT_MIN_TRIGGER_FREQUENCY))]
    trigger_min_frequency: Dur,
    /// Where users reach this server (e.g. `https://sonde.example.com`), for the links in trigger
    /// and burn-alert notifications; without it the links are paths.
    #[arg(long, env = "SONDE_PUBLIC_URL", default_value = "")]
    public_url: String,
    /// Origins allowed to call the API from a browser (CORS), comma-separated; none by default.
    #[arg(long, env = "SONDE_CORS_ORIGINS", value_delimiter = ',')]
    cors_origin: Vec<String>,
    /// Serve the web UI from this directory (e.g. `web/dist` after `npm run build`), read at each
    /// request, instead of the build embedded in the binary: for work on the UI.
    #[arg(long, env = "SONDE_UI_DIR")]
    ui_dir: Option<PathBuf>,
}

impl ServeArgs {
    /// The memory plan: the shares of `--server-memory`, each replaced by its own flag if given.
    fn memory(&self) -> MemoryPlan {
        let share = MemoryPlan::of(self.server_memory);
        MemoryPlan {
            buffers: self.max_buffer_bytes.unwrap_or(share.buffers),
            requests: self.memory_limit.unwrap_or(share.requests),
            query: self.query_memory_limit.unwrap_or(share.query),
            metadata_cache: self.metadata_cache_bytes.unwrap_or(share.metadata_cache),
            index_cache: self.index_cache_bytes.unwrap_or(share.index_cache),
            chunk_cache: self.chunk_cache_bytes.unwrap_or(share.chunk_cache),
            partials_cache: self.partials_cache_bytes.unwrap_or(share.partials_cache),
        }
    }
}

#[derive(Args, Debug)]
struct GenArgs {
    /// Number of events.
    count: u64,
    /// Seed: the same seed gives the same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Span of time the events cover, ending now (e.g. `1h`, `24h`).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    span: Duration,
    /// Time of the first event (RFC3339); default: now minus the span.
    #[arg(long)]
    start: Option<String>,
    /// Leave out the incident (slow, failing `dyn` DNS provider).
    #[arg(long)]
    no_incident: bool,
    /// Post the events to this server (e.g. `http://127.0.0.1:4318`) instead of printing NDJSON.
    #[arg(long)]
    post: Option<String>,
    /// Dataset to post to.
    #[arg(long, default_value = "demo")]
    dataset: String,
    /// Events per posted batch (and per line with `--format batch`).
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// What to print: `ndjson` (one event per line, for `POST /api/ingest`) or `batch` (one
    /// Honeycomb batch body per line, `--batch` events each, for `POST /1/batch`).
    #[arg(long, value_enum, default_value_t = GenFormat::Ndjson)]
    format: GenFormat,
}

/// The output of `sonde gen`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum GenFormat {
    /// One event per line.
    Ndjson,
    /// One Honeycomb batch body (a JSON array of `{"data", "time", "samplerate"}`) per line.
    Batch,
}

#[derive(Args, Debug)]
struct IngestArgs {
    /// NDJSON file, `-` for stdin.
    file: PathBuf,
    /// Dataset to write to.
    #[arg(long)]
    dataset: String,
    /// Server address.
    #[arg(long, env = "SONDE_URL", default_value = "http://127.0.0.1:4318")]
    url: String,
    /// Lines per request.
    #[arg(long, default_value_t = 5000)]
    batch: usize,
}

/// Parses `NAME=DURATION` for per-dataset retention.
fn parse_dataset_retention(s: &str) -> Result<(sonde_model::DatasetName, Duration), String> {
    let (name, d) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=DURATION, got {s:?}"))?;
    let name = sonde_model::DatasetName::new(name).map_err(|e| e.to_string())?;
    Ok((name, parse_duration(d)?))
}

/// A duration on the command line: `500ms`, `10s`, `5m`, `2h`, `1d` (shown the same way in
/// `--help`'s defaults, which come from the library crates' constants).
#[derive(Debug, Clone, Copy)]
struct Dur(Duration);

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Dur, String> {
        parse_duration(s).map(Dur)
    }
}

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        // The largest unit that divides it: 60s shows as 1m, 90s as 90s.
        let unit = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")]
            .into_iter()
            .find(|(n, _)| ms > 0 && ms.is_multiple_of(*n));
        match unit {
            Some((n, u)) => write!(f, "{}{u}", ms / n),
            None => write!(f, "{ms}ms"),
        }
    }
}

/// Where OTLP/gRPC listens: an address, or `off`.
#[derive(Debug, Clone)]
enum GrpcListen {
    Off,
    At(String),
}

impl GrpcListen {
    fn address(&self) -> Option<&str> {
        match self {
            GrpcListen::Off => None,
            GrpcListen::At(a) => Some(a),
        }
    }
}

impl std::str::FromStr for GrpcListen {
    type Err = String;
    fn from_str(s: &str) -> Result<GrpcListen, String> {
        Ok(match s.trim() {
            "" => GrpcListen::Off,
            off if off.eq_ignore_ascii_case("off") => GrpcListen::Off,
            addr => GrpcListen::At(addr.to_string()),
        })
    }
}

impl std::fmt::Display for GrpcListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.address().unwrap_or("off"))
    }
}

/// Parses `500ms`, `10s`, `5m`, `2h`, `1d` (a bare number is seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 10s, 5m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("invalid duration unit {unit:?} in {s:?}: use ms, s, m, h or d")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// mimalloc rather than glibc's malloc: ingest allocates and frees many small values per event
/// across threads, where glibc spent ~40% of ingest CPU (much of it consolidating free lists).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    /// mimalloc's option setter (`mimalloc.h`); the option keeps its environment override.
    fn mi_option_set_default(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc's option enum (the same in its v2 and v3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

fn main() -> Result<()> {
    // Keep freed memory for reuse rather than handing it back to the OS 10 ms later: ingest
    // frees and reallocates request-sized buffers all the time, and faulting fresh (huge) pages
    // back in, zeroed, was 12% of ingest CPU. `MIMALLOC_PURGE_DELAY` still overrides this.
    // SAFETY: a plain C call with integer arguments, made before any other thread exists (the
    // setter is not thread-safe).
    unsafe { mi_option_set_default(MI_OPTION_PURGE_DELAY, -1) };
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve(a) => rt.block_on(serve(*a)),
        Command::Doctor(a) => {
            let report = doctor::check(&a);
            report.print();
            if !report.problems.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Gen(a) => rt.block_on(gen_events(a)),
        Command::Ingest(a) => rt.block_on(ingest_file(a)),
        Command::Query(a) => rt.block_on(run_query(a)),
        Command::Sql(a) => rt.block_on(run_sql(a)),
        Command::Keys(KeysCommand::New {
            name,
            scopes,
            datasets,
            keys_file,
        }) => {
            let (key, line) = sonde_server::auth::new_key(&name, &scopes, &datasets).map_err(anyhow::Error::msg)?;
            eprintln!("API key {name:?} (shown only now; the server keeps only its hash):");
            println!("{key}");
            match keys_file {
                Some(path) => {
                    append_line(&path, &line).with_context(|| format!("appending to {}", path.display()))?;
                    eprintln!(
                        "Its line was added to {} (give the server --keys-file).",
                        path.display()
                    );
                }
                None => {
                    eprintln!("Add this line to the keys file (--keys-file) or SONDE_KEYS:");
                    println!("{line}");
                }
            }
            Ok(())
        }
    }
}

/// Appends `line` to the file at `path` (made if missing), starting a new line if the file does
/// not end with one.
fn append_line(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    let ends_open = std::fs::read(path).is_ok_and(|b| b.last().is_some_and(|c| *c != b'\n'));
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    if ends_open {
        f.write_all(b"\n")?;
    }
    writeln!(f, "{line}")?;
    f.sync_all()
}

/// The configured API keys, from `--keys-file` and `SONDE_KEYS`.
fn load_keys(a: &ServeArgs) -> Result<sonde_server::auth::KeyStore> {
    let mut text = String::new();
    if let Some(path) = &a.keys_file {
        text = std::fs::read_to_string(path).with_context(|| format!("reading keys file {}", path.display()))?;
        text.push('\n');
    }
    if let Ok(env) = std::env::var("SONDE_KEYS") {
        text.push_str(&env);
    }
    sonde_server::auth::KeyStore::parse(&text).map_err(|e| anyhow::anyhow!("API keys: {e}"))
}

/// Whether every address `addr` names is a loopback address.
fn is_loopback(addr: &str) -> bool {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map(|mut it| it.all(|a| a.ip().is_loopback()))
        .unwrap_or(false)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SONDE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A switch, as the command line spells it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OnOff {
    On,
    Off,
}

/// `--role`, as the command line spells it.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum RoleArg {
    All,
    Ingest,
    Query,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::All => Role::All,
            RoleArg::Ingest => Role::Ingest,
            RoleArg::Query => Role::Query,
        }
    }
}

/// The host's name made fit for a node name (letters, digits, `-`, `_`).
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() { "node".into() } else { name }
}

async fn serve(a: ServeArgs) -> Result<()> {
    init_logging(a.log_format);
    tracing::info!("{}", doctor::startup_summary(&a));
    let keys = load_keys(&a)?;
    let exposed: Vec<&str> = [Some(a.listen.as_str()), a.grpc_listen.address()]
        .into_iter()
        .flatten()
        .filter(|addr| !is_loopback(addr))
        .collect();
    if keys.is_empty() && !exposed.is_empty() {
        if !a.insecure_no_auth {
            anyhow::bail!(
                "refusing to listen on {} without API keys: anyone who reaches it could read and write \
                 every dataset. Configure keys (`sonde keys new`, then --keys-file or SONDE_KEYS), listen \
                 on a loopback address, or pass --insecure-no-auth to accept the risk",
                exposed.join(" and ")
            );
        }
        tracing::warn!(addresses = ?exposed, "auth is OFF on a non-loopback address (--insecure-no-auth)");
    }
    if keys.is_empty() {
        tracing::info!("auth off: no API keys configured");
    } else {
        tracing::info!(keys = keys.len(), "auth on: requests need an API key");
    }
    let mut storage_config = StorageConfig::new(&a.data_dir);
    storage_config.durability = match a.durability {
        DurabilityArg::Fsync => Durability::Fsync,
        DurabilityArg::None => Durability::None,
    };
    storage_config.flush_rows = a.flush_rows;
    storage_config.flush_age = a.flush_age.0;
    let memory = a.memory();
    storage_config.max_buffer_bytes = memory.buffers;
    storage_config.min_free_disk_bytes = a.min_free_disk_bytes;
    storage_config.wal_rotate_bytes = a.wal_rotate_bytes;
    storage_config.segment.row_group_rows = a.row_group_rows;
    storage_config.segment.bloom_columns = a.bloom_columns.clone();
    storage_config.compaction_target_rows = a.compaction_target_rows;
    storage_config.index_cache_bytes = memory.index_cache;
    storage_config.storage_url = a.storage.clone().filter(|s| !s.is_empty());
    storage_config.role = a.role.into();
    storage_config.node_name = a.node_name.clone().unwrap_or_else(host_name);
    storage_config.catalog_refresh = a.catalog_refresh.0;
    storage_config.lease = a.lease.0;
    storage_config.maintenance_interval = a.maintenance_interval.0;
    storage_config.retention = a.retention.map(|d| d.0);
    storage_config.retention_by_dataset = a.retention_dataset.iter().cloned().collect();
    let storage = Storage::open(storage_config)
        .await
        .with_context(|| format!("opening data directory {}", a.data_dir.display()))?;
    let config = ServerConfig {
        max_body_bytes: a.max_body_bytes,
        limits: Limits {
            max_event_bytes: a.max_event_bytes,
            max_fields_per_event: a.max_fields,
            max_field_name_len: a.max_field_name_len,
            max_string_len: a.max_string_len,
            max_depth: a.max_depth,
            flatten_depth: a.flatten_depth,
        },
        request_timeout: a.request_timeout.0,
        max_concurrent_queries: a.max_concurrent_queries.max(1),
        cors_origins: a.cors_origin.clone(),
        ui_dir: a.ui_dir.clone(),
        max_saved_objects: a.max_saved_objects,
        min_trigger_frequency: a.trigger_min_frequency.0,
        public_url: a.public_url.clone(),
    };
    // Bound before the engine: a query node's worker is reached at this address.
    let grpc_listener = match a.grpc_listen.address() {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("listening for OTLP/gRPC on {at}"))?,
        ),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    let addr = listener.local_addr()?;
    // Where the cluster's other nodes reach this node: `--advertise-url`, or the address it
    // listens on (with the node's name in place of an unspecified address such as 0.0.0.0).
    let reached_at = |at: std::net::SocketAddr| {
        if at.ip().is_unspecified() {
            format!("http://{}:{}", storage.config().node_name, at.port())
        } else {
            format!("http://{at}")
        }
    };
    let advertised = a.advertise_url.clone().unwrap_or_else(|| reached_at(addr));
    let worker_url = match (&grpc_listener, &a.role) {
        (Some(l), RoleArg::Query) if storage.config().storage_url.is_some() => {
            let at = l.local_addr()?;
            // Under --advertise-url, the worker is at the same host on the gRPC port.
            let url = match url::Url::parse(&advertised) {
                Ok(mut u) if a.advertise_url.is_some() => {
                    let _ = u.set_port(Some(at.port()));
                    u
                }
                _ => {
                    let at = reached_at(at);
                    url::Url::parse(&at).with_context(|| format!("the worker address {at}"))?
                }
            };
            Some(url)
        }
        _ => None,
    };
    let engine = sonde_query::QueryEngine::new(
        storage.clone(),
        sonde_query::EngineConfig {
            timeout: a.query_timeout.0,
            memory_limit: memory.query,
            metadata_cache_bytes: memory.metadata_cache,
            chunk_cache_bytes: memory.chunk_cache,
            memory_budget: memory.requests,
            max_answer_bytes: a.max_answer_bytes,
            bubbleup_sample_rows: a.bubbleup_sample_rows,
            partials_cache_bytes: memory.partials_cache,
            exact_percentile_rows: a.exact_percentile_rows,
            ..Default::default()
        },
    )?;
    // A query node reads the ingest nodes' fresh rows its copies lack (and those a plan from
    // another node names) through one reader.
    let engine = match a.role {
        RoleArg::Query => engine.with_fresh_reader(Arc::new(sonde_server::fresh::FreshRowsReader::new(
            storage.clone(),
            a.cluster_key.clone(),
        ))),
        _ => engine,
    };
    let engine = match &worker_url {
        Some(url) => engine.with_cluster(sonde_query::distributed::ClusterConfig {
            self_url: url.clone(),
            key: a.cluster_key.clone(),
            bytes_per_partition: a.distributed_bytes_per_partition,
            // A plan names fresh rows rather than carrying them, but a plan over a filter on
            // trace ids carries the few matching rows, and a shuffle's batches can be large.
            max_message_bytes: memory.buffers.max(a.max_body_bytes).saturating_add(64 << 20),
            // Until the member file of a dead node has gone stale (--lease) and been read
            // again (every third of it).
            leave_out_for: a.lease.0 + a.lease.0 / 3,
        })?,
        None => engine,
    };
    let access = sonde_server::auth::Access::new(
        keys,
        sonde_server::auth::RateLimits {
            ingest_per_s: a.ingest_rate_limit,
            query_per_s: a.query_rate_limit,
        },
    );
    let state = Arc::new(AppState::new(storage.clone(), Arc::new(engine), config, access));
    tracing::info!(%addr, data_dir = %storage.config().data_dir.display(), "sonde listening");
    // Tests and scripts read these lines to find ports chosen with :0.
    println!("sonde listening on http://{addr}");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    // Where the cluster's other nodes reach this node, written again every heartbeat.
    let mut heartbeat = None;
    if !matches!(a.role, RoleArg::All) {
        heartbeat = storage
            .clone()
            .announce(
                advertised.trim_end_matches('/').to_string(),
                worker_url.as_ref().map(|u| sonde_storage::fresh::Worker {
                    url: u.as_str().trim_end_matches('/').to_string(),
                    plans: sonde_query::distributed::plan_version().to_string(),
                }),
                stopped(),
            )
            .await
            .context("writing this node's member file to the bucket")?;
    }
    let workers = state
        .engine
        .peers()
        .map(|peers| tokio::spawn(sonde_server::workers::follow(state.clone(), peers, stopped())));
    let grpc = if let Some(l) = grpc_listener {
        let grpc_addr = l.local_addr()?;
        tracing::info!(addr = %grpc_addr, workers = worker_url.is_some(), "otlp/grpc listening");
        println!("sonde otlp/grpc listening on http://{grpc_addr}");
        Some(tokio::spawn(sonde_server::otlp::serve_grpc(
            l,
            state.clone(),
            state.engine.worker_routes(),
            stopped(),
        )))
    } else {
        None
    };
    // After the address lines, which tests and scripts read first.
    let exe = std::env::current_exe().map(|p| p.display().to_string());
    println!(
        "open http://{addr}/ in a browser; to load demo data (an hour of a service mesh with an incident): {} gen 200000 --post http://{addr} --dataset demo",
        exe.as_deref().unwrap_or("sonde")
    );
    // The handlers are installed here, before the first request is served: installed inside the
    // spawned task, a SIGTERM arriving before that task first ran (a quick restart-then-stop,
    // under load) met the default action and killed the server without its graceful flush.
    let signals = shutdown_signal()?;
    tokio::spawn(async move {
        signals.await;
        let _ = stop_tx.send(true);
    });
    // Triggers are evaluated on their schedule while the server runs (on one node of a cluster).
    let alerts = a.alerts.unwrap_or(if matches!(a.role, RoleArg::All) {
        OnOff::On
    } else {
        OnOff::Off
    });
    let fresh = matches!(a.role, RoleArg::Query).then(|| {
        tokio::spawn(sonde_server::fresh::run(
            state.clone(),
            sonde_server::fresh::FreshConfig {
                interval: a.fresh_interval.0,
                key: a.cluster_key.clone(),
                max_bytes: memory.buffers,
            },
            stopped(),
        ))
    });
    let scheduler = (alerts == OnOff::On).then(|| tokio::spawn(sonde_server::alerts::run(state.clone(), stopped())));
    if scheduler.is_none() {
        tracing::info!("triggers and burn alerts are not evaluated on this node (--alerts off)");
    }
    sonde_server::serve(listener, state, stopped()).await?;
    if let Some(scheduler) = scheduler {
        scheduler.await.context("trigger scheduler")?;
    }
    if let Some(g) = grpc {
        g.await?.context("otlp/grpc server")?;
    }
    if let Some(f) = fresh {
        f.await.context("copying fresh events")?;
    }
    if let Some(h) = heartbeat {
        h.await.context("member file heartbeat")?;
    }
    if let Some(w) = workers {
        w.await.context("following the query nodes' workers")?;
    }
    tracing::info!("shutting down: flushing write buffers");
    storage.shutdown().await.context("flushing at shutdown")?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// SIGINT or SIGTERM: the handlers installed now, the future resolving at the first signal.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

async fn gen_events(a: GenArgs) -> Result<()> {
    let span_us = a.span.as_micros() as i64;
    let start_us = match &a.start {
        Some(s) => sonde_model::time::parse_time_str(s)?,
        None => sonde_model::time::now_us() - span_us,
    };
    let cfg = GenConfig {
        seed: a.seed,
        start_us,
        span_us,
        incident: !a.no_incident,
    };
    let events = Generator::new(cfg, a.count);
    match &a.post {
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match a.format {
                GenFormat::Ndjson => {
                    for e in events {
                        writeln!(out, "{}", e.to_ndjson())?;
                    }
                }
                GenFormat::Batch => {
                    // Each line a body as it is posted, so a reader streams them straight into
                    // requests without parsing (the benchmark's ingest at 10M and 100M events).
                    let mut events = events.peekable();
                    while events.peek().is_some() {
                        let items: Vec<_> = events
                            .by_ref()
                            .take(a.batch.max(1))
                            .map(|e| e.to_batch_item())
                            .collect();
                        serde_json::to_writer(&mut out, &items)?;
                        out.write_all(b"\n")?;
                    }
                }
            }
            out.flush()?;
        }
        Some(url) => {
            let lines = events.map(|e| e.to_ndjson());
            let sent = post_ndjson(url, &a.dataset, lines, a.batch).await?;
            eprintln!("posted {sent} events to {url} dataset {}", a.dataset);
        }
    }
    Ok(())
}

async fn ingest_file(a: IngestArgs) -> Result<()> {
    use std::io::BufRead;
    let reader: Box<dyn BufRead> = if a.file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&a.file).with_context(|| format!("opening {}", a.file.display()))?,
        ))
    };
    let lines = reader.lines().map_while(|l| l.ok()).filter(|l| !l.trim().is_empty());
    let sent = post_ndjson(&a.url, &a.dataset, lines, a.batch).await?;
    eprintln!("ingested {sent} events into {}", a.dataset);
    Ok(())
}

/// Posts NDJSON lines in gzip-compressed batches, printing progress; fails on the first
/// refused request (after retrying 503s as the server asks).
async fn post_ndjson(url: &str, dataset: &str, lines: impl Iterator<Item = String>, batch: usize) -> Result<u64> {
    let client = reqwest::Client::new();
    let endpoint = format!("{}/api/ingest/{dataset}", url.trim_end_matches('/'));
    let mut sent = 0u64;
    let mut buf = String::new();
    let started = std::time::Instant::now();
    let mut lines = lines.peekable();
    while lines.peek().is_some() {
        buf.clear();
        let mut n = 0usize;
        for line in lines.by_ref().take(batch.max(1)) {
            buf.push_str(&line);
            buf.push('\n');
            n += 1;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(buf.as_bytes())?;
        let body = gz.finish()?;
        loop {
            let resp = client
                .post(&endpoint)
                .header("content-type", "application/x-ndjson")
                .header("content-encoding", "gzip")
                .body(body.clone())
                .send()
                .await
                .with_context(|| format!("posting to {endpoint}"))?;
            let status = resp.status();
            if status.as_u16() == 503 || status.as_u16() == 429 {
                let wait = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            let text = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                bail!("server answered {status}: {text}");
            }
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if v["rejected"].as_u64().unwrap_or(0) > 0 {
                eprintln!("warning: {} events rejected: {}", v["rejected"], v["errors"]);
            }
            sent += v["accepted"].as_u64().unwrap_or(n as u64);
            break;
        }
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        eprint!("\r{sent} events sent ({:.0} events/s)", sent as f64 / secs);
    }
    eprintln!();
    Ok(sent)
}

async fn post_json(url: &str, body: serde_json::Value) -> Result<serde_json::Value> {
    let resp = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("posting to {url}"))?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.context("reading the answer")?;
    if !status.is_success() {
        bail!("{status}: {}", v["error"].as_str().unwrap_or(&v.to_string()));
    }
    Ok(v)
}

/// A table prints the results alone, so the server need not build the time series: sets
/// `disable_series` unless the spec says otherwise itself.
fn ask_results_only(spec: &mut serde_json::Value) {
    if let Some(obj) = spec.as_object_mut() {
        obj.entry("disable_series").or_insert(serde_json::Value::Bool(true));
    }
}

async fn run_query(a: QueryArgs) -> Result<()> {
    let text = if a.spec.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&a.spec).with_context(|| format!("reading {}", a.spec.display()))?
    };
    let mut spec: serde_json::Value = serde_json::from_str(&text).context("the spec is not JSON")?;
    if !a.json {
        ask_results_only(&mut spec);
    }
    let url = format!("{}/api/query/{}", a.url.trim_end_matches('/'), a.dataset);
    let v = post_json(&url, spec.clone()).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = v["data"]["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["data"].clone())
        .collect();
    // Breakdowns first, then the calculations, as in the UI's results table.
    let mut columns: Vec<String> = spec["breakdowns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b.as_str().map(String::from))
        .collect();
    for r in &rows {
        for k in r.as_object().into_iter().flat_map(|m| m.keys()) {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    print!("{}", table_with_columns(&columns, &rows));
    eprintln!(
        "{} groups · {} rows examined · {}/{} segments scanned · {:.1} ms",
        rows.len(),
        v["meta"]["rows_examined"],
        v["meta"]["segments_scanned"],
        v["meta"]["segments_total"],
        v["meta"]["elapsed_ms"].as_f64().unwrap_or_default()
    );
    Ok(())
}

async fn run_sql(a: SqlArgs) -> Result<()> {
    let url = format!("{}/api/sql", a.url.trim_end_matches('/'));
    let v = post_json(&url, serde_json::json!({ "sql": a.sql })).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    let columns: Vec<String> = v["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    print!("{}", table_with_columns(&columns, &rows));
    eprintln!(
        "{} rows · {:.1} ms",
        rows.len(),
        v["meta"]["elapsed_ms"].as_f64().unwrap_or_default()
    );
    Ok(())
}

/// Rows of JSON objects as an aligned text table.
fn table_with_columns(columns: &[String], rows: &[serde_json::Value]) -> String {
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[c.as_str()])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
                .min(60)
        })
        .collect();
    let line = |vals: Vec<&str>| -> String {
        let parts: Vec<String> = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| {
                let v: String = v.chars().take(*w).collect();
                format!("{v:<w$}")
            })
            .collect();
        format!("{}\n", parts.join("  ").trim_end())
    };
    let mut out = line(columns.iter().map(String::as_str).collect());
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for r in &cells {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_table_asks_for_the_results_alone_unless_the_spec_says_otherwise() {
        let mut spec = serde_json::json!({"calculations": [{"op": "COUNT"}]});
        ask_results_only(&mut spec);
        assert_eq!(spec["disable_series"], true);
        let mut said = serde_json::json!({"calculations": [{"op": "COUNT"}], "disable_series": false});
        ask_results_only(&mut said);
        assert_eq!(said["disable_series"], false);
    }

    #[test]
    fn durations_show_in_the_largest_unit_and_read_back() {
        for (text, shown) in [
            ("60s", "1m"),
            ("90s", "90s"),
            ("1500ms", "1500ms"),
            ("2h", "2h"),
            ("1d", "1d"),
        ] {
            let d: Dur = text.parse().unwrap();
            assert_eq!(d.to_string(), shown);
            assert_eq!(shown.parse::<Dur>().unwrap().0, d.0);
        }
        assert!("5 parsecs".parse::<Dur>().is_err());
    }

    /// `--server-memory` sets every part's share; a part's own flag replaces only its share.
    #[test]
    fn the_memory_plan_divides_one_figure_and_a_flag_replaces_its_share() {
        let serve = |args: &[&str]| {
            let mut all = vec!["sonde", "serve"];
            all.extend_from_slice(args);
            let Command::Serve(a) = Cli::try_parse_from(all).unwrap().command else {
                panic!("not serve")
            };
            a.memory()
        };
        let plan = serve(&["--server-memory", "4294967296"]);
        assert_eq!(plan.buffers, 1 << 30);
        assert_eq!((plan.requests, plan.query), (2 << 30, 1 << 30));
        assert_eq!(plan.total(), 4 << 30, "the shares add up to the figure");
        let given = serve(&["--server-memory", "4294967296", "--max-buffer-bytes", "1000"]);
        assert_eq!(given, MemoryPlan { buffers: 1000, ..plan });
    }

    /// The flags' defaults are the libraries' (each default is defined once, in its crate).
    #[test]
    fn serve_defaults_are_the_libraries_defaults() {
        let Command::Serve(a) = Cli::try_parse_from(["sonde", "serve"]).unwrap().command else {
            panic!("not serve")
        };
        let storage = StorageConfig::new("x");
        assert_eq!(a.flush_rows, storage.flush_rows);
        assert_eq!(a.flush_age.0, storage.flush_age);
        assert_eq!(a.maintenance_interval.0, storage.maintenance_interval);
        // Unless given, the memory flags are the default plan's shares, which are the libraries'.
        assert_eq!(a.memory(), MemoryPlan::of(MemoryPlan::DEFAULT_SERVER_MEMORY));
        let memory = a.memory();
        assert_eq!(memory.buffers, storage.max_buffer_bytes);
        assert_eq!(a.row_group_rows, storage.segment.row_group_rows);
        assert_eq!(a.bloom_columns, storage.segment.bloom_columns);
        assert_eq!(memory.index_cache, storage.index_cache_bytes);
        assert_eq!(a.catalog_refresh.0, storage.catalog_refresh);
        assert_eq!(a.lease.0, storage.lease);
        assert!(matches!(a.role, RoleArg::All) && storage.role == Role::All);
        let engine = EngineConfig::default();
        assert_eq!((a.query_timeout.0, memory.query), (engine.timeout, engine.memory_limit));
        assert_eq!(
            (
                memory.requests,
                a.max_answer_bytes,
                a.bubbleup_sample_rows,
                memory.partials_cache,
                a.exact_percentile_rows
            ),
            (
                engine.memory_budget,
                engine.max_answer_bytes,
                engine.bubbleup_sample_rows,
                engine.partials_cache_bytes,
                engine.exact_percentile_rows
            )
        );
        assert_eq!(
            (memory.metadata_cache, memory.chunk_cache),
            (engine.metadata_cache_bytes, engine.chunk_cache_bytes)
        );
        let server = ServerConfig::default();
        assert_eq!(a.request_timeout.0, server.request_timeout);
        assert_eq!(a.max_body_bytes, server.max_body_bytes);
        assert_eq!(a.max_fields, Limits::default().max_fields_per_event);
        assert!(a.storage.is_none());
        assert_eq!(a.grpc_listen.address(), Some("127.0.0.1:4317"));
        let Command::Serve(off) = Cli::try_parse_from(["sonde", "serve", "--grpc-listen", "off"])
            .unwrap()
            .command
        else {
            panic!("not serve")
        };
        assert_eq!(off.grpc_listen.address(), None);
    }
}

//! Storage settings: where data lives, when an ack is sent, when buffers flush, the bounds.

use super::*;

/// When an ingest is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After an fsync of the WAL record (the default: an ack means durable).
    #[default]
    Fsync,
    /// After the WAL write reaches the OS, without fsync: a machine crash can lose acked events.
    None,
}

/// What this process does in a cluster of Sonde processes over one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Everything in one process, with a catalog of its own (the default).
    #[default]
    All,
    /// Takes events (WAL, buffer, flushes, compaction, retention) for the datasets it owns,
    /// and commits its segments to the shared catalog log in the bucket.
    Ingest,
    /// Takes no events: follows the shared catalog log and answers queries over the segments
    /// the ingest nodes flushed.
    Query,
}

impl Role {
    /// The role's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Ingest => "ingest",
            Role::Query => "query",
        }
    }
}

/// Storage configuration.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The data directory (WAL, catalog and, for local storage, segments).
    pub data_dir: PathBuf,
    /// When ingest is acknowledged.
    pub durability: Durability,
    /// A dataset's buffer is flushed to a segment once it holds this many events.
    pub flush_rows: usize,
    /// ... or this many bytes.
    pub flush_bytes: usize,
    /// ... or its oldest event has waited this long.
    pub flush_age: Duration,
    /// The WAL starts a new file past this size.
    pub wal_rotate_bytes: u64,
    /// Above this many buffered bytes (all datasets), ingest is refused with a retryable error.
    pub max_buffer_bytes: usize,
    /// Below this much free space on the data directory's disk, ingest is refused with a
    /// retryable error (0: no check; the WAL still survives a full disk, see `wal::append`).
    pub min_free_disk_bytes: u64,
    /// How segments are written.
    pub segment: SegmentOptions,
    /// Compaction merges small segments into ones of about this many rows (0 disables it).
    pub compaction_target_rows: u64,
    /// How often compaction and retention look for work.
    pub maintenance_interval: Duration,
    /// Segments wholly older than this are dropped (None keeps everything).
    pub retention: Option<Duration>,
    /// Per-dataset retention, overriding `retention`.
    pub retention_by_dataset: BTreeMap<DatasetName, Duration>,
    /// Memory for the segment indexes of the id columns (see [`index`]).
    pub index_cache_bytes: usize,
    /// Where segments and the catalog live: `None` for the data directory, or an
    /// `s3://bucket/prefix` URL (credentials and endpoint from the usual `AWS_*` variables).
    /// The WAL always stays in the local data directory.
    pub storage_url: Option<String>,
    /// This process's part in a cluster; anything but [`Role::All`] needs `storage_url`.
    pub role: Role,
    /// This node's name in the shared catalog and in its segment files' names (letters, digits,
    /// `-` and `_`); with [`Role::Ingest`] it must stay the same across restarts.
    pub node_name: String,
    /// How often a query node reads the shared catalog log for new segments.
    pub catalog_refresh: Duration,
    /// How long an ingest node holds its datasets without writing its member file (written
    /// every third of it): past it, another ingest node takes them over.
    pub lease: Duration,
}

impl StorageConfig {
    /// Default of `flush_rows` (the command line's default too: each default is defined once).
    pub const DEFAULT_FLUSH_ROWS: usize = 1_000_000;
    /// Default of `flush_bytes`.
    pub const DEFAULT_FLUSH_BYTES: usize = 256 * 1024 * 1024;
    /// Default of `flush_age`.
    pub const DEFAULT_FLUSH_AGE: Duration = Duration::from_secs(60);
    /// Default of `wal_rotate_bytes`.
    pub const DEFAULT_WAL_ROTATE_BYTES: u64 = 64 * 1024 * 1024;
    /// Default of `max_buffer_bytes`: a quarter of the `sonde` binary's default memory plan
    /// (1 GiB in all).
    pub const DEFAULT_MAX_BUFFER_BYTES: usize = 256 * 1024 * 1024;
    /// Default of `min_free_disk_bytes`.
    pub const DEFAULT_MIN_FREE_DISK_BYTES: u64 = 256 * 1024 * 1024;
    /// Default of `compaction_target_rows`.
    pub const DEFAULT_COMPACTION_TARGET_ROWS: u64 = 1_000_000;
    /// Default of `maintenance_interval`.
    pub const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(30);
    /// Default of `index_cache_bytes`: an eighth of the default memory plan.
    pub const DEFAULT_INDEX_CACHE_BYTES: usize = 128 * 1024 * 1024;
    /// Default rows per Parquet row group.
    pub const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;
    /// Default of `catalog_refresh`.
    pub const DEFAULT_CATALOG_REFRESH: Duration = Duration::from_secs(1);
    /// Default of `lease`.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
    /// Default columns with Parquet bloom filters.
    pub const DEFAULT_BLOOM_COLUMNS: &str = "trace.trace_id";

    /// Production defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StorageConfig {
            data_dir: data_dir.into(),
            durability: Durability::Fsync,
            flush_rows: Self::DEFAULT_FLUSH_ROWS,
            flush_bytes: Self::DEFAULT_FLUSH_BYTES,
            flush_age: Self::DEFAULT_FLUSH_AGE,
            wal_rotate_bytes: Self::DEFAULT_WAL_ROTATE_BYTES,
            max_buffer_bytes: Self::DEFAULT_MAX_BUFFER_BYTES,
            min_free_disk_bytes: Self::DEFAULT_MIN_FREE_DISK_BYTES,
            segment: SegmentOptions::default(),
            compaction_target_rows: Self::DEFAULT_COMPACTION_TARGET_ROWS,
            maintenance_interval: Self::DEFAULT_MAINTENANCE_INTERVAL,
            retention: None,
            retention_by_dataset: BTreeMap::new(),
            index_cache_bytes: Self::DEFAULT_INDEX_CACHE_BYTES,
            storage_url: None,
            role: Role::All,
            node_name: "node".into(),
            catalog_refresh: Self::DEFAULT_CATALOG_REFRESH,
            lease: Self::DEFAULT_LEASE,
        }
    }
}

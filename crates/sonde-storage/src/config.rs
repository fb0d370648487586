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
}

impl StorageConfig {
    /// Production defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StorageConfig {
            data_dir: data_dir.into(),
            durability: Durability::Fsync,
            flush_rows: 1_000_000,
            flush_bytes: 256 * 1024 * 1024,
            flush_age: Duration::from_secs(60),
            wal_rotate_bytes: 64 * 1024 * 1024,
            max_buffer_bytes: 1024 * 1024 * 1024,
            min_free_disk_bytes: 256 * 1024 * 1024,
            segment: SegmentOptions::default(),
            compaction_target_rows: 1_000_000,
            maintenance_interval: Duration::from_secs(30),
            retention: None,
            retention_by_dataset: BTreeMap::new(),
            index_cache_bytes: 256 * 1024 * 1024,
            storage_url: None,
        }
    }
}

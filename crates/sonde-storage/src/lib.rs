//! Sonde's storage: everything between an accepted event and a Parquet segment.
//!
//! ```text
//! ingest(dataset, events) ──▶ commit channel ──▶ WAL thread: frame, append, fsync (group
//!                                                commit), apply to the write buffer in LSN
//!                                                order, then answer ──▶ ack
//! flusher (size / age) ──▶ freeze buffer ──▶ Parquet encode ──▶ object store put + fsync
//!                        ──▶ read back & verify ──▶ catalog (atomic) ──▶ delete covered WAL files
//! ```
//!
//! Guarantees (see `DESIGN.md`, contracts 1–3):
//! - [`Storage::ingest`] returns only after the events are in an fsynced WAL record (with
//!   [`Durability::Fsync`]) *and* in the write buffer, so an ack means durable and visible.
//! - Concurrent requests share one fsync: the WAL thread takes everything queued while the
//!   previous fsync ran and writes it as one append.
//! - A crash at any moment loses no acknowledged event and duplicates none: recovery loads the
//!   catalog, then replays only WAL records above each dataset's `flushed_lsn`.
//!
//! The crash-safety argument, worked through step by step, is in `DESIGN.md` beside this crate.

pub mod buffer;
pub mod catalog;
pub mod compaction;
pub mod index;
pub mod quarantine;
pub mod segment;
pub mod wal;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use buffer::WriteBuffer;
use catalog::{Catalog, ColumnEntry, DatasetEntry, SegmentMeta};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use segment::SegmentOptions;
use sonde_model::{ColumnType, DatasetName, Event};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use wal::Lsn;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Arrow failed (a bug, or a schema mismatch).
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet encoding or decoding failed.
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The object store failed.
    #[error("object store error: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// A WAL file is damaged somewhere other than its torn tail.
    #[error("WAL file {path} is corrupt at offset {offset}: {reason}")]
    WalCorrupt {
        /// The file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The catalog could not be read.
    #[error("catalog {path} is unreadable: {reason}")]
    CatalogCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The write buffers hold more than their bound; the client should retry later.
    #[error("write buffers hold {held} bytes, above max_buffer_bytes = {limit}; retry after the flush")]
    Backpressure {
        /// Bytes held.
        held: usize,
        /// The bound.
        limit: usize,
    },
    /// The WAL could not be written, so nothing can be acknowledged.
    #[error("WAL write failed: {0}")]
    WalFailed(String),
    /// The data directory's disk is (nearly) full: ingest is refused until there is room again.
    #[error("disk full: {0}; retry once space is freed")]
    DiskFull(String),
    /// Storage is shutting down.
    #[error("storage is shutting down")]
    ShuttingDown,
    /// A segment failed its read-back check, or data violated an invariant.
    #[error("invalid data: {0}")]
    Invalid(String),
}

/// Storage results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    pub retention_by_dataset: BTreeMap<String, Duration>,
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

/// A frozen buffer: taken out of the active buffer for flushing, still visible to queries
/// until its segment is in the catalog.
#[derive(Debug)]
struct Frozen {
    batch: RecordBatch,
    min_lsn: Lsn,
    max_lsn: Lsn,
    bytes: usize,
}

#[derive(Debug, Default)]
struct DatasetState {
    /// Deleted and not written to since (see `DatasetEntry::deleted`).
    deleted: bool,
    flushed_lsn: Lsn,
    columns: BTreeMap<String, ColumnEntry>,
    segments: Vec<Arc<SegmentMeta>>,
    frozen: Vec<Arc<Frozen>>,
    active: WriteBuffer,
}

impl DatasetState {
    fn min_unflushed_lsn(&self) -> Option<Lsn> {
        self.frozen.first().map(|f| f.min_lsn).or(self.active.min_lsn())
    }
}

/// A consistent view of one dataset for a query: its segments plus the buffered events not in
/// them, each event in exactly one of the two.
#[derive(Debug, Clone)]
pub struct DatasetSnapshot {
    /// The dataset.
    pub dataset: DatasetName,
    /// Cataloged segments.
    pub segments: Vec<Arc<SegmentMeta>>,
    /// Buffered events (frozen and active), as batches with their own schemas.
    pub buffered: Vec<RecordBatch>,
    /// The dataset's columns, widened over segments and buffers (reserved columns excluded).
    pub columns: BTreeMap<String, ColumnEntry>,
}

/// Facts about one dataset, for the schema API and stats.
#[derive(Debug, Clone)]
pub struct DatasetInfo {
    /// The dataset.
    pub name: DatasetName,
    /// Events in segments.
    pub segment_rows: u64,
    /// Events in the write buffer.
    pub buffered_rows: u64,
    /// Number of segments.
    pub segments: usize,
    /// Bytes of segments on disk.
    pub segment_bytes: u64,
    /// Earliest and latest event time (µs), if any.
    pub time_bounds: Option<(i64, i64)>,
}

/// Storage facts about one dataset, for the stats API and metrics.
#[derive(Debug, Clone)]
pub struct DatasetStats {
    /// Rows, segments, bytes on disk, time span.
    pub info: DatasetInfo,
    /// In-memory (Arrow) size of the segments' rows: `raw_bytes / segment_bytes` is the
    /// compression ratio.
    pub raw_bytes: u64,
    /// Rows of the largest segment.
    pub largest_segment_rows: u64,
    /// Segments compaction would merge now.
    pub segments_pending_compaction: usize,
}

/// Counters exposed as metrics.
#[derive(Debug, Default)]
pub struct StorageStats {
    /// Events acknowledged since start.
    pub events_ingested: AtomicU64,
    /// WAL appends (each one fsync with `Durability::Fsync`).
    pub wal_syncs: AtomicU64,
    /// WAL records written.
    pub wal_records: AtomicU64,
    /// Segments written.
    pub segments_flushed: AtomicU64,
    /// Events replayed from the WAL at the last start.
    pub events_replayed: AtomicU64,
    /// Compactions done (each merged several segments into one).
    pub compactions: AtomicU64,
    /// Segments dropped by retention.
    pub segments_expired: AtomicU64,
    /// Segment files deleted (after compaction, retention or deletion, once unreferenced).
    pub segment_files_deleted: AtomicU64,
    /// Bytes cut from a torn WAL tail at the last start.
    pub wal_torn_bytes: AtomicU64,
    /// Bytes of damaged WAL records skipped at the last start (their files copied to quarantine).
    pub wal_corrupt_bytes: AtomicU64,
}

struct Commit {
    dataset: DatasetName,
    /// The events as encoded for the WAL; the write buffer is filled from these same bytes.
    payload: Vec<u8>,
    done: oneshot::Sender<Result<Lsn>>,
}

/// The storage engine. Cheap to share behind an `Arc`.
pub struct Storage {
    config: StorageConfig,
    store: Arc<dyn ObjectStore>,
    datasets: RwLock<BTreeMap<DatasetName, Arc<Mutex<DatasetState>>>>,
    commit_tx: Mutex<Option<mpsc::Sender<Commit>>>,
    commit_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Highest LSN applied to the write buffers; every LSN at or below it is buffered or flushed.
    applied_lsn: AtomicU64,
    next_segment_id: AtomicU64,
    buffered_bytes: AtomicUsize,
    /// One flush at a time, so catalog writes and WAL deletions are serialised.
    flush_lock: tokio::sync::Mutex<()>,
    flush_wanted: Notify,
    /// Segments taken out of the catalog, waiting until no query holds them and a catalog
    /// without them is durable (the flag) before their files are deleted.
    graveyard: Mutex<Vec<(Arc<SegmentMeta>, bool)>>,
    index: Arc<index::IndexCache>,
    /// True when segments and the catalog are in the local data directory (which then needs
    /// explicit fsyncs); false for a remote object store, whose puts are durable when answered.
    local: bool,
    /// Counters.
    pub stats: StorageStats,
    /// Segments found damaged at start and moved aside.
    quarantined: Mutex<Vec<quarantine::Quarantined>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("data_dir", &self.config.data_dir)
            .finish()
    }
}

/// Moves a dataset's active buffer (if it holds events) to its frozen list, as one batch in
/// arrival order; the flusher sorts and writes it.
fn freeze_active(st: &mut DatasetState) {
    if st.active.rows() == 0 {
        return;
    }
    let active = std::mem::take(&mut st.active);
    let (min_lsn, max_lsn, bytes) = (active.min_lsn().unwrap_or(0), active.max_lsn(), active.approx_bytes());
    st.frozen.push(Arc::new(Frozen {
        batch: active.into_record_batch(),
        min_lsn,
        max_lsn,
        bytes,
    }));
}

fn segment_path(dataset: &DatasetName, id: u64) -> String {
    format!("datasets/{dataset}/seg-{id:012}.parquet")
}

impl Storage {
    /// Opens (or creates) the data directory, recovers from the catalog and the WAL, and starts
    /// the WAL thread and the background flusher. Must be called inside a Tokio runtime.
    pub async fn open(config: StorageConfig) -> Result<Arc<Storage>> {
        std::fs::create_dir_all(&config.data_dir)?;
        let data_dir = config.data_dir.canonicalize()?;
        let (store, local): (Arc<dyn ObjectStore>, bool) = match &config.storage_url {
            None => (Arc::new(LocalFileSystem::new_with_prefix(&data_dir)?), true),
            Some(url) => (remote_store(url)?, false),
        };
        let mut catalog = if local {
            Catalog::load(&data_dir)?
        } else {
            Catalog::load_from(&store).await?
        };
        remove_orphans(&store, &catalog).await?;
        let quarantined = quarantine::verify_segments(&store, &mut catalog).await?;
        if !quarantined.is_empty() {
            if local {
                catalog.store(&data_dir)?;
            } else {
                catalog.store_to(&store).await?;
            }
        }

        let mut datasets = BTreeMap::new();
        for (name, entry) in &catalog.datasets {
            let name = DatasetName::new(name).map_err(|e| Error::CatalogCorrupt {
                path: data_dir.join(catalog::CATALOG_FILE),
                reason: e.to_string(),
            })?;
            let state = DatasetState {
                deleted: entry.deleted,
                flushed_lsn: entry.flushed_lsn,
                columns: entry.columns.clone(),
                segments: entry.segments.iter().cloned().map(Arc::new).collect(),
                ..Default::default()
            };
            datasets.insert(name, Arc::new(Mutex::new(state)));
        }

        let wal_dir = wal::wal_dir(&data_dir);
        let replay = wal::replay(&wal_dir)?;
        let max_flushed = catalog.datasets.values().map(|d| d.flushed_lsn).max().unwrap_or(0);
        let last_lsn = replay.last_lsn.max(max_flushed);

        let config = StorageConfig { data_dir, ..config };
        let storage = Arc::new(Storage {
            store,
            datasets: RwLock::new(datasets),
            commit_tx: Mutex::new(None),
            commit_thread: Mutex::new(None),
            applied_lsn: AtomicU64::new(last_lsn),
            next_segment_id: AtomicU64::new(catalog.next_segment_id),
            buffered_bytes: AtomicUsize::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            flush_wanted: Notify::new(),
            graveyard: Mutex::new(Vec::new()),
            index: Arc::new(index::IndexCache::new(
                config.segment.bloom_columns.clone(),
                config.index_cache_bytes,
            )),
            local,
            stats: StorageStats::default(),
            quarantined: Mutex::new(quarantined),
            config,
        });

        let mut replayed = 0u64;
        for rec in &replay.records {
            if storage.apply(rec.lsn, &rec.dataset, true, |buffer, known, now| {
                buffer.append(rec.lsn, &rec.events, known, now)
            }) {
                replayed += rec.events.len() as u64;
            }
        }
        storage.stats.events_replayed.store(replayed, Ordering::Relaxed);
        storage.stats.wal_torn_bytes.store(replay.torn_bytes, Ordering::Relaxed);
        storage
            .stats
            .wal_corrupt_bytes
            .store(replay.corrupt_bytes, Ordering::Relaxed);
        tracing::info!(
            data_dir = %storage.config.data_dir.display(),
            datasets = storage.datasets.read().unwrap().len(),
            wal_records = replay.records.len(),
            events_replayed = replayed,
            torn_bytes = replay.torn_bytes,
            "storage recovered"
        );

        let wal_file = wal::WalFile::create(&wal_dir, last_lsn + 1, storage.config.wal_rotate_bytes)?;
        let (tx, rx) = mpsc::channel(4096);
        *storage.commit_tx.lock().unwrap() = Some(tx);
        let thread_storage = storage.clone();
        let handle = std::thread::Builder::new()
            .name("sonde-wal".into())
            .spawn(move || thread_storage.wal_loop(rx, wal_file, last_lsn + 1))?;
        *storage.commit_thread.lock().unwrap() = Some(handle);

        tokio::spawn(flush_loop(storage.clone()));
        tokio::spawn(maintenance_loop(storage.clone()));
        Ok(storage)
    }

    /// Segments found damaged at start, moved to `quarantine/` and out of the catalog.
    pub fn quarantined(&self) -> Vec<quarantine::Quarantined> {
        self.quarantined.lock().unwrap().clone()
    }

    /// The configuration in force (with the data directory made absolute).
    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    /// The segment indexes of the id columns.
    pub fn index_cache(&self) -> Arc<index::IndexCache> {
        self.index.clone()
    }

    /// The object store that holds the segments.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Refuses new work while the write buffers are over their bound, or while the data
    /// directory's disk has less than `min_free_disk_bytes` free.
    pub fn check_capacity(&self) -> Result<()> {
        if self.config.min_free_disk_bytes > 0
            && let Some(free) = free_disk_bytes(&self.config.data_dir)
            && free < self.config.min_free_disk_bytes
        {
            return Err(Error::DiskFull(format!(
                "{free} bytes free in {}, below min_free_disk_bytes = {}",
                self.config.data_dir.display(),
                self.config.min_free_disk_bytes
            )));
        }
        let held = self.buffered_bytes.load(Ordering::Relaxed);
        if held > self.config.max_buffer_bytes {
            self.flush_wanted.notify_one();
            return Err(Error::Backpressure {
                held,
                limit: self.config.max_buffer_bytes,
            });
        }
        Ok(())
    }

    /// Stores events durably: returns after they are in the WAL (fsynced with the default
    /// durability) and visible in the write buffer. Returns the record's LSN.
    pub async fn ingest(&self, dataset: &DatasetName, events: Vec<Event>) -> Result<Lsn> {
        if events.is_empty() {
            return Ok(self.applied_lsn.load(Ordering::Acquire));
        }
        self.check_capacity()?;
        let payload = wal::encode_payload(dataset, &events);
        let n = events.len() as u64;
        // Freed here, on the thread that made them, rather than by the WAL thread.
        drop(events);
        let (done, rx) = oneshot::channel();
        let tx = self.commit_tx.lock().unwrap().clone().ok_or(Error::ShuttingDown)?;
        tx.send(Commit {
            dataset: dataset.clone(),
            payload,
            done,
        })
        .await
        .map_err(|_| Error::ShuttingDown)?;
        let lsn = rx.await.map_err(|_| Error::ShuttingDown)??;
        self.stats.events_ingested.fetch_add(n, Ordering::Relaxed);
        Ok(lsn)
    }

    /// The WAL thread: group commit, then apply in LSN order, then acknowledge.
    fn wal_loop(self: Arc<Self>, mut rx: mpsc::Receiver<Commit>, mut file: wal::WalFile, mut next_lsn: Lsn) {
        const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;
        let sync = self.config.durability == Durability::Fsync;
        let mut broken: Option<String> = None;
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            let mut bytes = group[0].payload.len();
            while bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(c) => {
                        bytes += c.payload.len();
                        group.push(c);
                    }
                    Err(_) => break,
                }
            }
            if let Some(why) = &broken {
                for c in group {
                    let _ = c.done.send(Err(Error::WalFailed(why.clone())));
                }
                continue;
            }
            let mut framed = Vec::with_capacity(bytes + 16 * group.len());
            for (i, c) in group.iter().enumerate() {
                wal::frame_record(&mut framed, next_lsn + i as u64, &c.payload);
            }
            if let Err(e) = file.append(&framed, sync) {
                if let Error::DiskFull(_) = e {
                    // The append was cut back off the file: nothing of this group is
                    // acknowledged, and the WAL goes on once there is room.
                    tracing::warn!(error = %e, "wal append refused: disk full");
                    let why = e.to_string();
                    for c in group {
                        let _ = c.done.send(Err(Error::DiskFull(why.clone())));
                    }
                    continue;
                }
                // Nothing of this group is acknowledged. The file may now end in a partial
                // group, which replay would cut as a torn tail together with every later
                // record, so stop writing: further ingest fails until restart.
                tracing::error!(error = %e, "wal append failed; refusing further writes");
                let why = e.to_string();
                for c in group {
                    let _ = c.done.send(Err(Error::WalFailed(why.clone())));
                }
                broken = Some(why);
                continue;
            }
            self.stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
            self.stats.wal_records.fetch_add(group.len() as u64, Ordering::Relaxed);
            for c in group {
                let lsn = next_lsn;
                next_lsn += 1;
                self.apply(lsn, &c.dataset, false, |buffer, known, now| {
                    let whole = buffer.append_payload(lsn, &c.payload, known, now);
                    debug_assert!(whole, "a payload this process encoded reads back whole");
                });
                self.applied_lsn.store(lsn, Ordering::Release);
                let _ = c.done.send(Ok(lsn));
            }
            match file.maybe_rotate(next_lsn) {
                Ok(()) => {}
                // The current file stays valid and takes the next records; rotation is retried.
                Err(e @ Error::DiskFull(_)) => tracing::warn!(error = %e, "wal rotation postponed"),
                Err(e) => {
                    tracing::error!(error = %e, "wal rotation failed; refusing further writes");
                    broken = Some(e.to_string());
                }
            }
        }
    }

    /// Applies one WAL record to its dataset's write buffer. During replay, records the
    /// catalog already covers are skipped (returns false).
    fn apply(
        &self,
        lsn: Lsn,
        dataset: &DatasetName,
        replaying: bool,
        fill: impl FnOnce(&mut WriteBuffer, buffer::KnownTypes<'_>, i64),
    ) -> bool {
        let state = self.dataset_state_or_create(dataset);
        let mut st = state.lock().unwrap();
        if replaying && lsn <= st.flushed_lsn {
            return false;
        }
        st.deleted = false;
        let before = st.active.approx_bytes();
        let DatasetState { columns, active, .. } = &mut *st;
        let known = |name: &str| columns.get(name).map(|c| c.ty);
        fill(active, &known, sonde_model::time::now_us());
        let grown = active.approx_bytes() - before;
        self.buffered_bytes.fetch_add(grown, Ordering::Relaxed);
        if active.approx_bytes() >= buffer::MAX_BUFFER_BYTES {
            // The flusher is behind (a slow store, or limits set very high): freeze the buffer
            // here, because one buffer's string column cannot pass 2 GiB.
            freeze_active(&mut st);
        }
        let active = &st.active;
        if !st.frozen.is_empty()
            || active.rows() >= self.config.flush_rows
            || active.approx_bytes() >= self.config.flush_bytes
        {
            self.flush_wanted.notify_one();
        }
        true
    }

    fn dataset_state_or_create(&self, dataset: &DatasetName) -> Arc<Mutex<DatasetState>> {
        if let Some(s) = self.datasets.read().unwrap().get(dataset) {
            return s.clone();
        }
        self.datasets
            .write()
            .unwrap()
            .entry(dataset.clone())
            .or_default()
            .clone()
    }

    fn dataset_state(&self, dataset: &DatasetName) -> Option<Arc<Mutex<DatasetState>>> {
        self.datasets.read().unwrap().get(dataset).cloned()
    }

    /// All datasets, by name.
    pub fn datasets(&self) -> Vec<DatasetInfo> {
        let names: Vec<_> = self.datasets.read().unwrap().keys().cloned().collect();
        names.iter().filter_map(|n| self.dataset_info(n)).collect()
    }

    /// Facts about one dataset, `None` if it does not exist.
    pub fn dataset_info(&self, dataset: &DatasetName) -> Option<DatasetInfo> {
        let state = self.dataset_state(dataset)?;
        let st = state.lock().unwrap();
        if st.deleted {
            return None;
        }
        let mut bounds: Option<(i64, i64)> = None;
        let mut widen = |b: (i64, i64)| {
            bounds = Some(bounds.map_or(b, |(lo, hi)| (lo.min(b.0), hi.max(b.1))));
        };
        for s in &st.segments {
            widen((s.min_ts_us, s.max_ts_us));
        }
        for f in &st.frozen {
            if let Ok(facts) = segment::batch_facts(&f.batch)
                && facts.rows > 0
            {
                widen((facts.min_ts_us, facts.max_ts_us));
            }
        }
        if let Some(b) = st.active.time_bounds() {
            widen(b);
        }
        Some(DatasetInfo {
            name: dataset.clone(),
            segment_rows: st.segments.iter().map(|s| s.rows).sum(),
            buffered_rows: (st.frozen.iter().map(|f| f.batch.num_rows()).sum::<usize>() + st.active.rows()) as u64,
            segments: st.segments.len(),
            segment_bytes: st.segments.iter().map(|s| s.bytes).sum(),
            time_bounds: bounds,
        })
    }

    /// A consistent snapshot of a dataset for querying, `None` if it does not exist.
    pub fn snapshot(&self, dataset: &DatasetName) -> Option<DatasetSnapshot> {
        let state = self.dataset_state(dataset)?;
        let mut st = state.lock().unwrap();
        if st.deleted {
            return None;
        }
        let mut columns = st.columns.clone();
        let mut buffered: Vec<RecordBatch> = st.frozen.iter().map(|f| f.batch.clone()).collect();
        if st.active.rows() > 0 {
            buffered.extend(st.active.to_record_batches());
        }
        for b in &buffered {
            let Ok(facts) = segment::batch_facts(b) else { continue };
            merge_columns(&mut columns, &b.schema(), facts.min_ts_us, facts.max_ts_us);
        }
        Some(DatasetSnapshot {
            dataset: dataset.clone(),
            segments: st.segments.clone(),
            buffered,
            columns,
        })
    }

    /// Flushes every dataset's buffer to segments now (used at shutdown and by tests).
    pub async fn flush_all(&self) -> Result<()> {
        let names: Vec<_> = self.datasets.read().unwrap().keys().cloned().collect();
        for n in names {
            self.flush_dataset(&n).await?;
        }
        Ok(())
    }

    /// Flushes the datasets whose buffers are due by size or age.
    async fn flush_due(&self) -> Result<()> {
        let now = sonde_model::time::now_us();
        let age_us = self.config.flush_age.as_micros() as i64;
        let over_bound = self.buffered_bytes.load(Ordering::Relaxed) > self.config.max_buffer_bytes / 2;
        let due: Vec<DatasetName> = {
            let map = self.datasets.read().unwrap();
            map.iter()
                .filter(|(_, s)| {
                    let st = s.lock().unwrap();
                    let a = &st.active;
                    !st.frozen.is_empty()
                        || (a.rows() > 0
                            && (over_bound
                                || a.rows() >= self.config.flush_rows
                                || a.approx_bytes() >= self.config.flush_bytes
                                || a.oldest_arrival_us().is_some_and(|t| now - t >= age_us)))
                })
                .map(|(n, _)| n.clone())
                .collect()
        };
        for n in due {
            self.flush_dataset(&n).await?;
        }
        Ok(())
    }

    /// Freezes a dataset's buffer and writes it (and any earlier frozen buffers) as segments.
    pub async fn flush_dataset(&self, dataset: &DatasetName) -> Result<()> {
        let _one_at_a_time = self.flush_lock.lock().await;
        let Some(state) = self.dataset_state(dataset) else {
            return Ok(());
        };
        let pending = {
            let mut st = state.lock().unwrap();
            freeze_active(&mut st);
            st.frozen.clone()
        };
        for frozen in pending {
            self.write_segment(dataset, &state, &frozen).await?;
        }
        let watermark = self.wal_watermark();
        let removed = wal::remove_files_below(&wal::wal_dir(&self.config.data_dir), watermark)?;
        if removed > 0 {
            tracing::debug!(removed, watermark, "wal files removed");
        }
        Ok(())
    }

    /// Writes a time-sorted batch as a new segment file: encode, put, fsync, read back and
    /// compare row count and time bounds. The catalog does not name it yet.
    async fn persist_segment(
        &self,
        dataset: &DatasetName,
        batch: RecordBatch,
        min_lsn: Lsn,
        max_lsn: Lsn,
    ) -> Result<Arc<SegmentMeta>> {
        let id = self.next_segment_id.fetch_add(1, Ordering::SeqCst);
        let path = segment_path(dataset, id);
        let before = segment::batch_facts(&batch)?;
        let opts = self.config.segment.clone();
        let raw_bytes = batch.get_array_memory_size() as u64;
        let schema = batch.schema();
        let index = self.index.clone();
        // Off the async workers: sorting, encoding, and indexing now while the rows are in memory (an
        // unused id's cache entry is harmless).
        let (encoded, idx) = tokio::task::spawn_blocking(move || -> Result<_> {
            // Frozen buffers are in arrival order; segments are sorted by time.
            let batch = segment::sort_by_time(&batch)?;
            let idx = index.insert_from_batch(id, &batch)?;
            Ok((segment::encode(&batch, &opts)?, idx))
        })
        .await
        .map_err(|e| Error::Invalid(format!("segment encoder panicked: {e}")))??;
        let size = encoded.bytes.len() as u64;
        let store_path = StorePath::from(path.as_str());
        self.store.put(&store_path, encoded.bytes.into()).await?;
        self.sync_local(&path)?;
        // The index file is a cache: a failure to write it only costs a rebuild later.
        let idx_path = index::index_path(&path);
        if let Err(e) = self.store.put(&StorePath::from(idx_path.as_str()), idx.into()).await {
            tracing::warn!(file = %idx_path, error = %e, "could not write index file");
        }
        // The other side of the disk: read the file back and compare.
        let back = self.store.get(&store_path).await?.bytes().await?;
        let after = tokio::task::spawn_blocking(move || segment::read_facts(back))
            .await
            .map_err(|e| Error::Invalid(format!("segment reader panicked: {e}")))??;
        if before != after {
            return Err(Error::Invalid(format!(
                "segment {path} read back as {after:?}, written as {before:?}"
            )));
        }
        Ok(Arc::new(SegmentMeta {
            id,
            path,
            rows: before.rows,
            bytes: size,
            raw_bytes,
            min_ts_us: before.min_ts_us,
            max_ts_us: before.max_ts_us,
            min_lsn,
            max_lsn,
            columns: schema
                .fields()
                .iter()
                .filter(|f| !is_reserved(f.name()))
                .filter_map(|f| Some((f.name().clone(), buffer::column_type_of(f.data_type())?)))
                .collect(),
            distinct_columns: encoded.distinct_columns,
        }))
    }

    async fn write_segment(
        &self,
        dataset: &DatasetName,
        state: &Mutex<DatasetState>,
        frozen: &Arc<Frozen>,
    ) -> Result<()> {
        let meta = self
            .persist_segment(dataset, frozen.batch.clone(), frozen.min_lsn, frozen.max_lsn)
            .await?;
        let schema = frozen.batch.schema();
        {
            // Swap frozen → segment in one step, so a query sees each event exactly once.
            let mut st = state.lock().unwrap();
            merge_columns(&mut st.columns, &schema, meta.min_ts_us, meta.max_ts_us);
            st.segments.push(meta.clone());
            st.frozen.retain(|f| !Arc::ptr_eq(f, frozen));
            st.flushed_lsn = st.flushed_lsn.max(frozen.max_lsn);
        }
        self.buffered_bytes.fetch_sub(
            frozen.bytes.min(self.buffered_bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        self.persist_catalog().await?;
        self.stats.segments_flushed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(dataset = %dataset, segment = meta.id, rows = meta.rows, bytes = meta.bytes, "segment flushed");
        Ok(())
    }

    /// Fsyncs a segment file and its directory (the local store does not).
    fn sync_local(&self, path: &str) -> Result<()> {
        if !self.local {
            return Ok(());
        }
        let full = self.config.data_dir.join(path);
        std::fs::File::open(&full)?.sync_all()?;
        if let Some(dir) = full.parent() {
            wal::sync_dir(dir)?;
            if let Some(parent) = dir.parent() {
                wal::sync_dir(parent)?;
            }
        }
        Ok(())
    }

    /// Writes the catalog from the in-memory state of every dataset.
    async fn persist_catalog(&self) -> Result<()> {
        let mut catalog = Catalog {
            version: 1,
            next_segment_id: self.next_segment_id.load(Ordering::SeqCst),
            datasets: BTreeMap::new(),
        };
        for (name, state) in self.datasets.read().unwrap().iter() {
            let st = state.lock().unwrap();
            if st.segments.is_empty() && st.flushed_lsn == 0 {
                continue;
            }
            catalog.datasets.insert(
                name.to_string(),
                DatasetEntry {
                    flushed_lsn: st.flushed_lsn,
                    columns: st.columns.clone(),
                    segments: st.segments.iter().map(|s| (**s).clone()).collect(),
                    deleted: st.deleted,
                },
            );
        }
        // Whatever is in the graveyard now is absent from this catalog.
        let buried = self.graveyard.lock().unwrap().len();
        if self.local {
            catalog.store(&self.config.data_dir)?;
        } else {
            catalog.store_to(&self.store).await?;
        }
        for entry in self.graveyard.lock().unwrap().iter_mut().take(buried) {
            entry.1 = true;
        }
        Ok(())
    }

    /// Deletes the files of buried segments that no query holds any more.
    async fn reap_graveyard(&self) {
        let mut dead = Vec::new();
        self.graveyard.lock().unwrap().retain(|(seg, persisted)| {
            if *persisted && Arc::strong_count(seg) == 1 {
                dead.push(seg.clone());
                false
            } else {
                true
            }
        });
        for seg in dead {
            let idx = StorePath::from(index::index_path(&seg.path));
            if let Err(e) = self.store.delete(&idx).await
                && !matches!(e, object_store::Error::NotFound { .. })
            {
                tracing::warn!(file = %idx, error = %e, "could not delete index file");
            }
            match self.store.delete(&StorePath::from(seg.path.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    self.stats.segment_files_deleted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(file = %seg.path, error = %e, "could not delete segment file"),
            }
        }
    }

    fn bury(&self, segments: impl IntoIterator<Item = Arc<SegmentMeta>>) {
        self.graveyard
            .lock()
            .unwrap()
            .extend(segments.into_iter().map(|s| (s, false)));
    }

    /// Runs one round of compaction over every dataset; returns the number of merges.
    pub async fn compact(&self) -> Result<usize> {
        let target = self.config.compaction_target_rows;
        if target == 0 {
            return Ok(0);
        }
        let names: Vec<_> = self.datasets.read().unwrap().keys().cloned().collect();
        let mut merges = 0;
        for ds in names {
            let Some(state) = self.dataset_state(&ds) else { continue };
            let (segments, types) = {
                let st = state.lock().unwrap();
                (
                    st.segments.clone(),
                    st.columns
                        .iter()
                        .map(|(n, c)| (n.clone(), c.ty))
                        .collect::<BTreeMap<_, _>>(),
                )
            };
            for group in compaction::plan(&segments, target) {
                self.merge_group(&ds, &state, group, &types).await?;
                merges += 1;
            }
        }
        Ok(merges)
    }

    async fn merge_group(
        &self,
        ds: &DatasetName,
        state: &Mutex<DatasetState>,
        group: Vec<Arc<SegmentMeta>>,
        types: &BTreeMap<String, ColumnType>,
    ) -> Result<()> {
        let mut files = Vec::with_capacity(group.len());
        for s in &group {
            files.push(self.store.get(&StorePath::from(s.path.as_str())).await?.bytes().await?);
        }
        let schema = compaction::merged_schema(&group, types);
        let batch = tokio::task::spawn_blocking(move || compaction::merge(files, &schema))
            .await
            .map_err(|e| Error::Invalid(format!("compaction panicked: {e}")))??;
        compaction::check_merged(&group, &segment::batch_facts(&batch)?)?;
        let min_lsn = group.iter().map(|s| s.min_lsn).min().unwrap_or(0);
        let max_lsn = group.iter().map(|s| s.max_lsn).max().unwrap_or(0);
        let meta = self.persist_segment(ds, batch, min_lsn, max_lsn).await?;
        let (id, path, rows, size) = (meta.id, meta.path.clone(), meta.rows, meta.bytes);
        let _one_at_a_time = self.flush_lock.lock().await;
        let swapped = {
            let mut st = state.lock().unwrap();
            let ids: std::collections::HashSet<u64> = group.iter().map(|s| s.id).collect();
            let intact = st.segments.iter().filter(|s| ids.contains(&s.id)).count() == group.len();
            if intact {
                st.segments.retain(|s| !ids.contains(&s.id));
                st.segments.push(meta);
                st.segments.sort_by_key(|s| (s.min_ts_us, s.id));
            }
            intact
        };
        if !swapped {
            // Retention or deletion took some inputs meanwhile: drop this merge.
            let _ = self.store.delete(&StorePath::from(path.as_str())).await;
            return Ok(());
        }
        self.bury(group.iter().cloned());
        self.persist_catalog().await?;
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(dataset = %ds, segment = id, inputs = group.len(), rows, bytes = size, "segments compacted");
        Ok(())
    }

    /// Drops segments wholly older than their dataset's retention; returns how many.
    pub async fn apply_retention(&self) -> Result<usize> {
        if self.config.retention.is_none() && self.config.retention_by_dataset.is_empty() {
            return Ok(0);
        }
        let now = sonde_model::time::now_us();
        let _one_at_a_time = self.flush_lock.lock().await;
        let mut dropped = Vec::new();
        for (name, state) in self.datasets.read().unwrap().iter() {
            let keep = self
                .config
                .retention_by_dataset
                .get(name.as_str())
                .copied()
                .or(self.config.retention);
            let Some(keep) = keep else { continue };
            let cutoff = now - keep.as_micros() as i64;
            let mut st = state.lock().unwrap();
            let (old, young): (Vec<_>, Vec<_>) = st.segments.drain(..).partition(|s| s.max_ts_us < cutoff);
            st.segments = young;
            dropped.extend(old);
        }
        let n = dropped.len();
        if n > 0 {
            self.bury(dropped);
            self.persist_catalog().await?;
            self.stats.segments_expired.fetch_add(n as u64, Ordering::Relaxed);
            tracing::info!(segments = n, "segments dropped by retention");
        }
        Ok(n)
    }

    /// Deletes a dataset: its segments (files removed once no query reads them) and its
    /// buffered events. Returns false if there was no such dataset.
    pub async fn delete_dataset(&self, dataset: &DatasetName) -> Result<bool> {
        let Some(state) = self.dataset_state(dataset) else {
            return Ok(false);
        };
        let _one_at_a_time = self.flush_lock.lock().await;
        let segments = {
            let mut st = state.lock().unwrap();
            if st.deleted {
                return Ok(false);
            }
            // Every record applied so far is now "covered": replay must not bring it back.
            let buffered_max = st
                .frozen
                .iter()
                .map(|f| f.max_lsn)
                .chain([st.active.max_lsn()])
                .max()
                .unwrap_or(0);
            let freed: usize = st.frozen.iter().map(|f| f.bytes).sum::<usize>() + st.active.approx_bytes();
            st.flushed_lsn = st.flushed_lsn.max(buffered_max);
            st.frozen.clear();
            st.active = WriteBuffer::default();
            st.columns.clear();
            st.deleted = true;
            self.buffered_bytes.fetch_sub(
                freed.min(self.buffered_bytes.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            std::mem::take(&mut st.segments)
        };
        self.bury(segments);
        self.persist_catalog().await?;
        tracing::info!(dataset = %dataset, "dataset deleted");
        Ok(true)
    }

    /// Storage facts about one dataset for the stats API.
    pub fn dataset_stats(&self, dataset: &DatasetName) -> Option<DatasetStats> {
        let info = self.dataset_info(dataset)?;
        let state = self.dataset_state(dataset)?;
        let st = state.lock().unwrap();
        let pending: usize = compaction::plan(&st.segments, self.config.compaction_target_rows.max(1))
            .iter()
            .map(|g| g.len())
            .sum();
        Some(DatasetStats {
            raw_bytes: st.segments.iter().map(|s| s.raw_bytes).sum(),
            largest_segment_rows: st.segments.iter().map(|s| s.rows).max().unwrap_or(0),
            segments_pending_compaction: pending,
            info,
        })
    }

    /// The lowest LSN that some write buffer still needs from the WAL.
    fn wal_watermark(&self) -> Lsn {
        // Read the applied LSN first: anything applied after this read has a higher LSN.
        let applied = self.applied_lsn.load(Ordering::Acquire);
        let map = self.datasets.read().unwrap();
        map.values()
            .filter_map(|s| s.lock().unwrap().min_unflushed_lsn())
            .min()
            .unwrap_or(applied + 1)
            .min(applied + 1)
    }

    /// Stops taking writes, waits for the WAL thread, flushes every buffer, and deletes the files
    /// of segments no longer in the catalog.
    pub async fn shutdown(&self) -> Result<()> {
        self.commit_tx.lock().unwrap().take();
        let handle = self.commit_thread.lock().unwrap().take();
        if let Some(h) = handle {
            tokio::task::spawn_blocking(move || h.join()).await.ok();
        }
        self.flush_all().await?;
        // No query runs any more: delete what compaction, retention and deletion left behind.
        self.reap_graveyard().await;
        Ok(())
    }
}

/// True for the columns every dataset has (`timestamp`, `samplerate`).
pub fn is_reserved(name: &str) -> bool {
    name == sonde_model::TIMESTAMP_COLUMN || name == sonde_model::SAMPLE_RATE_COLUMN
}

fn merge_columns(columns: &mut BTreeMap<String, ColumnEntry>, schema: &SchemaRef, min_us: i64, max_us: i64) {
    for f in schema.fields() {
        if is_reserved(f.name()) {
            continue;
        }
        let Some(ty) = buffer::column_type_of(f.data_type()) else {
            continue;
        };
        columns
            .entry(f.name().clone())
            .and_modify(|c| c.merge(ty, min_us, max_us))
            .or_insert(ColumnEntry {
                ty,
                first_seen_us: min_us,
                last_seen_us: max_us,
            });
    }
}

/// Widest type of a column across a snapshot's segments and buffers.
pub fn column_type(snapshot: &DatasetSnapshot, name: &str) -> Option<ColumnType> {
    snapshot.columns.get(name).map(|c| c.ty)
}

/// Free bytes (for unprivileged users) on the filesystem holding `dir`, if it can be read.
fn free_disk_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Deletes segment files the catalog does not name: left by a crash between writing a segment
/// and cataloging it (their events are still in the WAL and are replayed), or between
/// cataloging a compaction and deleting its inputs.
async fn remove_orphans(store: &Arc<dyn ObjectStore>, catalog: &Catalog) -> Result<()> {
    use futures::TryStreamExt;
    let known: std::collections::HashSet<String> = catalog
        .datasets
        .values()
        .flat_map(|d| {
            d.segments
                .iter()
                .flat_map(|s| [s.path.clone(), index::index_path(&s.path)])
        })
        .collect();
    let prefix = StorePath::from("datasets");
    let files: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await?;
    for f in files {
        if !known.contains(f.location.as_ref()) {
            tracing::warn!(file = %f.location, "removing orphan segment file");
            store.delete(&f.location).await?;
        }
    }
    Ok(())
}

/// An S3-compatible store from `s3://bucket/prefix`, configured by the usual `AWS_*` variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and `AWS_ENDPOINT_URL` or
/// `AWS_ENDPOINT` for S3-compatible servers; plain `http://` endpoints are allowed).
fn remote_store(url: &str) -> Result<Arc<dyn ObjectStore>> {
    use object_store::aws::AmazonS3Builder;
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| Error::Invalid(format!("storage URL {url:?}: only s3://bucket/prefix is supported")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::Invalid(format!("storage URL {url:?} names no bucket")));
    }
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")) {
        builder = builder
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint);
    }
    let s3: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
    let prefix = prefix.trim_matches('/');
    Ok(if prefix.is_empty() {
        s3
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
    })
}

/// Compaction, retention and deletion of unreferenced files, every `maintenance_interval`.
async fn maintenance_loop(s: Arc<Storage>) {
    loop {
        tokio::time::sleep(s.config.maintenance_interval).await;
        if let Err(e) = s.apply_retention().await {
            tracing::error!(error = %e, "retention failed");
        }
        if let Err(e) = s.compact().await {
            tracing::error!(error = %e, "compaction failed; the input segments stay");
        }
        s.reap_graveyard().await;
    }
}

async fn flush_loop(s: Arc<Storage>) {
    loop {
        let wait = s.flush_wanted.notified();
        if let Err(e) = s.flush_due().await {
            tracing::error!(error = %e, "flush failed; events stay in the buffer and the WAL");
        }
        s.reap_graveyard().await;
        tokio::select! {
            _ = wait => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

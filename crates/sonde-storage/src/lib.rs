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
//! Guarantees (see `DESIGN.md`, invariants 1–5):
//! - [`Storage::ingest`] returns only after the events are in an fsynced WAL record (with
//!   [`Durability::Fsync`]) *and* in the write buffer, so an ack means durable and visible.
//! - Concurrent requests share one fsync: the WAL thread takes everything queued while the
//!   previous fsync ran and writes it as one append.
//! - A crash at any moment loses no acknowledged event and duplicates none: recovery loads the
//!   catalog, then replays only WAL records above each dataset's `flushed_lsn`.
//!
//! The crash-safety argument, worked through step by step, is in `DESIGN.md` beside this crate.
//!
//! Layout: this file is the facade ([`Storage`]: open and recovery, shutdown, accessors) and
//! its errors; each job has its module: `config`, `registry` (datasets, snapshots), `commit`
//! (WAL thread, group commit, apply), `flush` (segments, catalog snapshots), `maintenance`
//! (compaction, retention, deletion, file reaping) behind `graveyard`, `stats`; below them the
//! formats: `wal`, `buffer`, `segment`, `catalog` (one store for the data directory and for
//! object storage), `index`, `compaction`'s planner, `quarantine`. `shared_catalog` is the
//! create-only catalog log for several servers over one bucket, `node_catalog` one node's
//! view of it (`--role ingest` and `--role query`), and `fresh` the query nodes' copies of the
//! ingest nodes' write buffers.

// Internal pieces; the public surface is `source` (what a query reads), `schema` (the column
// rules readers share), `shared_catalog`, `fresh` (a query node's copies of its ingest nodes'
// write buffers) and the items of this file.
mod buffer;
mod catalog;
mod commit;
mod compaction;
mod config;
pub mod documents;
mod flush;
pub mod fresh;
mod graveyard;
mod index;
mod local_files;
mod maintenance;
mod node_catalog;
mod quarantine;
mod registry;
pub mod schema;
mod segment;
pub mod shared_catalog;
pub mod source;
mod stats;
mod wal;

pub use commit::free_disk_bytes;
use commit::{Commit, Origin};
pub use config::{Durability, Role, StorageConfig};
use flush::flush_loop;
use maintenance::{delete_later, follow_loop, maintenance_loop, remove_orphans};
pub use registry::{DatasetInfo, DatasetSnapshot};
use registry::{DatasetState, Frozen, freeze_active, merge_columns};
pub use stats::{DatasetStats, StorageStats};

pub use quarantine::Quarantined;
pub use source::DatasetSource;
pub use wal::{Lsn, Replay, WalRecord};

/// Reads every record of a WAL directory, truncating a torn tail as recovery does (for tools
/// and tests that check what the log holds).
pub fn read_wal(dir: &std::path::Path) -> Result<Replay> {
    wal::replay(dir)
}

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use buffer::WriteBuffer;
use catalog::{Catalog, CatalogStore, ColumnEntry, DatasetEntry, SegmentId, SegmentMeta};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use segment::SegmentOptions;
use sonde_model::{ColumnType, DatasetName, EncodedEvents, Event};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot, watch};

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
    #[error(
        "write buffers hold {held} bytes, above the limit of {limit} (set with --max-buffer-bytes / SONDE_MAX_BUFFER_BYTES); retry after the flush"
    )]
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
    /// The storage settings cannot be used (a storage URL of an unknown kind, say).
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// The shared catalog in the object store could not be read or written.
    #[error("shared catalog: {0}")]
    SharedCatalog(String),
    /// Another ingest node writes this dataset (one node per dataset at a time).
    #[error(
        "dataset {dataset} is written by ingest node {owner}; send its events there (each dataset has one ingest node at a time)"
    )]
    NotOwner {
        /// The dataset.
        dataset: DatasetName,
        /// The node that owns it.
        owner: String,
    },
    /// A query node asked for a dataset's buffered events at an epoch this node does not hold.
    #[error("dataset {dataset} is not written at epoch {asked} by this node (it holds {}); read the catalog again", .held.map_or("no epoch".to_string(), |e| format!("epoch {e}")))]
    EpochMoved {
        /// The dataset.
        dataset: DatasetName,
        /// The epoch asked for.
        asked: u64,
        /// The epoch this node holds, if it writes the dataset.
        held: Option<u64>,
    },
    /// This node's role (`--role`) does not do this.
    #[error("this node runs --role {role} and does not {action}; send the request to an ingest node")]
    Role {
        /// The role.
        role: &'static str,
        /// What was asked.
        action: &'static str,
    },
    /// A background task (encoding, verifying, indexing) panicked: a bug.
    #[error("a storage task failed: {0}")]
    TaskFailed(String),
}

/// Storage results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long the file of a segment taken out of a shared catalog stays: longer than a query
/// node takes to read the log again (`--catalog-refresh`) plus the longest query.
pub const SHARED_DELETE_GRACE: Duration = Duration::from_secs(15 * 60);

/// The stop signal of the background loops, and the loops.
type Background = (watch::Sender<bool>, Vec<tokio::task::JoinHandle<()>>);

/// The storage engine. Cheap to share behind an `Arc`.
pub struct Storage {
    config: StorageConfig,
    store: Arc<dyn ObjectStore>,
    datasets: RwLock<BTreeMap<DatasetName, Arc<Mutex<DatasetState>>>>,
    commit_tx: Mutex<Option<mpsc::Sender<Commit>>>,
    commit_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The flush and maintenance loops, owned: [`Storage::shutdown`] tells them to stop (the
    /// sender) and waits for them, so no flush or compaction runs on after it.
    background: Mutex<Option<Background>>,
    /// Highest LSN applied to the write buffers; every LSN at or below it is buffered or flushed.
    applied_lsn: AtomicU64,
    next_segment_id: AtomicU64,
    buffered_bytes: AtomicUsize,
    /// One flush at a time, so catalog writes and WAL deletions are serialised.
    flush_lock: tokio::sync::Mutex<()>,
    flush_wanted: Notify,
    /// Set from the start of a catalog store until one succeeds: the datasets' segment lists
    /// in memory may then be ahead of every stored catalog, and the WAL must not be trimmed.
    catalog_dirty: std::sync::atomic::AtomicBool,
    /// One reading of the shared catalog at a time (a query node reads it on its schedule and
    /// when fresh events say it moved): two readings applying their states out of order would
    /// take the dataset back to the older one.
    follow_lock: tokio::sync::Mutex<()>,
    /// Segments taken out of the catalog, waiting until no query holds them and a catalog
    /// without them is durable before their files are deleted.
    graveyard: graveyard::Graveyard,
    index: Arc<index::IndexCache>,
    /// Where the catalog is kept (the data directory or the object store).
    catalog_store: CatalogStore,
    /// Users' objects (derived columns, …), beside the catalog.
    documents: documents::Documents,
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

impl Storage {
    /// Opens (or creates) the data directory, recovers from the catalog and the WAL, and starts
    /// the WAL thread and the background flusher. Must be called inside a Tokio runtime.
    pub async fn open(config: StorageConfig) -> Result<Arc<Storage>> {
        std::fs::create_dir_all(&config.data_dir)?;
        let data_dir = config.data_dir.canonicalize()?;
        let (store, local): (Arc<dyn ObjectStore>, bool) = match &config.storage_url {
            None => (Arc::new(local_files::LocalFiles::new(&data_dir)?), true),
            Some(url) => (remote_store(url)?, false),
        };
        let role = config.role;
        if role != Role::All && local {
            return Err(Error::Config(format!(
                "--role {} needs --storage s3://… (the bucket every node shares)",
                role.name()
            )));
        }
        if config.node_name.is_empty()
            || config.node_name.len() > 64
            || !config
                .node_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::Config(format!(
                "--node-name {:?}: use 1 to 64 letters, digits, '-' or '_'",
                config.node_name
            )));
        }
        let catalog_store = match role {
            Role::All if local => CatalogStore::Local(data_dir.clone()),
            Role::All => CatalogStore::Remote(store.clone()),
            Role::Ingest | Role::Query => CatalogStore::Shared(Arc::new(node_catalog::NodeCatalogs::new(
                store.clone(),
                config.node_name.clone(),
                role,
                config.lease,
            ))),
        };
        if !local {
            // One bucket holds one kind of catalog: a single server's `catalog.json`, or a
            // cluster's logs. The other kind would see none of the segments and sweep them all.
            let logs = !store
                .list_with_delimiter(Some(&StorePath::from("catalog")))
                .await?
                .common_prefixes
                .is_empty();
            let single = match store.head(&StorePath::from(catalog::CATALOG_FILE)).await {
                Ok(_) => true,
                Err(object_store::Error::NotFound { .. }) => false,
                Err(e) => return Err(e.into()),
            };
            if role == Role::All && logs {
                return Err(Error::Config(
                    "this bucket holds a cluster's shared catalog (catalog/): start this server with --role ingest or --role query".into(),
                ));
            }
            if role != Role::All && single {
                return Err(Error::Config(format!(
                    "this bucket holds a single server's {}: --role {} needs a bucket (or prefix) of its own",
                    catalog::CATALOG_FILE,
                    role.name()
                )));
            }
        }
        let documents = if local {
            documents::Documents::local(data_dir.clone())
        } else {
            documents::Documents::remote(store.clone())
        };
        let mut catalog = catalog_store.load().await?;
        // A query node owns no files: it neither sweeps nor quarantines other nodes' segments.
        let quarantined = if role == Role::Query {
            Vec::new()
        } else {
            let orphans = remove_orphans(&store, &catalog, &catalog_store).await?;
            delete_later(store.clone(), orphans, SHARED_DELETE_GRACE);
            quarantine::verify_segments(&store, &mut catalog).await?
        };
        if !quarantined.is_empty() {
            catalog_store.store(&catalog).await?;
        }

        let mut datasets = BTreeMap::new();
        // Names were validated as the catalog was read.
        for (name, entry) in &catalog.datasets {
            let name = name.clone();
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
        let max_flushed = catalog
            .datasets
            .values()
            .map(|d| d.flushed_lsn)
            .max()
            .unwrap_or_default();
        let last_lsn = replay.last_lsn.max(max_flushed);

        let config = StorageConfig { data_dir, ..config };
        let storage = Arc::new(Storage {
            store,
            datasets: RwLock::new(datasets),
            commit_tx: Mutex::new(None),
            commit_thread: Mutex::new(None),
            background: Mutex::new(None),
            applied_lsn: AtomicU64::new(last_lsn.0),
            next_segment_id: AtomicU64::new(catalog.next_segment_id),
            buffered_bytes: AtomicUsize::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            flush_wanted: Notify::new(),
            catalog_dirty: std::sync::atomic::AtomicBool::new(false),
            follow_lock: tokio::sync::Mutex::new(()),
            // Query nodes may still read a segment an ingest node took out until they read
            // the log again and their queries end: its file stays a while.
            graveyard: graveyard::Graveyard::with_grace(if role == Role::All {
                Duration::ZERO
            } else {
                SHARED_DELETE_GRACE
            }),
            index: Arc::new(index::IndexCache::new(
                config.segment.bloom_columns.clone(),
                config.index_cache_bytes,
            )),
            local,
            catalog_store,
            documents,
            stats: StorageStats::default(),
            quarantined: Mutex::new(quarantined),
            config,
        });

        let mut replayed = 0u64;
        for rec in &replay.records {
            if storage.apply(rec.lsn, &rec.dataset, Origin::Replay, |buffer, known, now| {
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

        // Datasets in memory this node does not own: its own events of a dataset another node
        // took while this one was down (the WAL's tail past its last flush), handed over now;
        // nothing (only the position its events reached, dropped); or events of a dataset
        // nobody holds or whose owner is down (a renamed node, a data directory from another
        // role), taken.
        if let Some(shared) = storage.catalog_store.shared()
            && role == Role::Ingest
        {
            let names: Vec<DatasetName> = storage.datasets.read().unwrap().keys().cloned().collect();
            let mut handing = Vec::new();
            for name in names.into_iter().filter(|n| shared.owned_epoch(n).is_none()) {
                let pending = storage.dataset_state(&name).is_some_and(|state| {
                    let st = state.lock().unwrap();
                    st.active.rows() > 0 || !st.frozen.is_empty()
                });
                if !pending {
                    storage.datasets.write().unwrap().remove(&name);
                    continue;
                }
                match storage.claim(&name).await {
                    Ok(()) => {}
                    Err(Error::NotOwner { owner, .. }) => {
                        tracing::warn!(dataset = %name, %owner, "another node took the dataset while this one was down: handing over the events its WAL held");
                        handing.push(name);
                    }
                    Err(e) => {
                        return Err(Error::Config(format!(
                            "the WAL in {} holds events of dataset {name}, which this node cannot take: {e}",
                            storage.config.data_dir.display()
                        )));
                    }
                }
            }
            for name in handing {
                // A failure leaves the events in the buffer and the WAL: the flusher tries again.
                if let Err(e) = storage.flush_dataset(&name).await {
                    tracing::error!(dataset = %name, error = %e, "handing over failed; trying again at the next flush");
                }
            }
        }

        // A query node's datasets come from the logs, the same way at start as at each refresh.
        if role == Role::Query {
            storage.follow_catalog().await?;
        }

        // Direct writes pay off only when every append is synced anyway; without fsync the page
        // cache is what makes appends cheap.
        let direct = storage.config.durability == Durability::Fsync;
        let wal_file = wal::WalFile::create(&wal_dir, last_lsn.next(), storage.config.wal_rotate_bytes, direct)?;
        let (tx, rx) = mpsc::channel(4096);
        *storage.commit_tx.lock().unwrap() = Some(tx);
        let thread_storage = storage.clone();
        let handle = std::thread::Builder::new()
            .name("sonde-wal".into())
            .spawn(move || thread_storage.wal_loop(rx, wal_file, last_lsn.next()))?;
        *storage.commit_thread.lock().unwrap() = Some(handle);

        let (stop, stopped) = watch::channel(false);
        let loops = if role == Role::Query {
            vec![tokio::spawn(follow_loop(storage.clone(), stopped))]
        } else {
            vec![
                tokio::spawn(flush_loop(storage.clone(), stopped.clone())),
                tokio::spawn(maintenance_loop(storage.clone(), stopped)),
            ]
        };
        *storage.background.lock().unwrap() = Some((stop, loops));
        Ok(storage)
    }

    /// Segments found damaged at start, moved to `quarantine/` and out of the catalog.
    pub fn quarantined(&self) -> Vec<Quarantined> {
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

    /// Users' objects (derived columns, …), stored beside the catalog.
    pub fn documents(&self) -> &documents::Documents {
        &self.documents
    }

    /// The object store that holds the segments.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Stops the background loops (a flush or compaction under way finishes first), stops
    /// taking writes, waits for the WAL thread, flushes every buffer, and deletes the files of
    /// segments no longer in the catalog.
    pub async fn shutdown(&self) -> Result<()> {
        let background = self.background.lock().unwrap().take();
        if let Some((stop, loops)) = background {
            let _ = stop.send(true);
            for handle in loops {
                if let Err(e) = handle.await {
                    tracing::error!(error = %e, "a storage background task failed");
                }
            }
        }
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

/// An S3-compatible store from `s3://bucket/prefix`, configured by the usual `AWS_*` variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and `AWS_ENDPOINT_URL` or
/// `AWS_ENDPOINT` for S3-compatible servers; plain `http://` endpoints are allowed).
fn remote_store(url: &str) -> Result<Arc<dyn ObjectStore>> {
    use object_store::aws::AmazonS3Builder;
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| Error::Config(format!("storage URL {url:?}: only s3://bucket/prefix is supported")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::Config(format!("storage URL {url:?} names no bucket")));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: i64) -> Event {
        Event {
            timestamp_us: 1_767_225_600_000_000 + i,
            sample_rate: 1,
            fields: vec![("i".into(), sonde_model::FieldValue::Int(i))],
        }
    }

    /// After `shutdown` nothing of the storage runs on: the background loops have ended and
    /// dropped their handles on it (before, they held it and ran until the process exited).
    #[tokio::test]
    async fn shutdown_stops_the_background_loops() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(StorageConfig::new(dir.path())).await.unwrap();
        let ds = DatasetName::new("t").unwrap();
        storage.ingest(&ds, vec![event(1)]).await.unwrap();
        storage.shutdown().await.unwrap();
        assert_eq!(
            Arc::strong_count(&storage),
            1,
            "a background task still holds the storage"
        );
    }

    /// A request's events for several datasets share one append: all stored, each in its own
    /// record, acknowledged with the last LSN.
    #[tokio::test]
    async fn ingest_all_stores_every_dataset_in_consecutive_records() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(StorageConfig::new(dir.path())).await.unwrap();
        let (a, b) = (DatasetName::new("a").unwrap(), DatasetName::new("b").unwrap());
        let before = storage.stats.wal_records.load(Ordering::Relaxed);
        let lsn = storage
            .ingest_all(vec![(a.clone(), vec![event(1), event(2)]), (b.clone(), vec![event(3)])])
            .await
            .unwrap();
        assert_eq!(storage.stats.wal_records.load(Ordering::Relaxed) - before, 2);
        assert_eq!(lsn, Lsn(storage.applied_lsn.load(Ordering::Acquire)));
        let rows = |ds: &DatasetName| storage.datasets.read().unwrap()[ds].lock().unwrap().active.rows();
        assert_eq!((rows(&a), rows(&b)), (2, 1));
        storage.shutdown().await.unwrap();
    }

    /// The snapshot contract (`source`): every acknowledged event is in exactly one of the
    /// segments and the buffered batches — before a flush, after it, and after a restart that
    /// replays the WAL.
    #[tokio::test]
    async fn each_event_is_in_exactly_one_of_segments_and_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let ds = DatasetName::new("t").unwrap();
        let counts = |snap: &DatasetSnapshot| {
            let segment_rows: u64 = snap.segments.iter().map(|s| s.rows).sum();
            let buffered_rows: usize = snap.buffered.iter().map(|b| b.num_rows()).sum();
            (segment_rows, buffered_rows)
        };
        let storage = Storage::open(StorageConfig::new(dir.path())).await.unwrap();
        storage.ingest(&ds, (0..10).map(event).collect()).await.unwrap();
        assert_eq!(counts(&storage.snapshot(&ds).unwrap()), (0, 10));
        storage.flush_dataset(&ds).await.unwrap();
        assert_eq!(counts(&storage.snapshot(&ds).unwrap()), (10, 0));
        storage.ingest(&ds, (10..15).map(event).collect()).await.unwrap();
        assert_eq!(counts(&storage.snapshot(&ds).unwrap()), (10, 5));
        // A stop without the final flush (as a crash): the WAL holds the 5, the segment the 10.
        storage.commit_tx.lock().unwrap().take();
        let handle = storage.commit_thread.lock().unwrap().take().unwrap();
        tokio::task::spawn_blocking(move || handle.join())
            .await
            .unwrap()
            .unwrap();
        let background = storage.background.lock().unwrap().take();
        if let Some((stop, loops)) = background {
            let _ = stop.send(true);
            for l in loops {
                l.await.unwrap();
            }
        }
        drop(storage);
        let reopened = Storage::open(StorageConfig::new(dir.path())).await.unwrap();
        assert_eq!(counts(&reopened.snapshot(&ds).unwrap()), (10, 5));
        assert!(reopened.snapshot(&DatasetName::new("other").unwrap()).is_none());
        reopened.shutdown().await.unwrap();
    }
}

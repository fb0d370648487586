//! One node's view of the shared catalog: the per-dataset logs of `shared_catalog`, seen as the
//! single [`Catalog`] the rest of the storage already loads and stores.
//!
//! - An **ingest node** writes the datasets it owns. It claims a dataset before it takes the
//!   first events for it (a [`Change::Take`] at the next epoch, when no other node owns it), and
//!   at each catalog store it commits what differs between its catalog and the log: new
//!   segments and the WAL position reached as a [`Change::Flush`], segments taken out
//!   (compaction, retention, deletion) as a [`Change::Replace`]. As the dataset's only writer
//!   its log holds exactly what it committed; were another node to take the dataset, the
//!   commit would be refused (fenced), so it never removes another writer's segments.
//! - A **query node** writes nothing: [`NodeCatalogs::follow`] reads the tail of every
//!   dataset's log and answers the datasets whose segments changed.
//!
//! A dataset has one ingest node at a time, for as long as that node's **lease** holds: its
//! member file (`nodes/<node>.json`) written again every third of `--lease`. A node that has
//! not written it for a whole `--lease` is down, and the next ingest node asked to take events
//! for one of its datasets takes it (a `Take` at the next epoch, decided only if the epoch is
//! still the one whose owner was seen down), with its segments. Events the dead node had
//! acknowledged but not flushed stay in its WAL: restarted, it replays them, finds the dataset
//! owned by another, and hands them over ([`Change::Handover`], see `shared_catalog`), each
//! exactly once. Events for a dataset another live node owns are refused with an error that
//! names the owner (the server passes them on).

use crate::catalog::{CATALOG_VERSION, Catalog, DatasetEntry, SegmentId, SegmentMeta};
use crate::config::Role;
use crate::fresh::{Owner, Worker};
use crate::shared_catalog::{Change, CommitError, LogState, SharedCatalog};
use crate::wal::Lsn;
use crate::{Error, Result};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sonde_model::DatasetName;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// How many times a commit is retried after losing a race for a record number.
const COMMIT_ATTEMPTS: usize = 5;
/// An ingest node writes a checkpoint of a dataset's log (and prunes it) every this many records.
const CHECKPOINT_EVERY: u64 = 100;
/// How far the store's times of two objects may be off each other: S3 gives an object's time
/// in whole seconds, so a member file's age read from two of them is within a second either
/// way. A lease runs out only this much past `--lease`, so that no live owner is taken over.
pub(crate) const STORE_TIME_SLACK: std::time::Duration = std::time::Duration::from_secs(1);
/// Low bits of a segment id that hold the writing node's tag (see [`NodeCatalogs::segment_id`]).
const TAG_BITS: u32 = 10;

/// A node's member file: where the cluster's other nodes reach it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Member {
    node: String,
    role: String,
    /// The base URL of its HTTP API.
    url: String,
    /// When the process that wrote it started (µs since the epoch).
    started_us: i64,
    /// When it was last written, by the writer's clock (µs since the epoch): nodes write theirs
    /// again every [`NodeCatalogs::heartbeat`]. Member lists read it against the reader's
    /// clock; leases go by the store's time of the file instead.
    #[serde(default)]
    heartbeat_us: i64,
    /// On a query node: the address of its distributed-SQL worker (gRPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    worker_url: Option<String>,
    /// On a query node: which plans its worker runs ([`crate::fresh::Worker::plans`]); absent
    /// in the member files of versions before it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    worker_plans: Option<String>,
}

fn member_path(node: &str) -> Path {
    Path::from("nodes").join(format!("{node}.json"))
}

/// One dataset as this node follows it.
#[derive(Debug)]
struct Followed {
    log: SharedCatalog,
    /// The log as last read or written by this node (for the owner: what it committed).
    state: LogState,
    /// The epoch this node holds (0: it does not own the dataset).
    epoch: u64,
    /// The record through which a query node has handed the dataset to its storage.
    delivered: u64,
    /// The record of the newest checkpoint this node wrote or found.
    checkpointed: u64,
    /// The owner: every segment its catalog has held, to tell one it took out from one another
    /// node handed over since it last read the log.
    known: HashSet<SegmentId>,
}

/// What a catalog store did besides committing: segments taken in, datasets handed on.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// Datasets this node owns, with segments another node handed over that its catalog did
    /// not have (to be put beside the others).
    pub(crate) adopted: Vec<(DatasetName, Vec<SegmentMeta>)>,
    /// Datasets another node owns, whose segments this node handed over (to be forgotten).
    pub(crate) handed: Vec<DatasetName>,
}

impl Followed {
    /// A dataset as read (or taken) just now: delivered and checkpointed through its state.
    fn new(log: SharedCatalog, state: LogState, epoch: u64) -> Followed {
        Followed {
            delivered: state.seq,
            checkpointed: state.seq,
            known: state.entry.segments.iter().map(|s| s.id).collect(),
            log,
            state,
            epoch,
        }
    }
}

/// See the module's note.
#[derive(Debug)]
pub(crate) struct NodeCatalogs {
    store: Arc<dyn ObjectStore>,
    node: String,
    role: Role,
    datasets: tokio::sync::Mutex<BTreeMap<DatasetName, Followed>>,
    /// The datasets this node owns and at which epoch, for the ingest path's check without the
    /// async lock.
    owned: RwLock<HashMap<DatasetName, u64>>,
    /// Datasets another node took while this process wrote them, with how far into this
    /// node's WAL the log has their events: the rest stays in the WAL (which is kept from there)
    /// to be handed over at the node's next start, not now (its segments in memory may already
    /// be merged with ones the log has). Not taken again by this process.
    lost: RwLock<HashMap<DatasetName, Lsn>>,
    /// How long a member file stays valid (`--lease`).
    lease: std::time::Duration,
    /// The store's clock as this ingest node last read it: its own member file's modification
    /// time (µs, the store's) and when that was read (this process's monotonic clock). Leases
    /// are aged by the store's times (see [`Self::store_now_us`]), so that nodes' clocks need
    /// not agree. Not read on a query node, which takes no dataset.
    store_clock: std::sync::Mutex<Option<(i64, std::time::Instant)>>,
    /// An ingest node, as loaded (until the start-up sweep takes it): every dataset's directory
    /// in the store, with the files its log names (segments and their indexes), the datasets
    /// other nodes write included. The start-up sweep looks in all of them for this node's files that no log names (a handover
    /// that crashed between writing its segment and committing it leaves one in a dataset
    /// another node writes).
    loaded_files: RwLock<Vec<(DatasetName, HashSet<String>)>>,
}

fn log_error(e: impl std::fmt::Display) -> Error {
    Error::SharedCatalog(e.to_string())
}

impl NodeCatalogs {
    /// The shared catalog in `store`, as node `node` in `role` (not [`Role::All`]), whose
    /// members count as down once their member file is older than `lease`.
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        node: String,
        role: Role,
        lease: std::time::Duration,
    ) -> NodeCatalogs {
        NodeCatalogs {
            store,
            node,
            role,
            datasets: tokio::sync::Mutex::new(BTreeMap::new()),
            owned: RwLock::new(HashMap::new()),
            lost: RwLock::new(HashMap::new()),
            lease,
            store_clock: std::sync::Mutex::new(None),
            loaded_files: RwLock::new(Vec::new()),
        }
    }

    /// How often an ingest node writes its member file again: three times a lease.
    pub(crate) fn heartbeat(&self) -> std::time::Duration {
        self.lease / 3
    }

    /// Whether `node`'s lease ran out: its member file older than `--lease` (and
    /// [`STORE_TIME_SLACK`]), or missing. The age is the store's: the file's modification time
    /// against the store's time now, from this node's own member file (a node that has written
    /// none yet reads the file's `heartbeat_us` against its own clock).
    async fn lease_expired(&self, node: &str) -> Result<bool> {
        let lease = self.lease.as_micros() as i64;
        let Some(store_now) = self.store_now_us() else {
            let now = sonde_model::time::now_us();
            return Ok(match self.member(node).await? {
                Some(m) => now - m.heartbeat_us > lease,
                None => true,
            });
        };
        let slack = STORE_TIME_SLACK.as_micros() as i64;
        match self.store.head(&member_path(node)).await {
            Ok(meta) => Ok(store_now - meta.last_modified.timestamp_micros() > lease + slack),
            Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// The store's time now (µs), from the modification time of this node's member file when
    /// it last wrote it plus the time elapsed here since; `None` before it first wrote one. An
    /// S3 object's time is whole seconds, so ages read this way are within about a second.
    fn store_now_us(&self) -> Option<i64> {
        let clock = *self.store_clock.lock().unwrap_or_else(|p| p.into_inner());
        clock.map(|(at, read)| at + read.elapsed().as_micros() as i64)
    }

    /// This node's name.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// A new segment id from `next_tick` (the storage's counter): the later of the clock in µs
    /// and the tick after the last one, with this node's tag (a hash of its name) in the low
    /// bits, so that ingest nodes never count through each other's ids the way two counters
    /// started at two clocks would; two nodes give the same id only with the same tag in the
    /// same microsecond.
    pub(crate) fn segment_id(&self, next_tick: &AtomicU64) -> SegmentId {
        let now = sonde_model::time::now_us().max(0) as u64;
        let tick = next_tick
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(t.max(now) + 1))
            .expect("the update always answers")
            .max(now);
        let tag = sonde_model::fnv1a(self.node.bytes()) & ((1 << TAG_BITS) - 1);
        SegmentId(tick << TAG_BITS | tag)
    }

    /// Refuses, on a query node, what only an ingest node does.
    pub(crate) fn check_writer(&self, action: &'static str) -> Result<()> {
        if self.role == Role::Ingest {
            Ok(())
        } else {
            Err(Error::Role {
                role: self.role.name(),
                action,
            })
        }
    }

    /// Every dataset with a log in the store.
    async fn names(&self) -> Result<Vec<DatasetName>> {
        let listed = self.store.list_with_delimiter(Some(&Path::from("catalog"))).await?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .filter_map(|name| DatasetName::new(name).ok())
            .collect())
    }

    /// The catalog this node starts from. An ingest node takes the datasets it owned before
    /// at a new epoch (fencing an older process under the same name); `next_segment_id` is the
    /// next *tick* of [`NodeCatalogs::segment_id`]: above every id in the store and at least
    /// the clock in µs. A query node starts empty and reads every dataset through
    /// [`NodeCatalogs::follow`], its one way in.
    pub(crate) async fn load(&self) -> Result<Catalog> {
        let mut catalog = Catalog {
            version: CATALOG_VERSION,
            next_segment_id: sonde_model::time::now_us().max(1) as u64,
            datasets: BTreeMap::new(),
        };
        if self.role == Role::Query {
            return Ok(catalog);
        }
        // A restart renews the lease at once (the member file is written with the new address
        // once the node listens): its datasets are not taken over while it replays its WAL.
        if let Some(mut member) = self.member(&self.node).await? {
            member.heartbeat_us = sonde_model::time::now_us();
            self.write_member(&member).await?;
        }
        let mut datasets = self.datasets.lock().await;
        let mut loaded_files = Vec::new();
        for name in self.names().await? {
            let log = SharedCatalog::new(self.store.clone(), name.clone(), self.node.clone());
            let mut state = log.load().await.map_err(log_error)?;
            let named = state.entry.segments.iter();
            let named = named.flat_map(|s| [s.path.clone(), crate::index::index_path(&s.path)]);
            loaded_files.push((name.clone(), named.collect()));
            if let Some(max) = state.entry.segments.iter().map(|s| s.id.0).max() {
                catalog.next_segment_id = catalog.next_segment_id.max((max >> TAG_BITS) + 1);
            }
            if state.owner.as_deref() != Some(self.node.as_str()) {
                // Another node's now. Where this node's own events of it reached, so that its
                // WAL replays only those it never flushed (to hand them over).
                if let Some(lsn) = state.flushed_by.get(&self.node) {
                    catalog.datasets.insert(
                        name.clone(),
                        DatasetEntry {
                            flushed_lsn: *lsn,
                            ..Default::default()
                        },
                    );
                }
                continue;
            }
            let epoch = log.take(&mut state).await.map_err(log_error)?;
            self.owned.write().unwrap().insert(name.clone(), epoch);
            catalog.datasets.insert(name.clone(), state.entry.clone());
            datasets.insert(name, Followed::new(log, state, epoch));
        }
        *self.loaded_files.write().unwrap() = loaded_files;
        Ok(catalog)
    }

    /// Every dataset's directory and the files its log named when this node loaded (see
    /// `loaded_files`), handed over once to the start-up sweep, which is all that needs them
    /// (they are not held for the life of the process); empty on a query node, which sweeps
    /// nothing.
    pub(crate) fn take_loaded_files(&self) -> Vec<(DatasetName, HashSet<String>)> {
        std::mem::take(&mut *self.loaded_files.write().unwrap())
    }

    /// Makes this node the writer of `dataset` before it takes events for it: at once when it
    /// owns it already; by taking the next epoch when nobody does, or when its owner's lease
    /// ran out; refused when another node (or another process under this node's name) holds
    /// it. Answers the dataset as taken (segments, columns, this node's WAL position in it)
    /// when this call took it.
    pub(crate) async fn claim(&self, dataset: &DatasetName) -> Result<Option<DatasetEntry>> {
        self.check_writer("take events")?;
        if self.owned.read().unwrap().contains_key(dataset) {
            return Ok(None);
        }
        let mut datasets = self.datasets.lock().await;
        if self.owned.read().unwrap().contains_key(dataset) {
            return Ok(None); // claimed while this call waited for the lock
        }
        let log = SharedCatalog::new(self.store.clone(), dataset.clone(), self.node.clone());
        let mut state = log.load().await.map_err(log_error)?;
        if self.lost.read().unwrap().contains_key(dataset) {
            return Err(Error::NotOwner {
                dataset: dataset.clone(),
                owner: state.owner.clone().unwrap_or_default(),
            });
        }
        // The epoch whose owner is down, if it is: taken only while still that epoch (its
        // owner, restarted meanwhile, takes it again at the next).
        let expired = match state.owner.as_deref() {
            Some(owner) if owner != self.node && self.lease_expired(owner).await? => Some(state.epoch),
            _ => None,
        };
        // A take at the next epoch while nobody owns it, decided again after each lost race.
        // Owned by this node's name too means another process under the same name (this
        // one's own datasets were taken at start).
        let taken = log
            .commit_with(&mut state, COMMIT_ATTEMPTS, |s| {
                let epoch = s.epoch + 1;
                let node = self.node.clone();
                (s.owner.is_none() || expired == Some(s.epoch)).then_some((epoch, Change::Take { epoch, node }))
            })
            .await
            .map_err(log_error)?;
        if taken.is_none() {
            return Err(Error::NotOwner {
                dataset: dataset.clone(),
                owner: state.owner.clone().unwrap_or_default(),
            });
        }
        let epoch = state.epoch;
        if expired.is_some() {
            tracing::warn!(dataset = %dataset, epoch, node = %self.node, "dataset taken over: its ingest node's lease ran out");
        } else {
            tracing::info!(dataset = %dataset, epoch, node = %self.node, "dataset claimed");
        }
        let entry = state.entry.clone();
        datasets.insert(dataset.clone(), Followed::new(log, state, epoch));
        self.owned.write().unwrap().insert(dataset.clone(), epoch);
        self.lost.write().unwrap().remove(dataset);
        Ok(Some(entry))
    }

    /// Commits `entry`'s segments, of a dataset another node owns now, as this node's
    /// handover: once (a handover whose position the log has reached adds nothing).
    async fn hand_over(&self, dataset: &DatasetName, entry: &DatasetEntry) -> Result<()> {
        let log = SharedCatalog::new(self.store.clone(), dataset.clone(), self.node.clone());
        let mut state = log.load().await.map_err(log_error)?;
        let node = self.node.as_str();
        if state.owner.as_deref() == Some(node) {
            return Err(Error::NotOwner {
                dataset: dataset.clone(),
                owner: format!("{node} (another process under this node's name)"),
            });
        }
        let committed = log
            .commit_with(&mut state, COMMIT_ATTEMPTS, |s| {
                let reached = s.flushed_by.get(node).copied().unwrap_or_default();
                if !s.takes_handover_from(node) {
                    return None;
                }
                // Only segments of events past the position the log has, and not in it already:
                // a handover whose answer was lost is not repeated by a later one.
                let segments: Vec<SegmentMeta> = entry
                    .segments
                    .iter()
                    .filter(|seg| seg.min_lsn > reached && !s.entry.segments.iter().any(|o| o.id == seg.id))
                    .cloned()
                    .collect();
                let change = Change::Handover {
                    segments,
                    flushed_lsn: entry.flushed_lsn,
                };
                (entry.flushed_lsn > reached && s.owner.as_deref() != Some(node)).then_some((s.epoch, change))
            })
            .await
            .map_err(log_error)?;
        if !state.takes_handover_from(node) {
            tracing::warn!(dataset = %dataset, "the dataset was deleted after this node last wrote it: the events its WAL held of it are dropped with it");
        } else if committed.is_some() {
            tracing::warn!(dataset = %dataset, segments = entry.segments.len(), owner = ?state.owner, "events of a dataset another node took over handed over to it");
        }
        Ok(())
    }

    /// Commits what differs between `catalog` and the log of each owned dataset, each dataset
    /// on its own (one that fails does not hold up the others; the first error is returned).
    /// Datasets the catalog no longer lists (or lists as deleted) lose all their segments. A
    /// dataset another node has taken is given up: its events are refused from then on. A
    /// dataset the catalog lists that another node took while this one was down (its WAL's
    /// tail, replayed and flushed) is handed over: the answer names those.
    pub(crate) async fn store(&self, catalog: &Catalog) -> Result<Stored> {
        self.check_writer("change the catalog")?;
        let mut datasets = self.datasets.lock().await;
        let mut stored = Stored::default();
        let mut first_error = None;
        let mut lost = Vec::new();
        for (name, f) in datasets.iter_mut() {
            let (now, deleted) = match catalog.datasets.get(name) {
                Some(e) if !e.deleted => (e.clone(), false),
                Some(e) => {
                    let gone = DatasetEntry {
                        flushed_lsn: e.flushed_lsn,
                        deleted: true,
                        ..Default::default()
                    };
                    (gone, true)
                }
                // Claimed, and nothing of it in memory yet (no flush; or taken over a moment
                // ago, its segments not yet put beside the buffer): nothing to change.
                None => continue,
            };
            let epoch = f.epoch;
            // Known before committing: a commit that landed though its answer was lost must not
            // leave its segments looking like another node's handover at the next store.
            f.known.extend(now.segments.iter().map(|s| s.id));
            let known = &f.known;
            // Segments another node handed over since this node last read the log are kept
            // (and taken into this node's catalog below), never taken out as if this node had
            // removed them; a deletion takes them out too.
            let with_handed = |state: &LogState| {
                let mut now = now.clone();
                if !deleted {
                    let handed = state
                        .entry
                        .segments
                        .iter()
                        .filter(|s| !known.contains(&s.id) && !now.segments.iter().any(|n| n.id == s.id));
                    now.segments.extend(handed.cloned().collect::<Vec<_>>());
                }
                now
            };
            // One record at a time, each decided from the log as it now is: after a failure
            // half-way, the next store commits only what is still missing.
            let committed = loop {
                match f
                    .log
                    .commit_with(&mut f.state, COMMIT_ATTEMPTS, |state| {
                        change(&state.entry, &with_handed(state)).map(|c| (epoch, c))
                    })
                    .await
                {
                    Ok(Some(_)) => continue,
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            if committed.is_ok() {
                let handed: Vec<SegmentMeta> = with_handed(&f.state)
                    .segments
                    .into_iter()
                    .filter(|s| !now.segments.iter().any(|n| n.id == s.id))
                    .collect();
                // Not known until they are in this node's catalog (the next store's `now`):
                // adopted again if this store's answer is lost on the way.
                if !handed.is_empty() {
                    stored.adopted.push((name.clone(), handed));
                }
            }
            match committed {
                Ok(()) if f.state.seq >= f.checkpointed + CHECKPOINT_EVERY => {
                    // Readers then read from here on; a failure only costs them longer reads.
                    let kept = async {
                        f.log.checkpoint(&f.state).await?;
                        f.log.prune().await
                    };
                    match kept.await {
                        Ok(_) => f.checkpointed = f.state.seq,
                        Err(e) => tracing::warn!(dataset = %name, error = %e, "catalog checkpoint failed"),
                    }
                }
                Ok(()) => {}
                Err(CommitError::Fenced { owner, .. }) => {
                    let owner = owner.unwrap_or_default();
                    tracing::error!(dataset = %name, %owner, "another node took the dataset: this node gives it up, and hands its unflushed events over at its next start");
                    let reached = f.state.flushed_by.get(&self.node).copied().unwrap_or_default();
                    lost.push((name.clone(), reached));
                    first_error.get_or_insert(Error::NotOwner {
                        dataset: name.clone(),
                        owner,
                    });
                }
                Err(e) => {
                    first_error.get_or_insert(log_error(e));
                }
            }
        }
        for (name, reached) in lost {
            datasets.remove(&name);
            self.owned.write().unwrap().remove(&name);
            self.lost.write().unwrap().insert(name, reached);
        }
        for (name, entry) in catalog.datasets.iter().filter(|(n, _)| !datasets.contains_key(*n)) {
            // Left as it is until this node restarts (see `lost`), without failing the store
            // of the others.
            if self.lost.read().unwrap().contains_key(name) {
                continue;
            }
            match self.hand_over(name, entry).await {
                Ok(()) => stored.handed.push(name.clone()),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(stored), Err)
    }

    /// Reads the tail of every dataset's log (and the logs of new datasets): the datasets whose
    /// log moved since the previous call, as they are now. A log that cannot be read is
    /// skipped this time (the datasets read before it and after it still count).
    pub(crate) async fn follow(&self) -> Result<Vec<(DatasetName, DatasetEntry)>> {
        let names = self.names().await?;
        let mut datasets = self.datasets.lock().await;
        let mut changed = Vec::new();
        for name in names {
            let f = datasets.entry(name.clone()).or_insert_with(|| {
                let log = SharedCatalog::new(self.store.clone(), name.clone(), self.node.clone());
                Followed::new(log, LogState::default(), 0)
            });
            let read = if f.state.seq == 0 {
                f.log.load().await.map(|state| f.state = state)
            } else {
                // Records are applied one by one: a failure half-way leaves a prefix of the
                // log, which is a state the dataset was in.
                f.log.refresh(&mut f.state).await
            };
            if let Err(e) = read {
                tracing::warn!(dataset = %name, error = %e, "reading the dataset's catalog log failed; trying again at the next refresh");
            }
            if f.state.seq != f.delivered {
                f.delivered = f.state.seq;
                changed.push((name, f.state.entry.clone()));
            }
        }
        Ok(changed)
    }

    /// The lowest WAL position the log has of a dataset this process lost: the WAL is kept
    /// above it, for the handover at the next start.
    pub(crate) fn lost_floor(&self) -> Option<Lsn> {
        self.lost.read().unwrap().values().min().copied()
    }

    /// The epoch at which this node writes `dataset`, if it does.
    pub(crate) fn owned_epoch(&self, dataset: &DatasetName) -> Option<u64> {
        self.owned.read().unwrap().get(dataset).copied()
    }

    /// Every followed dataset's writer and epoch, as last read (a query node).
    pub(crate) async fn owners(&self) -> Vec<(DatasetName, Option<Owner>)> {
        let datasets = self.datasets.lock().await;
        datasets
            .iter()
            .map(|(name, f)| {
                let owner = f.state.owner.clone().map(|node| Owner {
                    node,
                    epoch: f.state.epoch,
                });
                (name.clone(), owner)
            })
            .collect()
    }

    /// Writes this node's member file (`nodes/<node>.json`): the address at which the other
    /// nodes reach it, and when (see [`NodeCatalogs::heartbeat`]). Written at each start, so a new address
    /// replaces the old one, and every heartbeat.
    pub(crate) async fn announce(&self, url: &str, worker: Option<&Worker>, started_us: i64) -> Result<()> {
        let member = Member {
            node: self.node.clone(),
            role: self.role.name().to_string(),
            url: url.to_string(),
            started_us,
            heartbeat_us: sonde_model::time::now_us(),
            worker_url: worker.map(|w| w.url.clone()),
            worker_plans: worker.map(|w| w.plans.clone()),
        };
        self.write_member(&member).await
    }

    /// Writes this node's member file.
    async fn write_member(&self, member: &Member) -> Result<()> {
        let body = serde_json::to_vec(member).map_err(|e| Error::Invalid(e.to_string()))?;
        let path = member_path(&self.node);
        self.store.put(&path, body.into()).await?;
        if self.role == Role::Query {
            return Ok(()); // judges no lease: no need of the store's clock
        }
        // The store's clock, read back: its time of this write (a little before now here).
        let meta = self.store.head(&path).await?;
        *self.store_clock.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((meta.last_modified.timestamp_micros(), std::time::Instant::now()));
        Ok(())
    }

    /// Every node that announced itself in `role` and wrote its member file within the last
    /// `--lease`: (name, URL), in name order.
    pub(crate) async fn members(&self, role: Role) -> Result<Vec<(String, String)>> {
        Ok(self.live(role).await?.into_iter().map(|m| (m.node, m.url)).collect())
    }

    /// The distributed-SQL workers of the query nodes that are up, in node name order.
    pub(crate) async fn workers(&self) -> Result<Vec<Worker>> {
        Ok(self
            .live(Role::Query)
            .await?
            .into_iter()
            .filter_map(|m| {
                Some(Worker {
                    url: m.worker_url?,
                    plans: m.worker_plans.unwrap_or_default(),
                })
            })
            .collect())
    }

    /// The member files of `role` written within the last `--lease`, in node name order. Aged
    /// by their `heartbeat_us` against this node's clock: where to pass requests on and which
    /// workers to use want a dead node left out promptly, and a skewed clock only leaves a
    /// node out (or in) for a while, which the callers already survive; leases, which decide
    /// ownership, are aged by the store's clock instead ([`Self::lease_expired`]).
    async fn live(&self, role: Role) -> Result<Vec<Member>> {
        let (lease, now) = (self.lease.as_micros() as i64, sonde_model::time::now_us());
        use futures::TryStreamExt;
        let listed: Vec<object_store::ObjectMeta> = self.store.list(Some(&Path::from("nodes"))).try_collect().await?;
        let mut members = Vec::new();
        for meta in listed {
            let bytes = self.store.get(&meta.location).await?.bytes().await?;
            match serde_json::from_slice::<Member>(&bytes) {
                Ok(m) if m.role == role.name() && now - m.heartbeat_us <= lease => members.push(m),
                Ok(_) => {}
                Err(e) => tracing::warn!(file = %meta.location, error = %e, "unreadable member file skipped"),
            }
        }
        members.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(members)
    }

    /// The address a node announced (`None` if it has no member file).
    pub(crate) async fn member_url(&self, node: &str) -> Result<Option<String>> {
        Ok(self.member(node).await?.map(|m| m.url))
    }

    /// A node's member file, if it has one.
    async fn member(&self, node: &str) -> Result<Option<Member>> {
        match self.store.get(&member_path(node)).await {
            Ok(got) => {
                let bytes = got.bytes().await?;
                let member: Member = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::SharedCatalog(format!("member file of node {node}: {e}")))?;
                Ok(Some(member))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The record that turns `before` into `after`, if they differ: a `Replace` when segments
/// were taken out or the dataset deleted (with those put in their place and the WAL position,
/// in one record), else a `Flush` for the segments added and the WAL position reached.
fn change(before: &DatasetEntry, after: &DatasetEntry) -> Option<Change> {
    let had: HashSet<SegmentId> = before.segments.iter().map(|s| s.id).collect();
    let has: HashSet<SegmentId> = after.segments.iter().map(|s| s.id).collect();
    let removed: Vec<SegmentId> = before
        .segments
        .iter()
        .map(|s| s.id)
        .filter(|id| !has.contains(id))
        .collect();
    let added: Vec<_> = after
        .segments
        .iter()
        .filter(|s| !had.contains(&s.id))
        .cloned()
        .collect();
    let flushed_lsn = after.flushed_lsn.max(before.flushed_lsn);
    // A deletion is said as one, even of a dataset without segments: it refuses the handover of
    // events acknowledged before it.
    let deleted = after.deleted && !before.deleted;
    if !removed.is_empty() || deleted {
        Some(Change::Replace {
            removed,
            added,
            flushed_lsn,
            deleted,
        })
    } else if !added.is_empty() || after.flushed_lsn > before.flushed_lsn {
        Some(Change::Flush {
            segments: added,
            flushed_lsn,
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::SegmentMeta;
    use crate::wal::Lsn;

    fn seg(id: u64) -> SegmentMeta {
        SegmentMeta {
            id: SegmentId(id),
            path: format!("datasets/d/seg-{id}-a.parquet"),
            rows: 10,
            columns: vec![("x".into(), sonde_model::ColumnType::Int)],
            ..Default::default()
        }
    }

    /// A node with a 15 s lease (a test of the lease gives its own).
    fn node(store: &Arc<dyn ObjectStore>, name: &str, role: Role) -> NodeCatalogs {
        NodeCatalogs::new(store.clone(), name.into(), role, std::time::Duration::from_secs(15))
    }

    fn catalog_of(d: &DatasetName, entry: DatasetEntry) -> Catalog {
        Catalog {
            version: CATALOG_VERSION,
            next_segment_id: 1,
            datasets: BTreeMap::from([(d.clone(), entry)]),
        }
    }

    fn ids(e: &DatasetEntry) -> Vec<u64> {
        let mut ids: Vec<u64> = e.segments.iter().map(|s| s.id.0).collect();
        ids.sort();
        ids
    }

    /// Over one store with `lease`: ingest nodes `a` and `b`, loaded and announced, a query node
    /// `q`, and a way to start another node over the same store (a restarted `a`).
    async fn two_writers_and_a_reader(
        lease: std::time::Duration,
    ) -> (
        impl Fn(&str, Role) -> NodeCatalogs,
        NodeCatalogs,
        NodeCatalogs,
        NodeCatalogs,
    ) {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let with_lease = move |name: &str, role| NodeCatalogs::new(store.clone(), name.into(), role, lease);
        let (a, b, q) = (
            with_lease("a", Role::Ingest),
            with_lease("b", Role::Ingest),
            with_lease("q", Role::Query),
        );
        for n in [&a, &b] {
            n.load().await.unwrap();
            n.announce("http://127.0.0.1:1", None, 0).await.unwrap();
        }
        (with_lease, a, b, q)
    }

    /// An ingest node whose lease ran out loses its dataset to the next node asked to take it,
    /// which gets its segments; the old one is fenced, and restarted hands over its WAL's tail
    /// exactly once; the new owner keeps the handed segments (and compacts them like its own).
    #[tokio::test]
    async fn a_dataset_whose_writer_is_down_is_taken_over_and_handed_the_rest() {
        let lease = std::time::Duration::from_millis(300);
        let (with_lease, a, b, q) = two_writers_and_a_reader(lease).await;
        let d = DatasetName::new("d").unwrap();
        a.claim(&d).await.unwrap();
        a.store(&catalog_of(&d, entry(&[1, 2], 10))).await.unwrap();
        // Refused while a's lease holds; taken, with a's segments, once it ran out.
        let e = b.claim(&d).await.unwrap_err();
        assert!(matches!(e, Error::NotOwner { .. }), "{e}");
        tokio::time::sleep(lease + STORE_TIME_SLACK + std::time::Duration::from_millis(100)).await;
        b.announce("http://127.0.0.1:2", None, 0).await.unwrap();
        assert_eq!(b.members(Role::Ingest).await.unwrap().len(), 1, "a is down");
        let taken = b.claim(&d).await.unwrap().expect("taken just now");
        assert_eq!((ids(&taken), taken.flushed_lsn), (vec![1, 2], Lsn(0)));
        // a, paused rather than dead, is fenced at its next store and gives the dataset up.
        let e = a.store(&catalog_of(&d, entry(&[1, 2, 3], 12))).await.unwrap_err();
        assert!(matches!(e, Error::NotOwner { .. }), "{e}");
        assert!(a.owned_epoch(&d).is_none());
        // It keeps its WAL from where the log has its events, does not fail its other stores
        // over it, and does not take it again before it restarts.
        assert_eq!(a.lost_floor(), Some(Lsn(10)));
        a.store(&catalog_of(&d, entry(&[1, 2, 3], 12))).await.unwrap();
        assert!(matches!(a.claim(&d).await.unwrap_err(), Error::NotOwner { .. }));
        // a restarted: the log gives it only where its own events reached (its WAL replays
        // the rest), and it hands over what it flushed of them, once.
        let a2 = with_lease("a", Role::Ingest);
        let loaded = a2.load().await.unwrap();
        assert_eq!(
            (ids(&loaded.datasets[&d]), loaded.datasets[&d].flushed_lsn),
            (vec![], Lsn(10))
        );
        let mut tail = entry(&[7], 12);
        tail.segments[0].min_lsn = Lsn(11);
        assert_eq!(
            a2.store(&catalog_of(&d, tail.clone())).await.unwrap().handed,
            std::slice::from_ref(&d)
        );
        // Handed again with more (its answer lost, say): only what the log lacks is added.
        let mut more = tail.clone();
        more.segments.push(seg(9));
        more.segments[1].min_lsn = Lsn(13);
        more.flushed_lsn = Lsn(14);
        a2.store(&catalog_of(&d, more.clone())).await.unwrap();
        a2.store(&catalog_of(&d, more)).await.unwrap();
        let followed = q.follow().await.unwrap();
        assert_eq!(ids(&followed[0].1), [1, 2, 7, 9]);
        // b flushes: segments 7 and 9 are kept and answered as adopted, not taken out.
        let stored = b.store(&catalog_of(&d, entry(&[1, 2, 4], 5))).await.unwrap();
        assert_eq!(stored.adopted.len(), 1);
        assert_eq!(stored.adopted[0].1.iter().map(|s| s.id.0).collect::<Vec<_>>(), [7, 9]);
        // Once its catalog has them (the storage puts them beside the others), b compacts 1,
        // 2, 7 and 9 into 8.
        let adopted = b
            .store(&catalog_of(&d, entry(&[1, 2, 4, 7, 9], 5)))
            .await
            .unwrap()
            .adopted;
        assert!(adopted.is_empty());
        b.store(&catalog_of(&d, entry(&[4, 8], 5))).await.unwrap();
        let followed = q.follow().await.unwrap();
        assert_eq!((ids(&followed[0].1), followed[0].1.flushed_lsn), (vec![4, 8], Lsn(5)));
    }

    /// A lease is judged by the store's clock: an owner whose clock is an hour behind keeps its
    /// dataset while it writes its member file, and one whose clock is an hour ahead loses it
    /// a lease after it stops, like any other.
    #[tokio::test]
    async fn the_lease_is_aged_by_the_stores_clock_not_the_writers() {
        let lease = std::time::Duration::from_millis(300);
        let (_, a, b, _q) = two_writers_and_a_reader(lease).await;
        let d = DatasetName::new("d").unwrap();
        a.claim(&d).await.unwrap();
        let skewed = |by_us: i64| Member {
            node: "a".into(),
            role: "ingest".into(),
            url: "http://127.0.0.1:1".into(),
            started_us: 0,
            heartbeat_us: sonde_model::time::now_us() + by_us,
            worker_url: None,
            worker_plans: None,
        };
        const HOUR_US: i64 = 3_600_000_000;
        for _ in 0..4 {
            // Both write their member files every third of the lease, as their heartbeats do.
            b.announce("http://127.0.0.1:2", None, 0).await.unwrap();
            a.write_member(&skewed(-HOUR_US)).await.unwrap();
            let e = b.claim(&d).await.unwrap_err();
            assert!(matches!(e, Error::NotOwner { .. }), "{e}");
            tokio::time::sleep(lease / 3).await;
        }
        a.write_member(&skewed(HOUR_US)).await.unwrap();
        assert!(b.claim(&d).await.is_err(), "a wrote its member file just now");
        tokio::time::sleep(lease + STORE_TIME_SLACK + std::time::Duration::from_millis(100)).await;
        b.announce("http://127.0.0.1:2", None, 0).await.unwrap();
        assert!(b.claim(&d).await.unwrap().is_some(), "taken once a's lease ran out");
    }

    /// A deletion by the new owner drops the old owner's events with the rest: its handover,
    /// arriving after, adds nothing; a deletion the old owner made itself before its later
    /// events does not.
    #[tokio::test]
    async fn a_handover_after_a_deletion_adds_nothing() {
        let lease = std::time::Duration::from_millis(200);
        let (with_lease, a, b, q) = two_writers_and_a_reader(lease).await;
        let (d, e) = (DatasetName::new("d").unwrap(), DatasetName::new("e").unwrap());
        a.claim(&d).await.unwrap();
        a.claim(&e).await.unwrap();
        // e: a deletes it itself, then flushes events that came after.
        let deleted = DatasetEntry {
            flushed_lsn: Lsn(4),
            deleted: true,
            ..Default::default()
        };
        let mut both = catalog_of(&d, entry(&[1], 3));
        both.datasets.insert(e.clone(), deleted.clone());
        a.store(&both).await.unwrap();
        both.datasets.insert(e.clone(), entry(&[2], 5));
        a.store(&both).await.unwrap();
        tokio::time::sleep(lease + STORE_TIME_SLACK + std::time::Duration::from_millis(100)).await;
        b.announce("http://127.0.0.1:2", None, 0).await.unwrap();
        b.claim(&d).await.unwrap();
        b.claim(&e).await.unwrap();
        // b deletes d; e it keeps.
        let mut at_b = catalog_of(&d, deleted);
        at_b.datasets.insert(e.clone(), entry(&[2], 0));
        b.store(&at_b).await.unwrap();
        // a restarted hands over both tails: d's is dropped with the deletion, e's is added.
        let a2 = with_lease("a", Role::Ingest);
        a2.load().await.unwrap();
        let mut tails = catalog_of(&d, entry(&[7], 9));
        tails.datasets.get_mut(&d).unwrap().segments[0].min_lsn = Lsn(8);
        tails.datasets.insert(e.clone(), entry(&[8], 9));
        tails.datasets.get_mut(&e).unwrap().segments[0].min_lsn = Lsn(8);
        assert_eq!(a2.store(&tails).await.unwrap().handed.len(), 2);
        let followed: BTreeMap<DatasetName, DatasetEntry> = q.follow().await.unwrap().into_iter().collect();
        assert!(
            followed[&d].deleted && followed[&d].segments.is_empty(),
            "{:?}",
            followed[&d]
        );
        assert_eq!(ids(&followed[&e]), [2, 8]);
    }

    fn entry(ids: &[u64], lsn: u64) -> DatasetEntry {
        DatasetEntry {
            flushed_lsn: Lsn(lsn),
            segments: ids.iter().map(|i| seg(*i)).collect(),
            ..Default::default()
        }
    }

    /// At start an ingest node finds its own files that no log names, older than the grace,
    /// in every dataset's directory: its own dataset's, and one another node writes (where a
    /// handover that crashed before its commit leaves its segment), and deletes them once the
    /// grace has passed since. It keeps the files a log names, younger ones, and other nodes'
    /// files.
    #[tokio::test]
    async fn the_start_up_sweep_takes_this_nodes_unnamed_files_from_every_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let (a, b) = (node(&store, "a", Role::Ingest), node(&store, "b", Role::Ingest));
        let (d, e) = (DatasetName::new("d").unwrap(), DatasetName::new("e").unwrap());
        let named = |dataset: &str, id: u64, writer: &str| SegmentMeta {
            id: SegmentId(id),
            path: format!("datasets/{dataset}/seg-{id}-{writer}.parquet"),
            rows: 10,
            columns: vec![("x".into(), sonde_model::ColumnType::Int)],
            ..Default::default()
        };
        for (n, dataset, segment) in [(&a, &d, named("d", 1, "a")), (&b, &e, named("e", 5, "b"))] {
            n.load().await.unwrap();
            n.announce("http://127.0.0.1:1", None, 0).await.unwrap();
            n.claim(dataset).await.unwrap();
            let entry = DatasetEntry {
                flushed_lsn: Lsn(1),
                segments: vec![segment],
                ..Default::default()
            };
            n.store(&catalog_of(dataset, entry)).await.unwrap();
        }
        let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let files = [
            ("d/seg-1-a.parquet", true),  // named by d's log
            ("d/seg-2-a.parquet", true),  // a's, unnamed, old: swept
            ("e/seg-5-b.parquet", true),  // named by e's log
            ("e/seg-6-a.parquet", true),  // a's crashed handover into e, old: swept
            ("e/seg-7-a.parquet", false), // a's, unnamed, but young
            ("e/seg-8-b.parquet", true),  // b's: not a's to sweep
        ];
        for (file, old) in files {
            let path = dir.path().join("datasets").join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"x").unwrap();
            if old {
                let f = std::fs::File::options().write(true).open(&path).unwrap();
                f.set_modified(an_hour_ago).unwrap();
            }
        }
        // a restarted: its sweep runs over what its load read, and deletes only after the grace
        // (seg-2-a may have left d's log a moment ago, and a query node may still read it).
        let a2 = Arc::new(node(&store, "a", Role::Ingest));
        let catalog = a2.load().await.unwrap();
        let later = crate::maintenance::remove_orphans(&store, &catalog, &crate::catalog::CatalogStore::Shared(a2))
            .await
            .unwrap();
        let mut later: Vec<String> = later.iter().map(|p| p.to_string()).collect();
        later.sort();
        assert_eq!(later, ["datasets/d/seg-2-a.parquet", "datasets/e/seg-6-a.parquet"]);
        let left = || -> Vec<&str> {
            files
                .iter()
                .map(|(f, _)| *f)
                .filter(|f| dir.path().join("datasets").join(f).exists())
                .collect()
        };
        assert_eq!(left().len(), files.len(), "nothing deleted before the grace");
        let grace = std::time::Duration::from_millis(200);
        crate::maintenance::delete_later(store.clone(), later.iter().map(|p| p.as_str().into()).collect(), grace);
        tokio::time::sleep(grace / 2).await;
        assert_eq!(left().len(), files.len(), "nothing deleted before the grace");
        tokio::time::sleep(grace * 2).await;
        assert_eq!(
            left(),
            [
                "d/seg-1-a.parquet",
                "e/seg-5-b.parquet",
                "e/seg-7-a.parquet",
                "e/seg-8-b.parquet"
            ]
        );
    }

    /// An ingest node's stores replay, on a query node, to the same segments and WAL position;
    /// a second ingest node is refused the dataset and names the owner.
    #[tokio::test]
    async fn an_ingest_nodes_stores_reach_a_query_node_and_a_second_writer_is_refused() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let ingest = node(&store, "a", Role::Ingest);
        let query = node(&store, "q", Role::Query);
        let other = node(&store, "b", Role::Ingest);
        let d = DatasetName::new("d").unwrap();
        assert!(ingest.load().await.unwrap().datasets.is_empty());
        assert!(query.load().await.unwrap().datasets.is_empty());
        // Up: its member file is fresh (a node without one counts as down).
        ingest.announce("http://127.0.0.1:1", None, 0).await.unwrap();
        ingest.claim(&d).await.unwrap();
        let e = other.claim(&d).await.unwrap_err();
        assert!(e.to_string().contains("ingest node a"), "{e}");
        let e = query.claim(&d).await.unwrap_err();
        assert!(e.to_string().contains("--role query"), "{e}");

        let mut catalog = Catalog {
            version: CATALOG_VERSION,
            next_segment_id: 1,
            datasets: BTreeMap::new(),
        };
        // Each step is one record: a compaction that also moves the WAL position (3 replaces
        // 1 and 2 while the position goes to 10) is one `Replace`, never a `Replace` and a
        // `Flush` a crash could split.
        let mut steps = vec![entry(&[1], 5), entry(&[1, 2], 9), entry(&[3], 10), entry(&[3, 4], 12)];
        steps.push(DatasetEntry {
            flushed_lsn: Lsn(12),
            deleted: true,
            ..Default::default()
        });
        let records = || {
            let store = store.clone();
            async move {
                use futures::TryStreamExt;
                let listed: Vec<_> = store
                    .list(Some(&Path::from("catalog/d/log")))
                    .try_collect()
                    .await
                    .unwrap();
                listed.len()
            }
        };
        for step in steps {
            let before = records().await;
            catalog.datasets.insert(d.clone(), step.clone());
            ingest.store(&catalog).await.unwrap();
            // Storing the same catalog again commits nothing.
            ingest.store(&catalog).await.unwrap();
            assert_eq!(records().await, before + 1, "one record for {step:?}");
            let changed = query.follow().await.unwrap();
            assert_eq!(changed.len(), 1);
            let got = &changed[0].1;
            let ids = |e: &DatasetEntry| e.segments.iter().map(|s| s.id).collect::<Vec<_>>();
            let want_ids = if step.deleted { vec![] } else { ids(&step) };
            assert_eq!((ids(got), got.flushed_lsn), (want_ids, step.flushed_lsn));
            assert!(query.follow().await.unwrap().is_empty(), "nothing new");
        }
        // A restarted ingest node takes its dataset again, at a new epoch.
        let again = node(&store, "a", Role::Ingest);
        let loaded = again.load().await.unwrap();
        assert_eq!(loaded.datasets[&d].flushed_lsn, Lsn(12));
        assert!(loaded.next_segment_id > 4);
        assert!(again.owned_epoch(&d).is_some());
        // The old process is fenced.
        catalog.datasets.insert(d.clone(), entry(&[9], 13));
        let e = ingest.store(&catalog).await.unwrap_err();
        assert!(matches!(e, Error::NotOwner { .. }), "{e}");
    }
}

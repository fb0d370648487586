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
//! A dataset has one ingest node at a time. There is no forwarding or lease expiry yet: events
//! for a dataset another node owns are refused with an error that names the owner.

use crate::catalog::{CATALOG_VERSION, Catalog, DatasetEntry, SegmentId};
use crate::config::Role;
use crate::fresh::Owner;
use crate::shared_catalog::{Change, CommitError, LogState, SharedCatalog};
use crate::{Error, Result};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sonde_model::DatasetName;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// How many times a commit is retried after losing a race for a record number.
const COMMIT_ATTEMPTS: usize = 5;
/// An ingest node writes a checkpoint of a dataset's log (and prunes it) every this many records.
const CHECKPOINT_EVERY: u64 = 100;
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
    /// When it was last written (µs since the epoch): nodes write theirs again every
    /// [`HEARTBEAT`], so an older one is a node that is down.
    #[serde(default)]
    heartbeat_us: i64,
}

/// How often an ingest node writes its member file again.
pub(crate) const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);
/// A member file not written for this long is a node that is down (three heartbeats missed).
const MEMBER_STALE_US: i64 = 3 * HEARTBEAT.as_micros() as i64;

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
}

impl Followed {
    /// A dataset as read (or taken) just now: delivered and checkpointed through its state.
    fn new(log: SharedCatalog, state: LogState, epoch: u64) -> Followed {
        Followed {
            delivered: state.seq,
            checkpointed: state.seq,
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
}

fn log_error(e: impl std::fmt::Display) -> Error {
    Error::SharedCatalog(e.to_string())
}

impl NodeCatalogs {
    /// The shared catalog in `store`, as node `node` in `role` (not [`Role::All`]).
    pub(crate) fn new(store: Arc<dyn ObjectStore>, node: String, role: Role) -> NodeCatalogs {
        NodeCatalogs {
            store,
            node,
            role,
            datasets: tokio::sync::Mutex::new(BTreeMap::new()),
            owned: RwLock::new(HashMap::new()),
        }
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
        let tag = self.node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }) & ((1 << TAG_BITS) - 1);
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
        let mut datasets = self.datasets.lock().await;
        for name in self.names().await? {
            let log = SharedCatalog::new(self.store.clone(), name.clone(), self.node.clone());
            let mut state = log.load().await.map_err(log_error)?;
            if let Some(max) = state.entry.segments.iter().map(|s| s.id.0).max() {
                catalog.next_segment_id = catalog.next_segment_id.max((max >> TAG_BITS) + 1);
            }
            if state.owner.as_deref() != Some(self.node.as_str()) {
                continue;
            }
            let epoch = log.take(&mut state).await.map_err(log_error)?;
            self.owned.write().unwrap().insert(name.clone(), epoch);
            catalog.datasets.insert(name.clone(), state.entry.clone());
            datasets.insert(name, Followed::new(log, state, epoch));
        }
        Ok(catalog)
    }

    /// Makes this node the writer of `dataset` before it takes events for it: at once when it
    /// owns it already; by taking the next epoch when nobody does; refused when another node
    /// (or another process under this node's name) does.
    pub(crate) async fn claim(&self, dataset: &DatasetName) -> Result<()> {
        self.check_writer("take events")?;
        if self.owned.read().unwrap().contains_key(dataset) {
            return Ok(());
        }
        let mut datasets = self.datasets.lock().await;
        if self.owned.read().unwrap().contains_key(dataset) {
            return Ok(()); // claimed while this call waited for the lock
        }
        let log = SharedCatalog::new(self.store.clone(), dataset.clone(), self.node.clone());
        let mut state = log.load().await.map_err(log_error)?;
        // A take at the next epoch while nobody owns it, decided again after each lost race.
        // Owned by this node's name too means another process under the same name (this
        // one's own datasets were taken at start).
        let taken = log
            .commit_with(&mut state, COMMIT_ATTEMPTS, |s| {
                let epoch = s.epoch + 1;
                let node = self.node.clone();
                s.owner.is_none().then_some((epoch, Change::Take { epoch, node }))
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
        tracing::info!(dataset = %dataset, epoch, node = %self.node, "dataset claimed");
        datasets.insert(dataset.clone(), Followed::new(log, state, epoch));
        self.owned.write().unwrap().insert(dataset.clone(), epoch);
        Ok(())
    }

    /// Commits what differs between `catalog` and the log of each owned dataset, each dataset
    /// on its own (one that fails does not hold up the others; the first error is returned).
    /// Datasets the catalog no longer lists (or lists as deleted) lose all their segments. A
    /// dataset another node has taken is given up: its events are refused from then on.
    pub(crate) async fn store(&self, catalog: &Catalog) -> Result<()> {
        self.check_writer("change the catalog")?;
        let mut datasets = self.datasets.lock().await;
        let mut first_error = None;
        let mut lost = Vec::new();
        for (name, f) in datasets.iter_mut() {
            let now = match catalog.datasets.get(name) {
                Some(e) if !e.deleted => e.clone(),
                Some(e) => DatasetEntry {
                    flushed_lsn: e.flushed_lsn,
                    ..Default::default()
                },
                None => DatasetEntry::default(),
            };
            let epoch = f.epoch;
            // One record at a time, each decided from the log as it now is: after a failure
            // half-way, the next store commits only what is still missing.
            let committed = loop {
                match f
                    .log
                    .commit_with(&mut f.state, COMMIT_ATTEMPTS, |state| {
                        change(&state.entry, &now).map(|c| (epoch, c))
                    })
                    .await
                {
                    Ok(Some(_)) => continue,
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
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
                    tracing::error!(dataset = %name, %owner, "another node took the dataset: this node gives it up");
                    lost.push(name.clone());
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
        for name in lost {
            datasets.remove(&name);
            self.owned.write().unwrap().remove(&name);
        }
        if let Some(name) = catalog.datasets.keys().find(|n| !datasets.contains_key(*n)) {
            first_error.get_or_insert(Error::Invalid(format!(
                "dataset {name} has segments but this node does not own it in the shared catalog"
            )));
        }
        first_error.map_or(Ok(()), Err)
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

    /// The datasets this node owns (ingest), for the start-up sweep of unreferenced files.
    pub(crate) fn owned(&self) -> BTreeSet<DatasetName> {
        self.owned.read().unwrap().keys().cloned().collect()
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
    /// nodes reach it, and when (see [`HEARTBEAT`]). Written at each start, so a new address
    /// replaces the old one, and every heartbeat.
    pub(crate) async fn announce(&self, url: &str, started_us: i64) -> Result<()> {
        let member = Member {
            node: self.node.clone(),
            role: self.role.name().to_string(),
            url: url.to_string(),
            started_us,
            heartbeat_us: sonde_model::time::now_us(),
        };
        let body = serde_json::to_vec(&member).map_err(|e| Error::Invalid(e.to_string()))?;
        self.store.put(&member_path(&self.node), body.into()).await?;
        Ok(())
    }

    /// Every node that announced itself in `role` and wrote its member file within the last
    /// three heartbeats: (name, URL), in name order.
    pub(crate) async fn members(&self, role: Role) -> Result<Vec<(String, String)>> {
        let now = sonde_model::time::now_us();
        use futures::TryStreamExt;
        let listed: Vec<object_store::ObjectMeta> = self.store.list(Some(&Path::from("nodes"))).try_collect().await?;
        let mut members = Vec::new();
        for meta in listed {
            let bytes = self.store.get(&meta.location).await?.bytes().await?;
            match serde_json::from_slice::<Member>(&bytes) {
                Ok(m) if m.role == role.name() && now - m.heartbeat_us <= MEMBER_STALE_US => {
                    members.push((m.node, m.url))
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(file = %meta.location, error = %e, "unreadable member file skipped"),
            }
        }
        members.sort();
        Ok(members)
    }

    /// The address a node announced (`None` if it has no member file).
    pub(crate) async fn member_url(&self, node: &str) -> Result<Option<String>> {
        match self.store.get(&member_path(node)).await {
            Ok(got) => {
                let bytes = got.bytes().await?;
                let member: Member = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::SharedCatalog(format!("member file of node {node}: {e}")))?;
                Ok(Some(member.url))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The record that turns `before` into `after`, if they differ: a `Replace` when segments
/// were taken out (with those put in their place and the WAL position, in one record), else a
/// `Flush` for the segments added and the WAL position reached.
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
    if !removed.is_empty() {
        Some(Change::Replace {
            removed,
            added,
            flushed_lsn,
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

    fn entry(ids: &[u64], lsn: u64) -> DatasetEntry {
        DatasetEntry {
            flushed_lsn: Lsn(lsn),
            segments: ids.iter().map(|i| seg(*i)).collect(),
            ..Default::default()
        }
    }

    /// An ingest node's stores replay, on a query node, to the same segments and WAL position;
    /// a second ingest node is refused the dataset and names the owner.
    #[tokio::test]
    async fn an_ingest_nodes_stores_reach_a_query_node_and_a_second_writer_is_refused() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let ingest = NodeCatalogs::new(store.clone(), "a".into(), Role::Ingest);
        let query = NodeCatalogs::new(store.clone(), "q".into(), Role::Query);
        let other = NodeCatalogs::new(store.clone(), "b".into(), Role::Ingest);
        let d = DatasetName::new("d").unwrap();
        assert!(ingest.load().await.unwrap().datasets.is_empty());
        assert!(query.load().await.unwrap().datasets.is_empty());
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
        let again = NodeCatalogs::new(store.clone(), "a".into(), Role::Ingest);
        let loaded = again.load().await.unwrap();
        assert_eq!(loaded.datasets[&d].flushed_lsn, Lsn(12));
        assert!(loaded.next_segment_id > 4);
        assert!(again.owned().contains(&d));
        // The old process is fenced.
        catalog.datasets.insert(d.clone(), entry(&[9], 13));
        let e = ingest.store(&catalog).await.unwrap_err();
        assert!(matches!(e, Error::NotOwner { .. }), "{e}");
    }
}

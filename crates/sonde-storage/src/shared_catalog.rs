//! The shared catalog: one dataset's segments as a create-only log in an object store, so that
//! several Sonde processes over one bucket (ingest nodes, compaction, query nodes) agree on
//! them without another service — the way InfluxDB 3 keeps its catalog.
//!
//! Layout, under `catalog/<dataset>/` in the store:
//!
//! - `log/<seq>.json`: immutable records, numbered from 1 with 20 digits so that name order is
//!   number order. Each is written with `PutMode::Create` (`If-None-Match: *` on S3, a hard link
//!   on a local directory, a check under a lock in memory): of writers racing for one number
//!   exactly one wins, and the others get [`CommitError::Conflict`], read the records they
//!   missed and decide again. Nothing is ever overwritten, because `PutMode::Update` does not
//!   exist on a local directory.
//! - `checkpoint/<seq>.json`: the state through that record, so that a reader lists and reads
//!   only the records after the newest checkpoint (one LIST and a GET or two, not the whole
//!   history). Checkpoints are created the same way; a checkpoint is never required, the log
//!   alone gives the same state.
//!
//! **Ownership and fencing.** A dataset has one writer of flushes at a time, the holder of its
//! *epoch*: a [`Change::Take`] record raises the epoch and names the node. Every other record
//! carries its writer's epoch, and [`SharedCatalog::commit`] refuses one whose epoch is not the
//! current one ([`CommitError::Fenced`]). Because a record can only be written at the number
//! after the last one its writer read, a writer that missed a `Take` loses the race for that
//! number, reads the `Take`, and finds itself fenced: a stale owner can never add a segment
//! after its successor took over. On replay, records of a stale epoch are skipped as well, so a
//! writer that does not check cannot change the state either.
//!
//! **Handing over.** When a node takes a dataset whose writer went quiet (its lease ran out,
//! see `node_catalog`), that writer may still hold acknowledged events in its WAL that no
//! segment has. Restarted, it flushes them and commits them as a [`Change::Handover`]: a
//! record any node but the owner may add at the current epoch, which adds its segments and
//! raises only that node's own WAL position ([`LogState::flushed_by`]). Each writer's position
//! is kept apart because WAL positions are per node: a `Take` by another node starts the
//! dataset's position at the taker's own, so its replay and the query nodes' fresh copies count
//! from its WAL, and a handover retried after it landed finds its position reached and adds
//! nothing.
//!
//! **Pruning.** [`SharedCatalog::prune`] deletes the checkpoints older than the newest and the
//! records more than [`KEEP_RECORDS`] before it. A writer that read its state before all of
//! those records were written could then re-create a deleted record's name; so a commit looks,
//! after its write, for a checkpoint that far past its own number, and if there is one removes
//! its record and answers [`CommitError::Conflict`]. (Pruning follows the checkpoint, so the
//! LIST after the write sees it; and a legitimate record cannot have `KEEP_RECORDS` records and
//! a checkpoint after it in the moment between its write and that LIST.)

pub use crate::catalog::DatasetEntry;
use crate::catalog::{ColumnEntry, SegmentId, SegmentMeta};
use crate::wal::Lsn;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sonde_model::DatasetName;
use std::sync::Arc;

/// Digits of a record's or checkpoint's number in its name.
const SEQ_DIGITS: usize = 20;
/// Records kept before the newest checkpoint when pruning.
pub const KEEP_RECORDS: u64 = 1000;

/// One change to a dataset's segments, as committed to the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// `node` becomes the dataset's writer at `epoch` (higher than the current one).
    Take {
        /// The new epoch.
        epoch: u64,
        /// The node taking over.
        node: String,
    },
    /// New segments flushed from the write buffer, and how far into the owner's WAL the
    /// dataset's events are now in segments.
    Flush {
        /// The segments added.
        segments: Vec<SegmentMeta>,
        /// Every event of the dataset at or below this position of the owner's WAL is in a
        /// segment.
        flushed_lsn: Lsn,
    },
    /// Segments replaced by others holding the same events (compaction), or removed (retention,
    /// deletion: `added` empty); with the WAL position reached in the same record, so that a
    /// crash never leaves the log with segments whose events it says are still to replay.
    Replace {
        /// The segments taken out.
        removed: Vec<SegmentId>,
        /// The segments put in.
        added: Vec<SegmentMeta>,
        /// As in `Flush` (the dataset's position only rises; 0 leaves it).
        #[serde(default)]
        flushed_lsn: Lsn,
        /// A deletion: every segment taken out, and the events acknowledged before it gone
        /// (a former writer's handover of older events is refused from then on).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        deleted: bool,
    },
    /// Segments of a former writer's events that no segment had when another node took the
    /// dataset (its WAL's tail, flushed at its restart), with how far into *its* WAL they go.
    /// Written by that node at whatever epoch is current; never by the owner.
    Handover {
        /// The segments added.
        segments: Vec<SegmentMeta>,
        /// Every event of the dataset at or below this position of the writer's WAL is in a
        /// segment.
        flushed_lsn: Lsn,
    },
}

/// A record of the log: a change, who made it and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Its number: one more than the record before it.
    pub seq: u64,
    /// The writer's epoch (for a `Take`, the epoch taken).
    pub epoch: u64,
    /// The writer's node name.
    pub node: String,
    /// When it was written (µs since the epoch, the writer's clock), for people reading it.
    pub written_us: i64,
    /// What changed (nested: a `Take` names its own epoch).
    pub change: Change,
}

/// A dataset's state after some prefix of its log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogState {
    /// The number of the last record applied (0: none).
    pub seq: u64,
    /// The current epoch (0: never taken).
    pub epoch: u64,
    /// The node holding the epoch.
    pub owner: Option<String>,
    /// Segments, columns and the WAL position reached, as the single-node catalog keeps them.
    pub entry: DatasetEntry,
    /// Records skipped on replay because their epoch was stale (a writer that did not check).
    #[serde(default)]
    pub stale_records: u64,
    /// How far into each writer's own WAL the dataset's events are in segments (WAL positions
    /// are per node). `entry.flushed_lsn` is the owner's.
    #[serde(default)]
    pub flushed_by: std::collections::BTreeMap<String, Lsn>,
    /// The epoch each node last took the dataset at.
    #[serde(default)]
    pub took: std::collections::BTreeMap<String, u64>,
    /// The epoch of the dataset's last deletion (0: never deleted).
    #[serde(default)]
    pub deleted_at_epoch: u64,
}

impl LogState {
    /// Applies the record that follows this state.
    fn apply(&mut self, r: &Record) -> Result<(), CatalogLogError> {
        if r.seq != self.seq + 1 {
            return Err(CatalogLogError::Corrupt(format!(
                "record {} follows record {}: the log has a gap",
                r.seq, self.seq
            )));
        }
        self.seq = r.seq;
        match &r.change {
            Change::Take { epoch, node } if *epoch > self.epoch => {
                if self.owner.as_deref() == Some(node.as_str()) {
                    // Taken again by its writer (a restart): its position goes on.
                    self.raise(node, self.entry.flushed_lsn);
                } else {
                    // The former owner's position kept first (a state read from a checkpoint
                    // written before positions were kept per node has only the dataset's).
                    if let Some(old) = self.owner.clone() {
                        self.raise(&old, self.entry.flushed_lsn);
                    }
                    // Another node's WAL: the position is where that node's own events of the
                    // dataset were (nothing, unless it wrote it before).
                    self.entry.flushed_lsn = self.flushed_by.get(node).copied().unwrap_or_default();
                }
                self.epoch = *epoch;
                self.owner = Some(node.clone());
                self.took.insert(node.clone(), *epoch);
            }
            Change::Take { .. } => self.stale_records += 1,
            Change::Handover { segments, flushed_lsn } => {
                self.add(segments)?;
                self.raise(&r.node, *flushed_lsn);
            }
            _ if r.epoch != self.epoch => self.stale_records += 1,
            // A record at the current epoch is its holder's (a compactor may commit under the
            // owner's epoch): the position is in the owner's WAL.
            Change::Flush { segments, flushed_lsn } => {
                self.add(segments)?;
                self.raise_owners(*flushed_lsn);
                // Events after a deletion make the dataset again.
                self.entry.deleted &= segments.is_empty();
            }
            Change::Replace {
                removed,
                added,
                flushed_lsn,
                deleted,
            } => {
                self.entry.segments.retain(|s| !removed.contains(&s.id));
                self.add(added)?;
                self.entry.columns = columns_of(&self.entry.segments);
                self.raise_owners(*flushed_lsn);
                if *deleted {
                    self.entry.deleted = true;
                    self.deleted_at_epoch = self.epoch;
                }
            }
        }
        Ok(())
    }

    /// Whether `node`'s handover of events it acknowledged while it wrote the dataset may
    /// still be added: not once the dataset was deleted after its last epoch (the deletion
    /// dropped every event acknowledged before it, those included).
    pub fn takes_handover_from(&self, node: &str) -> bool {
        self.deleted_at_epoch <= self.took.get(node).copied().unwrap_or_default()
    }

    /// Raises the owner's WAL position.
    fn raise_owners(&mut self, lsn: Lsn) {
        match self.owner.clone() {
            Some(owner) => self.raise(&owner, lsn),
            None => self.entry.flushed_lsn = self.entry.flushed_lsn.max(lsn),
        }
    }

    /// Raises `node`'s WAL position (and the dataset's, when `node` is the owner).
    fn raise(&mut self, node: &str, lsn: Lsn) {
        let at = self.flushed_by.entry(node.to_string()).or_default();
        *at = (*at).max(lsn);
        if self.owner.as_deref() == Some(node) {
            self.entry.flushed_lsn = self.entry.flushed_lsn.max(lsn);
        }
    }

    fn add(&mut self, segments: &[SegmentMeta]) -> Result<(), CatalogLogError> {
        for s in segments {
            if self.entry.segments.iter().any(|o| o.id == s.id) {
                return Err(CatalogLogError::Corrupt(format!("segment {} is added twice", s.id)));
            }
            for (name, ty) in &s.columns {
                ColumnEntry::sight(&mut self.entry.columns, name, *ty, s.min_ts_us, s.max_ts_us);
            }
            self.entry.segments.push(s.clone());
        }
        Ok(())
    }
}

/// The columns of a set of segments (after some were taken out, their columns may narrow).
fn columns_of(segments: &[SegmentMeta]) -> std::collections::BTreeMap<String, ColumnEntry> {
    let mut state = LogState::default();
    state.add(segments).expect("segments already checked for duplicates");
    state.entry.columns
}

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another writer took the record's number first: read the log again and decide again.
    #[error("another writer committed record {seq} of {dataset} first")]
    Conflict {
        /// The dataset.
        dataset: DatasetName,
        /// The number lost.
        seq: u64,
    },
    /// The writer's epoch is not the dataset's current one: another node owns it now.
    #[error("{dataset} is owned by {owner:?} at epoch {current}; this writer's epoch {mine} is stale")]
    Fenced {
        /// The dataset.
        dataset: DatasetName,
        /// The writer's epoch.
        mine: u64,
        /// The current epoch.
        current: u64,
        /// Its holder.
        owner: Option<String>,
    },
    /// The store or the log failed.
    #[error(transparent)]
    Log(#[from] CatalogLogError),
}

/// A failure reading or writing the log.
#[derive(Debug, thiserror::Error)]
pub enum CatalogLogError {
    /// The object store failed.
    #[error("catalog log: object store error: {0}")]
    Store(#[from] object_store::Error),
    /// The log cannot be read as written (a gap, an unreadable record).
    #[error("catalog log is corrupt: {0}")]
    Corrupt(String),
}

/// One dataset's shared catalog in an object store (see the module's documentation).
#[derive(Debug, Clone)]
pub struct SharedCatalog {
    store: Arc<dyn ObjectStore>,
    dataset: DatasetName,
    /// `catalog/<dataset>`.
    root: Path,
    /// This process's node name, written into its records.
    node: String,
}

impl SharedCatalog {
    /// The catalog of `dataset` in `store`, written to as `node`.
    pub fn new(store: Arc<dyn ObjectStore>, dataset: DatasetName, node: impl Into<String>) -> SharedCatalog {
        let root = Path::from("catalog").join(dataset.as_str());
        SharedCatalog {
            store,
            dataset,
            root,
            node: node.into(),
        }
    }

    fn name(&self, dir: &str, seq: u64) -> Path {
        self.root.clone().join(dir).join(format!("{seq:0SEQ_DIGITS$}.json"))
    }

    /// The numbers under `dir` (`log` or `checkpoint`) after `after`, in order.
    async fn list(&self, dir: &str, after: u64) -> Result<Vec<u64>, CatalogLogError> {
        let prefix = self.root.clone().join(dir);
        let offset = self.name(dir, after);
        let mut seqs: Vec<u64> = self
            .store
            .list_with_offset(Some(&prefix), &offset)
            .map_ok(|m| m.location)
            .try_collect::<Vec<Path>>()
            .await?
            .into_iter()
            .filter_map(|p| {
                p.filename()
                    .and_then(|f| f.strip_suffix(".json"))
                    .and_then(|s| s.parse().ok())
            })
            .filter(|s| *s > after)
            .collect();
        // Name order is number order, but not every store lists in order.
        seqs.sort_unstable();
        Ok(seqs)
    }

    async fn read<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<T, CatalogLogError> {
        let bytes = self.store.get(path).await?.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| CatalogLogError::Corrupt(format!("{path}: {e}")))
    }

    /// The dataset's current state: the newest checkpoint, then every record after it.
    pub async fn load(&self) -> Result<LogState, CatalogLogError> {
        let mut state = match self.list("checkpoint", 0).await?.last() {
            Some(seq) => self.read(&self.name("checkpoint", *seq)).await?,
            None => LogState::default(),
        };
        self.refresh(&mut state).await?;
        Ok(state)
    }

    /// Brings a state up to the log's end: one LIST, and a GET per record it missed.
    pub async fn refresh(&self, state: &mut LogState) -> Result<(), CatalogLogError> {
        for seq in self.list("log", state.seq).await? {
            let record: Record = self.read(&self.name("log", seq)).await?;
            if record.seq != seq {
                return Err(CatalogLogError::Corrupt(format!(
                    "log/{seq} holds record {}",
                    record.seq
                )));
            }
            state.apply(&record)?;
        }
        Ok(())
    }

    /// Commits `change` as the record after `state`, made at `epoch`, and applies it to
    /// `state`. A `Take` must raise the epoch; any other change must be made at the current one.
    pub async fn commit(&self, state: &mut LogState, epoch: u64, change: Change) -> Result<u64, CommitError> {
        let allowed = match &change {
            Change::Take { epoch: taken, .. } => *taken > state.epoch && *taken == epoch,
            Change::Handover { .. } => epoch == state.epoch && state.owner.as_deref() != Some(self.node.as_str()),
            _ => epoch == state.epoch && epoch > 0,
        };
        if !allowed {
            return Err(CommitError::Fenced {
                dataset: self.dataset.clone(),
                mine: epoch,
                current: state.epoch,
                owner: state.owner.clone(),
            });
        }
        let record = Record {
            seq: state.seq + 1,
            epoch,
            node: self.node.clone(),
            written_us: sonde_model::time::now_us(),
            change,
        };
        let path = self.name("log", record.seq);
        let body = PutPayload::from(Bytes::from(serde_json::to_vec(&record).expect("a record serialises")));
        let opts = PutOptions::from(PutMode::Create);
        let conflict = || CommitError::Conflict {
            dataset: self.dataset.clone(),
            seq: record.seq,
        };
        match self.store.put_opts(&path, body, opts).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => return Err(conflict()),
            Err(e) => return Err(CatalogLogError::from(e).into()),
        }
        // A record number that far below a checkpoint was pruned, and is being written again
        // by a writer that read an old state: it is not part of the log. Take it back.
        if !self.list("checkpoint", record.seq + KEEP_RECORDS - 1).await?.is_empty() {
            self.store.delete(&path).await.map_err(CatalogLogError::from)?;
            return Err(conflict());
        }
        state.apply(&record)?;
        Ok(record.seq)
    }

    /// Commits what `decide` makes of the current state, reading the log again and deciding
    /// again each time another writer was first (at most `attempts` times). `decide` answers
    /// `None` when nothing is left to do; the answer is the state after the commit.
    pub async fn commit_with<F>(
        &self,
        state: &mut LogState,
        attempts: usize,
        mut decide: F,
    ) -> Result<Option<u64>, CommitError>
    where
        F: FnMut(&LogState) -> Option<(u64, Change)>,
    {
        let mut left = attempts.max(1);
        loop {
            let Some((epoch, change)) = decide(state) else {
                return Ok(None);
            };
            match self.commit(state, epoch, change).await {
                Err(CommitError::Conflict { .. }) if left > 1 => {
                    left -= 1;
                    self.refresh(state).await?;
                }
                r => return r.map(Some),
            }
        }
    }

    /// Takes the dataset for this node at the next epoch: the answer is the epoch taken. Fails
    /// with `Conflict` when another writer committed first (read again: someone may have taken
    /// it meanwhile).
    pub async fn take(&self, state: &mut LogState) -> Result<u64, CommitError> {
        let epoch = state.epoch + 1;
        let change = Change::Take {
            epoch,
            node: self.node.clone(),
        };
        self.commit(state, epoch, change).await?;
        Ok(epoch)
    }

    /// Writes a checkpoint of `state` (a no-op when one exists at its number already).
    pub async fn checkpoint(&self, state: &LogState) -> Result<(), CatalogLogError> {
        let body = PutPayload::from(Bytes::from(serde_json::to_vec(state).expect("a state serialises")));
        match self
            .store
            .put_opts(
                &self.name("checkpoint", state.seq),
                body,
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes what the newest checkpoint covers: every older checkpoint, and every record more
    /// than [`KEEP_RECORDS`] before it (those stay for people reading the history, and fence
    /// writers far behind). Returns how many objects were deleted.
    pub async fn prune(&self) -> Result<usize, CatalogLogError> {
        let checkpoints = self.list("checkpoint", 0).await?;
        let Some(&newest) = checkpoints.last() else {
            return Ok(0);
        };
        let mut doomed: Vec<Path> = checkpoints[..checkpoints.len() - 1]
            .iter()
            .map(|s| self.name("checkpoint", *s))
            .collect();
        let upto = newest.saturating_sub(KEEP_RECORDS);
        let records: Vec<u64> = self.list("log", 0).await?.into_iter().filter(|s| *s <= upto).collect();
        doomed.extend(records.iter().map(|s| self.name("log", *s)));
        for path in &doomed {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(doomed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_model::ColumnType;

    fn segment(id: u64) -> SegmentMeta {
        SegmentMeta {
            id: SegmentId(id),
            path: format!("segments/x/{id}.parquet"),
            rows: 10,
            min_ts_us: id as i64,
            max_ts_us: id as i64 + 5,
            columns: vec![(format!("c{}", id % 3), ColumnType::Int)],
            ..Default::default()
        }
    }

    fn flush(ids: std::ops::Range<u64>, lsn: u64) -> Change {
        Change::Flush {
            segments: ids.map(segment).collect(),
            flushed_lsn: Lsn(lsn),
        }
    }

    /// An in-memory store (atomic under a lock) and a local directory (hard links).
    fn stores(dir: &std::path::Path) -> Vec<Arc<dyn ObjectStore>> {
        vec![
            Arc::new(object_store::memory::InMemory::new()),
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap()),
        ]
    }

    fn catalog(store: &Arc<dyn ObjectStore>, node: &str) -> SharedCatalog {
        SharedCatalog::new(store.clone(), DatasetName::new("x").unwrap(), node)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_writers_racing_for_one_record_exactly_one_wins_and_the_others_retry() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()) {
            let owner = catalog(&store, "a");
            let mut state = owner.load().await.unwrap();
            let epoch = owner.take(&mut state).await.unwrap();
            assert_eq!((epoch, state.seq), (1, 1));
            // Eight writers (the owner's flusher and compactions, say) from the same state,
            // all at once, for record 2.
            let race = (0..8u64).map(|i| {
                let (owner, mut state) = (owner.clone(), state.clone());
                tokio::spawn(async move { owner.commit(&mut state, 1, flush(i * 10..i * 10 + 1, i)).await })
            });
            let results: Vec<_> = futures::future::join_all(race)
                .await
                .into_iter()
                .map(|r| r.unwrap())
                .collect();
            let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
            assert_eq!(won.len(), 1, "{results:?}");
            assert!(
                results
                    .iter()
                    .filter(|r| r.is_err())
                    .all(|r| matches!(r, Err(CommitError::Conflict { seq: 2, .. })))
            );
            // Each loser reads again and commits after the others: nothing lost, nothing twice.
            let retries = (0..8u64).map(|i| {
                let owner = owner.clone();
                tokio::spawn(async move {
                    let mut state = owner.load().await.unwrap();
                    let id = i * 10;
                    owner
                        .commit_with(&mut state, 100, |s| {
                            let done = s.entry.segments.iter().any(|seg| seg.id == SegmentId(id));
                            (!done).then(|| (s.epoch, flush(id..id + 1, i)))
                        })
                        .await
                })
            });
            for r in futures::future::join_all(retries).await {
                r.unwrap().unwrap();
            }
            let end = owner.load().await.unwrap();
            let mut ids: Vec<u64> = end.entry.segments.iter().map(|s| s.id.0).collect();
            ids.sort();
            assert_eq!(ids, (0..8).map(|i| i * 10).collect::<Vec<_>>());
            assert_eq!(end.seq, 9);
            assert_eq!(end.entry.flushed_lsn, Lsn(7));
        }
    }

    #[tokio::test]
    async fn a_stale_owner_is_fenced_and_its_unchecked_records_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()) {
            let (a, b) = (catalog(&store, "a"), catalog(&store, "b"));
            let mut sa = a.load().await.unwrap();
            a.take(&mut sa).await.unwrap();
            a.commit(&mut sa, 1, flush(1..3, 10)).await.unwrap();
            // b takes over (a's lease ran out, say) and flushes.
            let mut sb = b.load().await.unwrap();
            assert_eq!(b.take(&mut sb).await.unwrap(), 2);
            b.commit(&mut sb, 2, flush(3..4, 4)).await.unwrap();
            // a, not knowing, loses the race for the next record, reads, and is fenced.
            let e = a.commit(&mut sa, 1, flush(4..5, 11)).await.unwrap_err();
            assert!(matches!(e, CommitError::Conflict { seq: 3, .. }), "{e}");
            a.refresh(&mut sa).await.unwrap();
            let e = a.commit(&mut sa, 1, flush(4..5, 11)).await.unwrap_err();
            assert!(
                matches!(
                    e,
                    CommitError::Fenced {
                        mine: 1,
                        current: 2,
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("owned by Some(\"b\") at epoch 2"), "{e}");
            // A record written behind the check's back at a stale epoch changes nothing.
            let forged = Record {
                seq: sa.seq + 1,
                epoch: 1,
                node: "a".into(),
                written_us: 0,
                change: flush(9..10, 99),
            };
            store
                .put(&a.name("log", forged.seq), serde_json::to_vec(&forged).unwrap().into())
                .await
                .unwrap();
            let end = b.load().await.unwrap();
            assert_eq!(end.stale_records, 1);
            assert_eq!(end.owner.as_deref(), Some("b"));
            let ids: Vec<u64> = end.entry.segments.iter().map(|s| s.id.0).collect();
            assert_eq!(ids, [1, 2, 3]);
            // WAL positions are each node's own: the dataset's is its owner's.
            assert_eq!(end.entry.flushed_lsn, Lsn(4));
            assert_eq!(end.flushed_by["a"], Lsn(10));
            // A take must raise the epoch.
            let e = b
                .commit(
                    &mut sb.clone(),
                    2,
                    Change::Take {
                        epoch: 2,
                        node: "b".into(),
                    },
                )
                .await
                .unwrap_err();
            assert!(matches!(e, CommitError::Fenced { .. }), "{e}");
        }
    }

    /// A former writer's handover adds its segments at whatever epoch is current, raises only
    /// its own WAL position, is refused to the owner, and adds nothing when retried; a take by
    /// a node that wrote the dataset before starts from that node's own position.
    #[tokio::test]
    async fn a_former_writer_hands_over_once_and_positions_stay_per_node() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()) {
            let (a, b) = (catalog(&store, "a"), catalog(&store, "b"));
            let mut sa = a.load().await.unwrap();
            a.take(&mut sa).await.unwrap();
            a.commit(&mut sa, 1, flush(1..2, 10)).await.unwrap();
            let mut sb = b.load().await.unwrap();
            b.take(&mut sb).await.unwrap();
            b.commit(&mut sb, 2, flush(2..3, 3)).await.unwrap();
            // a, restarted, hands over what its WAL held past position 10.
            let handover = |ids: std::ops::Range<u64>, lsn| Change::Handover {
                segments: ids.map(segment).collect(),
                flushed_lsn: Lsn(lsn),
            };
            let mut sa = a.load().await.unwrap();
            let decide = |s: &LogState| {
                (s.flushed_by.get("a").copied().unwrap_or_default() < Lsn(14)).then(|| (s.epoch, handover(5..7, 14)))
            };
            assert!(a.commit_with(&mut sa, 3, decide).await.unwrap().is_some());
            // Retried (its answer lost, say): the position says it landed.
            let mut again = a.load().await.unwrap();
            assert!(a.commit_with(&mut again, 3, decide).await.unwrap().is_none());
            // The owner cannot hand over to itself.
            b.refresh(&mut sb).await.unwrap();
            let e = b.commit(&mut sb, 2, handover(8..9, 20)).await.unwrap_err();
            assert!(matches!(e, CommitError::Fenced { .. }), "{e}");
            let end = b.load().await.unwrap();
            let ids: Vec<u64> = end.entry.segments.iter().map(|s| s.id.0).collect();
            assert_eq!(ids, [1, 2, 5, 6]);
            assert_eq!((end.entry.flushed_lsn, end.flushed_by["a"]), (Lsn(3), Lsn(14)));
            // a takes it back (b's lease ran out): the position is a's own again.
            let mut sa = a.load().await.unwrap();
            a.take(&mut sa).await.unwrap();
            assert_eq!((sa.owner.as_deref(), sa.entry.flushed_lsn), (Some("a"), Lsn(14)));
            // And a take by a node that never wrote it starts at nothing.
            let c = catalog(&store, "c");
            let mut sc = c.load().await.unwrap();
            c.take(&mut sc).await.unwrap();
            assert_eq!(sc.entry.flushed_lsn, Lsn(0));
            assert_eq!(sc.entry.segments.len(), 4);
        }
    }

    #[tokio::test]
    async fn checkpoints_and_pruning_give_the_state_the_whole_log_gives() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()) {
            let a = catalog(&store, "a");
            let mut s = a.load().await.unwrap();
            a.take(&mut s).await.unwrap();
            a.commit(&mut s, 1, flush(1..4, 3)).await.unwrap();
            a.commit(
                &mut s,
                1,
                Change::Replace {
                    removed: vec![SegmentId(1), SegmentId(2)],
                    added: vec![segment(5)],
                    flushed_lsn: Lsn::default(),
                    deleted: false,
                },
            )
            .await
            .unwrap();
            a.checkpoint(&s).await.unwrap();
            a.commit(
                &mut s,
                1,
                Change::Replace {
                    removed: vec![SegmentId(3)],
                    added: vec![],
                    flushed_lsn: Lsn::default(),
                    deleted: false,
                },
            )
            .await
            .unwrap();
            a.commit(&mut s, 1, flush(6..7, 8)).await.unwrap();
            let whole = a.load().await.unwrap();
            assert_eq!(whole, s);
            // Columns follow the segments left: c0 (segments 3, 6) and c2 (5); c1 went with 1.
            let cols: Vec<&String> = whole.entry.columns.keys().collect();
            assert_eq!(cols, ["c0", "c2"]);
            assert_eq!(whole.entry.columns["c0"].first_seen_us, 6);
            a.checkpoint(&s).await.unwrap();
            a.checkpoint(&s).await.unwrap();
            // Fewer records than are kept: only the older checkpoint goes.
            assert_eq!(a.prune().await.unwrap(), 1);
            assert_eq!(a.load().await.unwrap(), whole);
        }
    }

    #[tokio::test]
    async fn a_writer_far_behind_cannot_write_into_the_pruned_log() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let a = catalog(&store, "a");
        let mut s = a.load().await.unwrap();
        a.take(&mut s).await.unwrap();
        let behind = s.clone();
        for i in 0..KEEP_RECORDS + 5 {
            a.commit(&mut s, 1, flush(i + 10..i + 11, i)).await.unwrap();
        }
        a.checkpoint(&s).await.unwrap();
        assert_eq!(a.prune().await.unwrap(), 6);
        // Its record 2 was pruned: writing that name again is caught and taken back.
        let e = a.commit(&mut behind.clone(), 1, flush(1..2, 1)).await.unwrap_err();
        assert!(matches!(e, CommitError::Conflict { seq: 2, .. }), "{e}");
        assert!(store.head(&a.name("log", 2)).await.is_err());
        assert_eq!(a.load().await.unwrap(), s);
    }
}

//! Fresh events across a cluster: a query node keeps a copy of the events each ingest node
//! holds in its write buffer, so that it answers them before they are flushed.
//!
//! An ingest node's buffered events of a dataset are the events after the dataset's flushed
//! position `F` (its `flushed_lsn`), in one append-only order: the frozen buffers, oldest
//! first, then the active one. Until the next flush moves `F`, row `n` of that order stays row
//! `n`. A query node asks for the rows from `n` on **after `F`, at epoch `E`**:
//!
//! - the owner answers them only while its epoch is `E` and its flushed position is `F`; when it
//!   has flushed further it says so ([`BufferRead::Moved`]), and the query node reads the
//!   catalog again (the flush's record names the new segments and the new `F`);
//! - the query node adds them to its copy only while its own catalog is at `F` with the owner at
//!   `E` and the copy holds exactly `n` rows, and drops the copy in the same step (under the
//!   dataset's lock) in which its catalog moves past `F` or to another owner or epoch.
//!
//! So a snapshot on a query node — the segments through `F` plus the copy after `F` — holds each
//! acknowledged event the copy has reached exactly once, as on the ingest node itself. The copy is
//! behind the owner by at most one pull (`--fresh-interval`), and right after a flush by the
//! time the query node takes to read the flush's record.
//!
//! The copies are bounded (`--max-buffer-bytes`). Past the bound a query node stops copying but
//! goes on asking each owner how many rows it holds: a snapshot then names rows `[0, known)`, of
//! which the copy holds the first, and the query reads the rest from the owner when it runs
//! (`sonde_query::buffer_scan::FreshReader`), so an acknowledged event is answered whether or
//! not the copy reached it.

use crate::registry::DatasetState;
use crate::wal::Lsn;
use crate::{Error, Result, Storage, segment};
use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use sonde_model::DatasetName;

/// A query node's copy of one dataset's buffered events on its ingest node (see the module's
/// note).
#[derive(Debug)]
pub(crate) struct FreshRows {
    /// The ingest node and epoch the rows came from.
    owner: String,
    epoch: u64,
    /// The flushed position the rows follow.
    after: Lsn,
    batches: Vec<RecordBatch>,
    rows: u64,
    /// Rows the owner held after `after` at its last answer: `rows` and those the copy has not
    /// reached (past `--max-buffer-bytes`), which a query reads from the owner.
    known: u64,
    bytes: usize,
    time_bounds: Option<(i64, i64)>,
}

/// On an ingest node: a flush swapped in memory (its rows now in a segment) whose record the
/// shared catalog does not hold yet. Until it does, query nodes still read the catalog before
/// the flush, so they are served these rows as if still buffered.
#[derive(Debug)]
pub(crate) struct Uncommitted {
    /// The flushed position before the flush.
    pub(crate) from: Lsn,
    /// The flushed position after it.
    pub(crate) to: Lsn,
    /// The rows it flushed, in buffer order.
    pub(crate) batches: Vec<RecordBatch>,
    /// Their bytes, counted in the write buffers' bound until the record is stored.
    pub(crate) bytes: usize,
}

/// The ingest node that writes a dataset, at which epoch (as a query node last read it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    /// The node's name (`--node-name`).
    pub node: String,
    /// Its epoch.
    pub epoch: u64,
}

/// Where a query node's copy of a dataset's fresh events stood when a snapshot was taken: its
/// rows `[0, rows)` of the events after flushed position `after` on `owner`. Until `owner`
/// flushes past `after`, those rows are the same rows on every query node and on the owner, so
/// a plan can name them by this position instead of carrying them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FreshPosition {
    /// The ingest node and epoch the rows come from.
    pub owner: Owner,
    /// The flushed position they follow.
    pub after: Lsn,
    /// Rows the snapshot names: the copy's, and after them those the owner held at the copy's
    /// last pull that the copy has not reached (read from the owner when a query runs).
    pub rows: u64,
}

impl DatasetState {
    /// Where the copy stands, when it holds rows that follow the catalog's segments.
    pub(crate) fn fresh_position(&self) -> Option<FreshPosition> {
        match &self.fresh {
            Some(f) if f.after == self.flushed_lsn && f.known > 0 => Some(FreshPosition {
                owner: Owner {
                    node: f.owner.clone(),
                    epoch: f.epoch,
                },
                after: f.after,
                rows: f.known,
            }),
            _ => None,
        }
    }

    /// The copy's rows, when they follow the catalog's segments (always, by construction; the
    /// check keeps a broken invariant from doubling events).
    pub(crate) fn fresh_batches(&self) -> &[RecordBatch] {
        match &self.fresh {
            Some(f) if f.after == self.flushed_lsn => &f.batches,
            _ => &[],
        }
    }

    /// Rows the owner holds as last seen (copied or not), and the time bounds of the copy's.
    pub(crate) fn fresh_facts(&self) -> (u64, Option<(i64, i64)>) {
        match &self.fresh {
            Some(f) if f.after == self.flushed_lsn => (f.known, f.time_bounds),
            _ => (0, None),
        }
    }

    /// Rows the copy holds.
    fn fresh_copied(&self) -> u64 {
        match &self.fresh {
            Some(f) if f.after == self.flushed_lsn => f.rows,
            _ => 0,
        }
    }

    /// Drops the copy unless it still follows this catalog position and owner.
    pub(crate) fn keep_fresh_if_current(&mut self) {
        let current = match (&self.fresh, &self.owner) {
            (Some(f), Some(o)) => f.after == self.flushed_lsn && f.owner == o.node && f.epoch == o.epoch,
            _ => false,
        };
        if !current {
            self.fresh = None;
        }
    }
}

/// Rows `[from, to)` of `batches` taken as one sequence (numbered from 0), sliced without
/// copying; the answer stops after the batch that reaches about `max_bytes` (at least one
/// batch).
pub fn rows_between(batches: &[RecordBatch], from: u64, to: u64, max_bytes: usize) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let (mut at, mut bytes) = (0u64, 0usize);
    for b in batches {
        let n = b.num_rows() as u64;
        let (lo, hi) = (from.max(at), to.min(at + n));
        if lo < hi {
            let b = match (lo - at, hi - lo) {
                (0, len) if len == n => b.clone(),
                (skip, len) => b.slice(skip as usize, len as usize),
            };
            bytes += b.get_array_memory_size();
            out.push(b);
            if bytes >= max_bytes {
                break;
            }
        }
        at += n;
        if at >= to {
            break;
        }
    }
    out
}

/// What an ingest node answers a query node asking for a dataset's buffered events.
#[derive(Debug)]
pub enum BufferRead {
    /// The rows from the row asked for on (all of them, or the first within the byte bound),
    /// and how many rows the buffer holds in all.
    Rows {
        /// The rows, as batches with their own schemas.
        batches: Vec<RecordBatch>,
        /// Rows buffered in all after the flushed position.
        total_rows: u64,
    },
    /// The dataset is flushed through another position than the one asked for: read the
    /// catalog again, then ask after this one.
    Moved {
        /// The ingest node's flushed position.
        flushed_lsn: Lsn,
    },
}

/// A query node's distributed-SQL worker, as its member file announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// Where other query nodes reach it (gRPC).
    pub url: String,
    /// Which plans it runs: a fingerprint of its query engine's version and functions. A
    /// coordinator sends tasks only to workers with its own (a node of another version would
    /// refuse or misread them); empty when a member file of an older version has none.
    pub plans: String,
}

/// A dataset whose fresh events a query node copies, and where its copy stands.
#[derive(Debug, Clone)]
pub struct FreshTarget {
    /// The dataset.
    pub dataset: DatasetName,
    /// Its ingest node and epoch.
    pub owner: Owner,
    /// The flushed position the copy follows.
    pub after: Lsn,
    /// Rows the copy holds: the next pull asks from this row on.
    pub from_row: u64,
}

impl Storage {
    /// On an ingest node of a cluster: the buffered events of `dataset` after flushed position
    /// `after`, from row `from_row` on (and before row `to_row`, if given), while this node
    /// writes it at `epoch`; at most about `max_bytes` of them (at least one batch) per answer.
    pub fn buffered_since(
        &self,
        dataset: &DatasetName,
        epoch: u64,
        after: Lsn,
        from_row: u64,
        to_row: Option<u64>,
        max_bytes: usize,
    ) -> Result<BufferRead> {
        let Some(shared) = self.catalog_store.shared() else {
            return Err(Error::Role {
                role: self.config.role.name(),
                action: "serve its write buffer to query nodes",
            });
        };
        shared.check_writer("serve its write buffer to query nodes")?;
        let held = shared.owned_epoch(dataset);
        if held != Some(epoch) {
            return Err(Error::EpochMoved {
                dataset: dataset.clone(),
                asked: epoch,
                held,
            });
        }
        let Some(state) = self.dataset_state(dataset) else {
            return Ok(BufferRead::Rows {
                batches: Vec::new(),
                total_rows: 0,
            });
        };
        let mut st = state.lock().unwrap();
        // Flushed further than the asker's catalog: served as before while the flushes since are
        // not in the shared catalog (the asker could not read them), else read it again.
        let mut all: Vec<RecordBatch> = Vec::new();
        if st.flushed_lsn != after {
            let Some(start) = st.uncommitted.iter().position(|u| u.from == after) else {
                return Ok(BufferRead::Moved {
                    flushed_lsn: st.flushed_lsn,
                });
            };
            let chain = &st.uncommitted[start..];
            let linked = chain.windows(2).all(|w| w[0].to == w[1].from);
            if !linked || chain.last().map(|u| u.to) != Some(st.flushed_lsn) {
                return Ok(BufferRead::Moved {
                    flushed_lsn: st.flushed_lsn,
                });
            }
            all.extend(chain.iter().flat_map(|u| u.batches.iter().cloned()));
        }
        all.extend(st.frozen.iter().flat_map(|f| f.batches.iter().cloned()));
        if st.active.rows() > 0 {
            all.extend(st.active.query_batches());
        }
        drop(st);
        let total_rows: u64 = all.iter().map(|b| b.num_rows() as u64).sum();
        let batches = rows_between(&all, from_row, to_row.unwrap_or(u64::MAX), max_bytes);
        Ok(BufferRead::Rows { batches, total_rows })
    }

    /// On a query node of a cluster: the rows `[from, to)` of `dataset`'s copy of its fresh events,
    /// as far as the copy holds them after `after` on `owner` (sliced, in order), and the row
    /// they end at: `from` when the copy stands elsewhere (another owner, epoch or flushed
    /// position) or does not reach `from`.
    pub fn fresh_slice(
        &self,
        dataset: &DatasetName,
        owner: &Owner,
        after: Lsn,
        from: u64,
        to: u64,
    ) -> (Vec<RecordBatch>, u64) {
        let Some(state) = self.dataset_state(dataset) else {
            return (Vec::new(), from);
        };
        let st = state.lock().unwrap();
        let Some(f) = &st.fresh else {
            return (Vec::new(), from);
        };
        if f.owner != owner.node || f.epoch != owner.epoch || f.after != after || f.rows <= from {
            return (Vec::new(), from);
        }
        let end = to.min(f.rows);
        (rows_between(&f.batches, from, end, usize::MAX), end)
    }

    /// On a query node of a cluster: the datasets whose fresh events it copies (those with an
    /// ingest node), and where each copy stands.
    pub fn fresh_targets(&self) -> Vec<FreshTarget> {
        let states: Vec<_> = self
            .datasets
            .read()
            .unwrap()
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        states
            .into_iter()
            .filter_map(|(dataset, state)| {
                let st = state.lock().unwrap();
                // A deleted dataset too: the events its ingest node takes after the deletion
                // (past the deletion's WAL position) make it again, before any flush does.
                let owner = st.owner.clone()?;
                Some(FreshTarget {
                    dataset,
                    owner,
                    after: st.flushed_lsn,
                    from_row: st.fresh_copied(),
                })
            })
            .collect()
    }

    /// Bytes the query node's copies of fresh events hold, all datasets together.
    pub fn fresh_bytes(&self) -> usize {
        let states: Vec<_> = self.datasets.read().unwrap().values().cloned().collect();
        states
            .iter()
            .map(|s| s.lock().unwrap().fresh.as_ref().map_or(0, |f| f.bytes))
            .sum()
    }

    /// Adds the rows an ingest node answered for `target` to the dataset's copy (none, when the
    /// copies are full), and notes the `total` rows it said it holds, if the copy and the
    /// catalog still stand where `target` says (else they are dropped: the next pull asks
    /// again). Whether they were added.
    pub fn add_fresh(&self, target: &FreshTarget, batches: Vec<RecordBatch>, total: u64) -> bool {
        let Some(state) = self.dataset_state(&target.dataset) else {
            return false;
        };
        let mut st = state.lock().unwrap();
        if st.owner.as_ref() != Some(&target.owner) || st.flushed_lsn != target.after {
            return false;
        }
        let fresh = st.fresh.get_or_insert_with(|| FreshRows {
            owner: target.owner.node.clone(),
            epoch: target.owner.epoch,
            after: target.after,
            batches: Vec::new(),
            rows: 0,
            known: 0,
            bytes: 0,
            time_bounds: None,
        });
        if fresh.rows != target.from_row || fresh.after != target.after {
            return false;
        }
        for b in batches.into_iter().filter(|b| b.num_rows() > 0) {
            if let Ok(f) = segment::batches_facts(std::slice::from_ref(&b)) {
                fresh.time_bounds = Some(match fresh.time_bounds {
                    None => (f.min_ts_us, f.max_ts_us),
                    Some((lo, hi)) => (lo.min(f.min_ts_us), hi.max(f.max_ts_us)),
                });
            }
            fresh.rows += b.num_rows() as u64;
            fresh.bytes += segment::batch_bytes(&b);
            fresh.batches.push(b);
        }
        fresh.known = fresh.known.max(fresh.rows).max(total);
        true
    }

    /// On a node of a cluster: tells the other nodes where to reach it (its member file in the
    /// object store, `nodes/<node>.json`: its HTTP API, and on a query node its distributed-SQL
    /// worker), now and then every few seconds until `stop` resolves, so that they know it is
    /// up. Nothing on a single node. The first write's failure is returned (the node cannot be
    /// reached); later ones are logged and tried again.
    pub async fn announce(
        self: std::sync::Arc<Self>,
        url: String,
        worker: Option<Worker>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Option<tokio::task::JoinHandle<()>>> {
        let Some(shared) = self.catalog_store.shared() else {
            return Ok(None);
        };
        let started_us = sonde_model::time::now_us();
        shared.announce(&url, worker.as_ref(), started_us).await?;
        let storage = self.clone();
        let every = shared.heartbeat();
        Ok(Some(tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = &mut stop => return,
                }
                if let Some(shared) = storage.catalog_store.shared()
                    && let Err(e) = shared.announce(&url, worker.as_ref(), started_us).await
                {
                    tracing::warn!(error = %e, "writing this node's member file failed; trying again at the next heartbeat");
                }
            }
        })))
    }

    /// The base URL an ingest node announced, `None` when it never did (or this is no cluster).
    pub async fn node_url(&self, node: &str) -> Result<Option<String>> {
        match self.catalog_store.shared() {
            Some(shared) => shared.member_url(node).await,
            None => Ok(None),
        }
    }

    /// On a query node of a cluster: the ingest node that writes `dataset`, as last read from
    /// the shared catalog (`None`: nobody yet, or unknown).
    pub fn owner_of(&self, dataset: &DatasetName) -> Option<String> {
        let state = self.dataset_state(dataset)?;
        let st = state.lock().unwrap();
        st.owner.as_ref().map(|o| o.node.clone())
    }

    /// The ingest nodes that announced themselves in the bucket and are up (a member file written
    /// within the last `--lease`): (name, URL), in name order.
    pub async fn ingest_nodes(&self) -> Result<Vec<(String, String)>> {
        match self.catalog_store.shared() {
            Some(shared) => shared.members(crate::Role::Ingest).await,
            None => Ok(Vec::new()),
        }
    }

    /// The distributed-SQL workers of the query nodes that are up (a member file written within
    /// the last `--lease`), in node name order; none on a single node.
    pub async fn query_workers(&self) -> Result<Vec<Worker>> {
        match self.catalog_store.shared() {
            Some(shared) => shared.workers().await,
            None => Ok(Vec::new()),
        }
    }

    /// On an ingest node: puts a dataset this node just took (its segments from the log,
    /// which its next catalog store must keep) beside whatever it holds of it.
    pub(crate) fn install_taken(&self, dataset: &DatasetName, taken: Option<crate::catalog::DatasetEntry>) {
        let Some(entry) = taken else {
            return;
        };
        let state = self.dataset_state_or_create(dataset);
        let mut st = state.lock().unwrap();
        for segment in entry.segments {
            if st.segments.iter().any(|s| s.id == segment.id) {
                continue;
            }
            for (name, ty) in &segment.columns {
                let (min_us, max_us) = (segment.min_ts_us, segment.max_ts_us);
                crate::catalog::ColumnEntry::sight(&mut st.columns, name, *ty, min_us, max_us);
            }
            st.segments.push(std::sync::Arc::new(segment));
        }
        st.flushed_lsn = st.flushed_lsn.max(entry.flushed_lsn);
    }

    /// On an ingest node: forgets the segments of a dataset just handed over to the node that
    /// owns it (they are that node's now), and the dataset itself when nothing else of it is
    /// buffered here.
    pub(crate) fn forget_handed(&self, dataset: &DatasetName) {
        let mut map = self.datasets.write().unwrap();
        let Some(state) = map.get(dataset).cloned() else {
            return;
        };
        let mut st = state.lock().unwrap();
        st.segments.clear();
        if st.active.rows() == 0 && st.frozen.is_empty() {
            drop(st);
            map.remove(dataset);
        }
    }

    /// Records the ingest node and epoch of each dataset a query node follows, dropping the
    /// copies of fresh events taken from another.
    pub(crate) fn set_owners(&self, owners: Vec<(DatasetName, Option<Owner>)>) {
        for (name, owner) in owners {
            let Some(state) = self.dataset_state(&name) else {
                continue;
            };
            let mut st = state.lock().unwrap();
            st.owner = owner;
            st.keep_fresh_if_current();
        }
    }
}

/// The body of a buffer answer: each batch as its own Arrow IPC stream (batches may differ in
/// schema), preceded by its length as 8 little-endian bytes.
pub fn encode_batches(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for b in batches {
        let mut stream = Vec::new();
        let mut w = StreamWriter::try_new(&mut stream, &b.schema())?;
        w.write(b)?;
        w.finish()?;
        drop(w);
        out.extend_from_slice(&(stream.len() as u64).to_le_bytes());
        out.extend_from_slice(&stream);
    }
    Ok(out)
}

/// Reads a body written by [`encode_batches`].
pub fn decode_batches(mut body: &[u8]) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    while !body.is_empty() {
        let Some((len, rest)) = body.split_first_chunk::<8>() else {
            return Err(Error::Invalid("a buffer answer ends inside a frame's length".into()));
        };
        let len = u64::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(Error::Invalid("a buffer answer ends inside a frame".into()));
        }
        let (frame, rest) = rest.split_at(len);
        for b in StreamReader::try_new(frame, None)? {
            batches.push(b?);
        }
        body = rest;
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn rows_between_cut_every_range_once_in_order() {
        let batch = |lo: i64, hi: i64| {
            RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)])),
                vec![Arc::new(Int64Array::from((lo..hi).collect::<Vec<_>>()))],
            )
            .unwrap()
        };
        // Batches of 3, 0, 1 and 6 rows: values 0..10.
        let all = vec![batch(0, 3), batch(3, 3), batch(3, 4), batch(4, 10)];
        let values = |bs: Vec<RecordBatch>| -> Vec<i64> {
            bs.iter()
                .flat_map(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap()
                        .values()
                        .to_vec()
                })
                .collect()
        };
        for from in 0..=11 {
            for to in from..=12 {
                let want: Vec<i64> = (from as i64..(to as i64).min(10)).collect();
                assert_eq!(values(rows_between(&all, from, to, usize::MAX)), want, "[{from}, {to})");
            }
        }
        // A byte bound stops after the batch that reaches it, never before the first.
        assert_eq!(values(rows_between(&all, 1, 10, 1)), vec![1, 2]);
        assert_eq!(values(rows_between(&all, 3, 10, 1)), vec![3]);
    }

    #[test]
    fn frames_carry_batches_of_different_schemas_and_slices() {
        let a = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3, 4]))],
        )
        .unwrap();
        let b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec![Some("p"), None]))],
        )
        .unwrap();
        let sent = vec![a.slice(1, 2), b];
        let got = decode_batches(&encode_batches(&sent).unwrap()).unwrap();
        assert_eq!(got, sent);
        assert!(decode_batches(&encode_batches(&sent).unwrap()[..20]).is_err());
    }
}

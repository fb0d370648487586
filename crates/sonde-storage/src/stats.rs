//! Counters and per-dataset storage facts, for `/metrics` and the stats API.

use super::*;

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
    /// Of those, the ones that copied their inputs' row groups as they are, decoding only
    /// where the inputs overlap in time (`compaction::stitch`).
    pub compactions_joined: AtomicU64,
    /// Segments dropped by retention.
    pub segments_expired: AtomicU64,
    /// Segment files deleted (after compaction, retention or deletion, once unreferenced).
    pub segment_files_deleted: AtomicU64,
    /// Bytes cut from a torn WAL tail at the last start.
    pub wal_torn_bytes: AtomicU64,
    /// Bytes of damaged WAL records skipped at the last start (their files copied to quarantine).
    pub wal_corrupt_bytes: AtomicU64,
    /// On a query node of a cluster: fresh rows read from ingest nodes as queries ran (past
    /// this node's copies of their buffers, or the part of a plan's slice its copy lacked).
    pub fresh_rows_read: AtomicU64,
}

impl Storage {
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
}

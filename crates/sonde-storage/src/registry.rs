//! The datasets this node holds: per dataset its catalog state, frozen and active write
//! buffers; consistent snapshots for queries (each event in exactly one of segments and
//! buffers), facts for the schema API, and the WAL watermark.

use super::*;

/// A frozen buffer: taken out of the active buffer for flushing, still visible to queries
/// until its segment is in the catalog.
#[derive(Debug)]
pub(crate) struct Frozen {
    /// The buffer's sealed chunks, in arrival order, each with its own schema.
    pub(crate) batches: Vec<RecordBatch>,
    /// The schema the chunks make up together (the segment's).
    pub(crate) schema: SchemaRef,
    pub(crate) rows: usize,
    /// Event-time bounds (µs, inclusive).
    pub(crate) time_bounds: (i64, i64),
    pub(crate) min_lsn: Lsn,
    pub(crate) max_lsn: Lsn,
    pub(crate) bytes: usize,
}

#[derive(Debug, Default)]
pub(crate) struct DatasetState {
    /// Deleted and not written to since (see `DatasetEntry::deleted`). On a query node this
    /// stays set until the ingest node's first flush after the deletion; the events it takes
    /// before that are in the node's copy of its buffer (`fresh`), which makes the dataset again.
    pub(crate) deleted: bool,
    pub(crate) flushed_lsn: Lsn,
    pub(crate) columns: BTreeMap<String, ColumnEntry>,
    pub(crate) segments: Vec<Arc<SegmentMeta>>,
    pub(crate) frozen: Vec<Arc<Frozen>>,
    pub(crate) active: WriteBuffer,
    /// On an ingest node of a cluster: flushes swapped in memory whose catalog record is not
    /// yet stored, with their rows, which query nodes are still served (see `fresh`).
    pub(crate) uncommitted: Vec<crate::fresh::Uncommitted>,
    /// On a query node of a cluster: the dataset's ingest node and epoch, as last read.
    pub(crate) owner: Option<crate::fresh::Owner>,
    /// On a query node of a cluster: its copy of the ingest node's buffered events.
    pub(crate) fresh: Option<crate::fresh::FreshRows>,
}

impl DatasetState {
    /// Not answered: deleted (and, on a query node, no event copied since), or not born yet.
    fn hidden(&self) -> bool {
        (self.deleted && self.fresh_facts().0 == 0) || self.unborn()
    }

    /// Known but without events yet: on a query node, a dataset claimed by an ingest node whose
    /// first events are not copied yet. Not listed, as a single node lists no dataset before
    /// its first event.
    fn unborn(&self) -> bool {
        self.segments.is_empty()
            && self.flushed_lsn == Lsn::default()
            && self.frozen.is_empty()
            && self.active.rows() == 0
            && self.fresh_facts().0 == 0
    }

    pub(crate) fn min_unflushed_lsn(&self) -> Option<Lsn> {
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
    /// On a query node of a cluster: where its copy of the ingest node's buffer stood, when
    /// `buffered` is that copy (see [`crate::fresh::FreshPosition`]); `None` elsewhere.
    pub fresh: Option<crate::fresh::FreshPosition>,
}

impl DatasetSnapshot {
    /// On a query node of a cluster: the rows `[from, to)` the snapshot's fresh position names
    /// that its `buffered` rows (the copy) do not hold, the copy having stopped at
    /// `--max-buffer-bytes`; `None` when it holds them all.
    pub fn fresh_rows_missing(&self) -> Option<(u64, u64)> {
        let at = self.fresh.as_ref()?;
        let held: u64 = self.buffered.iter().map(|b| b.num_rows() as u64).sum();
        (held < at.rows).then_some((held, at.rows))
    }

    /// Adds the rows [`Self::fresh_rows_missing`] names, read from the ingest node, after the
    /// copy's, widening the columns over them as over any buffered rows.
    pub fn add_fresh_rows(&mut self, batches: Vec<RecordBatch>) {
        for run in batches.chunk_by(|a, b| a.schema() == b.schema()) {
            if let Ok(facts) = segment::batches_facts(run) {
                merge_columns(&mut self.columns, &run[0].schema(), facts.min_ts_us, facts.max_ts_us);
            }
        }
        self.buffered.extend(batches.into_iter().filter(|b| b.num_rows() > 0));
    }

    /// The columns a query may name, with their types: the dataset's, plus `samplerate`
    /// (`timestamp` is named by the time range, not as a column).
    pub fn queryable_columns(&self) -> BTreeMap<String, ColumnType> {
        let mut columns: BTreeMap<String, ColumnType> = self.columns.iter().map(|(n, c)| (n.clone(), c.ty)).collect();
        columns.insert(sonde_model::SAMPLE_RATE_COLUMN.into(), ColumnType::Int);
        columns
    }
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

/// Moves a dataset's active buffer (if it holds events) to its frozen list, as one batch in
/// arrival order; the flusher sorts and writes it.
pub(crate) fn freeze_active(st: &mut DatasetState) {
    if st.active.rows() == 0 {
        return;
    }
    let active = std::mem::take(&mut st.active);
    let (min_lsn, max_lsn, bytes, rows) = (
        active.min_lsn().unwrap_or_default(),
        active.max_lsn(),
        active.approx_bytes(),
        active.rows(),
    );
    let time_bounds = active.time_bounds().unwrap_or_default();
    let (schema, batches) = active.into_batches();
    st.frozen.push(Arc::new(Frozen {
        batches,
        schema,
        rows,
        time_bounds,
        min_lsn,
        max_lsn,
        bytes,
    }));
}

pub(crate) fn merge_columns(columns: &mut BTreeMap<String, ColumnEntry>, schema: &SchemaRef, min_us: i64, max_us: i64) {
    for f in schema.fields() {
        if is_reserved(f.name()) {
            continue;
        }
        let Some(ty) = buffer::column_type_of(f.data_type()) else {
            continue;
        };
        ColumnEntry::sight(columns, f.name(), ty, min_us, max_us);
    }
}

impl Storage {
    pub(crate) fn dataset_state_or_create(&self, dataset: &DatasetName) -> Arc<Mutex<DatasetState>> {
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

    pub(crate) fn dataset_state(&self, dataset: &DatasetName) -> Option<Arc<Mutex<DatasetState>>> {
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
        if st.hidden() {
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
            widen(f.time_bounds);
        }
        if let Some(b) = st.active.time_bounds() {
            widen(b);
        }
        let (fresh_rows, fresh_bounds) = st.fresh_facts();
        if let Some(b) = fresh_bounds {
            widen(b);
        }
        Some(DatasetInfo {
            name: dataset.clone(),
            segment_rows: st.segments.iter().map(|s| s.rows).sum(),
            buffered_rows: (st.frozen.iter().map(|f| f.rows).sum::<usize>() + st.active.rows()) as u64 + fresh_rows,
            segments: st.segments.len(),
            segment_bytes: st.segments.iter().map(|s| s.bytes).sum(),
            time_bounds: bounds,
        })
    }

    /// A consistent snapshot of a dataset for querying, `None` if it does not exist.
    pub fn snapshot(&self, dataset: &DatasetName) -> Option<DatasetSnapshot> {
        let state = self.dataset_state(dataset)?;
        let mut st = state.lock().unwrap();
        if st.hidden() {
            return None;
        }
        let mut columns = st.columns.clone();
        let mut buffered: Vec<RecordBatch> = st.frozen.iter().flat_map(|f| f.batches.iter().cloned()).collect();
        if st.active.rows() > 0 {
            buffered.extend(st.active.query_batches());
        }
        // A query node's copy of its ingest node's buffer (empty elsewhere), named by its
        // position when it is all the snapshot buffers.
        let fresh = buffered.is_empty().then(|| st.fresh_position()).flatten();
        buffered.extend(st.fresh_batches().iter().cloned());
        // Consecutive chunks of one schema (most of a buffer's) are merged as one run: the same
        // columns over the union of their time spans, once per run rather than per chunk.
        for run in buffered.chunk_by(|a, b| a.schema() == b.schema()) {
            let Ok(facts) = segment::batches_facts(run) else {
                continue;
            };
            merge_columns(&mut columns, &run[0].schema(), facts.min_ts_us, facts.max_ts_us);
        }
        Some(DatasetSnapshot {
            dataset: dataset.clone(),
            segments: st.segments.clone(),
            buffered,
            columns,
            fresh,
        })
    }

    /// The lowest LSN that some write buffer still needs from the WAL.
    pub(crate) fn wal_watermark(&self) -> Lsn {
        // Read the applied LSN first: anything applied after this read has a higher LSN.
        let applied = Lsn(self.applied_lsn.load(Ordering::Acquire));
        // Events of a dataset another node took from this process stay for the handover at
        // its next start (see `NodeCatalogs::lost_floor`).
        let lost = self
            .catalog_store
            .shared()
            .and_then(|s| s.lost_floor())
            .map(|l| l.next());
        let map = self.datasets.read().unwrap();
        map.values()
            .filter_map(|s| s.lock().unwrap().min_unflushed_lsn())
            .chain(lost)
            .min()
            .unwrap_or(applied.next())
            .min(applied.next())
    }
}

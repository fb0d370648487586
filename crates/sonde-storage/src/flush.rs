//! Flushing: freezing buffers by size or age, writing each as a time-sorted Parquet segment,
//! verifying it, cataloging it, and dropping the WAL files every dataset has moved past; the
//! catalog snapshot that follows every change of the segment lists.

use super::*;

/// A segment file encoded in memory, with what is stored and checked beside it.
pub(crate) struct Built {
    /// The Parquet file.
    pub encoded: segment::Encoded,
    /// Its index file ([`crate::index`]).
    pub index_file: Vec<u8>,
    /// The rows given to the writer, to compare with the file read back.
    pub facts: segment::SegmentFacts,
    /// The rows' bytes in memory ([`SegmentMeta::raw_bytes`]).
    pub raw_bytes: u64,
}

impl Storage {
    /// Flushes every dataset's buffer to segments now (used at shutdown and by tests).
    pub async fn flush_all(&self) -> Result<()> {
        let names: Vec<_> = self.datasets.read().unwrap().keys().cloned().collect();
        for n in names {
            self.flush_dataset(&n).await?;
        }
        Ok(())
    }

    /// Flushes the datasets whose buffers are due by size or age.
    pub(crate) async fn flush_due(&self) -> Result<()> {
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
        // The watermark counts segments swapped in memory; a catalog store that failed since
        // (or a flush of another dataset's, refused) must be made good first, or the WAL
        // would lose events no stored catalog names.
        if self.catalog_dirty.load(Ordering::SeqCst) {
            self.persist_catalog().await?;
        }
        let watermark = self.wal_watermark();
        let removed = wal::remove_files_below(&wal::wal_dir(&self.config.data_dir), watermark)?;
        if removed > 0 {
            tracing::debug!(removed, watermark = watermark.0, "wal files removed");
        }
        Ok(())
    }

    /// Writes a frozen buffer's rows (batches in any time order, each brought to `schema`) as
    /// a new segment file (see [`Storage::persist_built`]).
    pub(crate) async fn persist_segment(
        &self,
        dataset: &DatasetName,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        min_lsn: Lsn,
        max_lsn: Lsn,
    ) -> Result<Arc<SegmentMeta>> {
        let opts = self.config.segment.clone();
        let index = self.index.clone();
        let write_schema = schema.clone();
        // Adapting, sorting, encoding, and indexing now while the rows are in memory.
        let build = move || -> Result<Built> {
            let batches = batches
                .iter()
                .map(|b| segment::adapt_to_schema(b, &write_schema))
                .collect::<Result<Vec<_>>>()?;
            Ok(Built {
                facts: segment::batches_facts(&batches)?,
                raw_bytes: batches.iter().map(|b| b.get_array_memory_size()).sum::<usize>() as u64,
                index_file: index.file_for_batches(&batches)?,
                encoded: segment::encode(&write_schema, &batches, &opts)?,
            })
        };
        self.persist_built(dataset, schema, build, min_lsn, max_lsn).await
    }

    /// Writes a new segment file of `schema` that `build` encodes (off the async workers): put,
    /// fsync, read back and compare row count and time bounds with what `build` says it wrote.
    /// The catalog does not name it yet.
    pub(crate) async fn persist_built(
        &self,
        dataset: &DatasetName,
        schema: SchemaRef,
        build: impl FnOnce() -> Result<Built> + Send + 'static,
        min_lsn: Lsn,
        max_lsn: Lsn,
    ) -> Result<Arc<SegmentMeta>> {
        let shared = self.catalog_store.shared();
        let id = match shared {
            None => SegmentId(self.next_segment_id.fetch_add(1, Ordering::SeqCst)),
            Some(node) => node.segment_id(&self.next_segment_id),
        };
        let path = segment_path(dataset, id, shared.map(|n| n.node()));
        let Built {
            encoded,
            index_file: idx,
            facts: before,
            raw_bytes,
        } = tokio::task::spawn_blocking(build)
            .await
            .map_err(|e| Error::TaskFailed(format!("segment encoder panicked: {e}")))??;
        let size = encoded.bytes.len() as u64;
        let store_path = StorePath::from(path.as_str());
        self.store.put(&store_path, encoded.bytes.into()).await?;
        self.sync_local(&path)?;
        // The index file is a cache: a failure to write it only costs a rebuild later.
        let idx_path = index::index_path(&path);
        if let Err(e) = self.store.put(&StorePath::from(idx_path.as_str()), idx.into()).await {
            tracing::warn!(file = %idx_path, error = %e, "could not write index file");
        }
        // The other side of the disk: read the file's timestamps back and compare.
        let after = segment::read_stored_facts(self.store.clone(), store_path, size).await?;
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

    pub(crate) async fn write_segment(
        &self,
        dataset: &DatasetName,
        state: &Mutex<DatasetState>,
        frozen: &Arc<Frozen>,
    ) -> Result<()> {
        let meta = self
            .persist_segment(
                dataset,
                frozen.schema.clone(),
                frozen.batches.clone(),
                frozen.min_lsn,
                frozen.max_lsn,
            )
            .await?;
        let schema = frozen.schema.clone();
        {
            // Swap frozen → segment in one step, so a query sees each event exactly once.
            let mut st = state.lock().unwrap();
            merge_columns(&mut st.columns, &schema, meta.min_ts_us, meta.max_ts_us);
            st.segments.push(meta.clone());
            st.frozen.retain(|f| !Arc::ptr_eq(f, frozen));
            let before = st.flushed_lsn;
            st.flushed_lsn = st.flushed_lsn.max(frozen.max_lsn);
            if self.catalog_store.shared().is_some() {
                let to = st.flushed_lsn;
                st.uncommitted.push(crate::fresh::Uncommitted {
                    from: before,
                    to,
                    batches: frozen.batches.clone(),
                    bytes: frozen.bytes,
                });
            }
        }
        // Rows kept for query nodes until the catalog names their segment stay counted in the
        // write buffers' bound (released when `persist_catalog` trims them): a catalog that
        // keeps failing makes backpressure, not an unbounded list.
        if self.catalog_store.shared().is_none() {
            self.release_buffered(frozen.bytes);
        }
        self.persist_catalog().await?;
        self.stats.segments_flushed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(dataset = %dataset, segment = meta.id.0, rows = meta.rows, bytes = meta.bytes, "segment flushed");
        Ok(())
    }

    /// Fsyncs a segment file and its directory (the local store does not).
    pub(crate) fn sync_local(&self, path: &str) -> Result<()> {
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

    /// Stores the catalog again if the last store failed (see `catalog_dirty`).
    pub(crate) async fn store_if_dirty(&self) -> Result<()> {
        let _one_at_a_time = self.flush_lock.lock().await;
        if self.catalog_dirty.load(Ordering::SeqCst) {
            self.persist_catalog().await?;
        }
        Ok(())
    }

    /// Writes the catalog from the in-memory state of every dataset.
    pub(crate) async fn persist_catalog(&self) -> Result<()> {
        // Before the segment lists are read (see `graveyard`).
        let generation = self.graveyard.begin_catalog();
        let mut catalog = Catalog {
            version: catalog::CATALOG_VERSION,
            next_segment_id: self.next_segment_id.load(Ordering::SeqCst),
            datasets: BTreeMap::new(),
        };
        let mut stored = Vec::new();
        for (name, state) in self.datasets.read().unwrap().iter() {
            let st = state.lock().unwrap();
            if !st.uncommitted.is_empty() {
                stored.push((state.clone(), st.flushed_lsn));
            }
            if st.segments.is_empty() && st.flushed_lsn == Lsn::default() {
                continue;
            }
            catalog.datasets.insert(
                name.clone(),
                DatasetEntry {
                    flushed_lsn: st.flushed_lsn,
                    columns: st.columns.clone(),
                    segments: st.segments.iter().map(|s| (**s).clone()).collect(),
                    deleted: st.deleted,
                },
            );
        }
        self.catalog_dirty.store(true, Ordering::SeqCst);
        let outcome = self.catalog_store.store(&catalog).await?;
        self.catalog_dirty.store(false, Ordering::SeqCst);
        for (state, flushed) in stored {
            let mut st = state.lock().unwrap();
            let freed: usize = st.uncommitted.iter().filter(|u| u.to <= flushed).map(|u| u.bytes).sum();
            st.uncommitted.retain(|u| u.to > flushed);
            drop(st);
            self.release_buffered(freed);
        }
        for (name, segments) in outcome.adopted {
            let entry = DatasetEntry {
                segments,
                ..Default::default()
            };
            self.install_taken(&name, Some(entry));
        }
        for name in outcome.handed {
            self.forget_handed(&name);
        }
        self.graveyard.catalog_durable(generation);
        Ok(())
    }
}

/// A segment's file: with a node's name in it on a cluster, so that each ingest node knows
/// which files are its own to sweep.
pub(crate) fn segment_path(dataset: &DatasetName, id: SegmentId, node: Option<&str>) -> String {
    match node {
        None => format!("datasets/{dataset}/seg-{:012}.parquet", id.0),
        Some(node) => format!("datasets/{dataset}/seg-{:012}-{node}.parquet", id.0),
    }
}

pub(crate) async fn flush_loop(s: Arc<Storage>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let wait = s.flush_wanted.notified();
        if let Err(e) = s.flush_due().await {
            tracing::error!(error = %e, "flush failed; events stay in the buffer and the WAL");
        }
        s.reap_graveyard().await;
        tokio::select! {
            _ = wait => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

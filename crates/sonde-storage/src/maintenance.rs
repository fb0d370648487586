//! Background upkeep: compaction, retention, deletion of datasets, and deleting the files of
//! segments no longer cataloged (see `graveyard`); orphan files found at start.

use super::*;

impl Storage {
    /// Deletes the files of buried segments that no query holds any more.
    pub(crate) async fn reap_graveyard(&self) {
        for seg in self.graveyard.take_dead() {
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

    pub(crate) fn bury(&self, segments: impl IntoIterator<Item = Arc<SegmentMeta>>) {
        self.graveyard.bury(segments);
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

    pub(crate) async fn merge_group(
        &self,
        ds: &DatasetName,
        state: &Mutex<DatasetState>,
        group: Vec<Arc<SegmentMeta>>,
        types: &BTreeMap<String, ColumnType>,
    ) -> Result<()> {
        let mut files = Vec::with_capacity(group.len());
        let mut index_files = Vec::with_capacity(group.len());
        for s in &group {
            files.push(self.store.get(&StorePath::from(s.path.as_str())).await?.bytes().await?);
            let index_path = StorePath::from(crate::index::index_path(&s.path));
            // Only the join needs it: one that cannot be read leaves the merge to rebuild it.
            let index_file = match self.store.get(&index_path).await {
                Ok(got) => got.bytes().await.ok(),
                Err(_) => None,
            };
            index_files.push(index_file);
        }
        let schema = compaction::merged_schema(&group, types);
        let min_lsn = group.iter().map(|s| s.min_lsn).min().unwrap_or_default();
        let max_lsn = group.iter().map(|s| s.max_lsn).max().unwrap_or_default();
        let (inputs, merged_schema) = (group.clone(), schema.clone());
        let (opts, index) = (self.config.segment.clone(), self.index.clone());
        let joined = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let was_joined = joined.clone();
        let build = move || {
            // Inputs that follow each other in time with the same columns are joined as they
            // are; the others (or a join that fails) are merged row by row.
            let stitched = compaction::stitch(&files, &index_files, &inputs, &merged_schema, &opts, &index)
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "joining segments as they are failed; merging them row by row");
                    None
                });
            let built = match stitched {
                Some(built) => {
                    joined.store(true, Ordering::Relaxed);
                    built
                }
                None => compaction::merge(files, &inputs, &merged_schema, &opts, &index)?,
            };
            compaction::check_merged(&inputs, &built.facts)?;
            Ok(built)
        };
        let meta = self.persist_built(ds, schema, build, min_lsn, max_lsn).await?;
        let (id, path, rows, size) = (meta.id, meta.path.clone(), meta.rows, meta.bytes);
        let _one_at_a_time = self.flush_lock.lock().await;
        let swapped = {
            let mut st = state.lock().unwrap();
            let ids: std::collections::HashSet<SegmentId> = group.iter().map(|s| s.id).collect();
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
        let joined = was_joined.load(Ordering::Relaxed);
        if joined {
            self.stats.compactions_joined.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(dataset = %ds, segment = id.0, inputs = group.len(), rows, bytes = size, joined, "segments compacted");
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
                .get(name)
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
        if let Some(shared) = self.catalog_store.shared() {
            shared.check_writer("delete datasets")?;
        }
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
                .unwrap_or_default();
            let freed: usize = st.frozen.iter().map(|f| f.bytes).sum::<usize>() + st.active.approx_bytes();
            st.flushed_lsn = st.flushed_lsn.max(buffered_max);
            st.frozen.clear();
            st.active = WriteBuffer::default();
            st.columns.clear();
            st.deleted = true;
            self.release_buffered(freed);
            std::mem::take(&mut st.segments)
        };
        self.bury(segments);
        self.persist_catalog().await?;
        tracing::info!(dataset = %dataset, "dataset deleted");
        Ok(true)
    }
}

/// Compaction, retention and deletion of unreferenced files, every `maintenance_interval`.
pub(crate) async fn maintenance_loop(s: Arc<Storage>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(s.config.maintenance_interval) => {}
            // Told to stop, or the storage is gone.
            _ = stop.changed() => return,
        }
        // A catalog store that failed (the bucket down, a handover refused) is tried again here
        // too, not only at the next flush: an idle node would otherwise wait for its next event.
        if let Err(e) = s.store_if_dirty().await {
            tracing::error!(error = %e, "storing the catalog failed; trying again at the next flush or maintenance");
        }
        if let Err(e) = s.apply_retention().await {
            tracing::error!(error = %e, "retention failed");
        }
        if let Err(e) = s.compact().await {
            tracing::error!(error = %e, "compaction failed; the input segments stay");
        }
        s.reap_graveyard().await;
    }
}

/// Follows the shared catalog (a query node): every `catalog_refresh`, the datasets whose
/// segments changed get the log's segments, columns and WAL position.
pub(crate) async fn follow_loop(s: Arc<Storage>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = s.follow_catalog().await {
            tracing::warn!(error = %e, "reading the shared catalog failed; queries see the segments read before");
        }
        tokio::select! {
            _ = tokio::time::sleep(s.config.catalog_refresh) => {}
            _ = stop.changed() => return,
        }
    }
}

impl Storage {
    /// Reads the shared catalog's new records once (a query node; see [`follow_loop`]).
    pub async fn follow_catalog(&self) -> Result<()> {
        let Some(shared) = self.catalog_store.shared() else {
            return Ok(());
        };
        let _one_at_a_time = self.follow_lock.lock().await;
        for (name, entry) in shared.follow().await? {
            // A dataset only claimed so far is followed too: its first events are in its ingest
            // node's buffer, which this node copies (`fresh`).
            let deleted = gone(&entry);
            let state = self.dataset_state_or_create(&name);
            let mut st = state.lock().unwrap();
            // The same segment keeps its `Arc`, so snapshots and caches see one segment.
            let known: BTreeMap<SegmentId, Arc<SegmentMeta>> = st.segments.iter().map(|s| (s.id, s.clone())).collect();
            st.segments = entry
                .segments
                .into_iter()
                .map(|s| known.get(&s.id).cloned().unwrap_or_else(|| Arc::new(s)))
                .collect();
            st.columns = entry.columns;
            st.flushed_lsn = entry.flushed_lsn;
            st.deleted = deleted;
            // In the same step as the segments: a copy of fresh events after another position
            // would count the flushed ones twice.
            st.keep_fresh_if_current();
        }
        self.set_owners(shared.owners().await);
        Ok(())
    }
}

/// Whether a dataset followed in the shared catalog is gone for a query node: deleted (the log
/// says so in the deletion's record), until events taken after the deletion are copied from
/// its ingest node or flushed. One whose segments all aged out stays, as on a single node, and
/// its fresh events are answered.
fn gone(entry: &DatasetEntry) -> bool {
    entry.deleted
}

/// Deletes segment files the catalog does not name: left by a crash between writing a segment
/// and cataloging it (their events are still in the WAL and are replayed), or between
/// cataloging a compaction and deleting its inputs. An ingest node of a cluster deletes only
/// files with its name, older than the grace query nodes get, and looks in every dataset's
/// directory, as its log read at start names the files: a dataset another node writes now
/// may hold a segment of this node's crashed handover, or of its own once compacted away by
/// the new owner, which sweeps only its own.
///
/// On a cluster the files are not deleted here but returned, for [`delete_later`]: a file
/// the log stopped naming a moment before this start (compacted away by the dataset's new
/// owner) may still be read by a query node for the grace, however old the file itself is.
pub(crate) async fn remove_orphans(
    store: &Arc<dyn ObjectStore>,
    catalog: &Catalog,
    catalog_store: &CatalogStore,
) -> Result<Vec<StorePath>> {
    use futures::TryStreamExt;
    let mut known: std::collections::HashSet<String> = catalog
        .datasets
        .values()
        .flat_map(|d| {
            d.segments
                .iter()
                .flat_map(|s| [s.path.clone(), index::index_path(&s.path)])
        })
        .collect();
    // On a cluster: only files with this node's name, and only files older than the grace
    // query nodes get (a file buried before a restart may still be read).
    let (prefixes, mine) = match catalog_store.shared() {
        None => (vec![StorePath::from("datasets")], None),
        Some(node) => {
            let loaded = node.take_loaded_files();
            let prefixes = loaded
                .iter()
                .map(|(d, _)| StorePath::from("datasets").join(d.as_str()))
                .collect();
            known.extend(loaded.into_iter().flat_map(|(_, named)| named));
            (prefixes, Some(node.node().to_string()))
        }
    };
    let mut files: Vec<object_store::ObjectMeta> = Vec::new();
    for prefix in &prefixes {
        files.extend(store.list(Some(prefix)).try_collect::<Vec<_>>().await?);
    }
    let grace = chrono_grace();
    let mut later = Vec::new();
    for f in files {
        let writer = f.location.filename().and_then(segment_file_writer);
        let ours = match (&mine, writer) {
            (_, None) => false, // not a segment file: never ours to delete
            (None, Some(w)) => w.is_none(),
            (Some(node), Some(w)) => w == Some(node.as_str()) && f.last_modified < grace,
        };
        if ours && !known.contains(f.location.as_ref()) {
            if mine.is_some() {
                later.push(f.location);
            } else {
                tracing::warn!(file = %f.location, "removing orphan segment file");
                store.delete(&f.location).await?;
            }
        }
    }
    Ok(later)
}

/// Deletes `files` (a cluster's orphans from [`remove_orphans`]) once `grace` has passed, in
/// a task of its own; a file already gone is fine. A process stopped before then leaves them
/// to its next start.
pub(crate) fn delete_later(store: Arc<dyn ObjectStore>, files: Vec<StorePath>, grace: std::time::Duration) {
    if files.is_empty() {
        return;
    }
    tracing::info!(files = files.len(), after = ?grace, "orphan segment files of this node to remove after the grace");
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        for file in files {
            match store.delete(&file).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    tracing::warn!(file = %file, "removed orphan segment file")
                }
                Err(e) => tracing::warn!(file = %file, error = %e, "removing an orphan segment file failed"),
            }
        }
    });
}

/// The writer named in a segment file's name: `Some(None)` for a single server's
/// `seg-<id>.parquet`, `Some(Some(node))` for `seg-<id>-<node>.parquet` (either with `.idx`),
/// `None` for any other name.
fn segment_file_writer(name: &str) -> Option<Option<&str>> {
    let name = name.strip_suffix(".idx").unwrap_or(name);
    let rest = name.strip_prefix("seg-")?.strip_suffix(".parquet")?;
    let (id, node) = match rest.split_once('-') {
        Some((id, node)) => (id, Some(node)),
        None => (rest, None),
    };
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(node)
}

/// Files last modified before this are past [`SHARED_DELETE_GRACE`].
fn chrono_grace() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::from_std(SHARED_DELETE_GRACE).expect("a small duration")
}

#[cfg(test)]
mod file_name_tests {
    use super::segment_file_writer;

    #[test]
    fn segment_file_names_say_who_wrote_them() {
        assert_eq!(segment_file_writer("seg-000000000012.parquet"), Some(None));
        assert_eq!(segment_file_writer("seg-000000000012.parquet.idx"), Some(None));
        assert_eq!(segment_file_writer("seg-17-ingest-1.parquet"), Some(Some("ingest-1")));
        assert_eq!(
            segment_file_writer("seg-17-eu-ingest-1.parquet.idx"),
            Some(Some("eu-ingest-1"))
        );
        assert_eq!(segment_file_writer("notes.txt"), None);
        assert_eq!(segment_file_writer("seg-x.parquet"), None);
    }
}

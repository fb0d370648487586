//! The write path: capacity checks, encoding a request once, the WAL thread's group commit
//! (one append and one fsync for everything queued), and applying records to the write
//! buffers in LSN order before the ack.

use super::*;

/// One request's records on their way to the WAL thread: written in one append with
/// consecutive LSNs and acknowledged (or refused) together, so that a request spanning several
/// datasets is never half stored.
pub(crate) struct Commit {
    /// Per dataset, its events as encoded for the WAL; the write buffer is filled from these
    /// same bytes.
    pub(crate) records: Vec<(DatasetName, EncodedEvents)>,
    /// Answered with the last record's LSN.
    pub(crate) done: oneshot::Sender<Result<Lsn>>,
}

impl Commit {
    pub(crate) fn bytes(&self) -> usize {
        self.records.iter().map(|(d, e)| wal::payload_len(d, e)).sum()
    }
}

/// Where a record being applied to the write buffers comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Just written by the WAL thread.
    Live,
    /// Read back from the WAL at start: skipped when the catalog already covers its LSN.
    Replay,
}

impl Storage {
    /// Refuses new work while the write buffers are over their bound, or while the data
    /// directory's disk has less than `min_free_disk_bytes` free.
    pub fn check_capacity(&self) -> Result<()> {
        if self.config.min_free_disk_bytes > 0
            && let Some(free) = free_disk_bytes(&self.config.data_dir)
            && free < self.config.min_free_disk_bytes
        {
            return Err(Error::DiskFull(format!(
                "{free} bytes free in {}, below the limit of {} (set with --min-free-disk-bytes / SONDE_MIN_FREE_DISK_BYTES)",
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
        self.ingest_encoded(vec![(dataset.clone(), EncodedEvents::from_events(&events))])
            .await
    }

    /// Stores one request's events for several datasets together: one record per dataset,
    /// written in one append and acknowledged or refused together, so a refusal (backpressure,
    /// a full disk) leaves none of them stored and the client's retry doubles nothing. As for
    /// any request, a crash or an I/O error during the append itself leaves the answer unknown
    /// and the records that reached the disk are replayed: a retry then may store those twice
    /// (records carry no group marker). Returns the last record's LSN.
    pub async fn ingest_all(&self, batches: Vec<(DatasetName, Vec<Event>)>) -> Result<Lsn> {
        let encoded = batches
            .into_iter()
            .map(|(dataset, events)| (dataset, EncodedEvents::from_events(&events)))
            .collect();
        self.ingest_encoded(encoded).await
    }

    /// [`Storage::ingest_all`] for events already encoded by the decoder (the batch endpoint's
    /// path: no `Event` is made at all).
    pub async fn ingest_encoded(&self, batches: Vec<(DatasetName, EncodedEvents)>) -> Result<Lsn> {
        let records: Vec<_> = batches.into_iter().filter(|(_, events)| !events.is_empty()).collect();
        for (dataset, _) in &records {
            self.claim(dataset).await?;
        }
        if records.is_empty() {
            return Ok(Lsn(self.applied_lsn.load(Ordering::Acquire)));
        }
        self.check_capacity()?;
        let n: u64 = records.iter().map(|(_, e)| e.len() as u64).sum();
        let (done, rx) = oneshot::channel();
        let tx = self.commit_tx.lock().unwrap().clone().ok_or(Error::ShuttingDown)?;
        tx.send(Commit { records, done })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        let lsn = rx.await.map_err(|_| Error::ShuttingDown)??;
        self.stats.events_ingested.fetch_add(n, Ordering::Relaxed);
        Ok(lsn)
    }

    /// On an ingest node of a cluster, makes this node the dataset's writer before it takes its
    /// events (see `NodeCatalogs::claim`): `Error::NotOwner` names the node that writes it.
    /// Nothing to do on a single server.
    pub async fn claim(&self, dataset: &DatasetName) -> Result<()> {
        if let Some(shared) = self.catalog_store.shared() {
            let taken = shared.claim(dataset).await?;
            self.install_taken(dataset, taken);
        }
        Ok(())
    }

    /// The WAL thread: group commit, then apply in LSN order, then acknowledge.
    pub(crate) fn wal_loop(self: Arc<Self>, mut rx: mpsc::Receiver<Commit>, mut file: wal::WalFile, mut next_lsn: Lsn) {
        const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;
        let sync = self.config.durability == Durability::Fsync;
        let mut broken: Option<String> = None;
        while let Some(first) = rx.blocking_recv() {
            let mut bytes = first.bytes();
            let mut group = vec![first];
            while bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(c) => {
                        bytes += c.bytes();
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
            let records: usize = group.iter().map(|c| c.records.len()).sum();
            let framed_len = group
                .iter()
                .flat_map(|c| &c.records)
                .map(|(dataset, events)| wal::framed_len(dataset, events))
                .sum();
            // Framed straight into the WAL file's own (block-aligned) buffer.
            let framed = file.begin_group(framed_len);
            for (i, (dataset, events)) in group.iter().flat_map(|c| &c.records).enumerate() {
                wal::frame_record(framed, next_lsn.plus(i as u64), dataset, events);
            }
            if let Err(e) = file.write_group(sync) {
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
            self.stats.wal_records.fetch_add(records as u64, Ordering::Relaxed);
            for c in group {
                for (dataset, events) in &c.records {
                    let lsn = next_lsn;
                    next_lsn = next_lsn.next();
                    self.apply(lsn, dataset, Origin::Live, |buffer, known, now| {
                        buffer.append_encoded(lsn, events, known, now);
                    });
                    self.applied_lsn.store(lsn.0, Ordering::Release);
                }
                let _ = c.done.send(Ok(Lsn(next_lsn.0 - 1)));
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
    pub(crate) fn apply(
        &self,
        lsn: Lsn,
        dataset: &DatasetName,
        origin: Origin,
        fill: impl FnOnce(&mut WriteBuffer, buffer::KnownTypes<'_>, i64),
    ) -> bool {
        let state = self.dataset_state_or_create(dataset);
        let mut st = state.lock().unwrap();
        if origin == Origin::Replay && lsn <= st.flushed_lsn {
            return false;
        }
        st.deleted = false;
        let before = st.active.approx_bytes();
        let DatasetState { columns, active, .. } = &mut *st;
        let known = |name: &str| columns.get(name).map(|c| c.ty);
        fill(active, &known, sonde_model::time::now_us());
        // Sealing a chunk replaces the open chunk's estimate with the measured bytes, which
        // may be fewer.
        let after = active.approx_bytes();
        if after >= before {
            self.buffered_bytes.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.release_buffered(before - after);
        }
        if after >= buffer::MAX_BUFFER_BYTES {
            // The flusher is behind (a slow store, or limits set very high): freeze the buffer
            // here, so that one flush stays bounded.
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
}

impl Storage {
    /// Takes `bytes` off the buffered total (never below zero: the figure mixes estimates of
    /// open chunks with measured sealed ones).
    pub(crate) fn release_buffered(&self, bytes: usize) {
        let _ = self
            .buffered_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(bytes)));
    }
}

/// Free bytes (for unprivileged users) on the filesystem holding `dir`, if it can be read
/// (ingest pauses below `StorageConfig::min_free_disk_bytes`).
pub fn free_disk_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

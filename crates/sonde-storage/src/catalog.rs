//! The catalog: which segments each dataset has, and how far into the WAL they reach.
//!
//! It is one JSON file, `catalog.json`, replaced atomically (write `catalog.json.tmp`, fsync,
//! rename, fsync the directory), so a crash leaves either the old or the new catalog, never a
//! half-written one. A segment file exists on disk (fsynced) before the catalog names it, and
//! WAL files are deleted only after the catalog that covers them is durable: so at every
//! moment each acknowledged event is in the WAL, in a cataloged segment, or both — and replay
//! skips WAL records at or below a dataset's `flushed_lsn`, so it is never counted twice.

use crate::wal::Lsn;
use crate::{Error, Result};
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use sonde_model::{ColumnType, DatasetName};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file name of the catalog inside the data directory.
pub(crate) const CATALOG_FILE: &str = "catalog.json";
pub(crate) const CATALOG_VERSION: u32 = 1;

/// The whole catalog as persisted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Catalog {
    /// Format version, so that a future format change is detected rather than misread.
    pub version: u32,
    /// The id the next segment will get.
    pub next_segment_id: u64,
    /// Every dataset with at least one flushed segment, by name.
    pub datasets: BTreeMap<DatasetName, DatasetEntry>,
}

/// One dataset's persisted state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetEntry {
    /// Every WAL record of this dataset with an LSN at or below this is in `segments`.
    pub flushed_lsn: Lsn,
    /// The dataset's columns as of its segments (the write buffer may add more).
    pub columns: BTreeMap<String, ColumnEntry>,
    /// The dataset's segments, oldest first.
    pub segments: Vec<SegmentMeta>,
    /// Deleted: its segments are gone and WAL records up to `flushed_lsn` are not replayed. New
    /// events create it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// One column's type and when it was seen (event time, µs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnEntry {
    /// The column's type: the widest type of any segment.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Earliest event time of a segment holding the column.
    pub first_seen_us: i64,
    /// Latest event time of a segment holding the column.
    pub last_seen_us: i64,
}

impl ColumnEntry {
    /// Records a sighting of column `name` (of type `ty`, in events from `min_us` to `max_us`)
    /// in `columns`: a new entry, or merged into the one there.
    pub(crate) fn sight(
        columns: &mut BTreeMap<String, ColumnEntry>,
        name: &str,
        ty: ColumnType,
        min_us: i64,
        max_us: i64,
    ) {
        match columns.get_mut(name) {
            Some(c) => c.merge(ty, min_us, max_us),
            None => {
                columns.insert(
                    name.to_string(),
                    ColumnEntry {
                        ty,
                        first_seen_us: min_us,
                        last_seen_us: max_us,
                    },
                );
            }
        }
    }

    /// Merges another sighting of the column into this one.
    pub fn merge(&mut self, ty: ColumnType, min_us: i64, max_us: i64) {
        self.ty = self.ty.widen(ty);
        self.first_seen_us = self.first_seen_us.min(min_us);
        self.last_seen_us = self.last_seen_us.max(max_us);
    }
}

/// A segment's number, unique in the data directory (or bucket) and never reused; its own type
/// so it is never mixed up with a row count or an LSN. Stored as a plain number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SegmentId(pub u64);

impl std::fmt::Display for SegmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One Parquet segment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Unique id within the data directory.
    pub id: SegmentId,
    /// Object-store path of the Parquet file, relative to the store's root.
    pub path: String,
    /// Number of events.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// Size of the same rows in memory (Arrow), for the compression ratio.
    #[serde(default)]
    pub raw_bytes: u64,
    /// Earliest event time (µs).
    pub min_ts_us: i64,
    /// Latest event time (µs).
    pub max_ts_us: i64,
    /// Lowest WAL LSN whose events are in this segment.
    pub min_lsn: Lsn,
    /// Highest WAL LSN whose events are in this segment.
    pub max_lsn: Lsn,
    /// The segment's own columns and types (older segments may have narrower types).
    pub columns: Vec<(String, ColumnType)>,
    /// Its columns with many distinct values when written (ids, addresses, users,
    /// measurements; see `segment::MANY_GROUPS`): a breakdown by one of them has many groups.
    #[serde(default)]
    pub distinct_columns: Vec<String>,
}

impl Catalog {
    /// A catalog with no datasets, for a new data directory or bucket.
    fn empty() -> Catalog {
        Catalog {
            version: CATALOG_VERSION,
            next_segment_id: 1,
            datasets: BTreeMap::new(),
        }
    }

    /// Reads a stored catalog, refusing one of another version (whichever store it came from).
    fn decode(bytes: &[u8], path: &Path) -> Result<Catalog> {
        let corrupt = |reason: String| Error::CatalogCorrupt {
            path: path.to_path_buf(),
            reason,
        };
        let c: Catalog = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if c.version != CATALOG_VERSION {
            return Err(corrupt(format!(
                "version {} is not the supported {}",
                c.version, CATALOG_VERSION
            )));
        }
        Ok(c)
    }
}

/// Where the catalog lives: a file in the data directory beside the segments, or an object in
/// the bucket that holds them. One `load` and one `store` for both, so both check the version
/// and both are atomic and durable when they return.
#[derive(Debug, Clone)]
pub(crate) enum CatalogStore {
    /// `catalog.json` in this directory: written to a temporary file, fsynced, renamed, and
    /// the directory fsynced (on the blocking pool).
    Local(PathBuf),
    /// `catalog.json` in this object store: a PUT is atomic (readers see the old or the new
    /// catalog) and durable when answered; this server is the single writer.
    Remote(Arc<dyn ObjectStore>),
    /// Per-dataset create-only logs in the object store that several nodes share
    /// (`--role ingest` / `--role query`, see `node_catalog`).
    Shared(Arc<crate::node_catalog::NodeCatalogs>),
}

impl CatalogStore {
    /// The catalog, or an empty one if none was stored yet.
    pub(crate) async fn load(&self) -> Result<Catalog> {
        match self {
            CatalogStore::Local(dir) => {
                let path = dir.join(CATALOG_FILE);
                match std::fs::read(&path) {
                    Ok(bytes) => Catalog::decode(&bytes, &path),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Catalog::empty()),
                    Err(e) => Err(e.into()),
                }
            }
            CatalogStore::Remote(store) => match store.get(&object_store::path::Path::from(CATALOG_FILE)).await {
                Ok(r) => Catalog::decode(&r.bytes().await?, Path::new(CATALOG_FILE)),
                Err(object_store::Error::NotFound { .. }) => Ok(Catalog::empty()),
                Err(e) => Err(e.into()),
            },
            CatalogStore::Shared(node) => node.load().await,
        }
    }

    /// This node's view of the shared catalog, when there is one.
    pub(crate) fn shared(&self) -> Option<&crate::node_catalog::NodeCatalogs> {
        match self {
            CatalogStore::Shared(node) => Some(node),
            _ => None,
        }
    }

    /// Replaces the stored catalog atomically and durably; on a cluster's ingest node, answers
    /// the segments taken in and the datasets handed on (see `NodeCatalogs::store`). Not
    /// to be cancelled: the local write
    /// runs on the blocking pool and would go on without the caller's flush lock (every caller
    /// runs on a task of its own: the flusher, maintenance, a deletion's spawned task).
    pub(crate) async fn store(&self, catalog: &Catalog) -> Result<crate::node_catalog::Stored> {
        let bytes = || serde_json::to_vec(catalog).expect("catalog serialises");
        match self {
            CatalogStore::Shared(node) => node.store(catalog).await,
            CatalogStore::Local(dir) => {
                let (dir, bytes) = (dir.clone(), bytes());
                tokio::task::spawn_blocking(move || crate::documents::replace_file(&dir, CATALOG_FILE, &bytes))
                    .await
                    .map_err(|e| Error::TaskFailed(format!("catalog write panicked: {e}")))??;
                Ok(Default::default())
            }
            CatalogStore::Remote(store) => {
                store
                    .put(&object_store::path::Path::from(CATALOG_FILE), bytes().into())
                    .await?;
                Ok(Default::default())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn store_and_load_locally_and_in_an_object_store_with_the_version_checked() {
        let d = tempfile::tempdir().unwrap();
        let memory: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        for store in [
            CatalogStore::Local(d.path().to_path_buf()),
            CatalogStore::Remote(memory.clone()),
        ] {
            let mut c = store.load().await.unwrap();
            assert_eq!(c.next_segment_id, 1);
            c.datasets.insert(
                DatasetName::new("x").unwrap(),
                DatasetEntry {
                    flushed_lsn: Lsn(7),
                    ..Default::default()
                },
            );
            store.store(&c).await.unwrap();
            assert_eq!(
                store.load().await.unwrap().datasets[&DatasetName::new("x").unwrap()].flushed_lsn,
                Lsn(7)
            );
            // A catalog of another version is refused on both paths (the object store's path
            // used to take it as it was).
            c.version = CATALOG_VERSION + 1;
            store.store(&c).await.unwrap();
            let e = store.load().await.unwrap_err();
            assert!(e.to_string().contains("not the supported"), "{e}");
        }
        std::fs::write(d.path().join(CATALOG_FILE), b"{\"vers").unwrap();
        assert!(matches!(
            CatalogStore::Local(d.path().to_path_buf()).load().await,
            Err(Error::CatalogCorrupt { .. })
        ));
    }
}

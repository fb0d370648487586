//! The catalog: which segments each dataset has, and how far into the WAL they reach.
//!
//! It is one JSON file, `catalog.json`, replaced atomically (write `catalog.json.tmp`, fsync,
//! rename, fsync the directory), so a crash leaves either the old or the new catalog, never a
//! half-written one. A segment file exists on disk (fsynced) before the catalog names it, and
//! WAL files are deleted only after the catalog that covers them is durable: so at every
//! moment each acknowledged event is in the WAL, in a cataloged segment, or both — and replay
//! skips WAL records at or below a dataset's `flushed_lsn`, so it is never counted twice.

use crate::wal::{Lsn, sync_dir};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sonde_model::ColumnType;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// The file name of the catalog inside the data directory.
pub const CATALOG_FILE: &str = "catalog.json";
const CATALOG_VERSION: u32 = 1;

/// The whole catalog as persisted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Catalog {
    /// Format version, so that a future format change is detected rather than misread.
    pub version: u32,
    /// The id the next segment will get.
    pub next_segment_id: u64,
    /// Every dataset with at least one flushed segment, by name.
    pub datasets: BTreeMap<String, DatasetEntry>,
}

/// One dataset's persisted state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// Merges another sighting of the column into this one.
    pub fn merge(&mut self, ty: ColumnType, min_us: i64, max_us: i64) {
        self.ty = self.ty.widen(ty);
        self.first_seen_us = self.first_seen_us.min(min_us);
        self.last_seen_us = self.last_seen_us.max(max_us);
    }
}

/// One Parquet segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Unique id within the data directory.
    pub id: u64,
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
    /// Loads the catalog from the data directory, or an empty one if there is none yet.
    pub fn load(data_dir: &Path) -> Result<Catalog> {
        let path = data_dir.join(CATALOG_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let c: Catalog = serde_json::from_slice(&bytes).map_err(|e| Error::CatalogCorrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                if c.version != CATALOG_VERSION {
                    return Err(Error::CatalogCorrupt {
                        path,
                        reason: format!("version {} is not the supported {}", c.version, CATALOG_VERSION),
                    });
                }
                Ok(c)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Catalog {
                version: CATALOG_VERSION,
                next_segment_id: 1,
                datasets: BTreeMap::new(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Loads the catalog from an object store (remote storage), or an empty one.
    pub async fn load_from(store: &std::sync::Arc<dyn object_store::ObjectStore>) -> Result<Catalog> {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from(CATALOG_FILE);
        match store.get(&path).await {
            Ok(r) => {
                let bytes = r.bytes().await?;
                let c: Catalog = serde_json::from_slice(&bytes).map_err(|e| Error::CatalogCorrupt {
                    path: CATALOG_FILE.into(),
                    reason: e.to_string(),
                })?;
                Ok(c)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(Catalog {
                version: CATALOG_VERSION,
                next_segment_id: 1,
                datasets: BTreeMap::new(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the catalog in an object store. An object PUT is atomic (readers see the old or
    /// the new catalog) and durable when answered; this server is the single writer.
    pub async fn store_to(&self, store: &std::sync::Arc<dyn object_store::ObjectStore>) -> Result<()> {
        use object_store::ObjectStoreExt;
        let bytes = serde_json::to_vec(self).expect("catalog serialises");
        store
            .put(&object_store::path::Path::from(CATALOG_FILE), bytes.into())
            .await?;
        Ok(())
    }

    /// Replaces the catalog on disk atomically and durably.
    pub fn store(&self, data_dir: &Path) -> Result<()> {
        let tmp = data_dir.join(format!("{CATALOG_FILE}.tmp"));
        let bytes = serde_json::to_vec(self).expect("catalog serialises");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, data_dir.join(CATALOG_FILE))?;
        sync_dir(data_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_load() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Catalog::load(d.path()).unwrap();
        assert_eq!(c.next_segment_id, 1);
        c.datasets.insert(
            "x".into(),
            DatasetEntry {
                flushed_lsn: 7,
                ..Default::default()
            },
        );
        c.store(d.path()).unwrap();
        let back = Catalog::load(d.path()).unwrap();
        assert_eq!(back.datasets["x"].flushed_lsn, 7);
        std::fs::write(d.path().join(CATALOG_FILE), b"{\"vers").unwrap();
        assert!(matches!(Catalog::load(d.path()), Err(Error::CatalogCorrupt { .. })));
    }
}

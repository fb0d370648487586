//! Damaged files found at start: checked, moved aside, reported, and the rest served.
//!
//! Every cataloged segment's size and Parquet footer are checked when storage opens (one head
//! and one footer read each, so a start over thousands of segments stays quick). A segment that
//! fails is moved to `quarantine/<its path>` — kept for whoever wants to inspect or repair it —
//! and dropped from the catalog, so that queries over the dataset's other segments keep working
//! instead of failing on it. Damaged WAL records are handled by [`crate::wal::replay`], which
//! copies the file to `quarantine/wal/` and skips to the next intact record.

use crate::catalog::{Catalog, SegmentMeta};
use crate::{Error, Result};
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::file::metadata::ParquetMetaDataReader;
use serde::Serialize;
use sonde_model::DatasetName;
use std::sync::Arc;

/// Where quarantined files go, under the store's root (and the data directory for the WAL).
pub(crate) const QUARANTINE_DIR: &str = "quarantine";

/// A segment taken out of service.
#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    /// Its dataset.
    pub dataset: String,
    /// Where it was.
    pub path: String,
    /// Where it is now.
    pub moved_to: String,
    /// Events the catalog said it held (now missing from queries).
    pub rows: u64,
    /// What was wrong with it.
    pub reason: String,
}

/// Checks a segment file against its catalog entry: size, footer, row count.
async fn check(store: &Arc<dyn ObjectStore>, seg: &SegmentMeta) -> std::result::Result<(), String> {
    let path = StorePath::from(seg.path.as_str());
    let meta = store.head(&path).await.map_err(|e| format!("cannot stat: {e}"))?;
    if meta.size != seg.bytes {
        return Err(format!("{} bytes, the catalog says {}", meta.size, seg.bytes));
    }
    // The last 8 bytes: the footer's length and the magic `PAR1`; the footer just before them.
    if meta.size < 12 {
        return Err(format!("{} bytes: too short for Parquet", meta.size));
    }
    let tail = store
        .get_range(&path, meta.size - 8..meta.size)
        .await
        .map_err(|e| format!("cannot read: {e}"))?;
    if &tail[4..] != b"PAR1" {
        return Err("no Parquet magic at the end (truncated or overwritten)".into());
    }
    let footer_len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
    if footer_len + 12 > meta.size {
        return Err(format!("footer length {footer_len} exceeds the file"));
    }
    let footer = store
        .get_range(&path, meta.size - 8 - footer_len..meta.size - 8)
        .await
        .map_err(|e| format!("cannot read: {e}"))?;
    let metadata =
        ParquetMetaDataReader::decode_metadata(&footer).map_err(|e| format!("unreadable Parquet footer: {e}"))?;
    let rows = metadata.file_metadata().num_rows() as u64;
    if rows != seg.rows {
        return Err(format!("{rows} rows, the catalog says {}", seg.rows));
    }
    Ok(())
}

/// Checks every segment the catalog names; moves the damaged ones aside and drops them from
/// `catalog` (the caller persists it). Returns what was quarantined.
pub(crate) async fn verify_segments(store: &Arc<dyn ObjectStore>, catalog: &mut Catalog) -> Result<Vec<Quarantined>> {
    let all: Vec<(DatasetName, SegmentMeta)> = catalog
        .datasets
        .iter()
        .flat_map(|(d, e)| e.segments.iter().map(move |s| (d.clone(), s.clone())))
        .collect();
    let failed: Vec<(DatasetName, SegmentMeta, String)> = futures::stream::iter(all)
        .map(|(d, s)| async move {
            let r = check(store, &s).await;
            r.err().map(|why| (d, s, why))
        })
        .buffer_unordered(8)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    let mut out = Vec::new();
    for (dataset, seg, reason) in failed {
        let from = StorePath::from(seg.path.as_str());
        let to = StorePath::from(format!("{QUARANTINE_DIR}/{}", seg.path));
        match store.copy(&from, &to).await {
            Ok(()) => store.delete(&from).await?,
            // A file that is gone cannot be moved; it is still taken out of the catalog.
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(Error::ObjectStore(e)),
        }
        tracing::error!(dataset = %dataset, path = %seg.path, moved_to = %to, rows = seg.rows, reason, "segment quarantined");
        if let Some(entry) = catalog.datasets.get_mut(&dataset) {
            entry.segments.retain(|s| s.id != seg.id);
        }
        out.push(Quarantined {
            dataset: dataset.to_string(),
            path: seg.path.clone(),
            moved_to: to.to_string(),
            rows: seg.rows,
            reason,
        });
    }
    Ok(out)
}

//! Segment indexes: for each configured id-like column (`--bloom-columns`, by default
//! `trace.trace_id`), a roaring bitmap of the 32-bit hashes of the values a segment holds.
//!
//! A query with `column = 'x'` or `column IN (…)` on an indexed column skips every segment whose
//! bitmap lacks all the values' hashes — without opening its file — and the Parquet bloom
//! filters then skip row groups inside the segments that remain. A hash collision only costs a
//! needless read (the filter still runs on the rows), never a wrong answer.
//!
//! Indexes live in memory, bounded (least recently used dropped first): built from the batch at
//! flush and compaction and also written beside the segment (`seg-….parquet.idx`, a few bytes
//! per distinct value), so that after a restart the first lookup reads that small file rather
//! than the segment; a segment without one (or with a damaged one) is indexed from its column.

use crate::catalog::{SegmentId, SegmentMeta};
use crate::{Error, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::path::Path as StorePath;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use roaring::RoaringBitmap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The 32-bit hash of an indexed value (FNV-1a, folded): stable across runs and machines.
pub fn hash_value(v: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

/// The index of one column of a batch (`None` if the batch has no such column).
pub(crate) fn build(batch: &RecordBatch, column: &str) -> Result<Option<RoaringBitmap>> {
    let Some(col) = batch.column_by_name(column) else {
        return Ok(None);
    };
    let strings = cast(col, &DataType::Utf8)?;
    let strings = strings.as_string::<i32>();
    // Hashes are random, so inserting them one by one would insert containers into the middle
    // of the bitmap's vector again and again; sorted, they append.
    let mut hashes: Vec<u32> = (0..strings.len())
        .filter(|&i| strings.is_valid(i))
        .map(|i| hash_value(strings.value(i)))
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    let bm = RoaringBitmap::from_sorted_iter(hashes).map_err(|e| crate::Error::Invalid(e.to_string()))?;
    Ok(Some(bm))
}

/// The cache's state: entries, their total bytes, and a use counter for recency.
#[derive(Debug, Default)]
struct Lru {
    map: HashMap<(SegmentId, String), Entry>,
    total: usize,
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    bitmap: Option<Arc<RoaringBitmap>>,
    bytes: usize,
    used: u64,
}

/// The bounded in-memory cache of segment indexes.
#[derive(Debug)]
pub struct IndexCache {
    columns: Vec<String>,
    limit_bytes: usize,
    inner: Mutex<Lru>,
}

impl IndexCache {
    /// A cache for `columns`, holding at most `limit_bytes` of bitmaps.
    pub fn new(columns: Vec<String>, limit_bytes: usize) -> IndexCache {
        IndexCache {
            columns,
            limit_bytes,
            inner: Mutex::new(Lru::default()),
        }
    }

    /// Whether a column is indexed.
    pub fn is_indexed(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c == column)
    }

    /// Indexes every indexed column of a freshly written segment; returns the index file's
    /// bytes, to be stored beside the segment.
    pub fn insert_from_batch(&self, segment: SegmentId, batch: &RecordBatch) -> Result<Vec<u8>> {
        let mut built = Vec::new();
        for c in &self.columns {
            if let Some(bm) = build(batch, c)? {
                built.push((c.clone(), self.put(segment, c, Some(bm))));
            }
        }
        Ok(encode_file(&built))
    }

    fn put(&self, segment: SegmentId, column: &str, bitmap: Option<RoaringBitmap>) -> Option<Arc<RoaringBitmap>> {
        let bytes = bitmap.as_ref().map_or(16, |b| b.serialized_size()) + 64;
        let bitmap = bitmap.map(Arc::new);
        let mut g = self.inner.lock().unwrap();
        let Lru { map, total, clock } = &mut *g;
        *clock += 1;
        if let Some(old) = map.insert(
            (segment, column.to_string()),
            Entry {
                bitmap: bitmap.clone(),
                bytes,
                used: *clock,
            },
        ) {
            *total -= old.bytes;
        }
        *total += bytes;
        while *total > self.limit_bytes && map.len() > 1 {
            let Some(oldest) = map.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some(e) = map.remove(&oldest) {
                *total -= e.bytes;
            }
        }
        bitmap
    }

    /// The index of `column` in `segment`, building it from the file when not cached. `Ok(None)`
    /// when the segment has no such column.
    pub async fn get(
        &self,
        store: &Arc<dyn ObjectStore>,
        segment: &SegmentMeta,
        column: &str,
    ) -> Result<Option<Arc<RoaringBitmap>>> {
        {
            let mut g = self.inner.lock().unwrap();
            let Lru { map, clock, .. } = &mut *g;
            *clock += 1;
            let now = *clock;
            if let Some(e) = map.get_mut(&(segment.id, column.to_string())) {
                e.used = now;
                return Ok(e.bitmap.clone());
            }
        }
        if !segment.columns.iter().any(|(c, _)| c == column) {
            return Ok(self.put(segment.id, column, None));
        }
        // The index file written beside the segment, if it holds this column.
        let idx_path = StorePath::from(index_path(&segment.path));
        if let Ok(got) = store.get(&idx_path).await
            && let Ok(bytes) = got.bytes().await
        {
            match decode_file(&bytes) {
                Ok(columns) => {
                    let kept = self.put_all(segment.id, columns);
                    if let Some((_, bm)) = kept.into_iter().find(|(name, _)| name == column) {
                        return Ok(bm);
                    }
                }
                Err(e) => tracing::warn!(file = %idx_path, error = %e, "damaged index file; indexing the segment"),
            }
        }
        // No usable index file: index the segment's columns, and write the file for next time.
        let bytes = store
            .get(&StorePath::from(segment.path.as_str()))
            .await?
            .bytes()
            .await?;
        let wanted: Vec<String> = self
            .columns
            .iter()
            .filter(|c| segment.columns.iter().any(|(s, _)| s == *c))
            .cloned()
            .collect();
        let built = tokio::task::spawn_blocking(move || -> Result<Vec<(String, RoaringBitmap)>> {
            let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
            let indices: Vec<usize> = wanted
                .iter()
                .filter_map(|c| builder.schema().index_of(c).ok())
                .collect();
            let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
            let mut out: Vec<(String, RoaringBitmap)> =
                wanted.iter().map(|c| (c.clone(), RoaringBitmap::new())).collect();
            for b in builder.with_projection(mask).build()? {
                let b = b?;
                for (name, bm) in &mut out {
                    if let Some(part) = build(&b, name)? {
                        *bm |= part;
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| Error::TaskFailed(format!("index builder panicked: {e}")))??;
        let kept = self.put_all(segment.id, built);
        if let Err(e) = store.put(&idx_path, encode_file(&kept).into()).await {
            tracing::warn!(file = %idx_path, error = %e, "could not write index file");
        }
        Ok(kept.into_iter().find(|(name, _)| name == column).and_then(|(_, bm)| bm))
    }

    /// Caches a segment's indexes, one per column; returns them as cached.
    fn put_all(
        &self,
        segment: SegmentId,
        columns: Vec<(String, RoaringBitmap)>,
    ) -> Vec<(String, Option<Arc<RoaringBitmap>>)> {
        columns
            .into_iter()
            .map(|(name, bm)| {
                let cached = self.put(segment, &name, Some(bm));
                (name, cached)
            })
            .collect()
    }
}

/// Where a segment's index file lives: beside it.
pub(crate) fn index_path(segment_path: &str) -> String {
    format!("{segment_path}.idx")
}

const FILE_MAGIC: &[u8; 8] = b"SONDIDX1";

/// An index file: magic, then per column its name and serialized bitmap, each length-prefixed,
/// then a CRC32C of everything before it.
fn encode_file(columns: &[(String, Option<Arc<RoaringBitmap>>)]) -> Vec<u8> {
    let mut out = FILE_MAGIC.to_vec();
    for (name, bm) in columns {
        let Some(bm) = bm else { continue };
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(bm.serialized_size() as u32).to_le_bytes());
        bm.serialize_into(&mut out).expect("writing to a Vec cannot fail");
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode_file(bytes: &[u8]) -> Result<Vec<(String, RoaringBitmap)>> {
    let bad = |why: &str| Error::Invalid(format!("index file: {why}"));
    if bytes.len() < FILE_MAGIC.len() + 4 || &bytes[..8] != FILE_MAGIC {
        return Err(bad("no magic"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(bad("checksum mismatch"));
    }
    let mut rest = &body[8..];
    let mut take = |n: usize| -> Result<&[u8]> {
        if rest.len() < n {
            return Err(bad("truncated"));
        }
        let (a, b) = rest.split_at(n);
        rest = b;
        Ok(a)
    };
    let mut out = Vec::new();
    loop {
        let Ok(len) = take(4) else { break };
        let name_len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let name = String::from_utf8(take(name_len)?.to_vec()).map_err(|_| bad("column name"))?;
        let bm_len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        let bm = RoaringBitmap::deserialize_from(take(bm_len)?).map_err(|e| bad(&e.to_string()))?;
        out.push((name, bm));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn index_holds_the_values_and_the_cache_is_bounded() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec![Some("a"), None, Some("b")]))],
        )
        .unwrap();
        let bm = build(&batch, "id").unwrap().unwrap();
        assert!(bm.contains(hash_value("a")) && bm.contains(hash_value("b")));
        assert!(!bm.contains(hash_value("c")));
        assert!(build(&batch, "nope").unwrap().is_none());
        let cache = IndexCache::new(vec!["id".into()], 500);
        for seg in 0..20 {
            cache.insert_from_batch(SegmentId(seg), &batch).unwrap();
        }
        let g = cache.inner.lock().unwrap();
        assert!(
            g.total <= 500 && g.map.len() < 20,
            "{} bytes in {} entries",
            g.total,
            g.map.len()
        );
    }
}

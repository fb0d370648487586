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
//!
//! They are kept in Roaring's portable serialized form and probed in place ([`SegmentIndex`]):
//! the hashes of unique ids are spread over every one of the 65,536 containers a few values
//! each, where a deserialized bitmap would spend more on its per-container vectors than on the
//! values, and loading one from its file is then a read, not a rebuild.

use crate::catalog::{SegmentId, SegmentMeta};
use crate::{Error, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
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
    let h = sonde_model::fnv1a(v.bytes());
    (h ^ (h >> 32)) as u32
}

/// The index of one column of a batch (`None` if the batch has no such column).
pub(crate) fn build(batches: &[RecordBatch], column: &str) -> Result<Option<RoaringBitmap>> {
    let cols: Vec<&ArrayRef> = batches.iter().filter_map(|b| b.column_by_name(column)).collect();
    if cols.is_empty() {
        return Ok(None);
    }
    let mut hashes: Vec<u32> = Vec::with_capacity(cols.iter().map(|c| c.len()).sum());
    for col in cols {
        hash_into(col, &mut hashes)?;
    }
    bitmap_of(hashes).map(Some)
}

/// Appends the hashes of a column's non-null values.
fn hash_into(col: &ArrayRef, hashes: &mut Vec<u32>) -> Result<()> {
    let strings = cast(col, &DataType::Utf8)?;
    let strings = strings.as_string::<i32>();
    hashes.extend(
        (0..strings.len())
            .filter(|&i| strings.is_valid(i))
            .map(|i| hash_value(strings.value(i))),
    );
    Ok(())
}

/// The bitmap of a set of hashes.
fn bitmap_of(mut hashes: Vec<u32>) -> Result<RoaringBitmap> {
    // Hashes are random, so inserting them one by one would insert containers into the middle
    // of the bitmap's vector again and again; sorted, they append.
    hashes.sort_unstable();
    hashes.dedup();
    RoaringBitmap::from_sorted_iter(hashes).map_err(|e| crate::Error::Invalid(e.to_string()))
}

/// The index file of a segment being written, fed its rows a batch at a time (a merge never
/// holds all of them): 4 bytes a value of each indexed column until [`IndexFileBuilder::finish`].
#[derive(Debug)]
pub(crate) struct IndexFileBuilder {
    /// Each indexed column and its hashes so far (`None` until a batch has the column).
    columns: Vec<(String, Option<Vec<u32>>)>,
}

impl IndexFileBuilder {
    /// Adds a batch's rows.
    pub(crate) fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        for (name, hashes) in &mut self.columns {
            if let Some(col) = batch.column_by_name(name) {
                hash_into(col, hashes.get_or_insert_with(Vec::new))?;
            }
        }
        Ok(())
    }

    /// The index file (every indexed column the rows had), to be stored beside the segment.
    pub(crate) fn finish(self) -> Result<Vec<u8>> {
        let mut built = Vec::new();
        for (name, hashes) in self.columns {
            if let Some(hashes) = hashes {
                built.push((name, Some(Arc::new(SegmentIndex::of(&bitmap_of(hashes)?)))));
            }
        }
        Ok(encode_file(&built))
    }
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
    bitmap: Option<Arc<SegmentIndex>>,
    bytes: usize,
    used: u64,
}

/// One column's index of one segment: a Roaring bitmap of value hashes in the portable
/// serialized format (RoaringFormatSpec), checked once and then probed without deserializing.
#[derive(Debug)]
pub struct SegmentIndex {
    bytes: Vec<u8>,
    /// Containers.
    size: usize,
    /// Where the run-container flags start (the format with run containers), if any.
    runs: Option<usize>,
    /// Where the (key, cardinality − 1) pairs start.
    desc: usize,
    /// Each container's data offset.
    offsets: Vec<u32>,
}

impl SegmentIndex {
    /// The index of a bitmap.
    pub fn of(bitmap: &RoaringBitmap) -> SegmentIndex {
        let mut bytes = Vec::with_capacity(bitmap.serialized_size());
        bitmap.serialize_into(&mut bytes).expect("writing to a Vec cannot fail");
        SegmentIndex::parse(bytes).expect("roaring writes the portable format")
    }

    /// Checks a serialized bitmap's structure (every container inside the bytes).
    pub fn parse(bytes: Vec<u8>) -> Result<SegmentIndex> {
        let bad = |why: &str| Error::Invalid(format!("index bitmap: {why}"));
        let u32_at = |i: usize| -> Result<u32> {
            Ok(u32::from_le_bytes(
                bytes.get(i..i + 4).ok_or_else(|| bad("truncated"))?.try_into().unwrap(),
            ))
        };
        let u16_at = |i: usize| -> Result<u16> {
            Ok(u16::from_le_bytes(
                bytes.get(i..i + 2).ok_or_else(|| bad("truncated"))?.try_into().unwrap(),
            ))
        };
        let cookie = u32_at(0)?;
        let (size, runs, desc, explicit) = if cookie == 12_346 {
            let size = u32_at(4)? as usize;
            (size, None, 8, true)
        } else if cookie & 0xFFFF == 12_347 {
            let size = (cookie >> 16) as usize + 1;
            (size, Some(4), 4 + size.div_ceil(8), size >= 4)
        } else {
            return Err(bad("unknown cookie"));
        };
        if size > 65_536 {
            return Err(bad("too many containers"));
        }
        let is_run = |i: usize| runs.is_some_and(|r| bytes.get(r + i / 8).is_some_and(|b| b >> (i % 8) & 1 == 1));
        let header_end = desc + size * if explicit { 8 } else { 4 };
        let mut offsets = Vec::with_capacity(size);
        let mut at = header_end;
        for i in 0..size {
            let off = if explicit {
                u32_at(desc + 4 * size + 4 * i)? as usize
            } else {
                at
            };
            let card = u16_at(desc + 4 * i + 2)? as usize + 1;
            let len = if is_run(i) {
                2 + 4 * u16_at(off)? as usize
            } else if card <= 4096 {
                2 * card
            } else {
                8192
            };
            if off < header_end || off + len > bytes.len() {
                return Err(bad("container outside the bytes"));
            }
            offsets.push(off as u32);
            at = off + len;
        }
        Ok(SegmentIndex {
            bytes,
            size,
            runs,
            desc,
            offsets,
        })
    }

    fn u16_at(&self, i: usize) -> u16 {
        u16::from_le_bytes([self.bytes[i], self.bytes[i + 1]])
    }

    /// Whether the bitmap holds `v`.
    pub fn contains(&self, v: u32) -> bool {
        let (key, low) = ((v >> 16) as u16, v as u16);
        // Containers are in key order.
        let (mut lo, mut hi) = (0, self.size);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.u16_at(self.desc + 4 * mid).cmp(&key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.container_contains(mid, low),
            }
        }
        false
    }

    fn container_contains(&self, i: usize, low: u16) -> bool {
        let off = self.offsets[i] as usize;
        let card = self.u16_at(self.desc + 4 * i + 2) as usize + 1;
        let run = self.runs.is_some_and(|r| self.bytes[r + i / 8] >> (i % 8) & 1 == 1);
        if run {
            // (start, length − 1) pairs in order: the last run starting at or before `low`.
            let n = self.u16_at(off) as usize;
            let (mut lo, mut hi) = (0, n);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if self.u16_at(off + 2 + 4 * mid) <= low {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo > 0 && {
                let start = self.u16_at(off + 2 + 4 * (lo - 1)) as u32;
                let len = self.u16_at(off + 4 + 4 * (lo - 1)) as u32;
                low as u32 <= start + len
            }
        } else if card <= 4096 {
            let (mut lo, mut hi) = (0, card);
            while lo < hi {
                let mid = (lo + hi) / 2;
                match self.u16_at(off + 2 * mid).cmp(&low) {
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                    std::cmp::Ordering::Equal => return true,
                }
            }
            false
        } else {
            let w = off + 8 * (low as usize / 64);
            let word = u64::from_le_bytes(self.bytes[w..w + 8].try_into().unwrap());
            word >> (low % 64) & 1 == 1
        }
    }

    /// The serialized bitmap.
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Memory held.
    fn held(&self) -> usize {
        self.bytes.len() + 4 * self.offsets.len()
    }
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

    /// The indexed columns.
    pub(crate) fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Whether a column is indexed.
    pub fn is_indexed(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c == column)
    }

    /// The index file of a segment being written, to be stored beside it. Not cached: an index
    /// enters the cache when a lookup first reads it, so ingest alone holds none of them in
    /// memory (at 100M events they are ~270 MB).
    pub(crate) fn file_builder(&self) -> IndexFileBuilder {
        IndexFileBuilder {
            columns: self.columns.iter().map(|c| (c.clone(), None)).collect(),
        }
    }

    /// The index file of rows held as `batches` (see [`IndexCache::file_builder`]).
    pub fn file_for_batches(&self, batches: &[RecordBatch]) -> Result<Vec<u8>> {
        let mut file = self.file_builder();
        for b in batches {
            file.add(b)?;
        }
        file.finish()
    }

    fn put(&self, segment: SegmentId, column: &str, bitmap: Option<SegmentIndex>) -> Option<Arc<SegmentIndex>> {
        let bytes = bitmap.as_ref().map_or(16, |b| b.held()) + 64;
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
    ) -> Result<Option<Arc<SegmentIndex>>> {
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
        let built = tokio::task::spawn_blocking(move || -> Result<Vec<(String, SegmentIndex)>> {
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
                    if let Some(part) = build(std::slice::from_ref(&b), name)? {
                        *bm |= part;
                    }
                }
            }
            Ok(out
                .into_iter()
                .map(|(name, bm)| (name, SegmentIndex::of(&bm)))
                .collect())
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
        columns: Vec<(String, SegmentIndex)>,
    ) -> Vec<(String, Option<Arc<SegmentIndex>>)> {
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
fn encode_file(columns: &[(String, Option<Arc<SegmentIndex>>)]) -> Vec<u8> {
    let mut out = FILE_MAGIC.to_vec();
    for (name, bm) in columns {
        let Some(bm) = bm else { continue };
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(bm.bytes().len() as u32).to_le_bytes());
        out.extend_from_slice(bm.bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The index file of segments' rows taken together, for the indexed columns `wanted`: each
/// column's bitmap the union of the files' bitmaps of it (a compaction that copies its inputs'
/// row groups as they are builds its index this way, without reading the rows). `None` when a
/// file lacks one of `wanted` (written before the column was indexed): a union would then miss
/// that segment's values, and a lookup would skip rows that hold them.
pub(crate) fn merge_files(files: &[&[u8]], wanted: &[String]) -> Result<Option<Vec<u8>>> {
    let mut union: std::collections::BTreeMap<String, RoaringBitmap> = std::collections::BTreeMap::new();
    for file in files {
        let decoded = decode_file(file)?;
        if wanted.iter().any(|w| !decoded.iter().any(|(name, _)| name == w)) {
            return Ok(None);
        }
        for (name, index) in decoded {
            if !wanted.contains(&name) {
                continue;
            }
            let bitmap = RoaringBitmap::deserialize_from(index.bytes())
                .map_err(|e| Error::Invalid(format!("index file: column {name}: {e}")))?;
            *union.entry(name).or_default() |= bitmap;
        }
    }
    let columns: Vec<(String, Option<Arc<SegmentIndex>>)> = union
        .into_iter()
        .map(|(name, bitmap)| (name, Some(Arc::new(SegmentIndex::of(&bitmap)))))
        .collect();
    Ok(Some(encode_file(&columns)))
}

pub(crate) fn decode_file(bytes: &[u8]) -> Result<Vec<(String, SegmentIndex)>> {
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
        let bm = SegmentIndex::parse(take(bm_len)?.to_vec())?;
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
        let bm = build(std::slice::from_ref(&batch), "id").unwrap().unwrap();
        assert!(bm.contains(hash_value("a")) && bm.contains(hash_value("b")));
        assert!(!bm.contains(hash_value("c")));
        assert!(build(std::slice::from_ref(&batch), "nope").unwrap().is_none());
        let idx = SegmentIndex::of(&bm);
        assert!(idx.contains(hash_value("a")) && idx.contains(hash_value("b")) && !idx.contains(hash_value("c")));
        let cache = IndexCache::new(vec!["id".into()], 500);
        let file = cache.file_for_batches(std::slice::from_ref(&batch)).unwrap();
        assert!(
            cache.inner.lock().unwrap().map.is_empty(),
            "writing a file caches nothing"
        );
        for seg in 0..20 {
            let columns = decode_file(&file).unwrap();
            cache.put_all(SegmentId(seg), columns);
        }
        let g = cache.inner.lock().unwrap();
        assert!(
            g.total <= 500 && g.map.len() < 20,
            "{} bytes in {} entries",
            g.total,
            g.map.len()
        );
    }

    /// Probing the serialized form answers as the bitmap does: sparse (array containers),
    /// dense (bitsets) and run-optimised bitmaps, with and without the offset header.
    #[test]
    fn probing_in_place_equals_the_bitmap() {
        let mut x: u64 = 7;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut cases: Vec<RoaringBitmap> = Vec::new();
        // Unique ids' hashes: a few per container, over all of them.
        cases.push((0..200_000).map(|_| next() as u32).collect());
        // Dense containers (bitsets) beside sparse ones.
        let mut dense: RoaringBitmap = (0..20_000u32).map(|i| i * 3).collect();
        dense.extend((0..1000).map(|_| next() as u32));
        cases.push(dense.clone());
        // Runs, with few containers (no offset header) and with many.
        let mut runs: RoaringBitmap = (100..5000u32).chain(70_000..70_100).collect();
        runs.optimize();
        cases.push(runs);
        dense.optimize();
        cases.push(dense);
        cases.push(RoaringBitmap::new());
        cases.push([u32::MAX, 0].into_iter().collect());
        for bm in &cases {
            let idx = SegmentIndex::of(bm);
            let mut bytes = Vec::new();
            bm.serialize_into(&mut bytes).unwrap();
            assert_eq!(idx.bytes(), &bytes[..]);
            for v in bm.iter().take(5000) {
                assert!(idx.contains(v), "{v} is in the bitmap");
            }
            for _ in 0..20_000 {
                let v = next() as u32 % 200_000;
                assert_eq!(idx.contains(v), bm.contains(v), "{v}");
                let v = next() as u32;
                assert_eq!(idx.contains(v), bm.contains(v), "{v}");
            }
        }
        assert!(SegmentIndex::parse(vec![1, 2, 3, 4, 5]).is_err());
        let mut cut = Vec::new();
        cases[0].serialize_into(&mut cut).unwrap();
        cut.truncate(cut.len() - 10);
        assert!(SegmentIndex::parse(cut).is_err(), "a truncated bitmap is refused");
    }
}

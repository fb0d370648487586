//! Parquet segments: how a frozen write buffer becomes an immutable file, and the checks on
//! both sides of the disk.
//!
//! Rows are sorted by timestamp (so time-range queries read contiguous row groups and the
//! Parquet statistics prune well), compressed with zstd, dictionary-encoded, with page-level
//! statistics and the page index, and bloom filters on id-like columns. Before writing, the
//! row count and time bounds are taken from the batch; after writing, the file is read back
//! and must agree, or the flush fails and the events stay in the buffer and the WAL.

use crate::buffer::timestamp_type;
use crate::{Error, Result};
use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::FutureExt;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::path::Path as StorePath;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::SortingColumn;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use sonde_model::TIMESTAMP_COLUMN;
use std::ops::Range;
use std::sync::Arc;

/// How segments are written.
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// Rows per Parquet row group: the unit that statistics and bloom filters can skip.
    pub row_group_rows: usize,
    /// Columns that get a bloom filter (ids looked up by equality, e.g. `trace.trace_id`).
    pub bloom_columns: Vec<String>,
    /// zstd level. 1 by default: zstd's fast strategy, measured at 0.6% more bytes than level 3
    /// on the bench's events and about half of the compression CPU, which was 12% of ingest.
    pub zstd_level: i32,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            row_group_rows: crate::StorageConfig::DEFAULT_ROW_GROUP_ROWS,
            bloom_columns: crate::StorageConfig::DEFAULT_BLOOM_COLUMNS
                .split(',')
                .map(String::from)
                .collect(),
            zstd_level: 1,
        }
    }
}

/// Row count and event-time bounds of a batch or a file, compared across the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentFacts {
    /// Number of rows.
    pub rows: u64,
    /// Earliest timestamp (µs).
    pub min_ts_us: i64,
    /// Latest timestamp (µs).
    pub max_ts_us: i64,
}

/// Bytes an Arrow batch really holds: the slices its arrays cover, not the whole buffers they
/// may share with a larger batch (a slice of the write buffer would otherwise count as all of
/// it, and a batch decoded from an IPC frame, whose columns share the frame's buffer, as the
/// frame once per column).
pub fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// Casts a batch to `schema` by column name: a column it lacks is all nulls, a narrower type is
/// widened (int → string reads "7"). Used wherever batches of older schemas meet a newer one.
pub fn adapt_to_schema(batch: &RecordBatch, schema: &arrow::datatypes::SchemaRef) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => Ok(arrow::compute::cast(c, f.data_type())?),
            None => Ok(arrow::array::new_null_array(f.data_type(), n)),
        })
        .collect::<Result<Vec<arrow::array::ArrayRef>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

impl SegmentFacts {
    /// The facts of no rows (the identity of [`SegmentFacts::and`]).
    pub(crate) const NONE: SegmentFacts = SegmentFacts {
        rows: 0,
        min_ts_us: i64::MAX,
        max_ts_us: i64::MIN,
    };

    /// The facts of these rows and `other`'s together.
    pub(crate) fn and(self, other: SegmentFacts) -> SegmentFacts {
        SegmentFacts {
            rows: self.rows + other.rows,
            min_ts_us: self.min_ts_us.min(other.min_ts_us),
            max_ts_us: self.max_ts_us.max(other.max_ts_us),
        }
    }
}

/// The facts of rows held as several batches (each with a µs timestamp column, non-null).
pub(crate) fn batches_facts(batches: &[RecordBatch]) -> Result<SegmentFacts> {
    facts_of(timestamps(batches)?.into_iter())
}

/// The timestamp column of each batch.
fn timestamps(batches: &[RecordBatch]) -> Result<Vec<&TimestampMicrosecondArray>> {
    batches
        .iter()
        .map(|b| {
            b.column_by_name(TIMESTAMP_COLUMN)
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
                .ok_or_else(|| Error::Invalid("batch has no µs timestamp column".into()))
        })
        .collect()
}

/// Calls `write` with the rows of `batches` in time order (stable: equal times keep their
/// order), a bounded slice at a time, so that sorting never makes a copy of all the rows:
/// batches already in order are passed as they are; otherwise an order of (time, batch, row)
/// is sorted and each slice of it gathered with `interleave`.
fn in_time_order(batches: &[RecordBatch], mut write: impl FnMut(&RecordBatch) -> Result<()>) -> Result<()> {
    let ts = timestamps(batches)?;
    let mut last = i64::MIN;
    let sorted = ts.iter().all(|t| {
        let ok = t.values().first().is_none_or(|&f| f >= last) && t.values().windows(2).all(|w| w[0] <= w[1]);
        last = t.values().last().copied().unwrap_or(last);
        ok
    });
    if sorted {
        // Already in order (merges of sorted segments, events that arrived in order).
        return batches.iter().try_for_each(&mut write);
    }
    let mut order: Vec<(i64, u32, u32)> = Vec::with_capacity(ts.iter().map(|t| t.len()).sum());
    for (b, t) in ts.iter().enumerate() {
        order.extend(t.values().iter().enumerate().map(|(r, &v)| (v, b as u32, r as u32)));
    }
    // Stable and adaptive: arrival order is nearly time order, a few runs to merge.
    order.sort_by_key(|o| o.0);
    // Slices of ~16 MiB of rows at the batches' average row size (at least 64 rows, at most
    // 8,192, so that a slice's arrays come from the allocator's reusable pages): cheap to hold
    // twice, and far from Arrow's 2 GiB per string column even when a few rows are large.
    let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    let per_row = (bytes / order.len().max(1)).max(1);
    let slice_rows = ((16 << 20) / per_row).clamp(64, 8 * 1024);
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let mut indices = Vec::with_capacity(slice_rows);
    for slice in order.chunks(slice_rows) {
        indices.clear();
        indices.extend(slice.iter().map(|&(_, b, r)| (b as usize, r as usize)));
        write(&arrow::compute::interleave_record_batch(&refs, &indices)?)?;
    }
    Ok(())
}

fn facts_of<'a>(arrays: impl Iterator<Item = &'a TimestampMicrosecondArray>) -> Result<SegmentFacts> {
    let mut f = SegmentFacts::NONE;
    for a in arrays {
        if a.null_count() > 0 {
            return Err(Error::Invalid("timestamp column has nulls".into()));
        }
        f.rows += a.len() as u64;
        if let Some(m) = arrow::compute::min(a) {
            f.min_ts_us = f.min_ts_us.min(m);
        }
        if let Some(m) = arrow::compute::max(a) {
            f.max_ts_us = f.max_ts_us.max(m);
        }
    }
    Ok(f)
}

/// A segment file encoded in memory.
#[derive(Debug)]
pub(crate) struct Encoded {
    /// The Parquet file.
    pub bytes: Bytes,
    /// Columns with more than [`MANY_GROUPS`] distinct values in [`distinct_fraction`]'s
    /// sample: the query engine knows a breakdown by one of them has many groups.
    pub distinct_columns: Vec<String>,
}

/// Encodes rows (batches of `schema`, in any time order) as a time-sorted Parquet file in
/// memory.
pub(crate) fn encode(schema: &SchemaRef, batches: &[RecordBatch], opts: &SegmentOptions) -> Result<Encoded> {
    let mut plain = Vec::new();
    let mut distinct_columns = Vec::new();
    for (i, field) in schema.fields().iter().enumerate() {
        let name = field.name();
        let chunks: Vec<&ArrayRef> = batches.iter().map(|b| b.column(i)).collect();
        let Some(fraction) = distinct_fraction_of(&chunks).filter(|_| name != TIMESTAMP_COLUMN) else {
            continue;
        };
        if fraction > MANY_GROUPS {
            distinct_columns.push(name.clone());
        }
        // A dictionary of nearly unique values outgrows its page, and the writer falls back to
        // PLAIN after writing the dictionary and the pages that used it: bytes for nothing.
        // Floats with many values compress better plain even when the dictionary would fit.
        let limit = match field.data_type() {
            arrow::datatypes::DataType::Float64 => 0.5,
            _ => 0.9,
        };
        if fraction > limit {
            plain.push(name.clone());
        }
    }
    let raw: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    let mut w = SegmentWriter::new(schema, opts, &plain, distinct_columns, raw / 4)?;
    in_time_order(batches, |b| w.write(b))?;
    w.finish()
}

/// A segment file being written in memory from rows given a batch at a time, in time order.
pub(crate) struct SegmentWriter {
    writer: ArrowWriter<Vec<u8>>,
    distinct_columns: Vec<String>,
}

impl SegmentWriter {
    /// A writer of `schema` rows with a dictionary for every column but the `plain` ones (and
    /// the timestamp and bloom-filter columns, never dictionary-encoded); `distinct_columns`
    /// is what [`Encoded::distinct_columns`] will say; `capacity` the bytes expected.
    pub(crate) fn new(
        schema: &SchemaRef,
        opts: &SegmentOptions,
        plain: &[String],
        distinct_columns: Vec<String>,
        capacity: usize,
    ) -> Result<SegmentWriter> {
        let out = Vec::with_capacity(capacity);
        Ok(SegmentWriter {
            writer: ArrowWriter::try_new(out, schema.clone(), Some(writer_properties(schema, opts, plain)?))?,
            distinct_columns,
        })
    }

    /// Writes the next rows (later in time than those written before).
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        Ok(self.writer.write(batch)?)
    }

    /// The file.
    pub(crate) fn finish(self) -> Result<Encoded> {
        let out = self.writer.into_inner()?;
        Ok(Encoded {
            bytes: Bytes::from(out),
            distinct_columns: self.distinct_columns,
        })
    }
}

/// Most rows in a data page (parquet's default is 20,000): a page is what a reader decompresses
/// whole to read any row of it, so a sample that keeps blocks of rows spread over a segment
/// (BubbleUp's, see `sonde_query::table::Sample`) decompresses about one page per column per
/// block. One DataFusion batch (8,192 rows) of pages keeps that cost with the rows kept.
pub(crate) const PAGE_ROWS: usize = 8192;

/// How every segment file of `schema` rows is written (see [`SegmentWriter::new`]): one place,
/// so that a compaction copying row groups as they are writes the same file a re-encoding
/// would, but for the row groups' own encodings.
pub(crate) fn writer_properties(
    schema: &SchemaRef,
    opts: &SegmentOptions,
    plain: &[String],
) -> Result<WriterProperties> {
    let ts_index = schema.index_of(TIMESTAMP_COLUMN)?;
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(opts.zstd_level)?))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(opts.row_group_rows))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: ts_index as i32,
            descending: false,
            nulls_first: false,
        }]));
    // Time-sorted microsecond timestamps are nearly all distinct: a dictionary is tried,
    // fails and falls back to PLAIN, 8 bytes a value. Deltas of a sorted column pack into
    // a few bits, and this is the column every query reads.
    props = props
        .set_column_dictionary_enabled(TIMESTAMP_COLUMN.into(), false)
        .set_column_encoding(TIMESTAMP_COLUMN.into(), Encoding::DELTA_BINARY_PACKED);
    for name in &opts.bloom_columns {
        if schema.column_with_name(name).is_some() {
            // Ids are nearly all distinct too: no dictionary, a bloom filter instead.
            props = props
                .set_column_dictionary_enabled(name.as_str().into(), false)
                .set_column_bloom_filter_enabled(name.as_str().into(), true)
                // 5%: each of a segment's row groups is a false positive for one lookup in
                // 20; 1% would double the filter's bytes (2 bytes an event) for little.
                .set_column_bloom_filter_fpp(name.as_str().into(), 0.05);
        }
    }
    for name in plain {
        props = props.set_column_dictionary_enabled(name.as_str().into(), false);
    }
    Ok(props.build())
}

/// The columns of a Parquet file whose first row group has a dictionary page: a merge of
/// segments keeps each column's choice of a dictionary from the segments it merges.
pub(crate) fn dictionary_columns(metadata: &parquet::file::metadata::ParquetMetaData) -> Vec<String> {
    let Some(rg) = metadata.row_groups().first() else {
        return Vec::new();
    };
    rg.columns()
        .iter()
        .filter(|c| c.dictionary_page_offset().is_some())
        .map(|c| c.column_path().string())
        .collect()
}

/// Above this fraction of distinct values in [`distinct_fraction`]'s sample, a breakdown by the
/// column has too many groups to be worth a per-time-bucket table (see [`Encoded`]).
pub const MANY_GROUPS: f64 = 0.3;

/// The fraction of distinct values among up to 16,384 non-null values spread over a column
/// (ids and addresses ~1, measurements ~0.9, users ~0.85 at 50k of them, names ~0). `None` for
/// booleans and other types (a dictionary or RLE is never worse there) and for columns with
/// fewer than 1,024 values (too few to judge).
pub fn distinct_fraction(array: &ArrayRef) -> Option<f64> {
    distinct_fraction_of(&[array])
}

/// [`distinct_fraction`] of one column held as several arrays (a buffer's chunks), sampled
/// evenly over all of them.
pub(crate) fn distinct_fraction_of(arrays: &[&ArrayRef]) -> Option<f64> {
    const SAMPLE: usize = 16 * 1024;
    let n: usize = arrays.iter().map(|a| a.len()).sum();
    let step = n.div_ceil(SAMPLE).max(1);
    let hasher = ahash::RandomState::with_seeds(7, 11, 13, 17);
    let mut seen = std::collections::HashSet::with_capacity(SAMPLE.min(n));
    let mut sampled = 0usize;
    // The sample positions are global (every `step`-th row of all the arrays together).
    let mut next = 0usize;
    let mut offset = 0usize;
    for array in arrays {
        let any = array.as_any();
        let hash: Box<dyn Fn(usize) -> u64> = if let Some(a) = any.downcast_ref::<StringArray>() {
            Box::new(|i| hasher.hash_one(a.value(i)))
        } else if let Some(a) = any.downcast_ref::<Int64Array>() {
            Box::new(|i| hasher.hash_one(a.value(i)))
        } else if let Some(a) = any.downcast_ref::<Float64Array>() {
            Box::new(|i| hasher.hash_one(a.value(i).to_bits()))
        } else {
            return None;
        };
        while next < offset + array.len() {
            let i = next - offset;
            if array.is_valid(i) {
                seen.insert(hash(i));
                sampled += 1;
            }
            next += step;
        }
        offset += array.len();
    }
    (sampled >= 1024).then(|| seen.len() as f64 / sampled as f64)
}

/// A file in an object store, read by byte ranges through parquet's async reader.
struct StoredFile {
    store: Arc<dyn ObjectStore>,
    path: StorePath,
    size: u64,
}

fn parquet_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for StoredFile {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.store.get_range(&self.path, range).await.map_err(parquet_error) }.boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(parquet_error) }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let meta = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(meta))
        }
        .boxed()
    }
}

/// Reads back the timestamp column of the segment file at `path` in `store` and returns its
/// facts. Only the footer and that column's pages are read: nothing else is decoded, so
/// reading the rest of the file (as a whole-file read did) only cost a copy.
pub(crate) async fn read_stored_facts(store: Arc<dyn ObjectStore>, path: StorePath, size: u64) -> Result<SegmentFacts> {
    let builder = ParquetRecordBatchStreamBuilder::new(StoredFile { store, path, size }).await?;
    let schema = builder.schema().clone();
    let idx = schema.index_of(TIMESTAMP_COLUMN)?;
    if schema.field(idx).data_type() != &timestamp_type() {
        return Err(Error::Invalid(format!(
            "segment timestamp column has type {}",
            schema.field(idx).data_type()
        )));
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
    let batches: Vec<RecordBatch> = builder.with_projection(mask).build()?.try_collect().await?;
    let arrays: Vec<_> = batches
        .iter()
        .map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .cloned()
        })
        .collect::<Option<_>>()
        .ok_or_else(|| Error::Invalid("segment timestamp column is not µs".into()))?;
    facts_of(arrays.iter())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::WriteBuffer;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use sonde_model::{Event, FieldValue};

    fn batch(times: &[i64], tag: &str) -> RecordBatch {
        let mut b = WriteBuffer::default();
        let events: Vec<Event> = times
            .iter()
            .enumerate()
            .map(|(i, &t)| Event {
                timestamp_us: t,
                sample_rate: 1,
                fields: vec![("trace.trace_id".into(), FieldValue::Str(format!("{tag}{i}")))],
            })
            .collect();
        b.append(crate::wal::Lsn(1), &events, &|_| None, 0);
        b.whole_batch()
    }

    /// Reads a whole encoded segment back as (time, id) rows.
    fn rows_of(bytes: Bytes) -> Vec<(i64, String)> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        let mut out = Vec::new();
        for b in reader {
            let b = b.unwrap();
            let t = b
                .column(0)
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .unwrap();
            let id = b
                .column_by_name("trace.trace_id")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            out.extend((0..b.num_rows()).map(|i| (t.value(i), id.value(i).to_string())));
        }
        out
    }

    #[tokio::test]
    async fn encode_sort_and_read_back() {
        // Three chunks out of order across and within them, with equal times that must keep
        // their arrival order (stable).
        let batches = vec![
            batch(&[30, 10, 20], "a"),
            batch(&[5, 20, 40], "b"),
            batch(&[20, 1], "c"),
        ];
        let schema = batches[0].schema();
        let facts = batches_facts(&batches).unwrap();
        assert_eq!(
            facts,
            SegmentFacts {
                rows: 8,
                min_ts_us: 1,
                max_ts_us: 40
            }
        );
        let encoded = encode(&schema, &batches, &SegmentOptions::default()).unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let path = StorePath::from("s.parquet");
        store.put(&path, encoded.bytes.clone().into()).await.unwrap();
        let size = encoded.bytes.len() as u64;
        assert_eq!(read_stored_facts(store, path, size).await.unwrap(), facts);
        let want: Vec<(i64, String)> = [
            (1, "c1"),
            (5, "b0"),
            (10, "a1"),
            (20, "a2"),
            (20, "b1"),
            (20, "c0"),
            (30, "a0"),
            (40, "b2"),
        ]
        .iter()
        .map(|&(t, s)| (t, s.to_string()))
        .collect();
        assert_eq!(rows_of(encoded.bytes), want);
        // Batches already in order are written as they are.
        let ordered = vec![batch(&[1, 2], "x"), batch(&[2, 3], "y")];
        let encoded = encode(&schema, &ordered, &SegmentOptions::default()).unwrap();
        assert_eq!(
            rows_of(encoded.bytes),
            vec![(1, "x0".into()), (2, "x1".into()), (2, "y0".into()), (3, "y1".into())]
        );
    }

    #[test]
    fn nearly_unique_columns_are_written_without_a_dictionary() {
        let n = 5000;
        let events: Vec<Event> = (0..n)
            .map(|i| Event {
                timestamp_us: i,
                sample_rate: 1,
                fields: vec![
                    ("id".into(), FieldValue::Str(format!("id-{i}"))),
                    ("ms".into(), FieldValue::Float(i as f64 * 1.37)),
                    ("plan".into(), FieldValue::Str(["free", "pro"][i as usize % 2].into())),
                ],
            })
            .collect();
        let mut b = WriteBuffer::default();
        b.append(crate::wal::Lsn(1), &events, &|_| None, 0);
        let whole = b.whole_batch();
        let encoded = encode(&whole.schema(), &[whole], &SegmentOptions::default()).unwrap();
        assert_eq!(encoded.distinct_columns, vec!["id".to_string(), "ms".to_string()]);
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(encoded.bytes).unwrap();
        use parquet::file::reader::FileReader;
        let rg = reader.metadata().row_group(0);
        let encodings = |name: &str| {
            let c = rg.columns().iter().find(|c| c.column_path().string() == name).unwrap();
            c.encodings().collect::<Vec<_>>()
        };
        assert!(
            !encodings("id").contains(&Encoding::RLE_DICTIONARY),
            "{:?}",
            encodings("id")
        );
        assert!(
            !encodings("ms").contains(&Encoding::RLE_DICTIONARY),
            "{:?}",
            encodings("ms")
        );
        assert!(
            encodings("plan").contains(&Encoding::RLE_DICTIONARY),
            "{:?}",
            encodings("plan")
        );
    }
}

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
use arrow::compute::{SortOptions, sort_to_indices, take_record_batch};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use sonde_model::TIMESTAMP_COLUMN;

/// How segments are written.
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// Rows per Parquet row group: the unit that statistics and bloom filters can skip.
    pub row_group_rows: usize,
    /// Columns that get a bloom filter (ids looked up by equality, e.g. `trace.trace_id`).
    pub bloom_columns: Vec<String>,
    /// zstd level.
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
            zstd_level: 3,
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

/// Sorts a batch by its timestamp column (stable, so equal times keep arrival order).
pub(crate) fn sort_by_time(batch: &RecordBatch) -> Result<RecordBatch> {
    let ts = batch
        .column_by_name(TIMESTAMP_COLUMN)
        .ok_or_else(|| Error::Invalid("batch has no timestamp column".into()))?;
    if let Some(t) = ts.as_any().downcast_ref::<TimestampMicrosecondArray>()
        && t.null_count() == 0
        && t.values().windows(2).all(|w| w[0] <= w[1])
    {
        // Already in order (merges of sorted segments, events that arrived in order).
        return Ok(batch.clone());
    }
    let idx = sort_to_indices(
        ts,
        Some(SortOptions {
            descending: false,
            nulls_first: false,
        }),
        None,
    )?;
    Ok(take_record_batch(batch, &idx)?)
}

/// The facts of a batch (its timestamp column must be non-null).
pub(crate) fn batch_facts(batch: &RecordBatch) -> Result<SegmentFacts> {
    let ts = batch
        .column_by_name(TIMESTAMP_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| Error::Invalid("batch has no µs timestamp column".into()))?;
    facts_of(std::iter::once(ts))
}

fn facts_of<'a>(arrays: impl Iterator<Item = &'a TimestampMicrosecondArray>) -> Result<SegmentFacts> {
    let mut f = SegmentFacts {
        rows: 0,
        min_ts_us: i64::MAX,
        max_ts_us: i64::MIN,
    };
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

/// Encodes a time-sorted batch as a Parquet file in memory.
pub(crate) fn encode(batch: &RecordBatch, opts: &SegmentOptions) -> Result<Encoded> {
    let schema = batch.schema();
    let ts_index = schema.index_of(TIMESTAMP_COLUMN)?;
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(opts.zstd_level)?))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(opts.row_group_rows))
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: ts_index as i32,
            descending: false,
            nulls_first: false,
        }]));
    // Time-sorted microsecond timestamps are nearly all distinct: a dictionary is tried, fails
    // and falls back to PLAIN, 8 bytes a value. Deltas of a sorted column pack into a few bits,
    // and this is the column every query reads.
    props = props
        .set_column_dictionary_enabled(TIMESTAMP_COLUMN.into(), false)
        .set_column_encoding(TIMESTAMP_COLUMN.into(), Encoding::DELTA_BINARY_PACKED);
    for name in &opts.bloom_columns {
        if schema.column_with_name(name).is_some() {
            // Ids are nearly all distinct too: no dictionary, a bloom filter instead.
            props = props
                .set_column_dictionary_enabled(name.as_str().into(), false)
                .set_column_bloom_filter_enabled(name.as_str().into(), true)
                // 5%: each of a segment's row groups is a false positive for one lookup in 20;
                // 1% would double the filter's bytes (2 bytes an event) for little.
                .set_column_bloom_filter_fpp(name.as_str().into(), 0.05);
        }
    }
    let mut distinct_columns = Vec::new();
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        let name = field.name();
        let Some(fraction) = distinct_fraction(array).filter(|_| name != TIMESTAMP_COLUMN) else {
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
            props = props.set_column_dictionary_enabled(name.as_str().into(), false);
        }
    }
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props.build()))?;
    w.write(batch)?;
    w.close()?;
    Ok(Encoded {
        bytes: Bytes::from(out),
        distinct_columns,
    })
}

/// Above this fraction of distinct values in [`distinct_fraction`]'s sample, a breakdown by the
/// column has too many groups to be worth a per-time-bucket table (see [`Encoded`]).
pub const MANY_GROUPS: f64 = 0.3;

/// The fraction of distinct values among up to 16,384 non-null values spread over a column
/// (ids and addresses ~1, measurements ~0.9, users ~0.85 at 50k of them, names ~0). `None` for
/// booleans and other types (a dictionary or RLE is never worse there) and for columns with
/// fewer than 1,024 values (too few to judge).
pub fn distinct_fraction(array: &ArrayRef) -> Option<f64> {
    const SAMPLE: usize = 16 * 1024;
    let n = array.len();
    let step = n.div_ceil(SAMPLE).max(1);
    let hasher = ahash::RandomState::with_seeds(7, 11, 13, 17);
    let any = array.as_any();
    let hash: Box<dyn Fn(usize) -> u64> = if let Some(a) = any.downcast_ref::<StringArray>() {
        Box::new(move |i| hasher.hash_one(a.value(i)))
    } else if let Some(a) = any.downcast_ref::<Int64Array>() {
        Box::new(move |i| hasher.hash_one(a.value(i)))
    } else if let Some(a) = any.downcast_ref::<Float64Array>() {
        Box::new(move |i| hasher.hash_one(a.value(i).to_bits()))
    } else {
        return None;
    };
    let mut seen = std::collections::HashSet::with_capacity(SAMPLE.min(n));
    let mut sampled = 0usize;
    for i in (0..n).step_by(step).filter(|&i| array.is_valid(i)) {
        seen.insert(hash(i));
        sampled += 1;
    }
    (sampled >= 1024).then(|| seen.len() as f64 / sampled as f64)
}

/// Reads back the timestamp column of an encoded segment and returns its facts.
pub(crate) fn read_facts(file: Bytes) -> Result<SegmentFacts> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let schema = builder.schema().clone();
    let idx = schema.index_of(TIMESTAMP_COLUMN)?;
    if schema.field(idx).data_type() != &timestamp_type() {
        return Err(Error::Invalid(format!(
            "segment timestamp column has type {}",
            schema.field(idx).data_type()
        )));
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
    let reader = builder.with_projection(mask).build()?;
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
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
    use sonde_model::{Event, FieldValue};

    #[test]
    fn encode_sort_and_read_back() {
        let mut b = WriteBuffer::default();
        let events: Vec<Event> = [30, 10, 20]
            .iter()
            .map(|&t| Event {
                timestamp_us: t,
                sample_rate: 1,
                fields: vec![("trace.trace_id".into(), FieldValue::Str(format!("t{t}")))],
            })
            .collect();
        b.append(crate::wal::Lsn(1), &events, &|_| None, 0);
        let sorted = sort_by_time(&b.whole_batch()).unwrap();
        let facts = batch_facts(&sorted).unwrap();
        assert_eq!(
            facts,
            SegmentFacts {
                rows: 3,
                min_ts_us: 10,
                max_ts_us: 30
            }
        );
        let encoded = encode(&sorted, &SegmentOptions::default()).unwrap();
        assert_eq!(read_facts(encoded.bytes).unwrap(), facts);
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
        let encoded = encode(&b.whole_batch(), &SegmentOptions::default()).unwrap();
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

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
use arrow::array::{Array, RecordBatch, TimestampMicrosecondArray};
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
            row_group_rows: 128 * 1024,
            bloom_columns: vec!["trace.trace_id".into()],
            zstd_level: 3,
        }
    }
}

/// Row count and event-time bounds of a batch or a file, compared across the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFacts {
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
pub fn sort_by_time(batch: &RecordBatch) -> Result<RecordBatch> {
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
pub fn batch_facts(batch: &RecordBatch) -> Result<SegmentFacts> {
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

/// Encodes a time-sorted batch as a Parquet file in memory.
pub fn encode(batch: &RecordBatch, opts: &SegmentOptions) -> Result<Bytes> {
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
                .set_column_bloom_filter_fpp(name.as_str().into(), 0.01);
        }
    }
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props.build()))?;
    w.write(batch)?;
    w.close()?;
    Ok(Bytes::from(out))
}

/// Reads back the timestamp column of an encoded segment and returns its facts.
pub fn read_facts(file: Bytes) -> Result<SegmentFacts> {
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
        b.append(1, &events, &|_| None, 0);
        let sorted = sort_by_time(&b.to_record_batch()).unwrap();
        let facts = batch_facts(&sorted).unwrap();
        assert_eq!(
            facts,
            SegmentFacts {
                rows: 3,
                min_ts_us: 10,
                max_ts_us: 30
            }
        );
        let bytes = encode(&sorted, &SegmentOptions::default()).unwrap();
        assert_eq!(read_facts(bytes).unwrap(), facts);
    }
}

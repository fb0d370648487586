//! Compaction: small segments of one dataset merged into large, time-sorted ones.
//!
//! Flushes by age leave many small segments, and a query pays per file. The planner picks runs
//! of adjacent small segments (in time order) and the merger rewrites each run as one segment:
//! read side by side a batch at a time, cast to the dataset's widest types, merged in time
//! order as it is written, fsync, read back and verify.
//!
//! **Crash safety** (worked example): segments A, B, C merge into D.
//! 1. D is written and fsynced; a crash here leaves D as an orphan file (removed at start) and
//!    A, B, C in the catalog: nothing lost, nothing doubled.
//! 2. Under the flush lock, A, B, C are replaced by D in memory and the catalog is written
//!    atomically; a crash before the rename leaves the old catalog (A, B, C; D orphan), a crash
//!    after it leaves the new one (D; A, B, C orphans). Never both counted, never neither.
//! 3. A, B, C go to the graveyard; their files are deleted once a catalog without them is
//!    durable *and* no running query still holds them (their `Arc` is the graveyard's alone).

use crate::buffer::arrow_type;
use crate::catalog::SegmentMeta;
use crate::flush::Built;
use crate::index::IndexCache;
use crate::{Error, Result, segment};
use arrow::array::{Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sonde_model::{ColumnType, SAMPLE_RATE_COLUMN, TIMESTAMP_COLUMN};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Groups of segments to merge, each into one: runs of time-adjacent segments packed greedily
/// up to the target. A group is merged when it holds a small segment (under half the target)
/// and either reaches half the target or holds at least four segments, so a large segment
/// absorbs its small neighbours, but the newest small segments are not rewritten at every flush.
pub(crate) fn plan(segments: &[Arc<SegmentMeta>], target_rows: u64) -> Vec<Vec<Arc<SegmentMeta>>> {
    let mut sorted: Vec<&Arc<SegmentMeta>> = segments.iter().collect();
    sorted.sort_by_key(|s| (s.min_ts_us, s.id));
    let small = |s: &SegmentMeta| s.rows < target_rows / 2;
    let mut groups = Vec::new();
    let mut cur: Vec<Arc<SegmentMeta>> = Vec::new();
    let mut rows = 0u64;
    let close = |cur: &mut Vec<Arc<SegmentMeta>>, rows: &mut u64, groups: &mut Vec<Vec<Arc<SegmentMeta>>>| {
        let worth = cur.iter().any(|s| small(s)) && (*rows >= target_rows / 2 || cur.len() >= 4);
        if cur.len() >= 2 && worth {
            groups.push(std::mem::take(cur));
        }
        cur.clear();
        *rows = 0;
    };
    for s in sorted {
        if rows + s.rows > target_rows {
            close(&mut cur, &mut rows, &mut groups);
        }
        if s.rows > target_rows {
            continue; // already past the target: never rewritten
        }
        rows += s.rows;
        cur.push(s.clone());
    }
    close(&mut cur, &mut rows, &mut groups);
    groups
}

/// The schema of a merged segment: the reserved columns, then every column any input has, at
/// the dataset's current (widest) type.
pub(crate) fn merged_schema(inputs: &[Arc<SegmentMeta>], dataset_types: &BTreeMap<String, ColumnType>) -> SchemaRef {
    let mut cols: BTreeMap<String, ColumnType> = BTreeMap::new();
    for s in inputs {
        for (name, ty) in &s.columns {
            let widest = dataset_types.get(name).copied().unwrap_or(*ty).widen(*ty);
            cols.entry(name.clone())
                .and_modify(|t| *t = t.widen(widest))
                .or_insert(widest);
        }
    }
    let mut fields = vec![
        Field::new(TIMESTAMP_COLUMN, crate::buffer::timestamp_type(), false),
        Field::new(SAMPLE_RATE_COLUMN, arrow::datatypes::DataType::Int64, false),
    ];
    fields.extend(cols.iter().map(|(n, t)| Field::new(n, arrow_type(*t), true)));
    Arc::new(Schema::new(fields))
}

/// Encodes the merge of segment files (already fetched; `inputs` are their entries, in the
/// same order) as one segment of `schema`. Each file is time-sorted, so the merge reads them
/// side by side a batch at a time and writes rows in time order as it goes (equal times in the
/// files' order): it holds one batch per input and the file being written, never the group's
/// rows decoded. A column keeps a dictionary if any input had one for it, and counts as
/// distinct ([`segment::Encoded::distinct_columns`]) if any input said so.
pub(crate) fn merge(
    files: Vec<Bytes>,
    inputs: &[Arc<SegmentMeta>],
    schema: &SchemaRef,
    opts: &segment::SegmentOptions,
    index: &IndexCache,
) -> Result<Built> {
    let mut dictionary = std::collections::BTreeSet::new();
    let mut cursors = Vec::with_capacity(files.len());
    let bytes: usize = files.iter().map(|f| f.len()).sum();
    for (rank, file) in files.into_iter().enumerate() {
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
        dictionary.extend(segment::dictionary_columns(builder.metadata()));
        let name = inputs.get(rank).map_or("?", |s| s.path.as_str()).to_string();
        if let Some(c) = Cursor::open(builder.build()?, schema, rank, name)? {
            cursors.push(c);
        }
    }
    let plain = plain_columns(schema, &dictionary);
    let distinct = distinct_columns(inputs);
    let mut writer = segment::SegmentWriter::new(schema, opts, &plain, distinct, bytes + bytes / 8)?;
    let mut index_file = index.file_builder();
    let mut facts = segment::SegmentFacts::NONE;
    let mut out = |b: &RecordBatch| -> Result<()> {
        facts = facts.and(segment::batches_facts(std::slice::from_ref(b))?);
        index_file.add(b)?;
        writer.write(b)
    };
    merge_in_time_order(cursors, &mut out)?;
    Ok(Built {
        encoded: writer.finish()?,
        index_file: index_file.finish()?,
        facts,
        raw_bytes: inputs.iter().map(|s| s.raw_bytes).sum(),
    })
}

/// The merge of time-sorted segment files whose columns are the merged schema's, built
/// mostly from their row groups as they are: a row group whose time span overlaps no other
/// input's is copied into the new file byte for byte (encodings, statistics, page indexes and
/// bloom filters with it); only the row groups whose spans overlap (where two flushes meet, a
/// few late events) are decoded, merged in time order and encoded again. The index files are
/// joined. The rows come out in the order [`merge`] gives them (equal times by input order)
/// at a fraction of its cost: a merge decodes and re-encodes every row, which was 13% of
/// ingest's CPU. `None` where it does not apply: inputs that differ in columns or types, lack
/// an index file or row-group statistics, or hold small row groups (flushes by age), which
/// [`merge`] packs into full ones.
pub(crate) fn stitch(
    files: &[Bytes],
    index_files: &[Option<Bytes>],
    inputs: &[Arc<SegmentMeta>],
    schema: &SchemaRef,
    opts: &segment::SegmentOptions,
    index: &IndexCache,
) -> Result<Option<Built>> {
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
    if files.len() != inputs.len() || index_files.len() != inputs.len() || inputs.len() < 2 {
        return Ok(None);
    }
    let Some(index_files) = index_files.iter().map(|f| f.as_deref()).collect::<Option<Vec<&[u8]>>>() else {
        return Ok(None);
    };
    // The indexed columns the merged segment has, which every input's index file must hold.
    let wanted: Vec<String> = index
        .columns()
        .iter()
        .filter(|c| schema.column_with_name(c).is_some())
        .cloned()
        .collect();
    let Some(index_file) = crate::index::merge_files(&index_files, &wanted)? else {
        return Ok(None);
    };
    let descr = parquet::arrow::ArrowSchemaConverter::new().convert(schema)?;
    // Flat columns only (Sonde's are): field i is leaf column i.
    if descr.num_columns() != schema.fields().len() {
        return Ok(None);
    }
    let mut metas = Vec::with_capacity(files.len());
    // For each input, where each of the merged schema's columns is in it: a flush writes its
    // columns in the order its events first gave them, so inputs agree on the columns and
    // their types, not on their order.
    let mut orders: Vec<Vec<usize>> = Vec::with_capacity(files.len());
    // Every row group: (first time, input, row group, last time).
    let mut units: Vec<(i64, usize, usize, i64)> = Vec::new();
    let mut dictionary = std::collections::BTreeSet::new();
    for (rank, file) in files.iter().enumerate() {
        let meta = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(file)?;
        let theirs = parquet::arrow::parquet_to_arrow_schema(
            meta.file_metadata().schema_descr(),
            meta.file_metadata().key_value_metadata(),
        )?;
        let their_columns = meta.file_metadata().schema_descr();
        if their_columns.num_columns() != theirs.fields().len() || theirs.fields().len() != schema.fields().len() {
            return Ok(None);
        }
        let mut order = Vec::with_capacity(schema.fields().len());
        for (j, field) in schema.fields().iter().enumerate() {
            let Ok(i) = theirs.index_of(field.name()) else {
                return Ok(None);
            };
            let theirs = theirs.field(i);
            if theirs.data_type() != field.data_type()
                || theirs.is_nullable() != field.is_nullable()
                || their_columns.column(i) != descr.column(j)
            {
                return Ok(None);
            }
            order.push(i);
        }
        let ts_column = order[schema.index_of(TIMESTAMP_COLUMN)?];
        for (g, rg) in meta.row_groups().iter().enumerate() {
            let span = match rg.column(ts_column).statistics() {
                Some(parquet::file::statistics::Statistics::Int64(st)) => st.min_opt().zip(st.max_opt()),
                _ => None,
            };
            let Some((&first, &last)) = span else {
                return Ok(None);
            };
            units.push((first, rank, g, last));
        }
        dictionary.extend(segment::dictionary_columns(&meta));
        metas.push(Arc::new(meta));
        orders.push(order);
    }
    let rows: i64 = metas.iter().flat_map(|m| m.row_groups()).map(|rg| rg.num_rows()).sum();
    if (rows as usize) / units.len().max(1) < opts.row_group_rows / 2 {
        return Ok(None);
    }
    // Runs of row groups to write in order: one row group alone (copied), or row groups whose
    // spans overlap (merged). A row group starts a new run when every row before it comes first
    // in time order, equal times by input: its (first time, input) is not below the run's
    // greatest (last time, input).
    units.sort_by_key(|u| (u.0, u.1, u.2));
    let mut runs: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut run_end = (i64::MIN, 0usize);
    for (first, rank, g, last) in units {
        match runs.last_mut() {
            Some(run) if (first, rank) < run_end => run.push((rank, g)),
            _ => runs.push(vec![(rank, g)]),
        }
        run_end = run_end.max((last, rank));
    }
    let plain = plain_columns(schema, &dictionary);
    let mut props = segment::writer_properties(schema, opts, &plain)?;
    parquet::arrow::add_encoded_arrow_schema_to_metadata(schema, &mut props);
    let bytes: usize = files.iter().map(|f| f.len()).sum();
    let mut writer = parquet::file::writer::SerializedFileWriter::new(
        Vec::with_capacity(bytes + bytes / 16),
        descr.root_schema_ptr(),
        Arc::new(props),
    )?;
    for run in runs {
        if let [(rank, g)] = run[..] {
            copy_row_group(&mut writer, &files[rank], &metas[rank], g, &orders[rank])?;
            continue;
        }
        // The overlapping row groups merged as [`merge`] merges whole files, written as a
        // small file of their own whose row groups are then copied like the others.
        let mut cursors = Vec::new();
        for (rank, file) in files.iter().enumerate() {
            let groups: Vec<usize> = run.iter().filter(|(r, _)| *r == rank).map(|(_, g)| *g).collect();
            if groups.is_empty() {
                continue;
            }
            // The footer parsed above, not parsed again.
            let read_as =
                parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(metas[rank].clone(), Default::default())?;
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file.clone(), read_as)
                .with_row_groups(groups)
                .build()?;
            if let Some(c) = Cursor::open(reader, schema, rank, inputs[rank].path.clone())? {
                cursors.push(c);
            }
        }
        let mut part = segment::SegmentWriter::new(schema, opts, &plain, Vec::new(), 1 << 20)?;
        merge_in_time_order(cursors, &mut |b| part.write(b))?;
        let part = part.finish()?.bytes;
        let meta = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(&part)?;
        let in_order: Vec<usize> = (0..schema.fields().len()).collect();
        for g in 0..meta.num_row_groups() {
            copy_row_group(&mut writer, &part, &meta, g, &in_order)?;
        }
    }
    let out = writer.into_inner()?;
    let distinct = distinct_columns(inputs);
    Ok(Some(Built {
        encoded: segment::Encoded {
            bytes: Bytes::from(out),
            distinct_columns: distinct,
        },
        index_file,
        // What the read-back must find: every input's rows and time span.
        facts: inputs_facts(inputs),
        raw_bytes: inputs.iter().map(|s| s.raw_bytes).sum(),
    }))
}

/// The columns of `schema` that no input had a dictionary for: a merge keeps each column's
/// choice of one.
fn plain_columns(schema: &SchemaRef, dictionary: &std::collections::BTreeSet<String>) -> Vec<String> {
    schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !dictionary.contains(n))
        .collect()
}

/// The columns any input counted as distinct ([`segment::Encoded::distinct_columns`]), once each.
fn distinct_columns(inputs: &[Arc<SegmentMeta>]) -> Vec<String> {
    let mut distinct: Vec<String> = inputs.iter().flat_map(|s| s.distinct_columns.iter().cloned()).collect();
    distinct.sort();
    distinct.dedup();
    distinct
}

/// Appends row group `g` of `file` (whose metadata is `meta`) to `writer` as it is, the
/// writer's column `j` from the file's column `order[j]`.
fn copy_row_group(
    writer: &mut parquet::file::writer::SerializedFileWriter<Vec<u8>>,
    file: &Bytes,
    meta: &parquet::file::metadata::ParquetMetaData,
    g: usize,
    order: &[usize],
) -> Result<()> {
    let rg = meta.row_group(g);
    let mut out = writer.next_row_group()?;
    for &c in order {
        let column = rg.column(c);
        let close = parquet::column::writer::ColumnCloseResult {
            bytes_written: column.compressed_size() as u64,
            rows_written: rg.num_rows() as u64,
            metadata: column.clone(),
            bloom_filter: parquet::bloom_filter::Sbbf::read_from_column_chunk(column, file)?,
            column_index: meta.column_index().map(|ci| ci[g][c].clone()),
            offset_index: meta.offset_index().map(|oi| oi[g][c].clone()),
        };
        out.append_column(file, close)?;
    }
    out.close()?;
    Ok(())
}

/// Rows per batch handed to the writer when inputs interleave (runs of one input longer than
/// this go as they are, without a copy).
const MERGED_BATCH_ROWS: usize = 8 * 1024;

/// Calls `write` with the rows of time-sorted inputs in time order (equal times by rank).
fn merge_in_time_order(mut cursors: Vec<Cursor>, write: &mut impl FnMut(&RecordBatch) -> Result<()>) -> Result<()> {
    // Runs waiting to be written together, and their rows.
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0;
    while !cursors.is_empty() {
        // The input whose next row comes first, and the next row of any other: the first
        // input's rows before that one go out as one run.
        let first = (0..cursors.len()).min_by_key(|&i| cursors[i].key()).expect("not empty");
        let next = (0..cursors.len())
            .filter(|&i| i != first)
            .map(|i| cursors[i].key())
            .min();
        let run = cursors[first].run_before(next);
        let rows = cursors[first].batch.slice(cursors[first].row, run);
        if run >= MERGED_BATCH_ROWS {
            write_joined(&mut pending, write)?;
            write(&rows)?;
        } else {
            pending_rows += run;
            pending.push(rows);
            if pending_rows >= MERGED_BATCH_ROWS {
                write_joined(&mut pending, write)?;
                pending_rows = 0;
            }
        }
        if !cursors[first].advance(run)? {
            cursors.remove(first);
        }
    }
    write_joined(&mut pending, write)
}

/// Writes the runs waiting, as one batch, and clears them.
fn write_joined(pending: &mut Vec<RecordBatch>, write: &mut impl FnMut(&RecordBatch) -> Result<()>) -> Result<()> {
    if let Some(first) = pending.first() {
        match pending.len() {
            1 => write(first)?,
            _ => write(&arrow::compute::concat_batches(&first.schema(), pending.iter())?)?,
        }
    }
    pending.clear();
    Ok(())
}

/// One input of a merge: its reader and the batch being read (cast to the merged schema).
struct Cursor {
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    schema: SchemaRef,
    /// Its place among the inputs: equal times go out in this order.
    rank: usize,
    /// The file's name, for errors.
    name: String,
    batch: RecordBatch,
    ts: TimestampMicrosecondArray,
    /// The next row of `batch` to go out.
    row: usize,
}

impl Cursor {
    /// The input at its first row, or `None` if it has none.
    fn open(
        reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
        schema: &SchemaRef,
        rank: usize,
        name: String,
    ) -> Result<Option<Cursor>> {
        let mut c = Cursor {
            reader,
            schema: schema.clone(),
            rank,
            name,
            batch: RecordBatch::new_empty(schema.clone()),
            ts: TimestampMicrosecondArray::from(Vec::<i64>::new()),
            row: 0,
        };
        Ok(c.next_batch()?.then_some(c))
    }

    /// The next row's time and the input's rank.
    fn key(&self) -> (i64, usize) {
        (self.ts.value(self.row), self.rank)
    }

    /// How many rows from the next one come before `next` (another input's next row): all
    /// rows of the batch if `next` is `None`, and at least one.
    fn run_before(&self, next: Option<(i64, usize)>) -> usize {
        let rest = &self.ts.values()[self.row..];
        let Some((t, rank)) = next else {
            return rest.len();
        };
        // Rows at the same time as `next` go first only from a lower rank.
        let n = rest.partition_point(|&v| v < t || (v == t && self.rank < rank));
        n.max(1)
    }

    /// Moves past `n` rows; false once the input has no more.
    fn advance(&mut self, n: usize) -> Result<bool> {
        self.row += n;
        if self.row < self.batch.num_rows() {
            return Ok(true);
        }
        let last = self.ts.value(self.batch.num_rows() - 1);
        let more = self.next_batch()?;
        if more && self.ts.value(0) < last {
            return Err(self.unsorted());
        }
        Ok(more)
    }

    /// Reads the next non-empty batch; false at the end.
    fn next_batch(&mut self) -> Result<bool> {
        for batch in self.reader.by_ref() {
            let batch = segment::adapt_to_schema(&batch?, &self.schema)?;
            if batch.num_rows() == 0 {
                continue;
            }
            let ts = batch
                .column_by_name(TIMESTAMP_COLUMN)
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
                .ok_or_else(|| Error::Invalid(format!("{}: no µs timestamp column", self.name)))?
                .clone();
            if ts.null_count() > 0 {
                return Err(Error::Invalid(format!("{}: timestamp column has nulls", self.name)));
            }
            if ts.values().windows(2).any(|w| w[0] > w[1]) {
                return Err(self.unsorted());
            }
            (self.batch, self.ts, self.row) = (batch, ts, 0);
            return Ok(true);
        }
        Ok(false)
    }

    fn unsorted(&self) -> Error {
        Error::Invalid(format!("{} is not in time order: it cannot be merged", self.name))
    }
}

/// The rows and time span a merge of `inputs` holds, from their catalog entries.
fn inputs_facts(inputs: &[Arc<SegmentMeta>]) -> segment::SegmentFacts {
    segment::SegmentFacts {
        rows: inputs.iter().map(|s| s.rows).sum(),
        min_ts_us: inputs.iter().map(|s| s.min_ts_us).min().unwrap_or(0),
        max_ts_us: inputs.iter().map(|s| s.max_ts_us).max().unwrap_or(0),
    }
}

/// Checks that a merged batch holds exactly the inputs' rows and time span.
pub(crate) fn check_merged(inputs: &[Arc<SegmentMeta>], facts: &segment::SegmentFacts) -> Result<()> {
    let segment::SegmentFacts {
        rows,
        min_ts_us: min,
        max_ts_us: max,
    } = inputs_facts(inputs);
    if facts.rows != rows || facts.min_ts_us != min || facts.max_ts_us != max {
        return Err(Error::Invalid(format!(
            "merged segment has {} rows in [{}, {}], inputs have {rows} in [{min}, {max}]",
            facts.rows, facts.min_ts_us, facts.max_ts_us
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::SegmentId;

    fn seg(id: u64, rows: u64, ts: i64) -> Arc<SegmentMeta> {
        Arc::new(SegmentMeta {
            id: SegmentId(id),
            path: format!("s{id}"),
            rows,
            bytes: rows * 10,
            raw_bytes: rows * 100,
            min_ts_us: ts,
            max_ts_us: ts + 10,
            min_lsn: crate::wal::Lsn(id),
            max_lsn: crate::wal::Lsn(id),
            columns: vec![],
            distinct_columns: vec![],
        })
    }

    /// A segment file of `(time, label)` rows (in the order given) and an `n` column of
    /// integers in all but the odd inputs, where it is a string (the merge widens it).
    fn file(rank: usize, rows: &[(i64, String)], opts: &segment::SegmentOptions) -> Bytes {
        use arrow::array::{ArrayRef, Int64Array, StringArray};
        use arrow::datatypes::DataType;
        let n: ArrayRef = match rank % 2 {
            0 => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0 * 10))),
            _ => Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| (r.0 * 10).to_string()),
            )),
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new(TIMESTAMP_COLUMN, crate::buffer::timestamp_type(), false),
            Field::new(SAMPLE_RATE_COLUMN, DataType::Int64, false),
            Field::new("label", DataType::Utf8, true),
            Field::new("n", n.data_type().clone(), true),
        ]));
        let ts = TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.0)).with_timezone("UTC");
        let labels = StringArray::from_iter_values(rows.iter().map(|r| r.1.clone()));
        let rates = Int64Array::from_iter_values(rows.iter().map(|_| 1));
        let columns: Vec<ArrayRef> = vec![Arc::new(ts), Arc::new(rates), Arc::new(labels), n];
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        segment::encode(&schema, &[batch], opts).unwrap().bytes
    }

    #[test]
    fn a_merge_streams_its_inputs_in_time_order_like_a_stable_sort() {
        // Small row groups and reader batches make runs cross batch boundaries.
        let opts = segment::SegmentOptions {
            row_group_rows: 64,
            ..Default::default()
        };
        // Inputs: one apart from the others, two overlapping with many equal times, one of a
        // single row, one empty of rows in the overlap, and one long run larger than a merged
        // batch.
        let mut rng = 7u64;
        let mut next = |m: i64| {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (rng >> 33) as i64 % m
        };
        let mut inputs: Vec<Vec<(i64, String)>> = vec![
            (0..100).map(|i| (i, String::new())).collect(),
            (0..3000)
                .map(|_| 1000 + next(500))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| (t, String::new()))
                .collect(),
            (0..2000)
                .map(|_| 1000 + next(500))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| (t, String::new()))
                .collect(),
            vec![(1200, String::new())],
            (0..20_000).map(|i| (5000 + i / 3, String::new())).collect(),
        ];
        for (rank, rows) in inputs.iter_mut().enumerate() {
            rows.sort_by_key(|r| r.0);
            for (i, r) in rows.iter_mut().enumerate() {
                r.1 = format!("{rank}:{i}");
            }
        }
        let files: Vec<Bytes> = inputs
            .iter()
            .enumerate()
            .map(|(k, rows)| file(k, rows, &opts))
            .collect();
        let metas = metas_of(&inputs, |k| {
            (format!("c{}", k % 2), [ColumnType::Int, ColumnType::String][k % 2])
        });
        let types = BTreeMap::from([
            ("label".to_string(), ColumnType::String),
            ("n".to_string(), ColumnType::String),
        ]);
        let schema = merged_schema(&metas, &types);
        let index = IndexCache::new(vec!["label".into()], 1 << 20);
        let built = merge(files, &metas, &schema, &opts, &index).unwrap();
        check_merged(&metas, &built.facts).unwrap();
        assert_eq!(built.encoded.distinct_columns, vec!["c0".to_string(), "c1".to_string()]);

        // The model: every row, stably sorted by time, inputs in rank order.
        let mut want: Vec<(i64, String)> = inputs.concat();
        want.sort_by_key(|r| r.0);
        let got = rows_of(&built.encoded.bytes);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.0, &g.1), (w.0, &w.1));
            assert_eq!(g.2, (w.0 * 10).to_string(), "n widened to a string");
        }
        // The index file holds every label.
        let entries = crate::index::decode_file(&built.index_file).unwrap();
        assert_eq!(entries.len(), 1);
        assert!(
            want.iter()
                .all(|(_, l)| entries[0].1.contains(crate::index::hash_value(l)))
        );
    }

    /// The catalog entries of `file`s of these rows: input `k` names `distinct(k).0` a distinct
    /// column and has `n` of type `distinct(k).1`.
    fn metas_of(inputs: &[Vec<(i64, String)>], of: impl Fn(usize) -> (String, ColumnType)) -> Vec<Arc<SegmentMeta>> {
        inputs
            .iter()
            .enumerate()
            .map(|(k, rows)| {
                let mut m = (*seg(k as u64, rows.len() as u64, rows[0].0)).clone();
                m.max_ts_us = rows.last().unwrap().0;
                let (distinct, n) = of(k);
                m.distinct_columns = vec![distinct];
                m.columns = vec![("label".into(), ColumnType::String), ("n".into(), n)];
                Arc::new(m)
            })
            .collect()
    }

    /// Every row of a file, in order: (time, label, n as text).
    fn rows_of(file: &Bytes) -> Vec<(i64, String, String)> {
        use arrow::array::AsArray;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file.clone())
            .unwrap()
            .build()
            .unwrap();
        let mut out = Vec::new();
        for b in reader {
            let b = b.unwrap();
            let ts = b
                .column_by_name(TIMESTAMP_COLUMN)
                .unwrap()
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            let label = b.column_by_name("label").unwrap().as_string::<i32>();
            let n = arrow::compute::cast(b.column_by_name("n").unwrap(), &arrow::datatypes::DataType::Utf8).unwrap();
            let n = n.as_string::<i32>();
            for i in 0..b.num_rows() {
                out.push((ts.value(i), label.value(i).to_string(), n.value(i).to_string()));
            }
        }
        out
    }

    /// Segments that follow each other in time with the same columns are joined as they are:
    /// the same rows in the same order as the row-by-row merge, their row groups (statistics,
    /// page indexes, bloom filters) copied, and an index file holding every input's values. Inputs
    /// that overlap in time, differ in a column's type, lack an index file or hold small row
    /// groups are left to the merge.
    #[test]
    fn segments_that_follow_each_other_are_joined_as_they_are() {
        let opts = segment::SegmentOptions {
            row_group_rows: 64,
            bloom_columns: vec!["label".into()],
            ..Default::default()
        };
        // Three inputs in time order (the second starting at the first's last time), each of
        // full row groups but its last.
        let spans = [(0i64, 300usize), (299, 200), (600, 130)];
        let inputs: Vec<Vec<(i64, String)>> = spans
            .iter()
            .enumerate()
            .map(|(k, &(t0, n))| (0..n).map(|i| (t0 + (i as i64) / 2, format!("{k}:{i}"))).collect())
            .collect();
        // Even ranks only: `n` is an integer column in each. The second input has its columns
        // in another order, as flushes do (each in the order its events first gave them).
        let mut files: Vec<Bytes> = inputs.iter().map(|rows| file(0, rows, &opts)).collect();
        files[1] = {
            let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(files[1].clone())
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap().project(&[0, 1, 3, 2]).unwrap())
                .collect();
            segment::encode(&batches[0].schema(), &batches, &opts).unwrap().bytes
        };
        let index = IndexCache::new(vec!["label".into()], 1 << 20);
        let index_files: Vec<Option<Bytes>> = inputs
            .iter()
            .map(|rows| {
                let labels = arrow::array::StringArray::from_iter_values(rows.iter().map(|r| r.1.clone()));
                let schema = Arc::new(Schema::new(vec![Field::new(
                    "label",
                    arrow::datatypes::DataType::Utf8,
                    true,
                )]));
                let batch = RecordBatch::try_new(schema, vec![Arc::new(labels)]).unwrap();
                Some(Bytes::from(index.file_for_batches(&[batch]).unwrap()))
            })
            .collect();
        let metas = metas_of(&inputs, |k| (format!("c{k}"), ColumnType::Int));
        let types = BTreeMap::from([
            ("label".to_string(), ColumnType::String),
            ("n".to_string(), ColumnType::Int),
        ]);
        let schema = merged_schema(&metas, &types);
        let joined = stitch(&files, &index_files, &metas, &schema, &opts, &index)
            .unwrap()
            .expect("inputs that follow each other are joined");
        check_merged(&metas, &joined.facts).unwrap();
        assert_eq!(joined.encoded.distinct_columns, ["c0", "c1", "c2"]);
        let merged = merge(files.clone(), &metas, &schema, &opts, &index).unwrap();
        assert_eq!(rows_of(&joined.encoded.bytes), rows_of(&merged.encoded.bytes));
        assert_eq!(rows_of(&joined.encoded.bytes).len(), 630);
        // The inputs' row groups, whole: 5 + 4 + 3 of them, each with its statistics, page
        // index and the label's bloom filter.
        let meta = parquet::file::metadata::ParquetMetaDataReader::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required)
            .parse_and_finish(&joined.encoded.bytes)
            .unwrap();
        assert_eq!(meta.num_row_groups(), 12);
        assert_eq!(meta.offset_index().unwrap().len(), 12);
        let label = meta
            .row_group(0)
            .columns()
            .iter()
            .position(|c| c.column_path().string() == "label")
            .unwrap();
        for (g, rg) in meta.row_groups().iter().enumerate() {
            assert!(rg.column(0).statistics().is_some(), "row group {g}");
            let bloom = parquet::bloom_filter::Sbbf::read_from_column_chunk(rg.column(label), &joined.encoded.bytes)
                .unwrap()
                .expect("a bloom filter");
            // The first row group of the second input holds its first label.
            if g == 5 {
                assert!(bloom.check(&"1:0"), "row group {g}");
            }
        }
        // The sorting is said, as the merge says it.
        assert!(meta.row_group(0).sorting_columns().is_some());
        // The index file: every label of every input, as the merge's.
        let entries = crate::index::decode_file(&joined.index_file).unwrap();
        assert_eq!(entries.len(), 1);
        assert!(
            inputs
                .concat()
                .iter()
                .all(|(_, l)| entries[0].1.contains(crate::index::hash_value(l)))
        );
        assert_eq!(joined.index_file, merged.index_file);

        // Inputs that overlap in time: the row groups where they meet are merged, the others
        // copied, and the rows are the merge's still.
        let late: Vec<(i64, String)> = (0..150).map(|i| (100 + i as i64 / 3, format!("late:{i}"))).collect();
        let overlapping = vec![files[0].clone(), file(0, &late, &opts), files[2].clone()];
        let mut late_meta = (*metas[1]).clone();
        (late_meta.rows, late_meta.min_ts_us, late_meta.max_ts_us) = (150, 100, 149);
        let overlapping_metas = vec![metas[0].clone(), Arc::new(late_meta), metas[2].clone()];
        let joined = stitch(&overlapping, &index_files, &overlapping_metas, &schema, &opts, &index)
            .unwrap()
            .expect("overlapping inputs are joined too");
        let merged = merge(overlapping.clone(), &overlapping_metas, &schema, &opts, &index).unwrap();
        assert_eq!(rows_of(&joined.encoded.bytes), rows_of(&merged.encoded.bytes));
        assert_eq!(rows_of(&joined.encoded.bytes).len(), 580);
        // Input 0's three row groups before time 96 and input 2's three are copied; its last
        // two (times 96-149) and the late input's three are merged, 258 rows in full row groups.
        let meta = parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&joined.encoded.bytes)
            .unwrap();
        let sizes: Vec<i64> = meta.row_groups().iter().map(|rg| rg.num_rows()).collect();
        assert_eq!(sizes, [64, 64, 64, 64, 64, 64, 64, 2, 64, 64, 2]);
        // ... a column of another type in one of them (the merge widens it), ...
        let mixed = vec![files[0].clone(), file(1, &inputs[1], &opts), files[2].clone()];
        let wide = BTreeMap::from([
            ("label".to_string(), ColumnType::String),
            ("n".to_string(), ColumnType::String),
        ]);
        let wide_schema = merged_schema(&metas, &wide);
        assert!(
            stitch(&mixed, &index_files, &metas, &wide_schema, &opts, &index)
                .unwrap()
                .is_none()
        );
        // ... an input without its index file, or whose index file lacks the indexed column
        // (written before `label` was indexed: a union would miss its values), ...
        let mut missing = index_files.clone();
        missing[2] = None;
        assert!(
            stitch(&files, &missing, &metas, &schema, &opts, &index)
                .unwrap()
                .is_none()
        );
        let mut older = index_files.clone();
        older[0] = Some(Bytes::from(IndexCache::new(vec![], 0).file_builder().finish().unwrap()));
        assert!(
            stitch(&files, &older, &metas, &schema, &opts, &index)
                .unwrap()
                .is_none()
        );
        // ... and small row groups, which the merge packs into full ones.
        let big = segment::SegmentOptions {
            row_group_rows: 1024,
            ..opts.clone()
        };
        assert!(
            stitch(&files, &index_files, &metas, &schema, &big, &index)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_merge_refuses_an_input_out_of_time_order() {
        let opts = segment::SegmentOptions::default();
        let sorted: Vec<(i64, String)> = (0..10).map(|i| (i, format!("a{i}"))).collect();
        // Written through `file`, rows are sorted: an unsorted file is made by hand.
        let schema = Arc::new(Schema::new(vec![
            Field::new(TIMESTAMP_COLUMN, crate::buffer::timestamp_type(), false),
            Field::new(SAMPLE_RATE_COLUMN, arrow::datatypes::DataType::Int64, false),
        ]));
        let ts = TimestampMicrosecondArray::from_iter_values([5, 3, 9]).with_timezone("UTC");
        let rates = arrow::array::Int64Array::from_iter_values([1, 1, 1]);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ts), Arc::new(rates)]).unwrap();
        let mut out = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema.clone(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let files = vec![file(0, &sorted, &opts), Bytes::from(out)];
        let metas = vec![seg(1, 10, 0), seg(2, 3, 3)];
        let types = BTreeMap::from([
            ("label".to_string(), ColumnType::String),
            ("n".to_string(), ColumnType::Int),
        ]);
        let merged = merged_schema(&metas, &types);
        let index = IndexCache::new(vec![], 0);
        let Err(e) = merge(files, &metas, &merged, &opts, &index) else {
            panic!("merged an unsorted input")
        };
        assert!(e.to_string().contains("not in time order"), "{e}");
    }

    #[test]
    fn merges_runs_of_small_segments_up_to_the_target() {
        let segs: Vec<_> = (0..10).map(|i| seg(i, 300, i as i64 * 100)).collect();
        let groups = plan(&segs, 1000);
        // 300-row segments: groups of 3 (900 rows; a 4th would pass 1000).
        assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), vec![3, 3, 3]);
        assert!(
            groups
                .iter()
                .all(|g| g.windows(2).all(|w| w[0].min_ts_us <= w[1].min_ts_us))
        );
    }

    #[test]
    fn a_large_segment_absorbs_small_neighbours() {
        let segs = vec![
            seg(1, 3000, 0),
            seg(2, 500, 10),
            seg(3, 3000, 20),
            seg(4, 500, 30),
            seg(5, 500, 40),
        ];
        let groups: Vec<Vec<u64>> = plan(&segs, 4000)
            .iter()
            .map(|g| g.iter().map(|s| s.id.0).collect())
            .collect();
        assert_eq!(groups, vec![vec![1, 2], vec![3, 4, 5]]);
        let big = vec![seg(1, 3000, 0), seg(2, 3000, 10)];
        assert!(plan(&big, 4000).is_empty(), "large segments alone are never rewritten");
    }

    #[test]
    fn large_segments_split_runs_and_lone_small_ones_stay() {
        let segs = vec![seg(1, 100, 0), seg(2, 5000, 10), seg(3, 100, 20), seg(4, 100, 30)];
        assert!(
            plan(&segs, 1000).is_empty(),
            "two small segments under half the target wait for more"
        );
        let segs = vec![
            seg(1, 100, 0),
            seg(2, 100, 10),
            seg(3, 100, 20),
            seg(4, 100, 30),
            seg(5, 5000, 40),
        ];
        assert_eq!(plan(&segs, 1000).len(), 1);
    }
}

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
    let plain: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !dictionary.contains(n))
        .collect();
    let mut distinct: Vec<String> = inputs.iter().flat_map(|s| s.distinct_columns.iter().cloned()).collect();
    distinct.sort();
    distinct.dedup();
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

/// Checks that a merged batch holds exactly the inputs' rows and time span.
pub(crate) fn check_merged(inputs: &[Arc<SegmentMeta>], facts: &segment::SegmentFacts) -> Result<()> {
    let rows: u64 = inputs.iter().map(|s| s.rows).sum();
    let min = inputs.iter().map(|s| s.min_ts_us).min().unwrap_or(0);
    let max = inputs.iter().map(|s| s.max_ts_us).max().unwrap_or(0);
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
        use arrow::array::AsArray;
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
        let metas: Vec<Arc<SegmentMeta>> = inputs
            .iter()
            .enumerate()
            .map(|(k, rows)| {
                let mut m = (*seg(k as u64, rows.len() as u64, rows[0].0)).clone();
                m.max_ts_us = rows.last().unwrap().0;
                m.distinct_columns = vec![format!("c{}", k % 2)];
                let n = [ColumnType::Int, ColumnType::String][k % 2];
                m.columns = vec![("label".into(), ColumnType::String), ("n".into(), n)];
                Arc::new(m)
            })
            .collect();
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
        let reader = ParquetRecordBatchReaderBuilder::try_new(built.encoded.bytes.clone())
            .unwrap()
            .build()
            .unwrap();
        let mut got: Vec<(i64, String, String)> = Vec::new();
        for b in reader {
            let b = b.unwrap();
            let ts = b
                .column_by_name(TIMESTAMP_COLUMN)
                .unwrap()
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            let label = b.column_by_name("label").unwrap().as_string::<i32>();
            let n = b.column_by_name("n").unwrap().as_string::<i32>();
            for i in 0..b.num_rows() {
                got.push((ts.value(i), label.value(i).to_string(), n.value(i).to_string()));
            }
        }
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

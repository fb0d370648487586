//! Compaction: small segments of one dataset merged into large, time-sorted ones.
//!
//! Flushes by age leave many small segments, and a query pays per file. The planner picks runs
//! of adjacent small segments (in time order) and the merger rewrites each run as one segment:
//! read, cast to the dataset's widest types, sort by time, write, fsync, read back and verify.
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
use crate::{Error, Result, segment};
use arrow::array::RecordBatch;
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

/// Reads segment files (already fetched) as batches of `schema`; the segment writer sorts them
/// together by time as it writes (no merged copy of the whole group is made).
pub(crate) fn read_all(files: Vec<Bytes>, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    for bytes in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        for b in reader {
            batches.push(segment::adapt_to_schema(&b?, schema)?);
        }
    }
    Ok(batches)
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

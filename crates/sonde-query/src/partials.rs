//! Precomputed partial aggregates: per sealed segment and query shape, the partial aggregates
//! (COUNT, SUM, MIN, MAX, AVG's sum and weight, percentile sketches, sets of distinct values)
//! per time bucket and group that a breakdown rolls up, kept in memory so that the next query
//! of the same shape reads them instead of the segment.
//!
//! A segment never changes once written (compaction writes new segments with new ids and
//! retention deletes whole ones), so a segment's partials for a shape stay exact for as long
//! as the segment exists; entries of segments that are gone are simply never asked for again
//! and fall out of the cache as it fills. Only segments wholly inside a query's time range are
//! answered this way (their rows all pass the time filter); the segments at the range's edges
//! and the write buffer are scanned as before, and the three are rolled up together.
//!
//! The shape (see [`PartialsCache::get`]) is everything that decides a segment's partials: the
//! dataset, the filters, breakdowns, calculations, derived columns, the granularity and the
//! phase of the time buckets (the range's start modulo the granularity; buckets are offsets
//! from the start, so two ranges with the same phase cut the same buckets), and the table
//! schema (a widened column type reads differently). Entries are stored with the start their
//! bucket numbers count from and shifted to the asking query's start.

use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::Int64Type;
use sonde_storage::source::SegmentId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The partials of one segment for one shape.
#[derive(Debug, Clone)]
struct Entry {
    batches: Vec<RecordBatch>,
    /// The range start (µs) the batches' bucket numbers count from.
    start_us: i64,
    bytes: usize,
    last_used: u64,
}

/// Most columns remembered as having too many distinct values for sets (see
/// [`PartialsCache::refuse_sets`]); past it the memory starts over.
const REFUSED_SETS: usize = 1_000;

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<(Arc<str>, SegmentId), Entry>,
    /// `(dataset, column)`s whose sets of distinct values were too large to keep.
    refused_sets: std::collections::HashSet<(String, String)>,
    bytes: usize,
    tick: u64,
    hits: u64,
    misses: u64,
}

/// A bounded, least-recently-used map from (shape, segment) to that segment's partial
/// aggregates. Shared by every query of the engine.
#[derive(Debug)]
pub struct PartialsCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

/// Hits and misses so far, and what the cache holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartialsStats {
    /// Segments answered from the cache.
    pub hits: u64,
    /// Segments whose partials were computed (and kept, room permitting).
    pub misses: u64,
    /// Entries held.
    pub entries: usize,
    /// Bytes held (Arrow buffer sizes).
    pub bytes: usize,
}

impl PartialsCache {
    /// A cache holding at most `max_bytes` of partials; 0 turns precomputed partials off.
    pub fn new(max_bytes: usize) -> PartialsCache {
        PartialsCache {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether partials are kept at all.
    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    /// The partials of `segment` for `shape`, with the bucket column `t` counted from
    /// `start_us` (whose phase the shape fixes), or `None`.
    pub fn get(
        &self,
        shape: &Arc<str>,
        segment: SegmentId,
        start_us: i64,
        granularity_us: i64,
    ) -> Option<Vec<RecordBatch>> {
        let mut inner = self.inner.lock().unwrap();
        inner.tick += 1;
        let tick = inner.tick;
        let Some(e) = inner.entries.get_mut(&(shape.clone(), segment)) else {
            inner.misses += 1;
            return None;
        };
        e.last_used = tick;
        let (batches, from) = (e.batches.clone(), e.start_us);
        inner.hits += 1;
        drop(inner);
        // Same phase, so the difference is a whole number of buckets.
        let shift = (from - start_us) / granularity_us;
        Some(if shift == 0 {
            batches
        } else {
            batches.iter().map(|b| shift_buckets(b, shift)).collect()
        })
    }

    /// Keeps `batches` (bucket column `t` counted from `start_us`) as the partials of
    /// `segment` for `shape`, evicting the least recently used entries to make room; an entry
    /// larger than an eighth of the cache is not kept (false).
    pub fn insert(&self, shape: &Arc<str>, segment: SegmentId, start_us: i64, batches: Vec<RecordBatch>) -> bool {
        let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum::<usize>() + 256;
        if bytes > self.max_bytes / 8 {
            return false;
        }
        let mut inner = self.inner.lock().unwrap();
        inner.tick += 1;
        let entry = Entry {
            batches,
            start_us,
            bytes,
            last_used: inner.tick,
        };
        if let Some(old) = inner.entries.insert((shape.clone(), segment), entry) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.max_bytes {
            // Linear in the entries, and only when full: entries are few (kilobytes each).
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            let e = inner.entries.remove(&oldest).expect("present");
            inner.bytes -= e.bytes;
        }
        true
    }

    /// Remembers that `column` of `dataset` has too many distinct values for its sets to be
    /// kept (or to fit in an answer), so that COUNT_DISTINCT over it is counted from the rows.
    pub fn refuse_sets(&self, dataset: &str, column: &str) {
        let mut inner = self.inner.lock().unwrap();
        if inner.refused_sets.len() >= REFUSED_SETS {
            inner.refused_sets.clear();
        }
        inner.refused_sets.insert((dataset.to_string(), column.to_string()));
    }

    /// Whether [`PartialsCache::refuse_sets`] was told so of `column` of `dataset`.
    pub fn sets_refused(&self, dataset: &str, column: &str) -> bool {
        let inner = self.inner.lock().unwrap();
        inner.refused_sets.contains(&(dataset.to_string(), column.to_string()))
    }

    /// Hits, misses and size so far.
    pub fn stats(&self) -> PartialsStats {
        let inner = self.inner.lock().unwrap();
        PartialsStats {
            hits: inner.hits,
            misses: inner.misses,
            entries: inner.entries.len(),
            bytes: inner.bytes,
        }
    }
}

/// `batch` with `shift` added to its bucket column `t`.
fn shift_buckets(batch: &RecordBatch, shift: i64) -> RecordBatch {
    let i = batch.schema().index_of("t").expect("partials have a bucket column");
    let t = batch.column(i).as_primitive::<Int64Type>();
    let shifted: Int64Array = t.iter().map(|v| v.map(|v| v + shift)).collect();
    let mut columns = batch.columns().to_vec();
    columns[i] = Arc::new(shifted) as Arc<dyn Array>;
    RecordBatch::try_new(batch.schema(), columns).expect("same schema")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(ts: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Int64, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let n: Int64Array = ts.iter().map(|_| Some(1)).collect();
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ts.to_vec())), Arc::new(n)]).unwrap()
    }

    #[test]
    fn entries_shift_to_the_asking_start_and_the_oldest_go_first() {
        let shape: Arc<str> = "s".into();
        let c = PartialsCache::new(1 << 20);
        c.insert(&shape, SegmentId(1), 1_000, vec![batch(&[0, 1, 2])]);
        // Asked from a start two buckets (of 500 µs) earlier: bucket numbers grow by two.
        let got = c.get(&shape, SegmentId(1), 0, 500).unwrap();
        let t = got[0].column(0).as_primitive::<Int64Type>();
        assert_eq!(t.values().to_vec(), vec![2, 3, 4]);
        assert!(c.get(&shape, SegmentId(2), 0, 500).is_none());
        assert!(c.get(&"other".into(), SegmentId(1), 0, 500).is_none());
        assert_eq!((c.stats().hits, c.stats().misses), (1, 2));

        // A small cache keeps the most recently used entries.
        let one = batch(&[0; 100]).get_array_memory_size() + 256;
        let c = PartialsCache::new(one * 8 * 2);
        for i in 0..20 {
            c.insert(&shape, SegmentId(i), 0, vec![batch(&[0; 100])]);
            let _ = c.get(&shape, SegmentId(0), 0, 1);
        }
        let s = c.stats();
        assert!(s.bytes <= one * 16 && s.entries >= 2, "{s:?}");
        assert!(
            c.get(&shape, SegmentId(0), 0, 1).is_some(),
            "the entry used every time stays"
        );
        assert!(c.get(&shape, SegmentId(1), 0, 1).is_none(), "an old one went");
        assert!(!PartialsCache::new(0).enabled());
    }
}

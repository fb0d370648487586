//! BubbleUp: what is different about a selection of events, across every column at once.
//!
//! The query's filters and time range define the *population*; the *selection* is a box on a
//! heatmap (a time range × a value range of one numeric column) or one group of a breakdown;
//! the *baseline* is the rest of the population. For every column the selection's distribution
//! is compared with the baseline's:
//!
//! - string and bool columns: the shares of each value (the top values by weight; the rest as
//!   "other"; events without the field as "missing");
//! - numeric columns: the shares in 20 equal buckets over the column's range in the population
//!   (and "missing").
//!
//! Columns are ranked by the **total variation distance** between the two distributions,
//! `½ Σ |selection share − baseline share|`: 0 when the selection looks like the rest, 1 when
//! they share no value. Shares are weighted by sample rate, like every count in Sonde.
//!
//! Cost: one streaming pass over the population that updates every column's counters per
//! batch — never one query per column. Numeric columns are bucketed over their range, which is
//! known only at the end: their values are kept as they pass where they fit (a sample's, a
//! small population's), else one aggregate query finds the ranges first.
//! Over a population larger than the engine's `bubbleup_sample_rows`, the baseline's shares
//! (and the selection's, when it too is larger) come from a systematic sample of blocks of
//! rows read from the segments (the other rows are never decoded); the selection is counted
//! whole otherwise, the two sizes stay exact, and `meta.sampled` says what was read. A
//! column's distinct values are counted up to [`MAX_DISTINCT`]; values seen after that count as
//! "other", so id columns cannot exhaust memory (and, spread thin, they rank low, as they should).

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sonde_model::ColumnType;
use std::collections::HashMap;

/// Distinct values tracked per column before the rest count as "other".
pub const MAX_DISTINCT: usize = 10_000;
/// Most bytes of distinct values kept per column before the rest count as "other": long unique
/// strings (URLs, stack traces) would otherwise hold up to `MAX_DISTINCT` × the longest string
/// allowed, per column. With many columns each gets less (half the answer cap over the columns,
/// at least [`MIN_DISTINCT_BYTES`]), so a 400-column BubbleUp stays within one answer's budget.
pub const MAX_DISTINCT_BYTES: usize = 2 << 20;
/// Least bytes of distinct values kept per column.
pub const MIN_DISTINCT_BYTES: usize = 16 << 10;
/// Bytes a kept value costs beyond its text (twice: key and value), for the memory budget.
const VALUE_OVERHEAD: usize = 96;
/// Buckets of a numeric column's distribution.
pub const NUMERIC_BUCKETS: usize = 20;
/// Values reported per string/bool column, by default.
pub const DEFAULT_TOP_VALUES: usize = 10;

/// A BubbleUp request: population (filters, time) and selection.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BubbleUpRequest {
    /// Population: filters and time range.
    #[serde(flatten)]
    pub population: crate::spec::Population,
    /// The selection.
    pub selection: Selection,
    /// Values reported per string/bool column (default 10).
    #[serde(default)]
    pub top_values: Option<usize>,
    /// Count every row even over a population large enough to be sampled.
    #[serde(default)]
    pub exact: bool,
}

/// What is selected.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// A box on a heatmap: `start_time <= timestamp < end_time` and `min <= column <= max`.
    Heatmap {
        /// The heatmap's numeric column.
        column: String,
        /// Box start (inclusive).
        start_time: Value,
        /// Box end (exclusive).
        end_time: Value,
        /// Lowest value in the box.
        min: f64,
        /// Highest value in the box.
        max: f64,
    },
    /// One group of a breakdown: column → value (`null` for events without the field).
    Group(serde_json::Map<String, Value>),
}

/// Per-column counters, `[selection, baseline]` weights.
#[derive(Debug)]
pub(crate) enum Counter {
    Categorical {
        /// Weighted counts per value, keyed by its text (ahash: this map is hit once per row
        /// and column, and SipHash was a tenth of BubbleUp's time).
        values: HashMap<String, (Value, [i64; 2]), ahash::RandomState>,
        /// Bytes `values` holds (approximately: text twice plus per-entry overhead).
        bytes: usize,
        /// Most bytes `values` may hold.
        max_bytes: usize,
        other: [i64; 2],
        missing: [i64; 2],
    },
    Numeric {
        lo: f64,
        width: f64,
        buckets: Vec<[i64; 2]>,
        missing: [i64; 2],
    },
    /// A numeric column whose range is not known yet: its values (NaN where missing), row by
    /// row, bucketed once every row is in ([`Counter::resolve`]). So one read of the rows
    /// gives both the range and the counts, where otherwise a first read finds the range.
    Deferred { values: Vec<f64> },
}

impl Counter {
    /// A counter of distinct values holding at most `max_bytes` of them.
    pub(crate) fn categorical(max_bytes: usize) -> Counter {
        Counter::Categorical {
            values: HashMap::default(),
            bytes: 0,
            max_bytes,
            other: [0; 2],
            missing: [0; 2],
        }
    }

    pub(crate) fn numeric(lo: f64, hi: f64) -> Counter {
        let width = if hi > lo {
            (hi - lo) / NUMERIC_BUCKETS as f64
        } else {
            1.0
        };
        Counter::Numeric {
            lo,
            width,
            buckets: vec![[0; 2]; NUMERIC_BUCKETS],
            missing: [0; 2],
        }
    }

    /// A numeric counter taking the values first and its range from them
    /// ([`Counter::resolve`]).
    pub(crate) fn deferred() -> Counter {
        Counter::Deferred { values: Vec::new() }
    }

    /// A deferred counter's values bucketed over their own range, `sides[i]` and `w[i]` being
    /// row `i`'s side (true: the selection) and weight; any other counter as it is.
    pub(crate) fn resolve(self, sides: &[bool], w: &[i64]) -> Counter {
        let Counter::Deferred { values } = self else {
            return self;
        };
        let (lo, hi) = values
            .iter()
            .filter(|v| !v.is_nan())
            .fold(None, |r: Option<(f64, f64)>, &v| {
                Some(r.map_or((v, v), |(l, h)| (l.min(v), h.max(v))))
            })
            .unwrap_or((0.0, 0.0));
        let mut c = Counter::numeric(lo, hi);
        if let Counter::Numeric {
            lo,
            width,
            buckets,
            missing,
        } = &mut c
        {
            for ((v, &sel), &wi) in values.iter().zip(sides).zip(w) {
                let side = if sel { 0 } else { 1 };
                if v.is_nan() {
                    missing[side] += wi;
                } else {
                    buckets[bucket_of(*v, *lo, *width)][side] += wi;
                }
            }
        }
        c
    }

    /// Adds a batch's column: `sel[i]` says which side row `i` is on, `w[i]` its weight.
    pub(crate) fn add(&mut self, col: &ArrayRef, sel: &BooleanArray, w: &[i64]) -> datafusion::error::Result<()> {
        match self {
            Counter::Categorical {
                values,
                bytes,
                max_bytes,
                other,
                missing,
            } => {
                let strings = match col.data_type() {
                    DataType::Boolean => None,
                    _ => Some(cast(col, &DataType::Utf8)?),
                };
                for (i, &wi) in w.iter().enumerate().take(col.len()) {
                    let side = if sel.is_valid(i) && sel.value(i) { 0 } else { 1 };
                    if col.is_null(i) {
                        missing[side] += wi;
                        continue;
                    }
                    // Look up by the borrowed text; own it only when a new value is kept.
                    let key: &str = match &strings {
                        Some(s) => s.as_string::<i32>().value(i),
                        None if col.as_boolean().value(i) => "true",
                        None => "false",
                    };
                    if let Some(e) = values.get_mut(key) {
                        e.1[side] += wi;
                    } else if values.len() < MAX_DISTINCT && *bytes + key.len() * 2 + VALUE_OVERHEAD <= *max_bytes {
                        *bytes += key.len() * 2 + VALUE_OVERHEAD;
                        let value = match &strings {
                            Some(_) => Value::String(key.to_string()),
                            None => Value::Bool(key == "true"),
                        };
                        let mut c = [0; 2];
                        c[side] = wi;
                        values.insert(key.to_string(), (value, c));
                    } else {
                        other[side] += wi;
                    }
                }
            }
            Counter::Numeric {
                lo,
                width,
                buckets,
                missing,
            } => {
                let f = cast(col, &DataType::Float64)?;
                let f = f.as_primitive::<Float64Type>();
                for (i, &wi) in w.iter().enumerate().take(f.len()) {
                    let side = if sel.is_valid(i) && sel.value(i) { 0 } else { 1 };
                    if f.is_null(i) {
                        missing[side] += wi;
                        continue;
                    }
                    buckets[bucket_of(f.value(i), *lo, *width)][side] += wi;
                }
            }
            Counter::Deferred { values } => {
                let f = cast(col, &DataType::Float64)?;
                let f = f.as_primitive::<Float64Type>();
                grow(values, f.len());
                values.extend(f.iter().map(|v| v.unwrap_or(f64::NAN)));
            }
        }
        Ok(())
    }

    /// Bytes the counter holds, for the request's memory budget.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Counter::Categorical { bytes, .. } => *bytes + 64,
            Counter::Numeric { buckets, .. } => buckets.len() * 16 + 64,
            Counter::Deferred { values } => values.capacity() * 8 + 64,
        }
    }

    /// The column's comparison and its score. `scale` weighs each side's counts when values
    /// are ranked by their weight in the population (1 each; a sampled side's exact over
    /// counted weight, so a side counted whole does not crowd out the other's values).
    pub(crate) fn report(&self, totals: [i64; 2], top: usize, scale: [f64; 2]) -> (f64, Comparison) {
        let share = |c: [i64; 2]| -> [f64; 2] {
            [
                if totals[0] > 0 {
                    c[0] as f64 / totals[0] as f64
                } else {
                    0.0
                },
                if totals[1] > 0 {
                    c[1] as f64 / totals[1] as f64
                } else {
                    0.0
                },
            ]
        };
        match self {
            Counter::Categorical {
                values, other, missing, ..
            } => {
                // Top values by weight in the population; ties by value, so the answer is stable.
                // (Keys computed once each: up to 10,000 values per column.)
                let weight = |c: &[i64; 2]| c[0] as f64 * scale[0] + c[1] as f64 * scale[1];
                let mut keyed: Vec<_> = values.values().map(|e| (weight(&e.1), e.0.to_string(), e)).collect();
                keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
                let all: Vec<&(Value, [i64; 2])> = keyed.into_iter().map(|(_, _, e)| e).collect();
                let kept = &all[..all.len().min(top)];
                let mut rest = *other;
                for (_, c) in &all[kept.len()..] {
                    rest[0] += c[0];
                    rest[1] += c[1];
                }
                let mut entries: Vec<(Value, [f64; 2])> = kept.iter().map(|(v, c)| (v.clone(), share(*c))).collect();
                let mut score: f64 = entries.iter().map(|(_, s)| (s[0] - s[1]).abs()).sum();
                let rest_s = share(rest);
                let missing_s = share(*missing);
                score += (rest_s[0] - rest_s[1]).abs() + (missing_s[0] - missing_s[1]).abs();
                // The most over-represented value in the selection first.
                entries.sort_by(|a, b| {
                    (b.1[0] - b.1[1])
                        .total_cmp(&(a.1[0] - a.1[1]))
                        .then_with(|| a.0.to_string().cmp(&b.0.to_string()))
                });
                let values = entries
                    .into_iter()
                    .map(|(value, s)| ValueShare {
                        value,
                        share: Share::of(s),
                    })
                    .collect();
                (
                    score / 2.0,
                    Comparison::Values {
                        values,
                        other: Share::of(rest_s),
                        missing: Share::of(missing_s),
                    },
                )
            }
            Counter::Numeric {
                lo,
                width,
                buckets,
                missing,
            } => {
                let mut score = 0.0;
                let out = buckets
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let s = share(*c);
                        score += (s[0] - s[1]).abs();
                        BucketShare {
                            lower: lo + i as f64 * width,
                            upper: lo + (i + 1) as f64 * width,
                            share: Share::of(s),
                        }
                    })
                    .collect();
                let m = share(*missing);
                score += (m[0] - m[1]).abs();
                (
                    score / 2.0,
                    Comparison::Buckets {
                        buckets: out,
                        missing: Share::of(m),
                    },
                )
            }
            Counter::Deferred { .. } => unreachable!("a deferred counter is resolved before its report"),
        }
    }
}

/// A share of the selection's and of the baseline's events (each side's fraction, 0–1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Share {
    /// Fraction of the selection.
    pub selection: f64,
    /// Fraction of the baseline.
    pub baseline: f64,
}

impl Share {
    fn of(s: [f64; 2]) -> Share {
        Share {
            selection: s[0],
            baseline: s[1],
        }
    }
}

/// One value of a categorical column and its shares.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueShare {
    /// The value.
    pub value: Value,
    /// Its shares.
    #[serde(flatten)]
    pub share: Share,
}

/// One value range of a numeric column and its shares.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BucketShare {
    /// Lower bound (inclusive).
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
    /// Its shares.
    #[serde(flatten)]
    pub share: Share,
}

/// How one column's values spread over the selection and the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Comparison {
    /// Strings and booleans: the top values, the rest, and events without the column.
    Values {
        /// The top values, the most over-represented in the selection first.
        values: Vec<ValueShare>,
        /// All other values together.
        other: Share,
        /// Events without the column.
        missing: Share,
    },
    /// Numbers: equal-width buckets over the column's range, and events without it.
    Buckets {
        /// The buckets, low to high.
        buckets: Vec<BucketShare>,
        /// Events without the column.
        missing: Share,
    },
}

/// One column in a BubbleUp answer.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnReport {
    /// The column.
    pub column: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Total variation distance between the two distributions (0: alike, 1: disjoint).
    pub score: f64,
    /// The distributions.
    #[serde(flatten)]
    pub comparison: Comparison,
}

/// An event count.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Count {
    /// Events (sample-rate weighted).
    pub count: i64,
}

/// What a BubbleUp looked at.
#[derive(Debug, Clone, Serialize)]
pub struct BubbleUpMeta {
    /// Events read.
    pub events_examined: u64,
    /// Time taken.
    pub elapsed_ms: f64,
    /// The range compared (RFC 3339).
    pub start_time: String,
    /// Its end (exclusive).
    pub end_time: String,
    /// How columns are scored.
    pub measure: &'static str,
    /// When the shares come from a sample of the rows (the counts of `selection` and
    /// `baseline` are exact either way); absent when every row was counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled: Option<Sampled>,
}

/// How a sampled BubbleUp read its rows: each side either whole or from blocks of consecutive
/// rows, one in every `every`, over each segment and the buffered events (see `table::Sample`),
/// at the side's own rate.
#[derive(Debug, Clone, Serialize)]
pub struct Sampled {
    /// Rows of the selection counted, and the selection's rows in all.
    pub selection_rows: [u64; 2],
    /// Rows of the baseline counted, and the baseline's rows in all.
    pub baseline_rows: [u64; 2],
    /// The selection's sample; `None` when it was counted whole.
    pub selection_blocks: Option<Blocks>,
    /// The baseline's sample; `None` when it was counted whole.
    pub baseline_blocks: Option<Blocks>,
}

/// A side's sample: one block of `block_rows` consecutive rows kept in every `every`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Blocks {
    /// One block of rows kept in this many.
    pub every: u64,
    /// Rows per block.
    pub block_rows: u64,
}

/// A BubbleUp answer: the two populations' sizes and every column compared, highest score first.
#[derive(Debug, Clone, Serialize)]
pub struct BubbleUpAnswer {
    /// The selection's size.
    pub selection: Count,
    /// The baseline's size.
    pub baseline: Count,
    /// Every compared column, highest score first (ties by name).
    pub columns: Vec<ColumnReport>,
    /// What was looked at.
    pub meta: BubbleUpMeta,
}

/// Makes room in `v` for `more` items, growing it by an eighth rather than doubling it, so
/// that values kept row by row hold little more than they need.
pub(crate) fn grow<T>(v: &mut Vec<T>, more: usize) {
    if v.capacity() - v.len() < more {
        v.reserve_exact(more.max(v.capacity() / 8));
    }
}

/// The bucket of `v` among [`NUMERIC_BUCKETS`] of `width` from `lo` (the ends take what lies
/// past them).
fn bucket_of(v: f64, lo: f64, width: f64) -> usize {
    (((v - lo) / width) as i64).clamp(0, NUMERIC_BUCKETS as i64 - 1) as usize
}

/// Whether a column type is compared as a distribution over buckets.
pub(crate) fn is_numeric(t: ColumnType) -> bool {
    matches!(t, ColumnType::Int | ColumnType::Float)
}

/// Weights of a batch's sample-rate column (missing or non-positive count as 1).
pub(crate) fn weights(col: &ArrayRef) -> datafusion::error::Result<Vec<i64>> {
    let c = cast(col, &DataType::Int64)?;
    let c = c.as_primitive::<Int64Type>();
    Ok((0..c.len())
        .map(|i| if c.is_valid(i) { c.value(i).max(1) } else { 1 })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn identical_sides_score_zero_disjoint_sides_score_one() {
        let col: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), Some("b"), Some("a"), Some("b")]));
        let mut c = Counter::categorical(MAX_DISTINCT_BYTES);
        c.add(&col, &BooleanArray::from(vec![true, true, false, false]), &[1, 1, 1, 1])
            .unwrap();
        assert_eq!(c.report([2, 2], 10, [1.0, 1.0]).0, 0.0);
        let mut c = Counter::categorical(MAX_DISTINCT_BYTES);
        c.add(&col, &BooleanArray::from(vec![true, false, true, false]), &[1, 1, 1, 1])
            .unwrap();
        let (score, v) = c.report([2, 2], 10, [1.0, 1.0]);
        assert_eq!(score, 1.0);
        let v = serde_json::to_value(v).unwrap();
        assert_eq!(v["values"][0], json!({"value": "a", "selection": 1.0, "baseline": 0.0}));
    }

    #[test]
    fn a_deferred_counter_buckets_as_one_given_the_range_of_its_values() {
        use arrow::array::{Float64Array, Int64Array};
        let batches: Vec<(ArrayRef, Vec<bool>, Vec<i64>)> = vec![
            (
                Arc::new(Int64Array::from(vec![Some(5), None, Some(-3)])),
                vec![true, false, false],
                vec![1, 2, 3],
            ),
            (
                Arc::new(Float64Array::from(vec![Some(40.5), Some(7.25), None])),
                vec![false, true, true],
                vec![4, 5, 6],
            ),
        ];
        let mut exact = Counter::numeric(-3.0, 40.5);
        let mut deferred = Counter::deferred();
        let (mut sides, mut weights) = (Vec::new(), Vec::new());
        for (col, sel, w) in &batches {
            exact.add(col, &BooleanArray::from(sel.clone()), w).unwrap();
            deferred.add(col, &BooleanArray::from(sel.clone()), w).unwrap();
            sides.extend(sel);
            weights.extend(w);
        }
        let resolved = deferred.resolve(&sides, &weights);
        let report = |c: &Counter| serde_json::to_value(c.report([12, 9], 10, [1.0, 1.0])).unwrap();
        assert_eq!(report(&resolved), report(&exact));
        // No values at all: every row missing, as a counter over (0, 0) says.
        let none: ArrayRef = Arc::new(Int64Array::from(vec![None, None]));
        let mut d = Counter::deferred();
        d.add(&none, &BooleanArray::from(vec![true, false]), &[1, 1]).unwrap();
        let mut e = Counter::numeric(0.0, 0.0);
        e.add(&none, &BooleanArray::from(vec![true, false]), &[1, 1]).unwrap();
        assert_eq!(report(&d.resolve(&[true, false], &[1, 1])), report(&e));
    }

    #[test]
    fn values_past_the_cap_count_as_other() {
        let n = MAX_DISTINCT + 5;
        let col: ArrayRef = Arc::new(StringArray::from(
            (0..n).map(|i| Some(format!("id{i}"))).collect::<Vec<_>>(),
        ));
        let mut c = Counter::categorical(MAX_DISTINCT_BYTES);
        c.add(&col, &BooleanArray::from(vec![false; n]), &vec![1; n]).unwrap();
        let Counter::Categorical { values, other, .. } = &c else {
            unreachable!()
        };
        assert_eq!(values.len(), MAX_DISTINCT);
        assert_eq!(other[1], 5);
    }

    #[test]
    fn long_unique_values_stop_at_the_byte_cap() {
        // 1,000 distinct values of 4 KiB: 8 MiB of text kept twice, were they all kept.
        let n = 1000;
        let col: ArrayRef = Arc::new(StringArray::from(
            (0..n).map(|i| Some(format!("{i:04}").repeat(1024))).collect::<Vec<_>>(),
        ));
        let mut c = Counter::categorical(MIN_DISTINCT_BYTES * 8);
        c.add(&col, &BooleanArray::from(vec![false; n]), &vec![1; n]).unwrap();
        assert!(c.bytes() <= MIN_DISTINCT_BYTES * 8 + 64, "{}", c.bytes());
        let Counter::Categorical { values, other, .. } = &c else {
            unreachable!()
        };
        assert_eq!(values.len(), 15);
        assert_eq!(other[1], (n - 15) as i64);
    }
}

//! `weighted_percentile(value, weight, p)`: an exact percentile where each value counts as
//! many times as its weight (the event's sample rate), as Honeycomb's percentiles do.
//!
//! Definition (also used by the tests' brute-force model): sort the values; with `W` the total
//! weight, the answer is the first value whose cumulative weight reaches `p × W`. For weight 1
//! everywhere this is the nearest-rank percentile. Exact selection is affordable per group up to
//! millions of values, and unlike t-digest it needs no error bound.

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, ListArray, RecordBatch};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type, Schema};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Signature, Volatility};
use std::sync::Arc;

/// The aggregate's SQL name.
pub const NAME: &str = "weighted_percentile";

/// The `weighted_percentile` aggregate function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WeightedPercentile {
    signature: Signature,
}

impl Default for WeightedPercentile {
    fn default() -> Self {
        WeightedPercentile {
            signature: Signature::exact(
                vec![DataType::Float64, DataType::Int64, DataType::Float64],
                Volatility::Immutable,
            ),
        }
    }
}

/// The aggregate as a DataFusion UDAF.
pub fn weighted_percentile() -> AggregateUDF {
    AggregateUDF::from(WeightedPercentile::default())
}

impl AggregateUDFImpl for WeightedPercentile {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
        let p = match acc_args.exprs.get(2).map(|e| e.evaluate(&empty)) {
            Some(Ok(ColumnarValue::Scalar(ScalarValue::Float64(Some(p))))) if (0.0..=1.0).contains(&p) => p,
            _ => return plan_err!("{NAME}: the third argument must be a literal between 0 and 1"),
        };
        Ok(Box::new(PercentileAcc {
            p,
            values: Vec::new(),
            weights: Vec::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "values"),
                DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "weights"),
                DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true))),
                true,
            )),
        ])
    }
}

#[derive(Debug)]
struct PercentileAcc {
    p: f64,
    values: Vec<f64>,
    weights: Vec<i64>,
}

impl Accumulator for PercentileAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let v = values[0].as_primitive::<Float64Type>();
        let w = values[1].as_primitive::<Int64Type>();
        for i in 0..v.len() {
            if v.is_valid(i) && !v.value(i).is_nan() {
                // A missing or non-positive sample rate counts as 1, as at ingest.
                let weight = if w.is_valid(i) { w.value(i).max(1) } else { 1 };
                self.values.push(v.value(i));
                self.weights.push(weight);
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (vl, wl) = (states[0].as_list::<i32>(), states[1].as_list::<i32>());
        for (v, w) in vl.iter().zip(wl.iter()) {
            if let (Some(v), Some(w)) = (v, w) {
                self.update_batch(&[v, w])?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let v = Float64Array::from(std::mem::take(&mut self.values));
        let w = Int64Array::from(std::mem::take(&mut self.weights));
        let vl = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Float64, true)),
            OffsetBuffer::from_lengths([v.len()]),
            Arc::new(v),
            None,
        );
        let wl = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Int64, true)),
            OffsetBuffer::from_lengths([w.len()]),
            Arc::new(w),
            None,
        );
        Ok(vec![ScalarValue::List(Arc::new(vl)), ScalarValue::List(Arc::new(wl))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        // Selected in place (the values are not needed in their order again): no copy of a
        // group's values outside what `size` reports.
        Ok(ScalarValue::Float64(percentile_in_place(
            &mut self.values,
            &self.weights,
            self.p,
        )))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.capacity() * 8 + self.weights.capacity() * 8
    }
}

/// The weighted percentile of `values` (see the module documentation); `None` when empty.
///
/// Selection rather than a sort: `O(n)` on average. Unweighted (every weight 1, the common
/// case), the answer is the value of rank `⌈p·n⌉`, found by one `select_nth_unstable`; weighted,
/// a quickselect over (value, weight) pairs that keeps the side holding the target weight.
pub fn weighted_percentile_of(values: &[f64], weights: &[i64], p: f64) -> Option<f64> {
    percentile_in_place(&mut values.to_vec(), weights, p)
}

/// [`weighted_percentile_of`], reordering `values` when every weight is 1 (each is at least 1).
fn percentile_in_place(values: &mut [f64], weights: &[i64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    debug_assert!(weights.iter().all(|&w| w >= 1), "weights are at least 1");
    let total: i128 = weights.iter().map(|&w| w as i128).sum();
    let target = p * total as f64;
    if total == values.len() as i128 {
        // Every weight is 1: the first rank r (1-based) with r ≥ target.
        let rank = (target.ceil() as usize).clamp(1, values.len());
        let (_, nth, _) = values.select_nth_unstable_by(rank - 1, f64::total_cmp);
        return Some(*nth);
    }
    // Weighted: the pairs cost 16 bytes a value for the moment of the selection.
    let mut pairs: Vec<(f64, i64)> = values.iter().copied().zip(weights.iter().copied()).collect();
    Some(weighted_select(&mut pairs, target))
}

/// The first value, in value order, at which the cumulative weight of `pairs` reaches `target`
/// (the largest value if none does).
fn weighted_select(pairs: &mut [(f64, i64)], target: f64) -> f64 {
    // `below`: the weight of the values already known to be smaller than every pair left.
    let (mut lo, mut hi, mut below) = (0usize, pairs.len(), 0i128);
    loop {
        if hi - lo <= 32 {
            let rest = &mut pairs[lo..hi];
            rest.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            for &(v, w) in rest.iter() {
                below += w as i128;
                if below as f64 >= target {
                    return v;
                }
            }
            return rest.last().map_or(f64::NAN, |p| p.0);
        }
        // Partition around the median of the part: smaller ones first, then the pivot's.
        let mid = lo + (hi - lo) / 2;
        pairs[lo..hi].select_nth_unstable_by(mid - lo, |a, b| a.0.total_cmp(&b.0));
        let left: i128 = pairs[lo..mid].iter().map(|p| p.1 as i128).sum();
        if (below + left) as f64 >= target {
            hi = mid;
        } else if (below + left + pairs[mid].1 as i128) as f64 >= target {
            return pairs[mid].0;
        } else {
            below += left + pairs[mid].1 as i128;
            lo = mid + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_when_unweighted() {
        let v: Vec<f64> = (1..=100).map(|x| x as f64).collect();
        let w = vec![1; 100];
        assert_eq!(weighted_percentile_of(&v, &w, 0.5), Some(50.0));
        assert_eq!(weighted_percentile_of(&v, &w, 0.99), Some(99.0));
        assert_eq!(weighted_percentile_of(&v, &w, 0.0), Some(1.0));
        assert_eq!(weighted_percentile_of(&v, &w, 1.0), Some(100.0));
        assert_eq!(weighted_percentile_of(&[], &[], 0.5), None);
    }

    /// The definition, by a full sort: the model the selection must equal.
    fn by_sort(values: &[f64], weights: &[i64], p: f64) -> Option<f64> {
        let mut pairs: Vec<(f64, i64)> = values.iter().copied().zip(weights.iter().copied()).collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: i128 = weights.iter().map(|&w| w as i128).sum();
        let mut cum = 0i128;
        for &(v, w) in &pairs {
            cum += w as i128;
            if cum as f64 >= p * total as f64 {
                return Some(v);
            }
        }
        pairs.last().map(|p| p.0)
    }

    #[test]
    fn selection_equals_the_sorted_definition() {
        // A small deterministic generator: values with many ties, weights 1 or mixed.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..400 {
            let n = 1 + (next() % 300) as usize;
            let values: Vec<f64> = (0..n).map(|_| (next() % 50) as f64 / 4.0 - 3.0).collect();
            let weights: Vec<i64> = (0..n)
                .map(|_| if case % 2 == 0 { 1 } else { 1 + (next() % 20) as i64 })
                .collect();
            for p in [0.0, 0.001, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
                assert_eq!(
                    weighted_percentile_of(&values, &weights, p),
                    by_sort(&values, &weights, p),
                    "case {case}, p {p}"
                );
            }
        }
    }

    #[test]
    fn weights_count_as_repeats() {
        // 1 ×1, 2 ×9: the median is 2.
        assert_eq!(weighted_percentile_of(&[1.0, 2.0], &[1, 9], 0.5), Some(2.0));
        assert_eq!(weighted_percentile_of(&[1.0, 2.0], &[9, 1], 0.5), Some(1.0));
    }
}

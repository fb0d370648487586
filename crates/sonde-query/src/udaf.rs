//! `weighted_percentile(value, weight, p)`: an exact percentile where each value counts as
//! many times as its weight (the event's sample rate), as Honeycomb's percentiles do.
//!
//! Definition (also used by the tests' brute-force model): sort the values; with `W` the total
//! weight, the answer is the first value whose cumulative weight reaches `p × W`. For weight 1
//! everywhere this is the nearest-rank percentile. Exact selection is affordable per group up to
//! millions of values, and unlike t-digest it needs no error bound.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, ListArray, RecordBatch};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type, Schema};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator, Signature, Volatility,
};
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
        Ok(Box::new(PercentileAcc {
            p: percentile_arg(&acc_args)?,
            values: Vec::new(),
            weights: Vec::new(),
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(PercentileGroups {
            p: percentile_arg(&args)?,
            values: Vec::new(),
            weights: Vec::new(),
            held: 0,
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

/// The percentile asked for: the third argument, a literal between 0 and 1.
fn percentile_arg(args: &AccumulatorArgs) -> Result<f64> {
    let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
    match args.exprs.get(2).map(|e| e.evaluate(&empty)) {
        Some(Ok(ColumnarValue::Scalar(ScalarValue::Float64(Some(p))))) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => plan_err!("{NAME}: the third argument must be a literal between 0 and 1"),
    }
}

/// A value's weight: a missing or non-positive sample rate counts as 1, as at ingest.
fn weight_at(w: &Int64Array, i: usize) -> i64 {
    if w.is_valid(i) { w.value(i).max(1) } else { 1 }
}

/// Lists of values (and of weights), one per group or row, as the aggregate's state.
///
/// Each group's vectors are freed as soon as they are copied, into one buffer of the exact
/// size: at 10M values the state is the largest thing a percentile query holds, and a buffer
/// grown by doubling (or all the groups kept until the end) would hold up to three times it.
fn list_state(values: Vec<Vec<f64>>, weights: Vec<Vec<i64>>) -> Vec<ArrayRef> {
    fn concat<T: Copy>(parts: Vec<Vec<T>>) -> Vec<T> {
        let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
        for part in parts {
            out.extend_from_slice(&part);
        }
        out
    }
    let lengths: Vec<usize> = values.iter().map(Vec::len).collect();
    let v = Float64Array::from(concat(values));
    let w = Int64Array::from(concat(weights));
    let list = |field: DataType, array: ArrayRef| -> ArrayRef {
        Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(field, true)),
            OffsetBuffer::from_lengths(lengths.iter().copied()),
            array,
            None,
        ))
    };
    vec![list(DataType::Float64, Arc::new(v)), list(DataType::Int64, Arc::new(w))]
}

/// The aggregate over many groups at once: each row's value goes straight to its group's
/// list (the generic adapter would first split every batch by group, one `take` per group).
#[derive(Debug)]
struct PercentileGroups {
    p: f64,
    values: Vec<Vec<f64>>,
    weights: Vec<Vec<i64>>,
    /// Values held over all groups (kept as a count: `size` is asked once per batch).
    held: usize,
}

impl PercentileGroups {
    /// The groups `emit_to` hands over, out of the accumulator.
    fn take(&mut self, emit_to: EmitTo) -> (Vec<Vec<f64>>, Vec<Vec<i64>>) {
        let values = emit_to.take_needed(&mut self.values);
        let weights = emit_to.take_needed(&mut self.weights);
        self.held -= values.iter().map(Vec::len).sum::<usize>();
        (values, weights)
    }

    fn grow(&mut self, groups: usize) {
        if self.values.len() < groups {
            self.values.resize_with(groups, Vec::new);
            self.weights.resize_with(groups, Vec::new);
        }
    }
}

impl GroupsAccumulator for PercentileGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let v = values[0].as_primitive::<Float64Type>();
        let w = values[1].as_primitive::<Int64Type>();
        for (i, &g) in group_indices.iter().enumerate() {
            if opt_filter.is_some_and(|f| !(f.is_valid(i) && f.value(i))) {
                continue;
            }
            if v.is_valid(i) && !v.value(i).is_nan() {
                self.values[g].push(v.value(i));
                self.weights[g].push(weight_at(w, i));
                self.held += 1;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (mut values, weights) = self.take(emit_to);
        let out: Float64Array = values
            .iter_mut()
            .zip(&weights)
            .map(|(v, w)| percentile_in_place(v, w, self.p))
            .collect();
        Ok(Arc::new(out))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (values, weights) = self.take(emit_to);
        Ok(list_state(values, weights))
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.grow(total_num_groups);
        let (vl, wl) = (values[0].as_list::<i32>(), values[1].as_list::<i32>());
        for (i, &g) in group_indices.iter().enumerate() {
            if vl.is_null(i) || wl.is_null(i) {
                continue;
            }
            let (v, w) = (vl.value(i), wl.value(i));
            let (v, w) = (v.as_primitive::<Float64Type>(), w.as_primitive::<Int64Type>());
            // Exactly: partitions' states arrive whole, and doubling would leave up to half
            // of a large group's buffer unused until the answer.
            self.values[g].reserve_exact(v.len());
            self.weights[g].reserve_exact(w.len());
            self.values[g].extend(v.values().iter().copied());
            self.weights[g].extend(w.values().iter().copied());
            self.held += v.len();
        }
        Ok(())
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        // Each row its own group: a list of its value, or an empty one.
        let v = values[0].as_primitive::<Float64Type>();
        let w = values[1].as_primitive::<Int64Type>();
        let kept =
            |i: usize| opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i)) && v.is_valid(i) && !v.value(i).is_nan();
        let rows = 0..v.len();
        Ok(list_state(
            rows.clone()
                .map(|i| if kept(i) { vec![v.value(i)] } else { vec![] })
                .collect(),
            rows.map(|i| if kept(i) { vec![weight_at(w, i)] } else { vec![] })
                .collect(),
        ))
    }

    fn size(&self) -> usize {
        // A value and its weight are 16 bytes; vectors grow by doubling, so up to twice that.
        std::mem::size_of_val(self) + self.values.capacity() * std::mem::size_of::<Vec<f64>>() * 2 + self.held * 32
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
                self.values.push(v.value(i));
                self.weights.push(weight_at(w, i));
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
    fn the_groups_accumulator_equals_the_definition_per_group() {
        // Rows spread over 3 groups, some filtered out, some null, some NaN; then the same rows
        // through state → merge (two-phase aggregation) and through convert_to_state.
        let n = 500;
        let values: ArrayRef = Arc::new(Float64Array::from(
            (0..n)
                .map(|i| match i % 23 {
                    0 => None,
                    1 => Some(f64::NAN),
                    _ => Some(((i * 37) % 101) as f64 / 3.0),
                })
                .collect::<Vec<_>>(),
        ));
        let weights: ArrayRef = Arc::new(Int64Array::from((0..n).map(|i| 1 + (i % 5) as i64).collect::<Vec<_>>()));
        let groups: Vec<usize> = (0..n).map(|i| (i * 7) % 3).collect();
        let filter = BooleanArray::from((0..n).map(|i| (i % 11 != 0).then_some(i % 13 != 0)).collect::<Vec<_>>());
        let want: Vec<Option<f64>> = (0..3)
            .map(|g| {
                let (v, w) = (
                    values.as_primitive::<Float64Type>(),
                    weights.as_primitive::<Int64Type>(),
                );
                let rows: Vec<usize> = (0..n)
                    .filter(|&i| groups[i] == g && filter.is_valid(i) && filter.value(i))
                    .filter(|&i| v.is_valid(i) && !v.value(i).is_nan())
                    .collect();
                let vs: Vec<f64> = rows.iter().map(|&i| v.value(i)).collect();
                let ws: Vec<i64> = rows.iter().map(|&i| w.value(i)).collect();
                weighted_percentile_of(&vs, &ws, 0.9)
            })
            .collect();
        let new = || PercentileGroups {
            p: 0.9,
            values: Vec::new(),
            weights: Vec::new(),
            held: 0,
        };
        let answer = |acc: &mut PercentileGroups| {
            let out = acc.evaluate(EmitTo::All).unwrap();
            out.as_primitive::<Float64Type>().iter().collect::<Vec<_>>()
        };
        let inputs = [values.clone(), weights.clone()];
        let mut direct = new();
        direct.update_batch(&inputs, &groups, Some(&filter), 3).unwrap();
        assert!(direct.size() > 0);
        assert_eq!(answer(&mut direct), want);
        assert_eq!(direct.held, 0, "everything emitted");

        // Two partial accumulators over halves, merged.
        let mut merged = new();
        for half in [0..n / 2, n / 2..n] {
            let mut part = new();
            let slice = |a: &ArrayRef| a.slice(half.start, half.len());
            let f = filter.slice(half.start, half.len());
            part.update_batch(&[slice(&values), slice(&weights)], &groups[half.clone()], Some(&f), 3)
                .unwrap();
            let state = part.state(EmitTo::All).unwrap();
            merged.merge_batch(&state, &[0, 1, 2], 3).unwrap();
        }
        assert_eq!(answer(&mut merged), want);

        // Each row as its own state, merged into its group.
        let mut rows = new();
        let state = new().convert_to_state(&inputs, Some(&filter)).unwrap();
        rows.merge_batch(&state, &groups, 3).unwrap();
        assert_eq!(answer(&mut rows), want);
    }

    #[test]
    fn weights_count_as_repeats() {
        // 1 ×1, 2 ×9: the median is 2.
        assert_eq!(weighted_percentile_of(&[1.0, 2.0], &[1, 9], 0.5), Some(2.0));
        assert_eq!(weighted_percentile_of(&[1.0, 2.0], &[9, 1], 0.5), Some(1.0));
    }
}

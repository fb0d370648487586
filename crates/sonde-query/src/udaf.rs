//! `weighted_percentile(value, weight, p)`: an exact percentile where each value counts as
//! many times as its weight (the event's sample rate), as Honeycomb's percentiles do; and
//! `weighted_percentiles(value, weight, p1, p2, …)`, several percentiles of one collection of
//! values, as a struct with a field per percentile (`q0`, `q1`, …).
//!
//! Definition (also used by the tests' brute-force model): sort the values; with `W` the total
//! weight, the answer is the first value whose cumulative weight reaches `p × W`. For weight 1
//! everywhere this is the nearest-rank percentile. Exact selection is affordable per group up to
//! millions of values, and unlike t-digest it needs no error bound.
//!
//! Memory is what limits exact percentiles, so a group holds as little as it can:
//! - 8 bytes a value while every value of the group has the same weight (the common case:
//!   a sample rate per route or service), 16 bytes once weights differ;
//! - one collection for all the percentiles of a column (P50, P90 and P99 together hold the
//!   values once, through `weighted_percentiles`);
//! - in the state a uniform group's weights are a single entry.

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, ListArray, RecordBatch, StructArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type, Int64Type, Schema};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator, Signature, TypeSignature,
    Volatility,
};
use std::sync::Arc;

/// The single percentile's SQL name.
pub const NAME: &str = "weighted_percentile";
/// The several percentiles' SQL name.
pub const MANY_NAME: &str = "weighted_percentiles";
/// Most percentiles one `weighted_percentiles` call answers.
pub const MAX_PERCENTILES: usize = 16;

/// The `weighted_percentile` (or `weighted_percentiles`) aggregate function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WeightedPercentile {
    signature: Signature,
    /// `weighted_percentiles`: any number of `p`, answered as a struct.
    many: bool,
}

impl WeightedPercentile {
    fn new(many: bool) -> WeightedPercentile {
        let args = |ps: usize| {
            let mut t = vec![DataType::Float64, DataType::Int64];
            t.extend(std::iter::repeat_n(DataType::Float64, ps));
            TypeSignature::Exact(t)
        };
        let signature = if many {
            Signature::one_of((1..=MAX_PERCENTILES).map(args).collect(), Volatility::Immutable)
        } else {
            Signature::exact(
                vec![DataType::Float64, DataType::Int64, DataType::Float64],
                Volatility::Immutable,
            )
        };
        WeightedPercentile { signature, many }
    }

    fn name_of(&self) -> &'static str {
        if self.many { MANY_NAME } else { NAME }
    }
}

/// The `weighted_percentile(value, weight, p)` aggregate as a DataFusion UDAF.
pub fn weighted_percentile() -> AggregateUDF {
    AggregateUDF::from(WeightedPercentile::new(false))
}

/// The `weighted_percentiles(value, weight, p1, …)` aggregate as a DataFusion UDAF: a struct
/// whose field `q{i}` is the percentile `p{i+1}`.
pub fn weighted_percentiles() -> AggregateUDF {
    AggregateUDF::from(WeightedPercentile::new(true))
}

/// The name of the field of `weighted_percentiles` answering its `i`-th percentile.
pub fn field_name(i: usize) -> String {
    format!("q{i}")
}

fn struct_fields(n: usize) -> Fields {
    (0..n)
        .map(|i| Field::new(field_name(i), DataType::Float64, true))
        .collect()
}

impl AggregateUDFImpl for WeightedPercentile {
    fn name(&self) -> &str {
        self.name_of()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(if self.many {
            DataType::Struct(struct_fields(arg_types.len().saturating_sub(2)))
        } else {
            DataType::Float64
        })
    }

    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(PercentileAcc {
            ps: self.percentile_args(&acc_args)?,
            many: self.many,
            group: Group::default(),
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(PercentileGroups {
            ps: self.percentile_args(&args)?,
            many: self.many,
            groups: Vec::new(),
            held: 0,
            held_weights: 0,
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

impl WeightedPercentile {
    /// The percentiles asked for: the arguments after the second, literals between 0 and 1.
    fn percentile_args(&self, args: &AccumulatorArgs) -> Result<Vec<f64>> {
        let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
        let mut ps = Vec::new();
        for e in args.exprs.iter().skip(2) {
            match e.evaluate(&empty) {
                Ok(ColumnarValue::Scalar(ScalarValue::Float64(Some(p)))) if (0.0..=1.0).contains(&p) => ps.push(p),
                _ => return plan_err!("{}: each percentile must be a literal between 0 and 1", self.name_of()),
            }
        }
        if ps.is_empty() {
            return plan_err!("{}: no percentile asked for", self.name_of());
        }
        Ok(ps)
    }
}

/// A value's weight: a missing or non-positive sample rate counts as 1, as at ingest.
fn weight_at(w: &Int64Array, i: usize) -> i64 {
    if w.is_valid(i) { w.value(i).max(1) } else { 1 }
}

/// The weights of a group's values.
#[derive(Debug, Clone, PartialEq)]
enum Weights {
    /// Every value so far has this weight (none yet: any).
    Uniform(i64),
    /// One weight per value.
    Each(Vec<i64>),
}

/// One group's values and their weights.
#[derive(Debug)]
struct Group {
    values: Vec<f64>,
    weights: Weights,
}

impl Default for Group {
    fn default() -> Self {
        Group {
            values: Vec::new(),
            weights: Weights::Uniform(1),
        }
    }
}

impl Group {
    /// Adds `values`, each of weight `w`; returns how many values gained a weight of their
    /// own (all of the group's, the first time its weights differ).
    fn extend_uniform(&mut self, values: &[f64], w: i64) -> usize {
        if values.is_empty() {
            return 0;
        }
        let held = match &mut self.weights {
            Weights::Uniform(u) if self.values.is_empty() => {
                *u = w;
                0
            }
            Weights::Uniform(u) if *u == w => 0,
            Weights::Uniform(u) => {
                let mut each = Vec::with_capacity(self.values.capacity().max(self.values.len() + values.len()));
                each.resize(self.values.len(), *u);
                each.resize(self.values.len() + values.len(), w);
                let gained = each.len();
                self.weights = Weights::Each(each);
                gained
            }
            Weights::Each(each) => {
                each.resize(each.len() + values.len(), w);
                values.len()
            }
        };
        self.values.extend_from_slice(values);
        held
    }

    /// Adds one value of weight `w`; returns how many values gained a weight of their own.
    fn push(&mut self, v: f64, w: i64) -> usize {
        self.extend_uniform(std::slice::from_ref(&v), w)
    }

    /// Adds values with their own weights (as long as `values`).
    fn extend_each(&mut self, values: &[f64], weights: &[i64]) -> usize {
        match weights.split_first() {
            Some((&w, rest)) if rest.iter().all(|&x| x == w) => self.extend_uniform(values, w),
            _ => values.iter().zip(weights).map(|(&v, &w)| self.push(v, w)).sum(),
        }
    }

    /// Values holding a weight of their own.
    fn weighted(&self) -> usize {
        match &self.weights {
            Weights::Each(e) => e.len(),
            Weights::Uniform(_) => 0,
        }
    }

    /// The percentiles `ps` of the group, reordering its values.
    fn answer(&mut self, ps: &[f64]) -> Vec<Option<f64>> {
        match &self.weights {
            Weights::Uniform(u) => uniform_percentiles(&mut self.values, *u, ps),
            Weights::Each(w) => percentiles_in_place(&mut self.values, w, ps),
        }
    }
}

/// Lists of values and of weights, one per group (or row), as the aggregate's state. A group
/// whose values share one weight carries it once (a weights list of length 1 stands for all).
///
/// Each group's vectors are freed as soon as they are copied, into one buffer of the exact
/// size: at 10M values the state is the largest thing a percentile query holds, and a buffer
/// grown by doubling (or all the groups kept until the end) would hold up to three times it.
fn list_state(groups: Vec<Group>) -> Vec<ArrayRef> {
    let value_lengths: Vec<usize> = groups.iter().map(|g| g.values.len()).collect();
    let weight_length = |g: &Group| match &g.weights {
        Weights::Each(e) => e.len(),
        Weights::Uniform(_) => usize::from(!g.values.is_empty()),
    };
    let weight_lengths: Vec<usize> = groups.iter().map(weight_length).collect();
    let mut values = Vec::with_capacity(value_lengths.iter().sum());
    let mut weights = Vec::with_capacity(weight_lengths.iter().sum());
    for g in groups {
        values.extend_from_slice(&g.values);
        match g.weights {
            Weights::Each(e) => weights.extend_from_slice(&e),
            Weights::Uniform(u) if !g.values.is_empty() => weights.push(u),
            Weights::Uniform(_) => {}
        }
    }
    let list = |field: DataType, lengths: Vec<usize>, array: ArrayRef| -> ArrayRef {
        Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(field, true)),
            OffsetBuffer::from_lengths(lengths),
            array,
            None,
        ))
    };
    vec![
        list(DataType::Float64, value_lengths, Arc::new(Float64Array::from(values))),
        list(DataType::Int64, weight_lengths, Arc::new(Int64Array::from(weights))),
    ]
}

/// Adds state entry `i` (see [`list_state`]) to `group`; returns the values that gained a
/// weight of their own.
fn merge_entry(group: &mut Group, vl: &ListArray, wl: &ListArray, i: usize) -> usize {
    if vl.is_null(i) || wl.is_null(i) {
        return 0;
    }
    let (v, w) = (vl.value(i), wl.value(i));
    let (v, w) = (
        v.as_primitive::<Float64Type>().values(),
        w.as_primitive::<Int64Type>().values(),
    );
    // Exactly: partitions' states arrive whole, and doubling would leave up to half of a
    // large group's buffer unused until the answer.
    group.values.reserve_exact(v.len());
    if w.len() == 1 {
        group.extend_uniform(v, w[0])
    } else {
        group.extend_each(v, w)
    }
}

/// The answers of groups, as the function returns them: a `Float64` each, or a struct.
fn answers(out: Vec<Vec<Option<f64>>>, ps: usize, many: bool) -> Result<ArrayRef> {
    if !many {
        return Ok(Arc::new(out.into_iter().map(|a| a[0]).collect::<Float64Array>()));
    }
    let columns: Vec<ArrayRef> = (0..ps)
        .map(|k| Arc::new(out.iter().map(|a| a[k]).collect::<Float64Array>()) as ArrayRef)
        .collect();
    Ok(Arc::new(StructArray::try_new(struct_fields(ps), columns, None)?))
}

/// The aggregate over many groups at once: each row's value goes straight to its group's
/// list (the generic adapter would first split every batch by group, one `take` per group).
#[derive(Debug)]
struct PercentileGroups {
    ps: Vec<f64>,
    many: bool,
    groups: Vec<Group>,
    /// Values held over all groups, and those with a weight of their own (kept as counts:
    /// `size` is asked once per batch).
    held: usize,
    held_weights: usize,
}

impl PercentileGroups {
    /// The groups `emit_to` hands over, out of the accumulator.
    fn take(&mut self, emit_to: EmitTo) -> Vec<Group> {
        let groups = emit_to.take_needed(&mut self.groups);
        self.held -= groups.iter().map(|g| g.values.len()).sum::<usize>();
        self.held_weights -= groups.iter().map(Group::weighted).sum::<usize>();
        groups
    }

    fn grow(&mut self, groups: usize) {
        if self.groups.len() < groups {
            self.groups.resize_with(groups, Group::default);
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
                self.held_weights += self.groups[g].push(v.value(i), weight_at(w, i));
                self.held += 1;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let ps = self.ps.clone();
        let out = self.take(emit_to).iter_mut().map(|g| g.answer(&ps)).collect();
        answers(out, ps.len(), self.many)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(list_state(self.take(emit_to)))
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.grow(total_num_groups);
        let (vl, wl) = (values[0].as_list::<i32>(), values[1].as_list::<i32>());
        for (i, &g) in group_indices.iter().enumerate() {
            let before = self.groups[g].values.len();
            self.held_weights += merge_entry(&mut self.groups[g], vl, wl, i);
            self.held += self.groups[g].values.len() - before;
        }
        Ok(())
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        // Each row its own group: a list of its value (and its weight), or an empty one.
        let v = values[0].as_primitive::<Float64Type>();
        let w = values[1].as_primitive::<Int64Type>();
        let kept =
            |i: usize| opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i)) && v.is_valid(i) && !v.value(i).is_nan();
        Ok(list_state(
            (0..v.len())
                .map(|i| {
                    let mut g = Group::default();
                    if kept(i) {
                        g.push(v.value(i), weight_at(w, i));
                    }
                    g
                })
                .collect(),
        ))
    }

    fn size(&self) -> usize {
        // 8 bytes a value, 8 more with its own weight; vectors grow by doubling, so up to
        // twice that.
        std::mem::size_of_val(self)
            + self.groups.capacity() * std::mem::size_of::<Group>()
            + (self.held + self.held_weights) * 16
    }
}

/// The aggregate without groups.
#[derive(Debug)]
struct PercentileAcc {
    ps: Vec<f64>,
    many: bool,
    group: Group,
}

impl Accumulator for PercentileAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let v = values[0].as_primitive::<Float64Type>();
        let w = values[1].as_primitive::<Int64Type>();
        for i in 0..v.len() {
            if v.is_valid(i) && !v.value(i).is_nan() {
                self.group.push(v.value(i), weight_at(w, i));
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (vl, wl) = (states[0].as_list::<i32>(), states[1].as_list::<i32>());
        for i in 0..vl.len() {
            merge_entry(&mut self.group, vl, wl, i);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let state = list_state(vec![std::mem::take(&mut self.group)]);
        Ok(state
            .into_iter()
            .map(|a| ScalarValue::List(Arc::new(a.as_list::<i32>().clone())))
            .collect())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        // Selected in place (the values are not needed in their order again): no copy of the
        // values outside what `size` reports.
        let out = answers(vec![self.group.answer(&self.ps)], self.ps.len(), self.many)?;
        ScalarValue::try_from_array(&out, 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.group.values.capacity() * 8
            + match &self.group.weights {
                Weights::Each(e) => e.capacity() * 8,
                Weights::Uniform(_) => 0,
            }
    }
}

/// The weighted percentile of `values` (see the module documentation); `None` when empty.
///
/// Selection rather than a sort: `O(n)` on average. Unweighted (every weight 1, the common
/// case), the answer is the value of rank `⌈p·n⌉`, found by one `select_nth_unstable`; weighted,
/// a quickselect over (value, weight) pairs that keeps the side holding the target weight.
pub fn weighted_percentile_of(values: &[f64], weights: &[i64], p: f64) -> Option<f64> {
    percentiles_in_place(&mut values.to_vec(), weights, &[p])[0]
}

/// The percentiles `ps` of `values`, each of weight `w`: the first rank `r` (1-based) whose
/// cumulative weight `r·w` reaches `p × n·w` — computed as the definition computes it, in
/// floating point, so that a uniform group answers exactly as the same values with their
/// weights spelled out. Each rank is selected in the part right of the previous one.
fn uniform_percentiles(values: &mut [f64], w: i64, ps: &[f64]) -> Vec<Option<f64>> {
    let n = values.len();
    if n == 0 {
        return vec![None; ps.len()];
    }
    let (w, total) = (w as i128, w as i128 * n as i128);
    let reaches = |r: usize, p: f64| (w * r as i128) as f64 >= p * total as f64;
    let rank = |p: f64| {
        let mut r = ((p * n as f64).ceil() as usize).clamp(1, n);
        while r > 1 && reaches(r - 1, p) {
            r -= 1;
        }
        while r < n && !reaches(r, p) {
            r += 1;
        }
        r
    };
    let mut order: Vec<(usize, usize)> = ps.iter().enumerate().map(|(k, &p)| (rank(p), k)).collect();
    order.sort_unstable();
    let mut out = vec![None; ps.len()];
    let mut lo = 0;
    for (r, k) in order {
        // Everything left of `lo` is at most the value there, everything right at least.
        let (_, nth, _) = values[lo..].select_nth_unstable_by(r - 1 - lo, f64::total_cmp);
        out[k] = Some(*nth);
        lo = r - 1;
    }
    out
}

/// The percentiles `ps` of `values` (see [`weighted_percentile_of`]), reordering `values` when
/// every weight is 1 (each is at least 1). The total weight, and the pairs of a weighted
/// selection, are made once for all of `ps`.
fn percentiles_in_place(values: &mut [f64], weights: &[i64], ps: &[f64]) -> Vec<Option<f64>> {
    if values.is_empty() {
        return vec![None; ps.len()];
    }
    debug_assert!(weights.iter().all(|&w| w >= 1), "weights are at least 1");
    let total: i128 = weights.iter().map(|&w| w as i128).sum();
    if total == values.len() as i128 {
        return uniform_percentiles(values, 1, ps);
    }
    // Weighted: the pairs cost 16 bytes a value for the moment of the selection.
    let mut pairs: Vec<(f64, i64)> = values.iter().copied().zip(weights.iter().copied()).collect();
    ps.iter()
        .map(|&p| Some(weighted_select(&mut pairs, p * total as f64)))
        .collect()
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

    /// Rows spread over 4 groups, some filtered out, some null, some NaN, through one
    /// accumulator, through state → merge (two-phase aggregation) and through
    /// convert_to_state; every answer equals the definition per group and percentile.
    ///
    /// Group 0 has weight 10 everywhere, group 1 weight 1, group 2 mixed weights, group 3
    /// weight 1 in the first half and 3 in the second (uniform in each partial state, mixed
    /// once merged).
    fn check_groups_accumulator(ps: &[f64], many: bool) {
        let n = 600;
        let values: ArrayRef = Arc::new(Float64Array::from(
            (0..n)
                .map(|i| match i % 23 {
                    0 => None,
                    1 => Some(f64::NAN),
                    _ => Some(((i * 37) % 101) as f64 / 3.0),
                })
                .collect::<Vec<_>>(),
        ));
        let groups: Vec<usize> = (0..n).map(|i| (i * 7) % 4).collect();
        let weight = |i: usize| match groups[i] {
            0 => 10,
            1 => 1,
            2 => 1 + (i % 5) as i64,
            _ if i < n / 2 => 1,
            _ => 3,
        };
        let weights: ArrayRef = Arc::new(Int64Array::from((0..n).map(weight).collect::<Vec<_>>()));
        let filter = BooleanArray::from((0..n).map(|i| (i % 11 != 0).then_some(i % 13 != 0)).collect::<Vec<_>>());
        let v = values.as_primitive::<Float64Type>();
        let want: Vec<Vec<Option<f64>>> = (0..4)
            .map(|g| {
                let rows: Vec<usize> = (0..n)
                    .filter(|&i| groups[i] == g && filter.is_valid(i) && filter.value(i))
                    .filter(|&i| v.is_valid(i) && !v.value(i).is_nan())
                    .collect();
                let vs: Vec<f64> = rows.iter().map(|&i| v.value(i)).collect();
                let ws: Vec<i64> = rows.iter().map(|&i| weight(i)).collect();
                ps.iter().map(|&p| by_sort(&vs, &ws, p)).collect()
            })
            .collect();
        let new = || PercentileGroups {
            ps: ps.to_vec(),
            many,
            groups: Vec::new(),
            held: 0,
            held_weights: 0,
        };
        let answer = |acc: &mut PercentileGroups| -> Vec<Vec<Option<f64>>> {
            let out = acc.evaluate(EmitTo::All).unwrap();
            let column = |k: usize| -> Vec<Option<f64>> {
                let a = if many {
                    out.as_struct().column(k).clone()
                } else {
                    out.clone()
                };
                a.as_primitive::<Float64Type>().iter().collect()
            };
            let columns: Vec<_> = (0..ps.len()).map(column).collect();
            (0..4).map(|g| columns.iter().map(|c| c[g]).collect()).collect()
        };
        let inputs = [values.clone(), weights.clone()];
        let mut direct = new();
        direct.update_batch(&inputs, &groups, Some(&filter), 4).unwrap();
        assert!(direct.groups[0].weighted() == 0 && direct.groups[1].weighted() == 0);
        assert!(direct.groups[2].weighted() > 0 && direct.groups[3].weighted() > 0);
        assert_eq!(answer(&mut direct), want);
        assert_eq!((direct.held, direct.held_weights), (0, 0), "everything emitted");

        // Two partial accumulators over halves, merged.
        let mut merged = new();
        for half in [0..n / 2, n / 2..n] {
            let mut part = new();
            let slice = |a: &ArrayRef| a.slice(half.start, half.len());
            let f = filter.slice(half.start, half.len());
            part.update_batch(&[slice(&values), slice(&weights)], &groups[half.clone()], Some(&f), 4)
                .unwrap();
            let state = part.state(EmitTo::All).unwrap();
            merged.merge_batch(&state, &[0, 1, 2, 3], 4).unwrap();
        }
        assert_eq!(answer(&mut merged), want);

        // Each row as its own state, merged into its group.
        let mut rows = new();
        let state = new().convert_to_state(&inputs, Some(&filter)).unwrap();
        rows.merge_batch(&state, &groups, 4).unwrap();
        assert_eq!(answer(&mut rows), want);
    }

    #[test]
    fn the_groups_accumulator_equals_the_definition_per_group() {
        check_groups_accumulator(&[0.9], false);
        check_groups_accumulator(&[0.0, 0.5, 0.9, 0.99, 0.999, 1.0], true);
        // Repeated and unordered percentiles.
        check_groups_accumulator(&[0.99, 0.25, 0.99, 0.001], true);
    }

    #[test]
    fn uniform_weights_answer_as_spelled_out_weights() {
        // For every n and p, a group of weight w answers as the same values with w each: the
        // rank is found in floating point as the definition finds it.
        for n in 1..60usize {
            let values: Vec<f64> = (0..n).map(|i| ((i * 17) % 13) as f64).collect();
            for w in [1i64, 3, 10, 7919] {
                let ps: Vec<f64> = (0..=100).map(|k| k as f64 / 100.0).collect();
                let got = uniform_percentiles(&mut values.clone(), w, &ps);
                let want: Vec<_> = ps.iter().map(|&p| by_sort(&values, &vec![w; n], p)).collect();
                assert_eq!(got, want, "n {n}, w {w}");
            }
        }
    }

    #[test]
    fn a_uniform_group_holds_no_weights() {
        let mut g = Group::default();
        assert_eq!(g.extend_uniform(&[1.0, 2.0, 3.0], 10), 0);
        assert_eq!(g.push(4.0, 10), 0);
        assert_eq!(g.weights, Weights::Uniform(10));
        // A different weight gives every value its own.
        assert_eq!(g.push(5.0, 1), 5);
        assert_eq!(g.weights, Weights::Each(vec![10, 10, 10, 10, 1]));
        assert_eq!(g.push(6.0, 1), 1);
    }

    #[test]
    fn weights_count_as_repeats() {
        // 1 ×1, 2 ×9: the median is 2.
        assert_eq!(weighted_percentile_of(&[1.0, 2.0], &[1, 9], 0.5), Some(2.0));
        assert_eq!(weighted_percentile_of(&[1.0, 2.0], &[9, 1], 0.5), Some(1.0));
    }
}

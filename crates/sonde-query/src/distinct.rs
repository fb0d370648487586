//! Mergeable sets of distinct values, so that COUNT_DISTINCT rolls up from precomputed
//! per-segment partials ([`crate::partials`]) the way sums do, and stays exact.
//!
//! A count of distinct values does not add up across segments or time buckets (a user seen in
//! two of them is one user), but the sets behind the counts do: the union of the sets is the
//! set of the whole. So a segment's partial for COUNT_DISTINCT is, per time bucket and group,
//! the set of the column's values there; a query over many segments unions the sets it reads
//! and counts the union. The sets are as large as the values are many (per segment, bucket and
//! group), which is what an exact distinct count holds anyway; the partials cache keeps the
//! ones that fit (an entry over an eighth of `--partials-cache-bytes` is not kept).
//!
//! Three functions carry them through DataFusion: `sonde_distinct(value)` (aggregate, values
//! to a set), `sonde_distinct_merge(set)` (aggregate, sets to their union) and
//! `sonde_distinct_count(set)` (scalar, the number of values in a set). A set is a `Binary`
//! value: the number of values as a LEB128 varint, then each value's bytes after their length
//! (a varint). A value's bytes are a string's UTF-8, an integer's 8 little-endian bytes, a
//! float's bits (so −0.0 and 0.0 are two values, as DataFusion's `COUNT(DISTINCT …)`, which
//! counts where partials do not answer, tells floats apart), a boolean's one byte, and Arrow's
//! row format for any other type. Only values of one column (so of one type) meet in a set, so two values
//! are equal exactly when their bytes are. Nulls are not values, as in SQL's
//! `COUNT(DISTINCT …)`.

use crate::varint::{self, Reader};
use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Int64Array};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::row::{RowConverter, SortField};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use std::sync::Arc;

/// A set of distinct values' bytes: the bytes side by side in one buffer, and a hash table of
/// where each value lies (no allocation per value).
#[derive(Debug, Default)]
pub struct ValueSet {
    /// (hash, offset, length) of each value in `bytes`.
    table: hashbrown::HashTable<(u64, usize, u32)>,
    bytes: Vec<u8>,
    hasher: ahash::RandomState,
}

impl ValueSet {
    /// Adds a value's bytes (nothing when it is there already); the bytes the set grew by.
    pub fn insert(&mut self, value: &[u8]) -> usize {
        let before = self.size();
        let ValueSet { table, bytes, hasher } = self;
        let h = hasher.hash_one(value);
        let entry = table.entry(
            h,
            |&(eh, at, len)| eh == h && &bytes[at..at + len as usize] == value,
            |e| e.0,
        );
        if let hashbrown::hash_table::Entry::Vacant(slot) = entry {
            slot.insert((h, bytes.len(), value.len() as u32));
            bytes.extend_from_slice(value);
        }
        self.size() - before
    }

    /// How many distinct values it holds.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Adds every value of an encoded set; the bytes the set grew by.
    pub fn merge_bytes(&mut self, set: &[u8]) -> usize {
        let mut r = Reader::new(set);
        let n = r.varint().unwrap_or(0);
        let mut grew = 0;
        for _ in 0..n {
            let Some(v) = r.bytes() else { break };
            grew += self.insert(v);
        }
        grew
    }

    /// Adds the non-null values of `values` (one column's values, of one type).
    pub fn add_array(&mut self, values: &ArrayRef) -> Result<()> {
        for_each_value(values, |_, v| {
            self.insert(v);
        })
    }

    /// The encoded set (see the module's documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + self.table.len() * 2 + 10);
        varint::put(&mut out, self.table.len() as u64);
        for &(_, at, len) in self.table.iter() {
            varint::put(&mut out, u64::from(len));
            out.extend_from_slice(&self.bytes[at..at + len as usize]);
        }
        out
    }

    /// Bytes held (the table's allocation, control bytes included, and the values' buffer).
    pub fn size(&self) -> usize {
        self.table.allocation_size() + self.bytes.capacity()
    }
}

/// Calls `f(row, bytes)` for each non-null value of `values` (see the module's documentation
/// for the bytes).
fn for_each_value(values: &ArrayRef, mut f: impl FnMut(usize, &[u8])) -> Result<()> {
    fn strings<'a>(it: impl Iterator<Item = Option<&'a str>>, f: &mut impl FnMut(usize, &[u8])) {
        for (i, v) in it.enumerate() {
            if let Some(v) = v {
                f(i, v.as_bytes());
            }
        }
    }
    match values.data_type() {
        DataType::Utf8 => strings(values.as_string::<i32>().iter(), &mut f),
        DataType::LargeUtf8 => strings(values.as_string::<i64>().iter(), &mut f),
        DataType::Utf8View => strings(values.as_string_view().iter(), &mut f),
        DataType::Int64 => {
            for (i, v) in values.as_primitive::<Int64Type>().iter().enumerate() {
                if let Some(v) = v {
                    f(i, &v.to_le_bytes());
                }
            }
        }
        DataType::Float64 => {
            for (i, v) in values.as_primitive::<Float64Type>().iter().enumerate() {
                if let Some(v) = v {
                    f(i, &v.to_bits().to_le_bytes());
                }
            }
        }
        DataType::Boolean => {
            for (i, v) in values.as_boolean().iter().enumerate() {
                if let Some(v) = v {
                    f(i, &[v as u8]);
                }
            }
        }
        DataType::Dictionary(_, value_type) => {
            let plain = arrow::compute::cast(values, value_type)?;
            for_each_value(&plain, f)?;
        }
        other => {
            let converter = RowConverter::new(vec![SortField::new(other.clone())])?;
            let rows = converter.convert_columns(std::slice::from_ref(values))?;
            for (i, row) in rows.iter().enumerate() {
                if values.is_valid(i) {
                    f(i, row.as_ref());
                }
            }
        }
    }
    Ok(())
}

/// The number of values in an encoded set.
pub fn count(set: &[u8]) -> i64 {
    Reader::new(set).varint().unwrap_or(0) as i64
}

/// `sonde_distinct(value)`: the set of the values; `sonde_distinct_merge(set)`: the union of
/// the sets.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DistinctAgg {
    signature: Signature,
    /// Whether the input is sets (merge) rather than values.
    merge: bool,
}

/// The aggregate building the set of a column's distinct values (any type).
pub fn distinct() -> AggregateUDF {
    AggregateUDF::from(DistinctAgg {
        signature: Signature::new(TypeSignature::Any(1), Volatility::Immutable),
        merge: false,
    })
}

/// The aggregate uniting sets (`Binary`) into one.
pub fn distinct_merge() -> AggregateUDF {
    AggregateUDF::from(DistinctAgg {
        signature: Signature::exact(vec![DataType::Binary], Volatility::Immutable),
        merge: true,
    })
}

impl AggregateUDFImpl for DistinctAgg {
    fn name(&self) -> &str {
        if self.merge {
            "sonde_distinct_merge"
        } else {
            "sonde_distinct"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(DistinctAcc {
            set: ValueSet::default(),
            merge: self.merge,
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    /// One set per group, filled straight from the batch's rows (the per-group
    /// [`Accumulator`] would first copy each group's rows out of every batch).
    fn create_groups_accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(DistinctGroups {
            sets: Vec::new(),
            merge: self.merge,
            bytes: 0,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<arrow::datatypes::FieldRef>> {
        Ok(vec![Arc::new(arrow::datatypes::Field::new(
            format_state_name(args.name, "distinct"),
            DataType::Binary,
            true,
        ))])
    }
}

#[derive(Debug)]
struct DistinctAcc {
    set: ValueSet,
    merge: bool,
}

impl DistinctAcc {
    fn merge_sets(&mut self, sets: &ArrayRef) {
        let b = sets.as_binary::<i32>();
        for i in 0..b.len() {
            if b.is_valid(i) {
                self.set.merge_bytes(b.value(i));
            }
        }
    }
}

impl Accumulator for DistinctAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if self.merge {
            self.merge_sets(&values[0]);
            Ok(())
        } else {
            self.set.add_array(&values[0])
        }
    }

    /// Never null: a group whose values are all null has the empty set (a count of 0).
    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(Some(self.set.to_bytes())))
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.set.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.merge_sets(&states[0]);
        Ok(())
    }
}

/// The sets of many groups at once.
#[derive(Debug)]
struct DistinctGroups {
    sets: Vec<ValueSet>,
    /// Whether the input is sets (merge) rather than values.
    merge: bool,
    /// What `sets` hold, kept as they grow (DataFusion asks after every batch).
    bytes: usize,
}

impl DistinctGroups {
    fn merge_sets(&mut self, sets: &ArrayRef, groups: &[usize], filter: Option<&BooleanArray>) {
        let b = sets.as_binary::<i32>();
        for (i, &g) in groups.iter().enumerate() {
            if b.is_valid(i) && filter.is_none_or(|f| f.is_valid(i) && f.value(i)) {
                self.bytes += self.sets[g].merge_bytes(b.value(i));
            }
        }
    }

    fn emit(&mut self, emit_to: EmitTo) -> ArrayRef {
        let sets = emit_to.take_needed(&mut self.sets);
        self.bytes -= sets.iter().map(ValueSet::size).sum::<usize>();
        let out: BinaryArray = sets.iter().map(|s| Some(s.to_bytes())).collect();
        Arc::new(out)
    }
}

impl GroupsAccumulator for DistinctGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.sets.resize_with(total_num_groups, ValueSet::default);
        if self.merge {
            self.merge_sets(&values[0], group_indices, opt_filter);
            return Ok(());
        }
        let (sets, bytes) = (&mut self.sets, &mut self.bytes);
        for_each_value(&values[0], |i, v| {
            if opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i)) {
                *bytes += sets[group_indices[i]].insert(v);
            }
        })
    }

    /// Never null: a group whose values are all null has the empty set (a count of 0).
    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(self.emit(emit_to))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.emit(emit_to)])
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.sets.resize_with(total_num_groups, ValueSet::default);
        self.merge_sets(&values[0], group_indices, None);
        Ok(())
    }

    /// Each row as a group of its own: the set of its one value (empty where it is null or
    /// filtered out), or the set it already is.
    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let rows: Vec<usize> = (0..values[0].len()).collect();
        let mut acc = DistinctGroups {
            sets: Vec::new(),
            merge: self.merge,
            bytes: 0,
        };
        acc.update_batch(values, &rows, opt_filter, rows.len())?;
        Ok(vec![acc.emit(EmitTo::All)])
    }

    fn size(&self) -> usize {
        self.sets.capacity() * std::mem::size_of::<ValueSet>() + self.bytes
    }
}

/// `sonde_distinct_count(set)`: the number of values in each set.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DistinctCount {
    signature: Signature,
}

/// The scalar function counting a set's values.
pub fn distinct_count() -> ScalarUDF {
    ScalarUDF::from(DistinctCount {
        signature: Signature::exact(vec![DataType::Binary], Volatility::Immutable),
    })
}

impl ScalarUDFImpl for DistinctCount {
    fn name(&self) -> &str {
        "sonde_distinct_count"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let sets = args.args[0].to_array(args.number_rows)?;
        let b: &BinaryArray = sets.as_binary::<i32>();
        let out: Int64Array = (0..b.len()).map(|i| b.is_valid(i).then(|| count(b.value(i)))).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Float64Array, StringArray};

    fn set_of(values: ArrayRef) -> ValueSet {
        let mut s = ValueSet::default();
        s.add_array(&values).unwrap();
        s
    }

    #[test]
    fn sets_count_distinct_values_and_merge_like_one_set() {
        // Strings, with nulls and repeats, split in two halves whose sets overlap.
        let words: Vec<Option<String>> = (0..10_000)
            .map(|i| (i % 13 != 0).then(|| format!("user-{}", i % 7_000)))
            .collect();
        let want: std::collections::HashSet<&String> = words.iter().flatten().collect();
        let (a, b) = words.split_at(6_000);
        let a = set_of(Arc::new(StringArray::from(a.to_vec())));
        let b = set_of(Arc::new(StringArray::from(b.to_vec())));
        let mut whole = ValueSet::default();
        whole.merge_bytes(&a.to_bytes());
        whole.merge_bytes(&b.to_bytes());
        assert_eq!(whole.len(), want.len());
        assert_eq!(count(&whole.to_bytes()), want.len() as i64);
        assert!(a.len() < want.len() && b.len() < want.len());

        // Floats by their bits (−0.0 and 0.0 are two, as DataFusion counts them); booleans; an
        // empty set counts 0.
        let f = set_of(Arc::new(Float64Array::from(vec![
            Some(0.0),
            Some(-0.0),
            Some(f64::NAN),
            Some(-f64::NAN),
            Some(1.5),
            None,
            Some(1.5),
        ])));
        assert_eq!(f.len(), 5);
        let t = set_of(Arc::new(BooleanArray::from(vec![
            Some(true),
            None,
            Some(true),
            Some(false),
        ])));
        assert_eq!(t.len(), 2);
        assert_eq!(count(&ValueSet::default().to_bytes()), 0);

        // Per group, in two batches, then the groups' states merged into other groups: each
        // group counts its own values, and the merged ones the union.
        let mut acc = DistinctGroups {
            sets: Vec::new(),
            merge: false,
            bytes: 0,
        };
        let batch = |v: Vec<Option<i64>>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
        acc.update_batch(&[batch(vec![Some(1), Some(2), Some(1), None])], &[0, 0, 1, 1], None, 2)
            .unwrap();
        let keep = BooleanArray::from(vec![true, false, true]);
        acc.update_batch(&[batch(vec![Some(3), Some(9), Some(1)])], &[0, 1, 2], Some(&keep), 3)
            .unwrap();
        let held = acc.size();
        assert!(held >= acc.sets.iter().map(ValueSet::size).sum::<usize>() && held > 0);
        let state = acc.state(EmitTo::All).unwrap();
        assert_eq!(acc.bytes, 0, "emitted sets no longer count");
        let counts =
            |a: &ArrayRef| -> Vec<i64> { (0..a.len()).map(|i| count(a.as_binary::<i32>().value(i))).collect() };
        assert_eq!(counts(&state[0]), vec![3, 1, 1]);
        let mut merged = DistinctGroups {
            sets: Vec::new(),
            merge: true,
            bytes: 0,
        };
        merged.merge_batch(&state, &[0, 0, 0], 1).unwrap();
        assert_eq!(counts(&merged.evaluate(EmitTo::All).unwrap()), vec![3]);

        // A truncated set ends where its values do, without panicking.
        let bytes = whole.to_bytes();
        let mut cut = ValueSet::default();
        cut.merge_bytes(&bytes[..bytes.len() / 2]);
        assert!(cut.len() < whole.len());
    }
}

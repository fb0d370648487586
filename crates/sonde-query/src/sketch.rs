//! Mergeable percentile sketches, for percentiles over ranges too large to answer exactly in
//! time (`--exact-percentile-rows`).
//!
//! A sketch is a histogram over logarithmic buckets (the DDSketch layout): bucket `i` holds the
//! values in `(γ^(i-1), γ^i]` with `γ = (1+α)/(1-α)`, and is answered by `2γ^i/(γ+1)`, which is
//! within a relative error `α` of every value in it (negative values mirror the positive ones,
//! zero has a bucket of its own). With `α` = 0.5%, a sketch's percentile is within 0.5% of the
//! exact weighted percentile's value, below the 1% the issue allows, and the same definition is
//! kept: the first bucket, in value order, whose cumulative weight (sample rates) reaches
//! `p × W`. Sketches merge by adding bucket weights, so per-segment sketches are precomputed
//! partials ([`crate::partials`]) like sums are.
//!
//! Three functions carry them through DataFusion: `sonde_sketch(value, weight)` (aggregate,
//! values to a sketch), `sonde_sketch_merge(sketch)` (aggregate, sketches to one) and
//! `sonde_sketch_quantile(sketch, p)` (scalar). A sketch is a `Binary` value: its buckets in
//! order with their weights, as varints (about 3 bytes a bucket); its size grows with the spread of the values
//! (230 buckets per factor of ten between the smallest and the largest), never with their
//! number.

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Float64Array, Int64Array};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use std::collections::HashMap;
use std::sync::Arc;

/// Relative accuracy of a sketch's percentiles.
pub const ALPHA: f64 = 0.005;
/// Keeps positive bucket numbers positive for every finite `f64`.
const BIAS: i32 = 100_000;

fn ln_gamma() -> f64 {
    ((1.0 + ALPHA) / (1.0 - ALPHA)).ln()
}

/// The bucket of `v` (NaN has none). Order-preserving: a larger value never has a smaller key.
fn key(v: f64) -> Option<i32> {
    if v.is_nan() {
        return None;
    }
    if v == 0.0 {
        return Some(0);
    }
    let i = (v.abs().ln() / ln_gamma()).ceil().clamp(-90_000.0, 90_000.0) as i32;
    Some(if v > 0.0 { 1 + i + BIAS } else { -(1 + i + BIAS) })
}

/// The value answering bucket `k`.
fn value_of(k: i32) -> f64 {
    if k == 0 {
        return 0.0;
    }
    let gamma = (1.0 + ALPHA) / (1.0 - ALPHA);
    let i = k.abs() - 1 - BIAS;
    let v = 2.0 * (i as f64 * ln_gamma()).exp() / (gamma + 1.0);
    if k > 0 { v } else { -v }
}

/// A sketch being built: bucket → total weight.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sketch {
    buckets: HashMap<i32, i64>,
}

impl Sketch {
    /// Adds `v` with weight `w`.
    pub fn add(&mut self, v: f64, w: i64) {
        if let Some(k) = key(v) {
            *self.buckets.entry(k).or_default() += w;
        }
    }

    /// Adds every bucket of an encoded sketch.
    pub fn merge_bytes(&mut self, bytes: &[u8]) {
        for (k, w) in pairs(bytes) {
            *self.buckets.entry(k).or_default() += w;
        }
    }

    /// The encoded sketch: its buckets in order, each as the LEB128 varints of the step from
    /// the previous bucket (zigzag for the first) and of its weight — about 3 bytes a bucket.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut keys: Vec<(i32, i64)> = self.buckets.iter().map(|(k, w)| (*k, *w)).collect();
        keys.sort_unstable();
        let mut out = Vec::with_capacity(keys.len() * 3);
        let mut prev: Option<i32> = None;
        for (k, w) in keys {
            let step = match prev {
                None => ((k << 1) ^ (k >> 31)) as u32 as u64,
                Some(p) => (k - p) as u64,
            };
            crate::varint::put(&mut out, step);
            crate::varint::put(&mut out, w as u64);
            prev = Some(k);
        }
        out
    }

    fn size(&self) -> usize {
        self.buckets.capacity() * 16
    }
}

/// The `(bucket, weight)` pairs of an encoded sketch, in bucket order (a truncated tail, which
/// only a corrupt value would have, ends them).
fn pairs(bytes: &[u8]) -> impl Iterator<Item = (i32, i64)> + '_ {
    let mut r = crate::varint::Reader::new(bytes);
    let mut prev: Option<i32> = None;
    std::iter::from_fn(move || {
        let step = r.varint()?;
        let w = r.varint()? as i64;
        let k = match prev {
            None => ((step >> 1) as i32) ^ -((step & 1) as i32),
            Some(p) => p + step as i32,
        };
        prev = Some(k);
        Some((k, w))
    })
}

/// Percentile `p` of an encoded sketch: the value of the first bucket whose cumulative weight
/// reaches `p × W` (as `weighted_percentile` defines it for the exact values); `None` when
/// empty.
pub fn quantile(bytes: &[u8], p: f64) -> Option<f64> {
    let total: i128 = pairs(bytes).map(|(_, w)| w as i128).sum();
    if total <= 0 {
        return None;
    }
    // The exact selection's rank rounding: the first rank reaching `p × W`, at least 1.
    let target = (p * total as f64).max(f64::MIN_POSITIVE);
    let mut below = 0i128;
    let mut last = None;
    for (k, w) in pairs(bytes) {
        below += w as i128;
        last = Some(k);
        if below as f64 >= target {
            return Some(value_of(k));
        }
    }
    last.map(value_of)
}

/// `sonde_sketch(value, weight)`: the sketch of the values; `sonde_sketch_merge(sketch)`: the
/// sketches merged.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SketchAgg {
    signature: Signature,
    /// Whether the input is sketches (merge) rather than values.
    merge: bool,
}

/// The aggregate building a sketch from `(value Float64, weight Int64)`.
pub fn sketch() -> AggregateUDF {
    AggregateUDF::from(SketchAgg {
        signature: Signature::exact(vec![DataType::Float64, DataType::Int64], Volatility::Immutable),
        merge: false,
    })
}

/// The aggregate merging sketches (`Binary`) into one.
pub fn sketch_merge() -> AggregateUDF {
    AggregateUDF::from(SketchAgg {
        signature: Signature::exact(vec![DataType::Binary], Volatility::Immutable),
        merge: true,
    })
}

impl AggregateUDFImpl for SketchAgg {
    fn name(&self) -> &str {
        if self.merge {
            "sonde_sketch_merge"
        } else {
            "sonde_sketch"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SketchAcc {
            sketch: Sketch::default(),
            merge: self.merge,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<arrow::datatypes::FieldRef>> {
        Ok(vec![Arc::new(arrow::datatypes::Field::new(
            format_state_name(args.name, "sketch"),
            DataType::Binary,
            true,
        ))])
    }
}

#[derive(Debug)]
struct SketchAcc {
    sketch: Sketch,
    merge: bool,
}

impl SketchAcc {
    fn merge_sketches(&mut self, sketches: &ArrayRef) {
        let b = sketches.as_binary::<i32>();
        for i in 0..b.len() {
            if b.is_valid(i) {
                self.sketch.merge_bytes(b.value(i));
            }
        }
    }
}

impl Accumulator for SketchAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if self.merge {
            self.merge_sketches(&values[0]);
            return Ok(());
        }
        let v: &Float64Array = values[0].as_primitive::<Float64Type>();
        let w: &Int64Array = values[1].as_primitive::<Int64Type>();
        for i in 0..v.len() {
            if v.is_valid(i) {
                // A missing or non-positive sample rate counts as 1, as at ingest.
                let weight = if w.is_valid(i) { w.value(i).max(1) } else { 1 };
                self.sketch.add(v.value(i), weight);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(
            (!self.sketch.buckets.is_empty()).then(|| self.sketch.to_bytes()),
        ))
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.sketch.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.merge_sketches(&states[0]);
        Ok(())
    }
}

/// `sonde_sketch_quantile(sketch, p)`: percentile `p` (a literal in `[0, 1]`) of each sketch.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SketchQuantile {
    signature: Signature,
}

/// The scalar function answering a percentile from a sketch.
pub fn sketch_quantile() -> ScalarUDF {
    ScalarUDF::from(SketchQuantile {
        signature: Signature::exact(vec![DataType::Binary, DataType::Float64], Volatility::Immutable),
    })
}

impl ScalarUDFImpl for SketchQuantile {
    fn name(&self) -> &str {
        "sonde_sketch_quantile"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let p = match &args.args[1] {
            ColumnarValue::Scalar(ScalarValue::Float64(Some(p))) if (0.0..=1.0).contains(p) => *p,
            _ => return exec_err!("sonde_sketch_quantile: p must be a literal between 0 and 1"),
        };
        let sketches = args.args[0].to_array(args.number_rows)?;
        let b: &BinaryArray = sketches.as_binary::<i32>();
        let out: Float64Array = (0..b.len())
            .map(|i| b.is_valid(i).then(|| quantile(b.value(i), p)).flatten())
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact weighted nearest-rank percentile, as `weighted_percentile` defines it.
    fn exact(values: &[(f64, i64)], p: f64) -> f64 {
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: i64 = v.iter().map(|x| x.1).sum();
        let target = (p * total as f64).max(f64::MIN_POSITIVE);
        let mut below = 0;
        for (x, w) in &v {
            below += w;
            if below as f64 >= target {
                return *x;
            }
        }
        v.last().unwrap().0
    }

    #[test]
    fn percentiles_are_within_the_relative_error_and_merge_like_one_sketch() {
        let mut rng = sonde_gen_free_rng(42);
        let values: Vec<(f64, i64)> = (0..20_000)
            .map(|i| {
                let r = rng();
                // Log-normal-ish durations, some negatives and zeros, weights 1..10.
                let v = match i % 50 {
                    0 => 0.0,
                    1 => -(r * 300.0),
                    _ => (r * 12.0).exp() / 100.0,
                };
                (v, 1 + (i % 10) as i64)
            })
            .collect();
        // Three partial sketches merged equal one sketch of everything.
        let mut parts = [Sketch::default(), Sketch::default(), Sketch::default()];
        let mut whole = Sketch::default();
        for (i, (v, w)) in values.iter().enumerate() {
            parts[i % 3].add(*v, *w);
            whole.add(*v, *w);
        }
        let mut merged = Sketch::default();
        for p in &parts {
            merged.merge_bytes(&p.to_bytes());
        }
        assert_eq!(merged.to_bytes(), whole.to_bytes());
        let buckets = whole.buckets.len();
        assert!(
            whole.to_bytes().len() <= buckets * 4,
            "{} bytes for {buckets} buckets",
            whole.to_bytes().len()
        );
        for p in [
            0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0,
        ] {
            let want = exact(&values, p);
            let got = quantile(&whole.to_bytes(), p).unwrap();
            assert!(
                (got - want).abs() <= ALPHA * want.abs() * 1.000_001,
                "p{p}: got {got}, exact {want}"
            );
        }
        assert_eq!(quantile(&[], 0.5), None);
    }

    /// A small deterministic generator of uniforms in [0, 1).
    fn sonde_gen_free_rng(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        }
    }
}

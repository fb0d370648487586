//! Derived columns as DataFusion expressions: a checked expression tree
//! ([`sonde_model::derived::Typed`]) compiled into one [`Expr`] that runs vectorised inside
//! the query's scan, so filter and projection pushdown still see the columns it reads.
//!
//! Built-in functions are used where their semantics are exactly Honeycomb's (CASE, `IS NOT
//! NULL`, string prefix tests, `lower`, `concat`, `greatest`/`least`, casts between numbers);
//! the rest are Sonde's own array kernels in [`SondeFn`] (lenient string → number, number
//! text, regular expressions with literal patterns, RFC 3339 parsing, time formatting in a
//! zone, `LOG10`, `BUCKET`). The rules each function follows are the README's "Derived
//! columns" section; `comparison` and `truthy` hold the two that shape most of them.

use arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::functions::core::expr_fn::{coalesce, greatest, least, nullif};
use datafusion::functions::string::expr_fn::{concat, contains, ends_with, lower, octet_length, starts_with};
use datafusion::functions::unicode::expr_fn::character_length;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, when,
};
use datafusion::prelude::{Expr, cast, ident, lit, try_cast};
use sonde_model::derived::{Func, Lit, Typed, TypedNode};
use sonde_model::{ColumnType, TIMESTAMP_COLUMN};
use std::ops::Not;
use std::sync::Arc;

/// The Arrow type of a derived column of type `ty` (`None`, always null, reads as text).
pub fn data_type(ty: Option<ColumnType>) -> DataType {
    match ty {
        Some(ColumnType::Bool) => DataType::Boolean,
        Some(ColumnType::Int) => DataType::Int64,
        Some(ColumnType::Float) => DataType::Float64,
        Some(ColumnType::String) | None => DataType::Utf8,
    }
}

/// The expression computing a derived column (of type `t.ty`, or text when that is `None`).
pub fn compile(t: &Typed) -> Expr {
    convert(expr(t), t.ty, Some(t.ty.unwrap_or(ColumnType::String)))
}

fn typed_null(ty: Option<ColumnType>) -> Expr {
    match ty {
        None => lit(ScalarValue::Null),
        Some(t) => lit(ScalarValue::try_from(&data_type(Some(t))).expect("a null of every column type")),
    }
}

fn is_num(t: Option<ColumnType>) -> bool {
    matches!(t, Some(ColumnType::Int | ColumnType::Float))
}

/// `e` (of type `from`) as a value of type `to`, as a column widens: `true` → 1, 1 → 1.0,
/// anything → its text. Nulls stay null.
fn convert(e: Expr, from: Option<ColumnType>, to: Option<ColumnType>) -> Expr {
    use ColumnType::*;
    match (from, to) {
        (_, None) => e,
        (None, to) => typed_null(to),
        (Some(f), Some(t)) if f == t => e,
        (Some(_), Some(String)) => text(e, from),
        (Some(_), Some(t)) => cast(e, data_type(Some(t))),
    }
}

/// `STRING()` without its null rule: integers and booleans as Arrow writes them, floats as
/// their shortest round-trip text (`2.0` → `2`, `0.1` → `0.1`).
fn text(e: Expr, from: Option<ColumnType>) -> Expr {
    match from {
        Some(ColumnType::Float) => SondeFn::call(Kind::FloatText, e, vec![]),
        Some(ColumnType::String) => e,
        None => typed_null(Some(ColumnType::String)),
        Some(_) => cast(e, DataType::Utf8),
    }
}

/// Math's coercion: numbers as floats, `true`/`false` as 1/0, strings parsed (0 when they do
/// not parse), null stays null.
fn float(e: Expr, from: Option<ColumnType>) -> Expr {
    match from {
        Some(ColumnType::Float) => e,
        Some(ColumnType::String) => SondeFn::call(Kind::ParseFloat, e, vec![]),
        None => typed_null(Some(ColumnType::Float)),
        Some(_) => cast(e, DataType::Float64),
    }
}

/// Honeycomb's truthiness, never null: `true`, a non-zero number, the string `"true"`.
fn truthy(e: Expr, from: Option<ColumnType>) -> Expr {
    let test = match from {
        None => return lit(false),
        Some(ColumnType::Bool) => e,
        Some(ColumnType::Int) => e.not_eq(lit(0i64)),
        Some(ColumnType::Float) => ieee(e).not_eq(lit(0.0f64)),
        Some(ColumnType::String) => e.eq(lit("true")),
    };
    coalesce(vec![test, lit(false)])
}

/// A float as IEEE compares it: Arrow orders floats totally (-0 < 0), so `-0` is made `0`
/// first (`x + 0.0` is exactly that, and leaves every other value alone).
fn ieee(e: Expr) -> Expr {
    e + lit(0.0f64)
}

/// A comparison under Honeycomb's rule: numbers numerically, strings by bytes, booleans only
/// for (in)equality; different kinds, or a null side, are simply false (never null).
fn comparison(op: Func, l: &Typed, r: &Typed) -> Expr {
    use ColumnType::*;
    let (a, b) = (expr(l), expr(r));
    let (a, b) = match (l.ty, r.ty) {
        (Some(Int), Some(Int)) | (Some(String), Some(String)) => (a, b),
        (x, y) if is_num(x) && is_num(y) => (ieee(float(a, x)), ieee(float(b, y))),
        (Some(Bool), Some(Bool)) if matches!(op, Func::Equals) => (a, b),
        _ => return lit(false),
    };
    let c = match op {
        Func::Lt => a.lt(b),
        Func::Lte => a.lt_eq(b),
        Func::Gt => a.gt(b),
        Func::Gte => a.gt_eq(b),
        _ => a.eq(b),
    };
    coalesce(vec![c, lit(false)])
}

/// Whether a value counts for COALESCE and CONCAT: not null, and not the empty string.
fn non_empty(e: Expr, ty: Option<ColumnType>) -> Expr {
    match ty {
        None => lit(false),
        Some(ColumnType::String) => e.clone().is_not_null().and(e.not_eq(lit(""))),
        Some(_) => e.is_not_null(),
    }
}

/// `CASE WHEN c1 THEN v1 … ELSE other END`, or `other` when there are no arms.
fn case(arms: Vec<(Expr, Expr)>, other: Expr) -> Expr {
    let mut arms = arms.into_iter();
    let Some((c, v)) = arms.next() else { return other };
    let mut b = when(c, v);
    for (c, v) in arms {
        b = b.when(c, v);
    }
    b.otherwise(other).expect("CASE with at least one arm")
}

fn expr(t: &Typed) -> Expr {
    let (func, args) = match &t.node {
        TypedNode::Column(c) => return ident(c),
        TypedNode::Lit(l) => {
            return match l {
                Lit::Null => lit(ScalarValue::Null),
                Lit::Bool(b) => lit(*b),
                Lit::Int(i) => lit(*i),
                Lit::Float(f) => lit(*f),
                Lit::Str(s) => lit(s.clone()),
            };
        }
        TypedNode::Call(func, args) => (func, args),
    };
    let to = |a: &Typed| convert(expr(a), a.ty, t.ty);
    let f = |a: &Typed| float(expr(a), a.ty);
    let tr = |a: &Typed| truthy(expr(a), a.ty);
    let is_str = |a: &Typed| a.ty == Some(ColumnType::String);
    if matches!(func, Func::ToLower | Func::Length | Func::UnixTimestamp) && args[0].ty.is_none() {
        return typed_null(t.ty); // of null, null
    }
    match func {
        Func::If => {
            let pairs = args.chunks_exact(2).map(|p| (tr(&p[0]), to(&p[1]))).collect();
            let other = match args.len() % 2 {
                1 => to(&args[args.len() - 1]),
                _ => typed_null(t.ty),
            };
            case(pairs, other)
        }
        Func::Switch => {
            let rest = &args[1..];
            let pairs = rest
                .chunks_exact(2)
                .map(|p| (comparison(Func::Equals, &args[0], &p[0]), to(&p[1])))
                .collect();
            let other = match rest.len() % 2 {
                1 => to(&rest[rest.len() - 1]),
                _ => typed_null(t.ty),
            };
            case(pairs, other)
        }
        Func::Coalesce => {
            let arms = args.iter().map(|a| (non_empty(expr(a), a.ty), to(a))).collect();
            case(arms, typed_null(t.ty))
        }
        Func::Lt | Func::Lte | Func::Gt | Func::Gte | Func::Equals => comparison(*func, &args[0], &args[1]),
        Func::NotEquals => comparison(Func::Equals, &args[0], &args[1]).not(),
        Func::In => args[1..]
            .iter()
            .map(|o| comparison(Func::Equals, &args[0], o))
            .reduce(Expr::or)
            .expect("IN has options"),
        Func::Exists => match args[0].ty {
            None => lit(false),
            Some(_) => expr(&args[0]).is_not_null(),
        },
        Func::Not => tr(&args[0]).not(),
        Func::And => args.iter().map(tr).reduce(Expr::and).expect("AND has arguments"),
        Func::Or => args.iter().map(tr).reduce(Expr::or).expect("OR has arguments"),
        Func::Bool => tr(&args[0]),
        Func::Sum => args.iter().map(f).reduce(|a, b| a + b).expect("SUM has arguments"),
        Func::Mul => args.iter().map(f).reduce(|a, b| a * b).expect("MUL has arguments"),
        Func::Sub => f(&args[0]) - f(&args[1]),
        Func::Div => f(&args[0]) / nullif(ieee(f(&args[1])), lit(0.0f64)),
        Func::Mod => f(&args[0]) % nullif(ieee(f(&args[1])), lit(0.0f64)),
        Func::Min | Func::Max => {
            let typed: Vec<Expr> = args.iter().filter(|a| a.ty.is_some()).map(to).collect();
            match (typed.len(), func) {
                (0, _) => typed_null(t.ty),
                (1, _) => typed.into_iter().next().expect("one"),
                (_, Func::Min) => least(typed),
                _ => greatest(typed),
            }
        }
        Func::Log10 => SondeFn::call(Kind::Log10, f(&args[0]), vec![]),
        Func::Bucket => {
            let params = args[1..]
                .iter()
                .map(|a| lit(a.as_f64().expect("checked: literal size, min and max")))
                .collect();
            SondeFn::call(Kind::Bucket, f(&args[0]), params)
        }
        Func::Int => match args[0].ty {
            Some(ColumnType::Int) => expr(&args[0]),
            Some(ColumnType::Bool) => cast(expr(&args[0]), DataType::Int64),
            None => typed_null(Some(ColumnType::Int)),
            // Truncates toward zero; beyond the range of an i64 it is null.
            _ => try_cast(f(&args[0]), DataType::Int64),
        },
        Func::Float => f(&args[0]),
        Func::String => coalesce(vec![text(expr(&args[0]), args[0].ty), lit("")]),
        Func::Concat => concat(
            args.iter()
                .map(|a| coalesce(vec![text(expr(a), a.ty), lit("")]))
                .collect(),
        ),
        Func::ToLower => lower(expr(&args[0])),
        Func::StartsWith | Func::EndsWith | Func::Contains => {
            if !(is_str(&args[0]) && is_str(&args[1])) {
                return lit(false);
            }
            let (s, p) = (expr(&args[0]), expr(&args[1]));
            let test = match func {
                Func::StartsWith => starts_with(s, p),
                Func::EndsWith => ends_with(s, p),
                _ => contains(s, p),
            };
            coalesce(vec![test, lit(false)])
        }
        Func::Length => {
            let s = expr(&args[0]);
            let n = match args.get(1).and_then(|m| m.as_str()) {
                Some("bytes") => octet_length(s),
                _ => character_length(s),
            };
            cast(n, DataType::Int64)
        }
        Func::RegMatch | Func::RegValue | Func::RegCount => {
            let pattern = lit(args[1].as_str().expect("checked: a literal pattern").to_string());
            let kind = match func {
                Func::RegMatch => Kind::RegMatch,
                Func::RegValue => Kind::RegValue,
                _ => Kind::RegCount,
            };
            if !is_str(&args[0]) {
                // Not a string: no match, no value, no count.
                return match func {
                    Func::RegMatch => lit(false),
                    Func::RegValue => typed_null(Some(ColumnType::String)),
                    _ => typed_null(Some(ColumnType::Int)),
                };
            }
            SondeFn::call(kind, expr(&args[0]), vec![pattern])
        }
        Func::UnixTimestamp => SondeFn::call(Kind::UnixTimestamp, expr(&args[0]), vec![]),
        Func::EventTimestamp => cast(cast(ident(TIMESTAMP_COLUMN), DataType::Int64), DataType::Float64) / lit(1e6),
        Func::IngestTimestamp => unreachable!("refused by the checker"),
        Func::FormatTime => {
            let format = lit(args[0].as_str().expect("checked: a literal format").to_string());
            let zone = args.get(2).and_then(|z| z.as_str()).map(|z| lit(z.to_string()));
            SondeFn::call(
                Kind::FormatTime,
                f(&args[1]),
                std::iter::once(format).chain(zone).collect(),
            )
        }
    }
}

/// Sonde's own kernels. Each is one UDF with a fixed name; its parameters (a pattern, a bucket
/// size and range, a format and zone) follow the value as literal arguments. A fixed name is
/// what a worker of a cluster needs: datafusion-distributed sends functions by name, and the
/// worker finds these in its registry ([`kernels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Text → float, 0 when it does not parse.
    ParseFloat,
    /// Float → shortest round-trip text.
    FloatText,
    /// Base-10 logarithm, null at or below 0.
    Log10,
    /// `(x, size[, min, max])`: lower bound of the value's bucket of this size.
    Bucket,
    /// `(s, pattern)`: whether the (non-empty) text matches.
    RegMatch,
    /// `(s, pattern)`: the first capture group of the first match (the whole match without groups).
    RegValue,
    /// `(s, pattern)`: non-overlapping matches.
    RegCount,
    /// RFC 3339 text → epoch seconds.
    UnixTimestamp,
    /// `(secs, format[, zone])`: epoch seconds → strftime text, in a zone (UTC by default).
    FormatTime,
}

const KINDS: [Kind; 9] = [
    Kind::ParseFloat,
    Kind::FloatText,
    Kind::Log10,
    Kind::Bucket,
    Kind::RegMatch,
    Kind::RegValue,
    Kind::RegCount,
    Kind::UnixTimestamp,
    Kind::FormatTime,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ParseFloat => "sonde_parse_float",
            Kind::FloatText => "sonde_float_text",
            Kind::Log10 => "sonde_log10",
            Kind::Bucket => "sonde_bucket",
            Kind::RegMatch => "sonde_reg_match",
            Kind::RegValue => "sonde_reg_value",
            Kind::RegCount => "sonde_reg_count",
            Kind::UnixTimestamp => "sonde_unix_timestamp",
            Kind::FormatTime => "sonde_format_time",
        }
    }

    /// How many literal parameters may follow the value.
    fn params(self) -> &'static [usize] {
        match self {
            Kind::Bucket => &[1, 3],
            Kind::RegMatch | Kind::RegValue | Kind::RegCount => &[1],
            Kind::FormatTime => &[1, 2],
            _ => &[0],
        }
    }

    fn input(self) -> DataType {
        match self {
            Kind::ParseFloat | Kind::RegMatch | Kind::RegValue | Kind::RegCount | Kind::UnixTimestamp => DataType::Utf8,
            _ => DataType::Float64,
        }
    }

    fn output(self) -> DataType {
        match self {
            Kind::ParseFloat | Kind::Log10 | Kind::Bucket | Kind::UnixTimestamp => DataType::Float64,
            Kind::FloatText | Kind::RegValue | Kind::FormatTime => DataType::Utf8,
            Kind::RegMatch => DataType::Boolean,
            Kind::RegCount => DataType::Int64,
        }
    }
}

/// The kernels, one shared instance each (their compiled-pattern caches are shared too).
static KERNELS: std::sync::LazyLock<Vec<Arc<ScalarUDF>>> = std::sync::LazyLock::new(|| {
    KINDS
        .iter()
        .map(|&kind| {
            Arc::new(ScalarUDF::new_from_impl(SondeFn {
                kind,
                signature: Signature::variadic_any(Volatility::Immutable),
                patterns: Default::default(),
            }))
        })
        .collect()
});

/// Sonde's kernels as UDFs, for a session's registry: derived columns call them, a cluster's
/// workers find them there by name, and SQL may call them directly (`sonde_reg_value(s,
/// '^(\\w+)')`).
pub(crate) fn kernels() -> &'static [Arc<ScalarUDF>] {
    &KERNELS
}

/// How many compiled patterns a kernel keeps (a derived column compiles its pattern once, not
/// per batch; SQL could ask for any number of patterns, so the cache is bounded).
const PATTERN_CACHE: usize = 64;

#[derive(Debug)]
struct SondeFn {
    kind: Kind,
    signature: Signature,
    patterns: std::sync::Mutex<std::collections::HashMap<String, Arc<regex::Regex>>>,
}

impl PartialEq for SondeFn {
    fn eq(&self, o: &Self) -> bool {
        self.kind == o.kind
    }
}
impl Eq for SondeFn {}
impl std::hash::Hash for SondeFn {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.kind.hash(h)
    }
}

impl SondeFn {
    /// `kind` applied to `value`, then its literal parameters.
    fn call(kind: Kind, value: Expr, params: Vec<Expr>) -> Expr {
        let udf = KINDS.iter().position(|k| *k == kind).expect("every kind has a kernel");
        KERNELS[udf].call(std::iter::once(value).chain(params).collect())
    }

    fn regex(&self, pattern: &str) -> Result<Arc<regex::Regex>> {
        let mut cache = self.patterns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(re) = cache.get(pattern) {
            return Ok(re.clone());
        }
        let re = Arc::new(
            regex::Regex::new(pattern)
                .map_err(|e| DataFusionError::Plan(format!("{}: bad pattern: {e}", self.kind.name())))?,
        );
        if cache.len() >= PATTERN_CACHE {
            cache.clear();
        }
        cache.insert(pattern.to_string(), re.clone());
        Ok(re)
    }
}

/// Parameter `i` (after the value), which must be a literal.
fn param(kind: Kind, args: &[ColumnarValue], i: usize) -> Result<&ScalarValue> {
    match args.get(i + 1) {
        Some(ColumnarValue::Scalar(s)) => Ok(s),
        _ => plan_err!("{}: parameter {} must be a literal", kind.name(), i + 1),
    }
}

fn param_f64(kind: Kind, args: &[ColumnarValue], i: usize) -> Result<f64> {
    match param(kind, args, i)?.cast_to(&DataType::Float64).ok() {
        Some(ScalarValue::Float64(Some(f))) if f.is_finite() => Ok(f),
        _ => plan_err!("{}: parameter {} must be a finite number", kind.name(), i + 1),
    }
}

fn param_str(kind: Kind, args: &[ColumnarValue], i: usize) -> Result<String> {
    match param(kind, args, i)?.cast_to(&DataType::Utf8).ok() {
        Some(ScalarValue::Utf8(Some(s))) => Ok(s),
        _ => plan_err!("{}: parameter {} must be text", kind.name(), i + 1),
    }
}

impl ScalarUDFImpl for SondeFn {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        let allowed = self.kind.params();
        if args.is_empty() || !allowed.contains(&(args.len() - 1)) {
            let counts: Vec<String> = allowed.iter().map(|n| (n + 1).to_string()).collect();
            return plan_err!(
                "{} takes {} arguments, not {}",
                self.kind.name(),
                counts.join(" or "),
                args.len()
            );
        }
        Ok(self.kind.output())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let input: ArrayRef = arrow::compute::cast(&args.args[0].to_array(n)?, &self.kind.input())?;
        let out: ArrayRef = match self.kind.input() {
            DataType::Utf8 => self.on_text(input.as_string::<i32>(), &args.args)?,
            _ => self.on_numbers(input.as_primitive::<arrow::datatypes::Float64Type>(), &args.args)?,
        };
        Ok(ColumnarValue::Array(out))
    }
}

impl SondeFn {
    fn on_text(&self, a: &arrow::array::StringArray, args: &[ColumnarValue]) -> Result<ArrayRef> {
        let kind = self.kind;
        let pattern = || -> Result<Arc<regex::Regex>> { self.regex(&param_str(kind, args, 0)?) };
        Ok(match kind {
            Kind::ParseFloat => {
                let mut b = Float64Builder::with_capacity(a.len());
                for v in a.iter() {
                    b.append_option(v.map(parse_float));
                }
                Arc::new(b.finish())
            }
            Kind::UnixTimestamp => {
                let mut b = Float64Builder::with_capacity(a.len());
                for v in a.iter() {
                    b.append_option(v.and_then(unix_timestamp));
                }
                Arc::new(b.finish())
            }
            Kind::RegMatch => {
                let re = pattern()?;
                let mut b = BooleanBuilder::with_capacity(a.len());
                for v in a.iter() {
                    b.append_value(v.is_some_and(|s| !s.is_empty() && re.is_match(s)));
                }
                Arc::new(b.finish())
            }
            Kind::RegValue => {
                let re = pattern()?;
                let mut b = StringBuilder::new();
                for v in a.iter() {
                    b.append_option(v.and_then(|s| reg_value(&re, s)));
                }
                Arc::new(b.finish())
            }
            Kind::RegCount => {
                let re = pattern()?;
                let mut b = Int64Builder::with_capacity(a.len());
                for v in a.iter() {
                    b.append_option(v.map(|s| re.find_iter(s).count() as i64));
                }
                Arc::new(b.finish())
            }
            _ => unreachable!("a kernel over numbers"),
        })
    }

    fn on_numbers(&self, a: &arrow::array::Float64Array, args: &[ColumnarValue]) -> Result<ArrayRef> {
        let kind = self.kind;
        Ok(match kind {
            Kind::FloatText => {
                let mut b = StringBuilder::new();
                for v in a.iter() {
                    b.append_option(v.map(float_text));
                }
                Arc::new(b.finish())
            }
            Kind::Log10 => {
                let mut b = Float64Builder::with_capacity(a.len());
                for v in a.iter() {
                    b.append_option(v.filter(|x| *x > 0.0).map(f64::log10));
                }
                Arc::new(b.finish())
            }
            Kind::Bucket => {
                let size = param_f64(kind, args, 0)?;
                if size <= 0.0 {
                    return plan_err!("{}: the bucket size must be above 0", kind.name());
                }
                let range = match args.len() {
                    4 => Some((param_f64(kind, args, 1)?, param_f64(kind, args, 2)?)),
                    _ => None,
                };
                if range.is_some_and(|(lo, hi)| lo >= hi) {
                    return plan_err!("{}: the range's min must be below its max", kind.name());
                }
                let mut b = Float64Builder::with_capacity(a.len());
                for v in a.iter() {
                    b.append_option(v.map(|x| bucket(x, size, range)));
                }
                Arc::new(b.finish())
            }
            Kind::FormatTime => {
                let format = param_str(kind, args, 0)?;
                let zone = match args.len() {
                    3 => Some(
                        param_str(kind, args, 1)?
                            .parse::<chrono_tz::Tz>()
                            .map_err(|_| DataFusionError::Plan(format!("{}: unknown time zone", kind.name())))?,
                    ),
                    _ => None,
                };
                let mut b = StringBuilder::new();
                for v in a.iter() {
                    b.append_option(v.and_then(|s| format_time(&format, zone, s)));
                }
                Arc::new(b.finish())
            }
            _ => unreachable!("a kernel over text"),
        })
    }
}

/// Text → float as Honeycomb's math reads it: a finite number, else 0.
pub fn parse_float(s: &str) -> f64 {
    // Text that is not a finite number ("NaN", "inf") reads as 0 too: NaN would compare
    // unlike IEEE under Arrow's total order, and neither has a JSON form.
    s.parse::<f64>().ok().filter(|f| f.is_finite()).unwrap_or(0.0)
}

/// A float's text: the shortest that reads back the same (`2` for 2.0).
pub fn float_text(f: f64) -> String {
    format!("{f}")
}

/// The lower bound of `x`'s bucket; with a range, `x` is first clamped into it, so a breakdown
/// by the bucket has a bounded number of groups.
pub fn bucket(x: f64, size: f64, range: Option<(f64, f64)>) -> f64 {
    match range {
        None => (x / size).floor() * size,
        Some((lo, hi)) => {
            let x = x.clamp(lo, hi);
            lo + ((x - lo) / size).floor() * size
        }
    }
}

/// The first capture group of the first match (the whole match for a pattern without groups);
/// none when nothing matches, the group did not take part, or the text is empty.
pub fn reg_value(re: &regex::Regex, s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let caps = re.captures(s)?;
    let m = if caps.len() > 1 { caps.get(1) } else { caps.get(0) };
    m.map(|m| m.as_str().to_string())
}

/// RFC 3339 → epoch seconds (with the fraction).
pub fn unix_timestamp(s: &str) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9)
}

/// Epoch seconds → strftime text in `zone` (UTC without one).
pub fn format_time(format: &str, zone: Option<chrono_tz::Tz>, secs: f64) -> Option<String> {
    use std::fmt::Write;
    if !secs.is_finite() {
        return None;
    }
    let whole = secs.floor();
    let nanos = ((secs - whole) * 1e9).round().min(999_999_999.0) as u32;
    let utc = chrono::DateTime::from_timestamp(whole as i64, nanos)?;
    let mut out = String::new();
    let ok = match zone {
        Some(z) => write!(out, "{}", utc.with_timezone(&z).format(format)),
        None => write!(out, "{}", utc.format(format)),
    };
    ok.ok().map(|_| out)
}

//! Honeycomb's query specification: the JSON a client sends, and its validation against a
//! dataset's schema into a [`Plan`] the executor can run.
//!
//! Every validation error names the field and the problem (`filters[2]: unknown column
//! "foo"`), and is answered with a 400.

use crate::ColumnType;
use crate::definitions::{DatasetDefs, TraceColumns};
use crate::derived::{self, CalculatedField, DerivedColumn, ExprError, Resolve, Resolved, Typed};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Default `limit` (Honeycomb's).
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 10_000;
/// Default time range when none is given: two hours, as Honeycomb.
pub const DEFAULT_TIME_RANGE_S: i64 = 7200;
/// Most time buckets a query may ask for.
pub const MAX_BUCKETS: i64 = 1000;
/// Value buckets of a HEATMAP.
pub const HEATMAP_BUCKETS: usize = 50;
/// Most calculations, filters, breakdowns, orders or havings one spec may have (each).
pub const MAX_CLAUSES: usize = 100;

/// A query specification, as Honeycomb's API takes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuerySpec {
    /// What to compute (VISUALIZE); empty means `COUNT`.
    #[serde(default)]
    pub calculations: Vec<Calculation>,
    /// Which events count (WHERE).
    #[serde(default)]
    pub filters: Vec<Filter>,
    /// `AND` (default) or `OR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_combination: Option<String>,
    /// Columns to group by (GROUP BY).
    #[serde(default)]
    pub breakdowns: Vec<String>,
    /// Result order (ORDER BY).
    #[serde(default)]
    pub orders: Vec<Order>,
    /// Filters on the calculated values (HAVING).
    #[serde(default)]
    pub havings: Vec<Having>,
    /// Most groups returned (default 100, at most 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Seconds before `end_time` (or now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_range: Option<i64>,
    /// Start (inclusive): epoch seconds (or ms/µs/ns, or RFC3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Value>,
    /// End (exclusive): epoch seconds (or ms/µs/ns, or RFC3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Value>,
    /// Seconds per time bucket of the series; chosen automatically when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<i64>,
    /// Derived columns for this query only: `[{"name", "expression"}]`, usable as columns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calculated_fields: Vec<CalculatedField>,
    /// Values computed from the calculations', per group and per time bucket.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formulas: Vec<Formula>,
    /// Also answer the same query over the range this many seconds earlier (at least the
    /// range's length), beside the main answer as `compare`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_time_offset_seconds: Option<i64>,
    /// Count events as stored, without weighting them by their sample rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_mode: Option<bool>,
    /// Answer the results only, without the time series (Honeycomb's `disable_series`, which
    /// it takes on a query result): for callers that draw no graph, such as triggers, SLOs and
    /// scripts. Each per-bucket scan is skipped, so the answer costs about one scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_series: Option<bool>,
}

impl QuerySpec {
    /// Whether any clause names the column `name` (a breakdown, filter, calculation or its own
    /// filters, order or having, or an expression of its own calculated fields).
    pub fn names_column(&self, name: &str) -> bool {
        let named = |c: &Option<String>| c.as_deref() == Some(name);
        self.breakdowns.iter().any(|b| b == name)
            || self.filters.iter().any(|f| f.column == name)
            || self
                .calculations
                .iter()
                .any(|c| named(&c.column) || c.filters.iter().any(|f| f.column == name))
            || self.orders.iter().any(|o| named(&o.column))
            || self.havings.iter().any(|h| named(&h.column))
            || self
                .calculated_fields
                .iter()
                .any(|f| derived::parse(&f.expression).is_ok_and(|a| a.names_column(name)))
    }
}

/// The events a raw-events listing or a BubbleUp looks at: a query spec's filters and time
/// range, without calculations (flattened into those requests' JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Population {
    /// Filters, as in a query spec.
    #[serde(default)]
    pub filters: Vec<Filter>,
    /// `AND` or `OR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_combination: Option<String>,
    /// Time range, as in a query spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_range: Option<i64>,
    /// Start, as in a query spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Value>,
    /// End, as in a query spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Value>,
    /// Query-scoped derived columns, as in a query spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calculated_fields: Vec<CalculatedField>,
}

impl Population {
    /// The population as a query spec (with the given group limit).
    pub fn spec(&self, limit: Option<i64>) -> QuerySpec {
        QuerySpec {
            filters: self.filters.clone(),
            filter_combination: self.filter_combination.clone(),
            time_range: self.time_range,
            start_time: self.start_time.clone(),
            end_time: self.end_time.clone(),
            calculated_fields: self.calculated_fields.clone(),
            limit,
            ..Default::default()
        }
    }
}

/// One calculation: `{"op": "P99", "column": "duration_ms"}`, optionally named and with its
/// own filters (`{"op": "COUNT", "name": "errors", "filters": [{"column": "error", "op": "exists"}]}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Calculation {
    /// The operator (`COUNT`, `SUM`, `P99`, `HEATMAP`, …).
    pub op: String,
    /// The column (absent for `COUNT` and `CONCURRENCY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Its name: the result key, and what formulas, orders and havings call it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Filters only this calculation applies (on top of the query's); it then needs a name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// `AND` (default) or `OR`, for `filters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_combination: Option<String>,
}

/// A formula over the calculations' values: `{"name": "error_rate", "expression": "DIV($errors, $COUNT)"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Formula {
    /// Its name (the result key).
    pub name: String,
    /// A derived-column expression whose `$names` are calculations (their names, or keys
    /// such as `$COUNT` and `$"P99(duration_ms)"`).
    pub expression: String,
}

/// One filter: `{"column": "http.status_code", "op": ">=", "value": 500}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Filter {
    /// The column.
    pub column: String,
    /// The operator (`=`, `!=`, `>`, …, `contains`, `exists`, `in`, …).
    pub op: String,
    /// The value (absent for `exists` / `does-not-exist`; an array for `in` / `not-in`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// One order: by a calculation (`op` + `column`) or by a breakdown (`column` only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Order {
    /// The breakdown column, or the calculation's column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The calculation's operator, when ordering by a calculation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// `ascending` or `descending` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
}

/// One having: `{"calculate_op": "COUNT", "op": ">", "value": 10}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Having {
    /// The calculation's operator.
    pub calculate_op: String,
    /// The calculation's column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Comparison: `=`, `!=`, `>`, `>=`, `<`, `<=`.
    pub op: String,
    /// The number to compare with.
    pub value: Value,
}

/// A calculation operator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CalcOp {
    /// Sum of sample rates.
    Count,
    /// Sum of value × sample rate.
    Sum,
    /// Sample-rate-weighted mean.
    Avg,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Exact number of distinct values (not sample-rate corrected).
    CountDistinct,
    /// Weighted percentile `p` in `[0, 1]`.
    Percentile(f64),
    /// Histogram of the values.
    Heatmap,
    /// Per-second change of the per-bucket AVG.
    RateAvg,
    /// Per-second change of the per-bucket SUM.
    RateSum,
    /// Per-second change of the per-bucket MAX.
    RateMax,
    /// Spans in progress per bucket (from `timestamp` and `duration_ms`).
    Concurrency,
}

const PERCENTILES: &[(&str, f64)] = &[
    ("P001", 0.001),
    ("P01", 0.01),
    ("P05", 0.05),
    ("P10", 0.10),
    ("P20", 0.20),
    ("P25", 0.25),
    ("P50", 0.50),
    ("P75", 0.75),
    ("P80", 0.80),
    ("P90", 0.90),
    ("P95", 0.95),
    ("P99", 0.99),
    ("P999", 0.999),
];

impl CalcOp {
    /// Parses an operator name (case-insensitive).
    pub fn parse(op: &str) -> Option<CalcOp> {
        let up = op.to_ascii_uppercase();
        Some(match up.as_str() {
            "COUNT" => CalcOp::Count,
            "SUM" => CalcOp::Sum,
            "AVG" => CalcOp::Avg,
            "MIN" => CalcOp::Min,
            "MAX" => CalcOp::Max,
            "COUNT_DISTINCT" => CalcOp::CountDistinct,
            "HEATMAP" => CalcOp::Heatmap,
            "RATE_AVG" => CalcOp::RateAvg,
            "RATE_SUM" => CalcOp::RateSum,
            "RATE_MAX" => CalcOp::RateMax,
            "CONCURRENCY" => CalcOp::Concurrency,
            p => {
                return PERCENTILES
                    .iter()
                    .find(|(n, _)| *n == p)
                    .map(|(_, v)| CalcOp::Percentile(*v));
            }
        })
    }

    /// The canonical name.
    pub fn name(self) -> String {
        match self {
            CalcOp::Count => "COUNT".into(),
            CalcOp::Sum => "SUM".into(),
            CalcOp::Avg => "AVG".into(),
            CalcOp::Min => "MIN".into(),
            CalcOp::Max => "MAX".into(),
            CalcOp::CountDistinct => "COUNT_DISTINCT".into(),
            CalcOp::Heatmap => "HEATMAP".into(),
            CalcOp::RateAvg => "RATE_AVG".into(),
            CalcOp::RateSum => "RATE_SUM".into(),
            CalcOp::RateMax => "RATE_MAX".into(),
            CalcOp::Concurrency => "CONCURRENCY".into(),
            CalcOp::Percentile(p) => PERCENTILES
                .iter()
                .find(|(_, v)| *v == p)
                .map_or("P?".into(), |(n, _)| n.to_string()),
        }
    }

    /// Every operator, in the order a menu lists them.
    pub fn all() -> Vec<CalcOp> {
        let mut out = vec![
            CalcOp::Count,
            CalcOp::Sum,
            CalcOp::Avg,
            CalcOp::Min,
            CalcOp::Max,
            CalcOp::CountDistinct,
        ];
        out.extend(PERCENTILES.iter().map(|(_, p)| CalcOp::Percentile(*p)));
        out.extend([
            CalcOp::Heatmap,
            CalcOp::RateAvg,
            CalcOp::RateSum,
            CalcOp::RateMax,
            CalcOp::Concurrency,
        ]);
        out
    }

    /// Whether the operator takes a column (`COUNT` and `CONCURRENCY` do not).
    pub fn needs_column(self) -> bool {
        !matches!(self, CalcOp::Count | CalcOp::Concurrency)
    }

    /// Whether its column must be numeric.
    pub fn needs_numeric(self) -> bool {
        !matches!(self, CalcOp::Count | CalcOp::CountDistinct | CalcOp::Concurrency)
    }

    /// Whether the value is a plain aggregate, computed per group in one pass (and so can be
    /// ordered by and filtered with a having).
    pub fn is_simple(self) -> bool {
        !matches!(
            self,
            CalcOp::Heatmap | CalcOp::RateAvg | CalcOp::RateSum | CalcOp::RateMax | CalcOp::Concurrency
        )
    }
}

/// A validated calculation.
#[derive(Debug, Clone, PartialEq)]
pub struct Calc {
    /// The operator.
    pub op: CalcOp,
    /// The column and its type.
    pub column: Option<(String, ColumnType)>,
    /// The result key: `COUNT`, `P99(duration_ms)`, or its name.
    pub key: String,
    /// Its own filters (empty: every event of the query).
    pub filters: Vec<PlanFilter>,
    /// True when its filters combine by OR.
    pub any: bool,
}

impl Calc {
    /// The type of its value per group (what a formula sees).
    pub fn value_type(&self) -> ColumnType {
        let col = self.column.as_ref().map(|(_, t)| *t);
        match self.op {
            CalcOp::Count | CalcOp::CountDistinct | CalcOp::Concurrency => ColumnType::Int,
            CalcOp::Sum if col == Some(ColumnType::Int) => ColumnType::Int,
            CalcOp::Min | CalcOp::Max => col.unwrap_or(ColumnType::Float),
            _ => ColumnType::Float,
        }
    }
}

/// A validated formula.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanFormula {
    /// Its name (result key).
    pub name: String,
    /// The checked expression; its columns are calculation keys.
    pub expr: Typed,
}

/// A filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `starts-with`
    StartsWith,
    /// `does-not-start-with`
    NotStartsWith,
    /// `ends-with`
    EndsWith,
    /// `does-not-end-with`
    NotEndsWith,
    /// `contains`
    Contains,
    /// `does-not-contain`
    NotContains,
    /// `exists`
    Exists,
    /// `does-not-exist`
    NotExists,
    /// `in`
    In,
    /// `not-in`
    NotIn,
}

impl FilterOp {
    /// Every operator, in the order a menu lists them.
    pub const ALL: [FilterOp; 16] = [
        FilterOp::Eq,
        FilterOp::Ne,
        FilterOp::Gt,
        FilterOp::Ge,
        FilterOp::Lt,
        FilterOp::Le,
        FilterOp::StartsWith,
        FilterOp::NotStartsWith,
        FilterOp::EndsWith,
        FilterOp::NotEndsWith,
        FilterOp::Contains,
        FilterOp::NotContains,
        FilterOp::Exists,
        FilterOp::NotExists,
        FilterOp::In,
        FilterOp::NotIn,
    ];

    /// The operator as the query spec writes it.
    pub fn name(self) -> &'static str {
        match self {
            FilterOp::Eq => "=",
            FilterOp::Ne => "!=",
            FilterOp::Gt => ">",
            FilterOp::Ge => ">=",
            FilterOp::Lt => "<",
            FilterOp::Le => "<=",
            FilterOp::StartsWith => "starts-with",
            FilterOp::NotStartsWith => "does-not-start-with",
            FilterOp::EndsWith => "ends-with",
            FilterOp::NotEndsWith => "does-not-end-with",
            FilterOp::Contains => "contains",
            FilterOp::NotContains => "does-not-contain",
            FilterOp::Exists => "exists",
            FilterOp::NotExists => "does-not-exist",
            FilterOp::In => "in",
            FilterOp::NotIn => "not-in",
        }
    }

    /// Whether the operator compares a value (`=` … `<=`): the ones a having may use.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            FilterOp::Eq | FilterOp::Ne | FilterOp::Gt | FilterOp::Ge | FilterOp::Lt | FilterOp::Le
        )
    }

    /// Whether the operator's value is a list (`in`, `not-in`).
    pub fn takes_list(self) -> bool {
        matches!(self, FilterOp::In | FilterOp::NotIn)
    }

    /// Whether the operator takes a value (`exists` and `does-not-exist` do not); `in` and
    /// `not-in` take a list.
    pub fn takes_value(self) -> bool {
        !matches!(self, FilterOp::Exists | FilterOp::NotExists)
    }

    /// Parses a filter operator.
    pub fn parse(op: &str) -> Option<FilterOp> {
        Some(match op {
            "=" => FilterOp::Eq,
            "!=" => FilterOp::Ne,
            ">" => FilterOp::Gt,
            ">=" => FilterOp::Ge,
            "<" => FilterOp::Lt,
            "<=" => FilterOp::Le,
            "starts-with" => FilterOp::StartsWith,
            "does-not-start-with" => FilterOp::NotStartsWith,
            "ends-with" => FilterOp::EndsWith,
            "does-not-end-with" => FilterOp::NotEndsWith,
            "contains" => FilterOp::Contains,
            "does-not-contain" => FilterOp::NotContains,
            "exists" => FilterOp::Exists,
            "does-not-exist" => FilterOp::NotExists,
            "in" => FilterOp::In,
            "not-in" => FilterOp::NotIn,
            _ => return None,
        })
    }

    /// Whether the operator compares strings (prefix, suffix, substring).
    pub fn is_string_op(self) -> bool {
        matches!(
            self,
            FilterOp::StartsWith
                | FilterOp::NotStartsWith
                | FilterOp::EndsWith
                | FilterOp::NotEndsWith
                | FilterOp::Contains
                | FilterOp::NotContains
        )
    }

    /// Negative operators also match events that lack the field: "not 500" includes events
    /// with no status at all, which is what someone excluding a value means.
    pub fn matches_absent(self) -> bool {
        matches!(
            self,
            FilterOp::Ne
                | FilterOp::NotStartsWith
                | FilterOp::NotEndsWith
                | FilterOp::NotContains
                | FilterOp::NotExists
                | FilterOp::NotIn
        )
    }
}

/// A typed literal for a filter, coerced to the column's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
}

/// A validated filter.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanFilter {
    /// Column name.
    pub column: String,
    /// Column type.
    pub ty: ColumnType,
    /// Operator.
    pub op: FilterOp,
    /// Operands (empty for exists ops, one for comparisons, many for `in`).
    pub values: Vec<Literal>,
}

/// Which span of the target span's trace a relational field (`root.name`) is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Relation {
    /// `root.`: the trace's root span (no parent id).
    Root,
    /// `parent.`: the span's direct parent.
    Parent,
    /// `child.`: a direct child of the span.
    Child,
    /// `any.`, `any2.`, `any3.`: some span of the same trace (1, 2, 3: independent matches).
    Any(u8),
    /// `none.`: no span of the trace matches (filters only).
    None,
}

impl Relation {
    /// Every relation, in the order the README lists them.
    pub const ALL: [Relation; 7] = [
        Relation::Root,
        Relation::Parent,
        Relation::Child,
        Relation::Any(1),
        Relation::Any(2),
        Relation::Any(3),
        Relation::None,
    ];

    /// Its prefix without the dot: `root`, `any2`.
    pub fn prefix(self) -> &'static str {
        match self {
            Relation::Root => "root",
            Relation::Parent => "parent",
            Relation::Child => "child",
            Relation::Any(1) => "any",
            Relation::Any(2) => "any2",
            Relation::Any(_) => "any3",
            Relation::None => "none",
        }
    }

    /// `root.name` → `(Root, "name")`; `None` for a name without a relational prefix.
    pub fn split(name: &str) -> Option<(Relation, &str)> {
        let (prefix, rest) = name.split_once('.')?;
        let r = Relation::ALL.into_iter().find(|r| r.prefix() == prefix)?;
        (!rest.is_empty()).then_some((r, rest))
    }
}

/// The fields a query reads from one relation: its filters (all on the same related span) and
/// its breakdown columns, both by the related span's own column names.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationUse {
    /// Which span.
    pub relation: Relation,
    /// Filters the related span must pass, all of them.
    pub filters: Vec<PlanFilter>,
    /// Columns of the related span grouped by (answered as `prefix.column`).
    pub breakdowns: Vec<String>,
    /// The calculation whose own filters these are (only its events are narrowed), or `None`
    /// for the query's filters and breakdowns.
    pub calc: Option<usize>,
}

/// Sort direction and key.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderKey {
    /// By the calculation at this index.
    Calc(usize),
    /// By the breakdown at this index.
    Breakdown(usize),
    /// By the formula at this index.
    Formula(usize),
}

/// A comparison of a having.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanHaving {
    /// The value compared: a calculation's or a formula's.
    pub on: OrderKey,
    /// `=`, `!=`, `>`, `>=`, `<`, `<=` as a filter op.
    pub op: FilterOp,
    /// The number.
    pub value: f64,
}

/// A validated, executable query.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Calculations, in request order.
    pub calcs: Vec<Calc>,
    /// Filters.
    pub filters: Vec<PlanFilter>,
    /// True for OR, false for AND.
    pub any: bool,
    /// Breakdown columns with types.
    pub breakdowns: Vec<(String, ColumnType)>,
    /// Orders (key, descending).
    pub orders: Vec<(OrderKey, bool)>,
    /// Havings.
    pub havings: Vec<PlanHaving>,
    /// Group limit.
    pub limit: usize,
    /// Start (µs, inclusive).
    pub start_us: i64,
    /// End (µs, exclusive).
    pub end_us: i64,
    /// Seconds per bucket.
    pub granularity_s: i64,
    /// The derived columns the query uses (by name, references to others inlined), which the
    /// engine adds to the dataset's columns before anything else.
    pub derived: Vec<(String, Typed)>,
    /// Also answer over the range this many seconds earlier.
    pub compare_offset_s: Option<i64>,
    /// Relational fields, per relation used (filters on them are not in `filters`).
    pub relations: Vec<RelationUse>,
    /// Formulas over the calculations.
    pub formulas: Vec<PlanFormula>,
    /// The columns relational fields join on (the dataset's definition, or the defaults).
    pub trace: TraceColumns,
    /// Events unweighted by their sample rate.
    pub usage_mode: bool,
    /// Whether the time series is wanted (false: results only).
    pub series: bool,
    /// Whether percentiles are answered from mergeable sketches (within
    /// `sonde_query::sketch::ALPHA` of the exact value) rather than exactly: set by the engine
    /// when the range holds more events than it answers exactly in time.
    pub sketched: bool,
    /// Whether COUNT_DISTINCT is answered from mergeable sets of distinct values (exact, and
    /// rolling up from per-segment partials like sums; `sonde_query::distinct`) rather than
    /// counted at once: set by the engine where precomputed partials answer the plan and the
    /// columns counted are not ids.
    pub distinct_sets: bool,
}

impl Plan {
    /// Number of time buckets.
    pub fn buckets(&self) -> i64 {
        let g = self.granularity_s * 1_000_000;
        (self.end_us - self.start_us + g - 1) / g
    }
}

/// A validation error: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The offending field, e.g. `filters[2].column`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// For a mistake in an expression: its character offset there.
    pub position: Option<usize>,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
        position: None,
    }
}

impl SpecError {
    /// A mistake in the expression at `field`.
    pub fn in_expression(field: impl Into<String>, e: ExprError) -> SpecError {
        SpecError {
            field: field.into(),
            message: e.message,
            position: Some(e.position),
        }
    }
}

/// The names a spec may use: the dataset's columns, its stored derived columns and the
/// spec's own calculated fields. Derived columns are checked when first named (so one with a
/// mistake only fails the queries that use it), each once, and may name each other (cycles
/// are refused).
struct Names<'a> {
    columns: &'a BTreeMap<String, ColumnType>,
    /// Derived columns by name: their expression, and the field a mistake in it is reported at.
    defs: BTreeMap<String, (String, Option<String>)>,
    checked: RefCell<BTreeMap<String, Result<Typed, ExprError>>>,
    visiting: RefCell<Vec<String>>,
    /// The derived columns the spec uses, in the order first named.
    used: RefCell<Vec<(String, Typed)>>,
}

impl<'a> Names<'a> {
    fn new(
        columns: &'a BTreeMap<String, ColumnType>,
        stored: &[DerivedColumn],
        scoped: &[CalculatedField],
    ) -> Result<Names<'a>, SpecError> {
        if scoped.len() > derived::MAX_CALCULATED_FIELDS {
            return Err(err(
                "calculated_fields",
                format!(
                    "at most {} are allowed, got {}",
                    derived::MAX_CALCULATED_FIELDS,
                    scoped.len()
                ),
            ));
        }
        // A stored derived column wins over a column of the same name (it was defined on
        // purpose; the column may have appeared since).
        let mut defs: BTreeMap<String, (String, Option<String>)> = stored
            .iter()
            .map(|d| (d.alias.clone(), (d.expression.clone(), None)))
            .collect();
        for (i, f) in scoped.iter().enumerate() {
            let field = format!("calculated_fields[{i}].name");
            if f.name.is_empty() || f.name.chars().count() > 255 {
                return Err(err(field, "must be 1 to 255 characters"));
            }
            if columns.contains_key(&f.name) || crate::is_reserved_name(&f.name) {
                return Err(err(field, format!("{:?} is already a column of the dataset", f.name)));
            }
            if scoped[..i].iter().any(|g| g.name == f.name) {
                return Err(err(field, format!("{:?} is defined twice", f.name)));
            }
            defs.insert(
                f.name.clone(),
                (f.expression.clone(), Some(format!("calculated_fields[{i}].expression"))),
            );
        }
        let names = Names {
            columns,
            defs,
            checked: RefCell::new(BTreeMap::new()),
            visiting: RefCell::new(Vec::new()),
            used: RefCell::new(Vec::new()),
        };
        // The spec's own fields are checked whether used or not: a mistake is reported now.
        for (i, f) in scoped.iter().enumerate() {
            if let Some(Err(e)) = names.derived(&f.name) {
                return Err(SpecError::in_expression(
                    format!("calculated_fields[{i}].expression"),
                    e,
                ));
            }
        }
        Ok(names)
    }

    /// A derived column's checked tree (`None` if `name` is not one).
    fn derived(&self, name: &str) -> Option<Result<Typed, ExprError>> {
        let (text, _) = self.defs.get(name)?;
        if let Some(r) = self.checked.borrow().get(name) {
            return Some(r.clone());
        }
        if self.visiting.borrow().iter().any(|n| n == name) {
            let mut path = self.visiting.borrow().clone();
            path.push(name.to_string());
            return Some(Err(ExprError {
                message: format!("derived columns name each other in a cycle: {}", path.join(" → ")),
                position: 0,
            }));
        }
        self.visiting.borrow_mut().push(name.to_string());
        let r = derived::parse(text).and_then(|ast| derived::check(&ast, self));
        self.visiting.borrow_mut().pop();
        self.checked.borrow_mut().insert(name.to_string(), r.clone());
        Some(r)
    }

    /// Every derived column in scope, checked; those with a mistake are left out.
    fn all(&self) -> Vec<(String, Typed)> {
        let names: Vec<String> = self.defs.keys().cloned().collect();
        names
            .into_iter()
            .filter_map(|n| match self.derived(&n) {
                Some(Ok(t)) => Some((n, t)),
                _ => None,
            })
            .collect()
    }

    /// The type of the column (stored or derived) named at `field`.
    fn column_type(&self, name: &str, field: &str) -> Result<ColumnType, SpecError> {
        match self.derived(name) {
            Some(Ok(t)) => {
                let ty = t.ty.unwrap_or(ColumnType::String);
                let mut used = self.used.borrow_mut();
                if !used.iter().any(|(n, _)| n == name) {
                    used.push((name.to_string(), t));
                }
                Ok(ty)
            }
            Some(Err(e)) => Err(match &self.defs[name].1 {
                Some(at) => SpecError::in_expression(at.clone(), e),
                None => err(
                    field,
                    format!(
                        "derived column {name:?} is invalid: {} (at character {} of its expression)",
                        e.message, e.position
                    ),
                ),
            }),
            None => self
                .columns
                .get(name)
                .copied()
                .ok_or_else(|| err(field, format!("unknown column {name:?}"))),
        }
    }
}

/// Checks the stored derived column `alias` (one of `stored`) against a dataset's columns and
/// the other derived columns it names: its type, or the mistake and where it is.
pub fn check_derived(
    columns: &BTreeMap<String, ColumnType>,
    stored: &[DerivedColumn],
    alias: &str,
) -> Result<Typed, ExprError> {
    let names = Names::new(columns, stored, &[]).map_err(|e| ExprError {
        message: e.message,
        position: 0,
    })?;
    names.derived(alias).unwrap_or_else(|| {
        Err(ExprError {
            message: format!("no derived column {alias:?}"),
            position: 0,
        })
    })
}

/// Every derived column a view that shows all columns (raw events, BubbleUp) adds to the
/// dataset's: the stored ones that check against its columns (one with a mistake is left
/// out rather than failing the view), and the request's own `calculated_fields` (a mistake
/// in one is an error).
pub fn derived_columns(
    columns: &BTreeMap<String, ColumnType>,
    stored: &[DerivedColumn],
    scoped: &[CalculatedField],
) -> Result<Vec<(String, Typed)>, SpecError> {
    Ok(Names::new(columns, stored, scoped)?.all())
}

impl Resolve for Names<'_> {
    fn resolve(&self, name: &str) -> Result<Option<Resolved>, String> {
        match self.derived(name) {
            Some(Ok(t)) => Ok(Some(Resolved::Derived(t))),
            Some(Err(e)) => Err(format!(
                "derived column {name:?} is invalid: {} (at character {} of its expression)",
                e.message, e.position
            )),
            None => Ok(self.columns.get(name).map(|t| Resolved::Column(*t))),
        }
    }
}

/// Picks a bucket width giving 100–300 buckets where the span allows: the smallest "nice"
/// width with at most 300 buckets.
pub fn auto_granularity(span_us: i64) -> i64 {
    const NICE: &[i64] = &[
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800,
    ];
    let span_s = (span_us as f64 / 1e6).max(1.0);
    for &g in NICE {
        if span_s / g as f64 <= 300.0 {
            return g;
        }
    }
    (span_s / 300.0).ceil() as i64
}

/// Whether the spec's range ends now (neither a start nor an end time given).
pub fn relative_to_now(spec: &QuerySpec) -> bool {
    let given = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
    !given(&spec.start_time) && !given(&spec.end_time)
}

/// Resolves the time range: `(start_us, end_us)`.
pub fn resolve_time(spec: &QuerySpec, now_us: i64) -> Result<(i64, i64), SpecError> {
    let parse = |v: &Value, field: &str| -> Result<i64, SpecError> {
        crate::time::parse_time_value(v).map_err(|e| err(field, e.to_string()))
    };
    let start = spec
        .start_time
        .as_ref()
        .filter(|v| !v.is_null())
        .map(|v| parse(v, "start_time"))
        .transpose()?;
    let end = spec
        .end_time
        .as_ref()
        .filter(|v| !v.is_null())
        .map(|v| parse(v, "end_time"))
        .transpose()?;
    if let Some(r) = spec.time_range
        && r <= 0
    {
        return Err(err(
            "time_range",
            format!("must be a positive number of seconds, got {r}"),
        ));
    }
    let range_us = spec.time_range.map(|r| r.saturating_mul(1_000_000));
    let (s, e) = match (start, end, range_us) {
        (Some(s), Some(e), _) => (s, e),
        (Some(s), None, Some(r)) => (s, s.saturating_add(r)),
        (Some(s), None, None) => (s, now_us),
        (None, Some(e), r) => (e - r.unwrap_or(DEFAULT_TIME_RANGE_S * 1_000_000), e),
        (None, None, r) => (now_us - r.unwrap_or(DEFAULT_TIME_RANGE_S * 1_000_000), now_us),
    };
    if s >= e {
        return Err(err("start_time", "must be before end_time"));
    }
    Ok((s, e))
}

fn literal(v: &Value, ty: ColumnType, field: &str) -> Result<Literal, SpecError> {
    let bad = || err(field, format!("value {v} does not fit a {ty} column"));
    Ok(match ty {
        ColumnType::String => Literal::Str(match v {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => v.to_string(),
            _ => return Err(bad()),
        }),
        ColumnType::Bool => match v {
            Value::Bool(b) => Literal::Bool(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Literal::Bool(false),
            _ => return Err(bad()),
        },
        ColumnType::Int | ColumnType::Float => {
            let n = match v {
                Value::Number(n) => n.clone(),
                Value::String(s) => s.trim().parse::<serde_json::Number>().map_err(|_| bad())?,
                _ => return Err(bad()),
            };
            match (ty, n.as_i64()) {
                (ColumnType::Int, Some(i)) => Literal::Int(i),
                _ => Literal::Float(n.as_f64().ok_or_else(bad)?),
            }
        }
    })
}

/// `AND` (false, the default) or `OR` (true).
fn combination(c: &Option<String>, field: &str) -> Result<bool, SpecError> {
    match c.as_deref().map(|s| s.to_ascii_uppercase()) {
        None => Ok(false),
        Some(s) if s == "AND" => Ok(false),
        Some(s) if s == "OR" => Ok(true),
        Some(s) => Err(err(field, format!("must be AND or OR, got {s:?}"))),
    }
}

/// One filter validated: its relation, if it names a relational field (`root.name`: unless
/// the dataset has a column of that very name), and the filter on the column it reads.
fn plan_filter(f: &Filter, field: &str, names: &Names<'_>) -> Result<(Option<Relation>, PlanFilter), SpecError> {
    let op =
        FilterOp::parse(&f.op).ok_or_else(|| err(format!("{field}.op"), format!("unknown filter op {:?}", f.op)))?;
    let (relation, column, ty) = match names.column_type(&f.column, &format!("{field}.column")) {
        Ok(ty) => (None, f.column.clone(), ty),
        Err(e) => match Relation::split(&f.column) {
            Some((r, base)) => match names.column_type(base, "") {
                Ok(ty) => (Some(r), base.to_string(), ty),
                Err(_) => return Err(e),
            },
            None => return Err(e),
        },
    };
    if op.is_string_op() && ty != ColumnType::String {
        return Err(err(
            format!("{field}.op"),
            format!("{} needs a string column; {:?} is {ty}", f.op, f.column),
        ));
    }
    let values = match op {
        FilterOp::Exists | FilterOp::NotExists => vec![],
        FilterOp::In | FilterOp::NotIn => match &f.value {
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|v| literal(v, ty, &format!("{field}.value")))
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(err(
                    format!("{field}.value"),
                    format!("{} needs a non-empty array", f.op),
                ));
            }
        },
        _ => match &f.value {
            Some(v) if !v.is_null() => vec![literal(v, ty, &format!("{field}.value"))?],
            _ => return Err(err(format!("{field}.value"), format!("{} needs a value", f.op))),
        },
    };
    Ok((relation, PlanFilter { column, ty, op, values }))
}

/// The use of relation `r`, added when first needed.
fn relation_use(uses: &mut Vec<RelationUse>, r: Relation, calc: Option<usize>) -> &mut RelationUse {
    let i = match uses.iter().position(|u| u.relation == r && u.calc == calc) {
        Some(i) => i,
        None => {
            uses.push(RelationUse {
                relation: r,
                filters: Vec::new(),
                breakdowns: Vec::new(),
                calc,
            });
            uses.len() - 1
        }
    };
    &mut uses[i]
}

/// Validates a spec against a dataset's columns (`timestamp` and `samplerate` included).
pub fn plan(spec: &QuerySpec, columns: &BTreeMap<String, ColumnType>, now_us: i64) -> Result<Plan, SpecError> {
    plan_with(spec, columns, &DatasetDefs::default(), now_us)
}

/// Validates a spec against a dataset's columns and what its users defined: stored derived
/// columns, and the trace columns relational fields join on.
pub fn plan_with(
    spec: &QuerySpec,
    columns: &BTreeMap<String, ColumnType>,
    defs: &DatasetDefs,
    now_us: i64,
) -> Result<Plan, SpecError> {
    let stored = &defs.derived;
    // Each clause becomes a node of one expression tree; tens of thousands of them (a 2 MB body
    // holds 60,000 filters) would recurse deeper than a thread's stack can go.
    for (field, n) in [
        ("calculations", spec.calculations.len()),
        ("filters", spec.filters.len()),
        ("breakdowns", spec.breakdowns.len()),
        ("orders", spec.orders.len()),
        ("havings", spec.havings.len()),
    ] {
        if n > MAX_CLAUSES {
            return Err(err(field, format!("at most {MAX_CLAUSES} are allowed, got {n}")));
        }
    }
    let names = Names::new(columns, stored, &spec.calculated_fields)?;
    let col_type = |name: &str, field: &str| names.column_type(name, field);

    let mut calcs = Vec::new();
    let mut relations: Vec<RelationUse> = Vec::new();
    let specs: Vec<Calculation> = if spec.calculations.is_empty() {
        vec![Calculation {
            op: "COUNT".into(),
            ..Default::default()
        }]
    } else {
        spec.calculations.clone()
    };
    for (i, c) in specs.iter().enumerate() {
        let field = format!("calculations[{i}]");
        let op = CalcOp::parse(&c.op)
            .ok_or_else(|| err(format!("{field}.op"), format!("unknown calculation {:?}", c.op)))?;
        let column = match (&c.column, op.needs_column()) {
            (Some(name), true) => {
                let ty = col_type(name, &format!("{field}.column"))?;
                if op.needs_numeric() && !matches!(ty, ColumnType::Int | ColumnType::Float) {
                    return Err(err(
                        format!("{field}.column"),
                        format!("{} needs a numeric column; {name:?} is {ty}", op.name()),
                    ));
                }
                Some((name.clone(), ty))
            }
            (None, true) => return Err(err(format!("{field}.column"), format!("{} needs a column", op.name()))),
            (_, false) => None,
        };
        if op == CalcOp::Concurrency {
            let ty = col_type("duration_ms", &format!("{field}.op"))
                .map_err(|_| err(format!("{field}.op"), "CONCURRENCY needs a duration_ms column"))?;
            if !matches!(ty, ColumnType::Int | ColumnType::Float) {
                return Err(err(
                    format!("{field}.op"),
                    "CONCURRENCY needs a numeric duration_ms column",
                ));
            }
        }
        let mut calc_filters = Vec::new();
        for (j, f) in c.filters.iter().enumerate() {
            let at = format!("{field}.filters[{j}]");
            match plan_filter(f, &at, &names)? {
                (None, pf) => calc_filters.push(pf),
                // A relational filter of this calculation alone: its events are those whose
                // related span passes it (the query's other events still count elsewhere).
                (Some(r), pf) => relation_use(&mut relations, r, Some(calcs.len())).filters.push(pf),
            }
        }
        let any = combination(&c.filter_combination, &format!("{field}.filter_combination"))?;
        let name = c.name.as_ref().filter(|n| !n.is_empty());
        if !c.filters.is_empty() {
            if name.is_none() {
                return Err(err(
                    format!("{field}.name"),
                    "a calculation with its own filters needs a name",
                ));
            }
            if matches!(op, CalcOp::Heatmap | CalcOp::Concurrency) {
                return Err(err(
                    format!("{field}.filters"),
                    format!("{} cannot have its own filters", op.name()),
                ));
            }
        }
        let key = match (name, &column) {
            (Some(n), _) => n.clone(),
            (None, Some((col, _))) => format!("{}({col})", op.name()),
            (None, None) => op.name(),
        };
        if calcs.iter().any(|c: &Calc| c.key == key) {
            if name.is_some() {
                return Err(err(format!("{field}.name"), format!("{key:?} names two calculations")));
            }
            continue; // the same calculation twice answers once
        }
        calcs.push(Calc {
            op,
            column,
            key,
            filters: calc_filters,
            any,
        });
    }

    let mut filters = Vec::new();
    for (i, f) in spec.filters.iter().enumerate() {
        let (relation, pf) = plan_filter(f, &format!("filters[{i}]"), &names)?;
        match relation {
            Some(r) => relation_use(&mut relations, r, None).filters.push(pf),
            None => filters.push(pf),
        }
    }
    let any = combination(&spec.filter_combination, "filter_combination")?;

    let mut breakdowns = Vec::new();
    for (i, b) in spec.breakdowns.iter().enumerate() {
        let field = format!("breakdowns[{i}]");
        let ty = match col_type(b, &field) {
            Ok(ty) => ty,
            Err(e) => match Relation::split(b) {
                Some((Relation::None, _)) => {
                    return Err(err(
                        field,
                        "none. fields cannot be grouped by: they name spans that do not exist",
                    ));
                }
                Some((r, base)) => {
                    let ty = col_type(base, &field).map_err(|_| e)?;
                    let u = relation_use(&mut relations, r, None);
                    if !u.breakdowns.iter().any(|x| x == base) {
                        u.breakdowns.push(base.to_string());
                    }
                    ty
                }
                None => return Err(e),
            },
        };
        if !breakdowns.iter().any(|(n, _): &(String, ColumnType)| n == b) {
            breakdowns.push((b.clone(), ty));
        }
    }

    let mut formulas: Vec<PlanFormula> = Vec::new();
    if spec.formulas.len() > MAX_CLAUSES {
        return Err(err(
            "formulas",
            format!("at most {MAX_CLAUSES} are allowed, got {}", spec.formulas.len()),
        ));
    }
    // A formula's `$names` are the calculations with one value per group.
    let values: BTreeMap<String, ColumnType> = calcs
        .iter()
        .filter(|c| c.op.is_simple())
        .map(|c| (c.key.clone(), c.value_type()))
        .collect();
    for (i, f) in spec.formulas.iter().enumerate() {
        if f.name.is_empty() || values.contains_key(&f.name) || formulas.iter().any(|g| g.name == f.name) {
            return Err(err(
                format!("formulas[{i}].name"),
                format!(
                    "{:?} must be a name of its own (not empty, not a calculation's, not another formula's)",
                    f.name
                ),
            ));
        }
        let expr = derived::parse(&f.expression)
            .and_then(|a| derived::check(&a, &values))
            .map_err(|e| SpecError::in_expression(format!("formulas[{i}].expression"), e))?;
        formulas.push(PlanFormula {
            name: f.name.clone(),
            expr,
        });
    }

    let find_calc = |op: &str, column: &Option<String>, field: &str| -> Result<usize, SpecError> {
        let parsed = CalcOp::parse(op).ok_or_else(|| err(field, format!("unknown calculation {op:?}")))?;
        let key = match column {
            Some(c) if parsed.needs_column() => format!("{}({c})", parsed.name()),
            _ => parsed.name(),
        };
        let i = calcs
            .iter()
            .position(|c| c.key == key)
            .ok_or_else(|| err(field, format!("{key} is not one of the calculations")))?;
        if !calcs[i].op.is_simple() {
            return Err(err(field, format!("cannot order or filter by {key}")));
        }
        Ok(i)
    };

    // A calculation by its operator and column, or by its name; or a formula by its name.
    let find_value = |op: Option<&str>, column: &Option<String>, field: &str| -> Result<OrderKey, SpecError> {
        if let Some(c) = column {
            if let Some(i) = formulas.iter().position(|f| &f.name == c) {
                return Ok(OrderKey::Formula(i));
            }
            if let Some(i) = calcs.iter().position(|k| &k.key == c && c.chars().all(|ch| ch != '(')) {
                if !calcs[i].op.is_simple() {
                    return Err(err(field, format!("cannot order or filter by {c}")));
                }
                return Ok(OrderKey::Calc(i));
            }
        }
        let op = op.ok_or_else(|| err(field, "needs an op (or a calculation's or formula's name as column)"))?;
        find_calc(op, column, field).map(OrderKey::Calc)
    };

    let mut orders = Vec::new();
    for (i, o) in spec.orders.iter().enumerate() {
        let field = format!("orders[{i}]");
        let desc = match o.order.as_deref() {
            None | Some("descending") | Some("desc") => true,
            Some("ascending") | Some("asc") => false,
            Some(other) => {
                return Err(err(
                    format!("{field}.order"),
                    format!("must be ascending or descending, got {other:?}"),
                ));
            }
        };
        let names_value = o.column.as_ref().is_some_and(|c| {
            !breakdowns.iter().any(|(b, _)| b == c)
                && (formulas.iter().any(|f| &f.name == c) || calcs.iter().any(|k| &k.key == c))
        });
        let key = match (&o.op, &o.column) {
            (Some(op), column) => find_value(Some(op), column, &field)?,
            (None, column @ Some(_)) if names_value => find_value(None, column, &field)?,
            (None, Some(column)) => {
                OrderKey::Breakdown(breakdowns.iter().position(|(n, _)| n == column).ok_or_else(|| {
                    err(
                        format!("{field}.column"),
                        format!("{column:?} is not one of the breakdowns"),
                    )
                })?)
            }
            (None, None) => return Err(err(&field, "needs an op or a column")),
        };
        // Order by a breakdown defaults to ascending, as in Honeycomb's UI.
        let desc = if o.order.is_none() && matches!(key, OrderKey::Breakdown(_)) {
            false
        } else {
            desc
        };
        orders.push((key, desc));
    }
    if orders.is_empty()
        && let Some(i) = calcs.iter().position(|c| c.op.is_simple())
    {
        orders.push((OrderKey::Calc(i), true));
    }

    let mut havings = Vec::new();
    for (i, h) in spec.havings.iter().enumerate() {
        let field = format!("havings[{i}]");
        let on = find_value(Some(&h.calculate_op), &h.column, &field)?;
        let op = match FilterOp::parse(&h.op) {
            Some(op) if op.is_comparison() => op,
            _ => {
                return Err(err(
                    format!("{field}.op"),
                    format!("must be one of = != > >= < <=, got {:?}", h.op),
                ));
            }
        };
        let value = h
            .value
            .as_f64()
            .ok_or_else(|| err(format!("{field}.value"), "must be a number"))?;
        havings.push(PlanHaving { on, op, value });
    }

    let limit = match spec.limit {
        None => DEFAULT_LIMIT,
        Some(l) if l >= 1 && l as usize <= MAX_LIMIT => l as usize,
        Some(l) => return Err(err("limit", format!("must be between 1 and {MAX_LIMIT}, got {l}"))),
    };

    let (mut start_us, end_us) = resolve_time(spec, now_us)?;
    let span = end_us - start_us;
    let granularity_s = match spec.granularity {
        None | Some(0) => auto_granularity(span),
        Some(g) if g < 0 => return Err(err("granularity", format!("must be positive, got {g}"))),
        Some(g) => {
            let buckets = (span + g * 1_000_000 - 1) / (g * 1_000_000);
            if buckets > MAX_BUCKETS {
                return Err(err(
                    "granularity",
                    format!("{g}s gives {buckets} buckets over this time range; at most {MAX_BUCKETS} are allowed"),
                ));
            }
            g
        }
    };
    // A range ending now starts on a bucket boundary (a multiple of the granularity since the
    // epoch), as Grafana and Honeycomb draw them: the buckets fall at round times, and two
    // refreshes of one view cut the same buckets, so precomputed per-segment partials keep
    // answering it. The range grows by less than one bucket at its start, so only where that is
    // under 1% of it (100 buckets or more: every automatic granularity past 100 s) and stays
    // within the bucket limit; a coarse explicit granularity keeps the exact range.
    let g_us = granularity_s * 1_000_000;
    if relative_to_now(spec) && span / g_us >= 100 && span / g_us < MAX_BUCKETS {
        start_us = start_us.div_euclid(g_us) * g_us;
    }

    if !relations.is_empty() {
        let t = &defs.trace;
        let needs: Vec<&str> = if relations
            .iter()
            .any(|r| matches!(r.relation, Relation::Parent | Relation::Child))
        {
            vec![&t.trace_id, &t.span_id, &t.parent_id]
        } else if relations.iter().any(|r| r.relation == Relation::Root) {
            vec![&t.trace_id, &t.parent_id]
        } else {
            vec![&t.trace_id]
        };
        for c in needs {
            if names.column_type(c, "").is_err() {
                return Err(err(
                    "filters",
                    format!(
                        "relational fields need the dataset's {c:?} column, which it does not have \
                         (set the trace columns with PATCH /1/dataset_definitions/{{dataset}})"
                    ),
                ));
            }
        }
    }

    let compare_offset_s = match spec.compare_time_offset_seconds {
        None | Some(0) => None,
        Some(o) if o.saturating_mul(1_000_000) < span => {
            return Err(err(
                "compare_time_offset_seconds",
                format!("must be at least the time range ({}s), got {o}", span / 1_000_000),
            ));
        }
        Some(o) => Some(o),
    };

    Ok(Plan {
        calcs,
        filters,
        any,
        breakdowns,
        orders,
        havings,
        limit,
        start_us,
        end_us,
        granularity_s,
        derived: names.used.into_inner(),
        compare_offset_s,
        usage_mode: spec.usage_mode.unwrap_or(false),
        series: !spec.disable_series.unwrap_or(false),
        relations,
        formulas,
        trace: defs.trace.clone(),
        sketched: false,
        distinct_sets: false,
    })
}

/// The operators a client may use, with what each needs: what `GET /api/meta` answers, so the
/// UI lists exactly what the server takes.
#[derive(Debug, Clone, Serialize)]
pub struct Operators {
    /// Calculation operators.
    pub calculations: Vec<CalcOpInfo>,
    /// Filter operators.
    pub filters: Vec<FilterOpInfo>,
    /// Most clauses of each kind a spec may have.
    pub max_clauses: usize,
    /// The functions of derived-column expressions (for the editor's autocomplete).
    pub functions: &'static [derived::FuncInfo],
}

/// One calculation operator.
#[derive(Debug, Clone, Serialize)]
pub struct CalcOpInfo {
    /// Its name (`P99`).
    pub op: String,
    /// Whether it takes a column.
    pub needs_column: bool,
    /// Whether that column must be numeric.
    pub numeric: bool,
    /// Whether it is one value per group (can be ordered by, filtered with a having, drawn as
    /// a line); `HEATMAP`, the `RATE_*` and `CONCURRENCY` are not.
    pub per_group: bool,
    /// Whether groups' values add up to the total (`COUNT`, `SUM`), so "the other groups" is
    /// the total minus the groups shown.
    pub additive: bool,
}

/// One filter operator.
#[derive(Debug, Clone, Serialize)]
pub struct FilterOpInfo {
    /// Its spelling (`does-not-contain`).
    pub op: &'static str,
    /// Whether it takes a value (a list for `in` / `not-in`).
    pub takes_value: bool,
    /// Whether it compares strings only.
    pub string_only: bool,
    /// Whether its value is a list.
    pub takes_list: bool,
    /// Whether a having may use it.
    pub having: bool,
}

/// The operator catalogue (see [`Operators`]).
pub fn operators() -> Operators {
    Operators {
        calculations: CalcOp::all()
            .into_iter()
            .map(|op| CalcOpInfo {
                op: op.name(),
                needs_column: op.needs_column(),
                numeric: op.needs_numeric(),
                per_group: op.is_simple(),
                additive: matches!(op, CalcOp::Count | CalcOp::Sum),
            })
            .collect(),
        filters: FilterOp::ALL
            .iter()
            .map(|&op| FilterOpInfo {
                op: op.name(),
                takes_value: op.takes_value(),
                string_only: op.is_string_op(),
                takes_list: op.takes_list(),
                having: op.is_comparison(),
            })
            .collect(),
        max_clauses: MAX_CLAUSES,
        functions: derived::FUNCTIONS,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_operator_catalogue_parses_back() {
        let ops = super::operators();
        assert_eq!(ops.calculations.len(), 24);
        for c in &ops.calculations {
            assert_eq!(super::CalcOp::parse(&c.op).map(|o| o.name()), Some(c.op.clone()));
        }
        for f in &ops.filters {
            assert_eq!(super::FilterOp::parse(f.op).map(|o| o.name()), Some(f.op));
        }
    }

    use super::*;
    use serde_json::json;

    fn cols() -> BTreeMap<String, ColumnType> {
        [
            ("duration_ms", ColumnType::Float),
            ("service", ColumnType::String),
            ("status", ColumnType::Int),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect()
    }

    fn spec(v: Value) -> QuerySpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn validation_names_the_field() {
        let now = 1_700_000_000_000_000;
        let e = plan(
            &spec(json!({"filters":[{"column":"nope","op":"=","value":1}]})),
            &cols(),
            now,
        )
        .unwrap_err();
        assert_eq!(e.field, "filters[0].column");
        let e = plan(
            &spec(json!({"calculations":[{"op":"P99","column":"service"}]})),
            &cols(),
            now,
        )
        .unwrap_err();
        assert!(e.to_string().contains("numeric"), "{e}");
        let e = plan(&spec(json!({"limit": 20000})), &cols(), now).unwrap_err();
        assert_eq!(e.field, "limit");
        let e = plan(
            &spec(json!({"filters":[{"column":"status","op":"contains","value":"5"}]})),
            &cols(),
            now,
        )
        .unwrap_err();
        assert!(e.to_string().contains("string column"), "{e}");
        let e = plan(
            &spec(json!({"orders":[{"op":"AVG","column":"duration_ms"}]})),
            &cols(),
            now,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not one of the calculations"), "{e}");
        let e = plan(&spec(json!({"time_range": 86400, "granularity": 1})), &cols(), now).unwrap_err();
        assert_eq!(e.field, "granularity");
    }

    #[test]
    fn a_spec_names_the_columns_of_every_clause() {
        let s = spec(json!({
            "calculations": [{"op": "COUNT", "name": "e", "filters": [{"column": "in_calc_filter", "op": "exists"}]}],
            "calculated_fields": [{"name": "f", "expression": "$in_field"}],
            "breakdowns": ["b"],
        }));
        for c in ["in_calc_filter", "in_field", "b"] {
            assert!(s.names_column(c), "{c}");
        }
        assert!(!s.names_column("other"));
    }

    #[test]
    fn defaults() {
        let now = 1_700_000_000_000_000;
        let p = plan(&spec(json!({})), &cols(), now).unwrap();
        assert_eq!(p.calcs[0].key, "COUNT");
        assert_eq!(p.limit, 100);
        // Ending now, the range starts on a bucket boundary at or before two hours ago.
        assert_eq!(p.granularity_s, 30);
        assert_eq!(p.end_us, now);
        assert_eq!(p.start_us % 30_000_000, 0);
        assert!((0..30_000_000).contains(&(now - 7_200_000_000 - p.start_us)));
        assert!((100..=300).contains(&p.buckets()));
        // A coarse granularity (few buckets) keeps the exact range: aligning would grow it a lot.
        let p = plan(&spec(json!({"time_range": 3600, "granularity": 3600})), &cols(), now).unwrap();
        assert_eq!(p.start_us, now - 3_600_000_000);
        let p = plan(
            &spec(json!({"start_time": 1_700_000_000, "end_time": 1_700_003_600})),
            &cols(),
            now,
        )
        .unwrap();
        assert_eq!(p.granularity_s, 15);
        assert_eq!(p.buckets(), 240);
    }

    #[test]
    fn literals_take_the_column_type() {
        let now = 1_700_000_000_000_000;
        let p = plan(
            &spec(json!({"filters":[{"column":"service","op":"=","value":5},{"column":"status","op":"in","value":["500", 503]}]})),
            &cols(),
            now,
        )
        .unwrap();
        assert_eq!(p.filters[0].values, vec![Literal::Str("5".into())]);
        assert_eq!(p.filters[1].values, vec![Literal::Int(500), Literal::Int(503)]);
    }
}

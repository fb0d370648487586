//! The spec's parts as DataFusion expressions: the WHERE clause, filters, time buckets,
//! aggregates.

use super::*;

/// The columns a query may name: the dataset's, plus `samplerate`.
pub(super) fn queryable_columns(table: &DatasetTable) -> BTreeMap<String, ColumnType> {
    table.snapshot().queryable_columns()
}

pub(super) fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::Internal(e.to_string())
}

pub(super) fn ts_lit(us: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into())))
}

pub(super) fn lit_of(l: &Literal) -> Expr {
    match l {
        Literal::Bool(b) => lit(*b),
        Literal::Int(i) => lit(*i),
        Literal::Float(f) => lit(*f),
        Literal::Str(s) => lit(s.clone()),
    }
}

/// The time range as a predicate; none when every event of the table lies inside it: it would
/// hold for every row, yet the scan would still decode and compare the timestamp column of
/// every row to find that out.
pub(super) fn time_clause(plan: &Plan, table: &DatasetTable) -> Option<Expr> {
    let covered = table
        .data_time_bounds()
        .is_none_or(|(lo, hi)| lo >= plan.start_us && hi < plan.end_us);
    (!covered).then(|| {
        ident(TIMESTAMP_COLUMN)
            .gt_eq(ts_lit(plan.start_us))
            .and(ident(TIMESTAMP_COLUMN).lt(ts_lit(plan.end_us)))
    })
}

/// The column that marks, on a target span, that relation `k` of the plan found its related
/// span (null when it did not).
pub(super) fn relation_marker(k: usize) -> String {
    format!("__rel{k}_found")
}

/// Whether relation `k` of the plan holds for a target span: its related span was found (for
/// `none.`, was not).
fn relation_holds(k: usize, r: &spec::RelationUse) -> Expr {
    let found = ident(relation_marker(k));
    match r.relation {
        spec::Relation::None => found.is_null(),
        _ => found.is_not_null(),
    }
}

/// The WHERE clause: the spec's filters and time range as one predicate. A relation with
/// filters counts as one filter (its related span passed all of its filters: `none.` that no
/// span did), combined with the others by AND or OR.
pub(super) fn where_clause(plan: &Plan, table: &DatasetTable) -> Expr {
    let time = time_clause(plan, table);
    let mut filters: Vec<Expr> = plan.filters.iter().map(filter_expr).collect();
    for (k, r) in plan
        .relations
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.filters.is_empty() && r.calc.is_none())
    {
        filters.push(relation_holds(k, r));
    }
    let combined = if plan.any {
        filters.into_iter().reduce(Expr::or)
    } else {
        filters.into_iter().reduce(Expr::and)
    };
    match (time, combined) {
        (Some(t), Some(f)) => t.and(f),
        (Some(t), None) => t,
        (None, Some(f)) => f,
        (None, None) => lit(true),
    }
}

pub(super) fn filter_expr(f: &spec::PlanFilter) -> Expr {
    use datafusion::functions::string::expr_fn::{contains, ends_with, starts_with};
    let c = ident(&f.column);
    // A comparison of an int column with a float literal compares as floats.
    let num = |c: Expr| match (&f.ty, f.values.first()) {
        (ColumnType::Int, Some(Literal::Float(_))) => cast(c, DataType::Float64),
        _ => c,
    };
    let v = || lit_of(&f.values[0]);
    let positive = match f.op {
        FilterOp::Eq | FilterOp::Ne => num(c.clone()).eq(v()),
        FilterOp::Gt => num(c.clone()).gt(v()),
        FilterOp::Ge => num(c.clone()).gt_eq(v()),
        FilterOp::Lt => num(c.clone()).lt(v()),
        FilterOp::Le => num(c.clone()).lt_eq(v()),
        FilterOp::StartsWith | FilterOp::NotStartsWith => starts_with(c.clone(), v()),
        FilterOp::EndsWith | FilterOp::NotEndsWith => ends_with(c.clone(), v()),
        FilterOp::Contains | FilterOp::NotContains => contains(c.clone(), v()),
        FilterOp::Exists | FilterOp::NotExists => c.clone().is_not_null(),
        FilterOp::In | FilterOp::NotIn => {
            let as_float = f.ty == ColumnType::Int && f.values.iter().any(|l| matches!(l, Literal::Float(_)));
            let list = f
                .values
                .iter()
                .map(|l| match (as_float, l) {
                    (true, Literal::Int(i)) => lit(*i as f64),
                    _ => lit_of(l),
                })
                .collect();
            let col = if as_float {
                cast(c.clone(), DataType::Float64)
            } else {
                c.clone()
            };
            col.in_list(list, false)
        }
    };
    if f.op == FilterOp::NotExists {
        c.is_null()
    } else if f.op.matches_absent() {
        // Negations also match events without the field: NOT(x) alone would be null there.
        c.clone().is_null().or(Expr::Not(Box::new(positive)))
    } else {
        positive
    }
}

/// The bucket of the event's timestamp, as an integer offset from the range start.
pub(super) fn bucket_expr(plan: &Plan, extra_us: Option<Expr>) -> Expr {
    let ts = cast(ident(TIMESTAMP_COLUMN), DataType::Int64);
    let ts = match extra_us {
        Some(e) => ts + e,
        None => ts,
    };
    (ts - lit(plan.start_us)) / lit(plan.granularity_s * 1_000_000)
}

pub(super) fn as_f64(name: &str) -> Expr {
    cast(ident(name), DataType::Float64)
}

/// Calculation `i`'s own filters as one predicate (`None` when it has none): its plain filters,
/// and its relational ones as their relations' found-markers.
pub(super) fn calc_filter(plan: &Plan, i: usize) -> Option<Expr> {
    let c = &plan.calcs[i];
    let mut parts: Vec<Expr> = c.filters.iter().map(filter_expr).collect();
    for (k, r) in plan.relations.iter().enumerate().filter(|(_, r)| r.calc == Some(i)) {
        parts.push(relation_holds(k, r));
    }
    let parts = parts.into_iter();
    if c.any {
        parts.reduce(Expr::or)
    } else {
        parts.reduce(Expr::and)
    }
}

/// `e` where `only` holds (null elsewhere, so aggregates skip those events); `e` without it.
pub(super) fn only_where(only: Option<&Expr>, e: Expr) -> Expr {
    match only {
        Some(p) => when(p.clone(), e).end().expect("case builder"),
        None => e,
    }
}

/// The one aggregate answering percentiles `ps` of `column` (under `only`), aliased from
/// `shared`, and the expression answering `ps[k]` from it: several percentiles of a column
/// share one collection of values (or one sketch), since holding the values is what an exact
/// percentile costs.
///
/// With `sketched`, the aggregate is a mergeable sketch (`{shared}_sk`, see [`crate::sketch`]);
/// otherwise `weighted_percentile` for one percentile and `weighted_percentiles` (a struct of
/// them) for several.
pub(super) fn percentiles_of(
    column: &str,
    shared: &str,
    ps: &[f64],
    k: usize,
    only: Option<&Expr>,
    sketched: bool,
) -> (Expr, Expr) {
    let value = only_where(only, as_f64(column));
    if sketched {
        let sk = format!("{shared}_sk");
        let agg = crate::sketch::sketch().call(vec![value, ident(SR)]).alias(&sk);
        return (agg, crate::sketch::sketch_quantile().call(vec![ident(&sk), lit(ps[k])]));
    }
    if ps.len() == 1 {
        let agg = weighted_percentile().call(vec![value, ident(SR), lit(ps[0])]);
        return (agg.alias(shared), ident(shared));
    }
    let mut args = vec![value, ident(SR)];
    args.extend(ps.iter().map(|&p| lit(p)));
    let agg = weighted_percentiles().call(args).alias(shared);
    (agg, get_field(ident(shared), crate::udaf::field_name(k)))
}

/// Aggregates of a plain calculation, and the expression giving its value from them. With
/// `only` (the calculation's own filters), every input of the aggregates is null where it
/// does not hold, so the aggregates skip those events and still roll up from partials.
///
/// Not for percentiles: those of a column share one aggregate ([`percentiles_of`]).
pub(super) fn aggregate_of(op: CalcOp, column: Option<&str>, alias: &str, only: Option<&Expr>) -> (Vec<Expr>, Expr) {
    let out = |e: Expr| (vec![e.alias(alias)], ident(alias));
    let keep = |e: Expr| only_where(only, e);
    match op {
        CalcOp::Count => out(sum(keep(ident(SR)))),
        CalcOp::Sum => out(sum(keep(ident(column.unwrap()) * ident(SR)))),
        CalcOp::Avg => {
            let c = column.unwrap();
            let n = format!("{alias}_n");
            let d = format!("{alias}_d");
            let weight = when(ident(c).is_not_null(), ident(SR)).end().expect("case builder");
            (
                vec![sum(keep(as_f64(c) * as_f64(SR))).alias(&n), sum(keep(weight)).alias(&d)],
                (ident(&n) / cast(ident(&d), DataType::Float64)).alias(alias),
            )
        }
        CalcOp::Min => out(min(keep(ident(column.unwrap())))),
        CalcOp::Max => out(max(keep(ident(column.unwrap())))),
        CalcOp::CountDistinct => out(count_distinct(keep(ident(column.unwrap())))),
        CalcOp::Percentile(_) => unreachable!("percentiles share their aggregate: breakdown::calc_aggregate"),
        // Rates are derived from the per-bucket value of their base aggregate.
        CalcOp::RateAvg => aggregate_of(CalcOp::Avg, column, alias, only),
        CalcOp::RateSum => aggregate_of(CalcOp::Sum, column, alias, only),
        CalcOp::RateMax => aggregate_of(CalcOp::Max, column, alias, only),
        // CONCURRENCY counts the spans starting in each bucket here (their ends separately).
        CalcOp::Concurrency => out(sum(when(concurrency_span(), ident(SR)).end().expect("case builder"))),
        CalcOp::Heatmap => unreachable!("heatmaps are computed by their own query"),
    }
}

/// The column holding formula `i`'s value.
pub(super) fn f_alias(i: usize) -> String {
    format!("f{i}")
}

/// Formula `i` of the plan as an expression over the calculations' columns (`c{k}`).
pub(super) fn formula_expr(plan: &Plan, i: usize) -> Expr {
    use sonde_model::derived::{Typed, TypedNode};
    fn rename(t: &Typed, plan: &Plan) -> Typed {
        let node = match &t.node {
            TypedNode::Column(key) => {
                let k = plan
                    .calcs
                    .iter()
                    .position(|c| &c.key == key)
                    .expect("checked: a calculation");
                TypedNode::Column(super::breakdown::c_alias(k))
            }
            TypedNode::Call(f, args) => TypedNode::Call(*f, args.iter().map(|a| rename(a, plan)).collect()),
            lit => lit.clone(),
        };
        Typed { ty: t.ty, node }
    }
    crate::derived::compile(&rename(&plan.formulas[i].expr, plan))
}

/// The spans CONCURRENCY counts: those with a non-negative duration.
pub(super) fn concurrency_span() -> Expr {
    ident("duration_ms")
        .is_not_null()
        .and(ident("duration_ms").gt_eq(lit(0)))
}

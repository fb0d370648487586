//! BubbleUp: the selection and the baseline queried, then compared column by column
//! (the comparison itself is `crate::bubbleup`).

use super::*;
use crate::table::Sample;
use datafusion::functions_aggregate::expr_fn::count;

/// Rows and weights of the selection and of the baseline.
struct Sizes {
    rows: [u64; 2],
    weights: [i64; 2],
}

/// A population: its plan, the derived columns added to it, every column compared and its type.
type Population = (Plan, Vec<(String, Typed)>, BTreeMap<String, ColumnType>);

impl QueryEngine {
    /// The population's plan, the derived columns compared (stored and the request's own),
    /// and every column compared with its type.
    fn population(
        &self,
        table: &DatasetTable,
        dataset: &DatasetName,
        spec: QuerySpec,
        defs: &Definitions,
    ) -> Result<Population> {
        let mut columns = queryable_columns(table);
        let stored = defs.for_dataset(dataset.as_str());
        let plan = spec::plan_with(&spec, &columns, &stored, sonde_model::time::now_us())?;
        let all = spec::derived_columns(&columns, &stored.derived, &spec.calculated_fields)?;
        columns.remove(SR);
        for (name, t) in &all {
            columns.insert(name.clone(), t.ty.unwrap_or(ColumnType::String));
        }
        Ok((plan, all, columns))
    }

    /// The selection's and the baseline's sizes over the whole population: rows and weights
    /// (sample-rate sums), from the selection's and filters' columns alone.
    async fn sizes(&self, base: &DataFrame, selected: &Expr, budget: &RequestBudget) -> Result<Sizes> {
        // CASE over the selection itself (null: not selected). `IS TRUE` would do the same, but
        // DataFusion 55 plans it as never null while its physical expression says nullable,
        // which an aggregate over it refuses.
        let side = |then: Expr| {
            when(selected.clone(), then)
                .otherwise(lit(0i64))
                .map_err(|e| self.df_error(e))
        };
        let aggs = vec![
            sum(side(lit(1i64))?).alias("sel_rows"),
            count(lit(1i64)).alias("rows"),
            sum(side(ident(SR))?).alias("sel_w"),
            sum(ident(SR)).alias("w"),
        ];
        let df = base.clone().aggregate(vec![], aggs).map_err(|e| self.df_error(e))?;
        let batches = self.collect(budget, df, "BubbleUp's population size").await?;
        let get = |name: &str| {
            batches
                .iter()
                .find(|b| b.num_rows() > 0)
                .and_then(|b| json::cell(b.column_by_name(name).unwrap().as_ref(), 0).as_i64())
                .unwrap_or(0)
        };
        let (sel_rows, rows, sel_w, w) = (get("sel_rows"), get("rows"), get("sel_w"), get("w"));
        Ok(Sizes {
            rows: [sel_rows as u64, (rows - sel_rows) as u64],
            weights: [sel_w, w - sel_w],
        })
    }

    /// BubbleUp: compares a selection with the rest of the population across every column
    /// (see [`crate::bubbleup`]).
    pub async fn bubbleup(
        &self,
        dataset: &DatasetName,
        req: &BubbleUpRequest,
        defs: &Definitions,
        budget: &RequestBudget,
    ) -> Result<bubbleup::BubbleUpAnswer> {
        use futures::StreamExt;
        let started = Instant::now();
        let table = self.table(dataset)?;
        let spec = req.population.spec(None);
        let (plan, all_derived, columns) = self.population(&table, dataset, spec, defs)?;
        let bad = |field: &str, message: String| {
            QueryError::Invalid(spec::SpecError {
                field: field.into(),
                message,
                position: None,
            })
        };
        // The selection as a boolean expression, and the columns it is made of (not compared:
        // a box on duration_ms differs in duration_ms by construction).
        let (selected, excluded): (Expr, Vec<String>) = match &req.selection {
            bubbleup::Selection::Heatmap {
                column,
                start_time,
                end_time,
                min: lo,
                max: hi,
            } => {
                match columns.get(column) {
                    Some(ColumnType::Int | ColumnType::Float) => {}
                    Some(t) => {
                        return Err(bad(
                            "selection.heatmap.column",
                            format!("{column:?} is {t}, not numeric"),
                        ));
                    }
                    None => return Err(bad("selection.heatmap.column", format!("unknown column {column:?}"))),
                }
                let t0 = sonde_model::time::parse_time_value(start_time)
                    .map_err(|e| bad("selection.heatmap.start_time", e.to_string()))?;
                let t1 = sonde_model::time::parse_time_value(end_time)
                    .map_err(|e| bad("selection.heatmap.end_time", e.to_string()))?;
                let e = ident(TIMESTAMP_COLUMN)
                    .gt_eq(ts_lit(t0))
                    .and(ident(TIMESTAMP_COLUMN).lt(ts_lit(t1)))
                    .and(as_f64(column).gt_eq(lit(*lo)))
                    .and(as_f64(column).lt_eq(lit(*hi)));
                (e, vec![column.clone()])
            }
            bubbleup::Selection::Group(values) => {
                if values.is_empty() {
                    return Err(bad("selection.group", "needs at least one column".into()));
                }
                let mut parts = Vec::new();
                for (col, v) in values {
                    let Some(ty) = columns.get(col) else {
                        return Err(bad("selection.group", format!("unknown column {col:?}")));
                    };
                    parts.push(if v.is_null() {
                        ident(col).is_null()
                    } else {
                        let f = spec::plan(
                            &QuerySpec {
                                filters: vec![spec::Filter {
                                    column: col.clone(),
                                    op: "=".into(),
                                    value: Some(v.clone()),
                                }],
                                time_range: Some(1),
                                ..Default::default()
                            },
                            &BTreeMap::from([(col.clone(), *ty)]),
                            0,
                        )?;
                        filter_expr(&f.filters[0])
                    });
                }
                (
                    parts.into_iter().reduce(Expr::and).unwrap(),
                    values.keys().cloned().collect(),
                )
            }
        };
        let compared: Vec<(String, ColumnType)> = columns
            .iter()
            .filter(|(n, _)| !excluded.contains(n))
            .map(|(n, t)| (n.clone(), *t))
            .collect();
        let ctx = self.session()?;
        let base = self
            .plan_frame(&ctx, &table, &plan, &all_derived, budget)
            .await?
            .filter(where_clause(&plan, &table))
            .map_err(|e| self.df_error(e))?;
        // Over many rows, the larger side (usually the baseline), or both, is read from a sample
        // of the table, and a small side is counted whole. The catalog's row count of
        // the range says, before any file is opened, whether it may come to that; the sides'
        // exact sizes then decide. Relational filters read related spans from the same table,
        // which a sample would thin out: those populations are always counted whole.
        let keep = self.config.bubbleup_sample_rows;
        let range_rows = table.rows_in_range(plan.start_us, plan.end_us - 1);
        let may_sample = !req.exact && keep > 0 && plan.relations.is_empty() && range_rows > keep;
        let sizes = match may_sample {
            true => Some(self.sizes(&base, &selected, budget).await?),
            false => None,
        };
        // About `keep` rows are counted in all: a side holding at most half of them is counted
        // whole and the other side gets the rest; otherwise both come from the sample.
        let whole = sizes.as_ref().map_or([true, true], |s| {
            let [sel, rest] = s.rows;
            match sel + rest <= keep {
                true => [true, true],
                false => [sel <= keep / 2, rest <= keep / 2],
            }
        });
        // The frames counted, each with its rows' side: `__selected` (true: the selection).
        let mut parts: Vec<DataFrame> = Vec::new();
        let mut sampled = None;
        let df_err = |e| self.df_error(e);
        match (&sizes, whole) {
            (Some(s), [sel_whole, base_whole]) if !(sel_whole && base_whole) => {
                // The rows the sampled side(s) hold, and the share of `keep` left to them.
                let (thinned, room) = match (sel_whole, base_whole) {
                    (true, _) => (s.rows[1], keep - s.rows[0]),
                    (_, true) => (s.rows[0], keep - s.rows[1]),
                    _ => (s.rows[0] + s.rows[1], keep),
                };
                let sample = Sample::of(thinned, room, range_rows).expect("the sampled side holds more than its room");
                let sampled_table = Arc::new(table.sampled(sample));
                let thin = self
                    .plan_frame(&ctx, &sampled_table, &plan, &all_derived, budget)
                    .await?
                    .filter(where_clause(&plan, &table))
                    .map_err(df_err)?;
                if sel_whole || base_whole {
                    let (sel_from, base_from) = if sel_whole { (&base, &thin) } else { (&thin, &base) };
                    // As a filter, the selection's own time range and values prune segments,
                    // row groups and pages (`IS TRUE` around it would hide them).
                    let sel = sel_from.clone().filter(selected.clone());
                    let rest = base_from.clone().filter(selected.clone().is_not_true());
                    for (df, side) in [(sel, true), (rest, false)] {
                        parts.push(
                            df.and_then(|d| d.with_column("__selected", lit(side)))
                                .map_err(df_err)?,
                        );
                    }
                } else {
                    parts.push(
                        thin.with_column("__selected", selected.clone().is_true())
                            .map_err(df_err)?,
                    );
                }
                sampled = Some((sample, s.rows, s.weights));
            }
            _ => parts.push(
                base.clone()
                    .with_column("__selected", selected.clone().is_true())
                    .map_err(df_err)?,
            ),
        }

        // Pass 1: the range of every numeric column over what is counted, one query per part.
        let numeric: Vec<&(String, ColumnType)> = compared.iter().filter(|(_, t)| bubbleup::is_numeric(*t)).collect();
        let mut ranges: HashMap<String, (f64, f64)> = HashMap::new();
        if !numeric.is_empty() {
            let aggs: Vec<Expr> = numeric
                .iter()
                .enumerate()
                .flat_map(|(i, (n, _))| {
                    [
                        min(as_f64(n)).alias(format!("lo{i}")),
                        max(as_f64(n)).alias(format!("hi{i}")),
                    ]
                })
                .collect();
            for part in &parts {
                let df = part
                    .clone()
                    .aggregate(vec![], aggs.clone())
                    .map_err(|e| self.df_error(e))?;
                let batches = self.collect(budget, df, "BubbleUp's value ranges").await?;
                if let Some(b) = batches.iter().find(|b| b.num_rows() > 0) {
                    for (i, (n, _)) in numeric.iter().enumerate() {
                        let cell = |name: String| json::cell(b.column_by_name(&name).unwrap().as_ref(), 0).as_f64();
                        let (Some(lo), Some(hi)) = (cell(format!("lo{i}")), cell(format!("hi{i}"))) else {
                            continue;
                        };
                        let r = ranges.entry(n.clone()).or_insert((lo, hi));
                        *r = (r.0.min(lo), r.1.max(hi));
                    }
                }
            }
        }

        // Pass 2: one stream per part, every column's counters updated per batch.
        // Their distinct values share half the answer's cap (the report built from them is
        // far smaller than they are).
        let per_column = (budget.cap() / 2 / compared.len().max(1))
            .clamp(bubbleup::MIN_DISTINCT_BYTES, bubbleup::MAX_DISTINCT_BYTES);
        let mut counters: Vec<bubbleup::Counter> = compared
            .iter()
            .map(|(n, t)| match (bubbleup::is_numeric(*t), ranges.get(n)) {
                (true, Some((lo, hi))) => bubbleup::Counter::numeric(*lo, *hi),
                (true, None) => bubbleup::Counter::numeric(0.0, 0.0),
                _ => bubbleup::Counter::categorical(per_column),
            })
            .collect();
        let mut select: Vec<Expr> = compared.iter().map(|(n, _)| ident(n)).collect();
        select.push(ident(SR));
        select.push(ident("__selected"));
        // Weights and rows counted per side.
        let mut totals = [0i64; 2];
        let mut counted = [0u64; 2];
        // The counters' bytes, held in the request's budget as they grow.
        let mut held = 0usize;
        for part in parts {
            let df = part.select(select.clone()).map_err(|e| self.df_error(e))?;
            let stream_all = async {
                let mut stream = df.execute_stream().await?;
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    let sel = batch.column_by_name("__selected").unwrap().as_boolean().clone();
                    let w = bubbleup::weights(batch.column_by_name(SR).unwrap())?;
                    for (i, wi) in w.iter().enumerate() {
                        let side = if sel.is_valid(i) && sel.value(i) { 0 } else { 1 };
                        totals[side] += wi;
                        counted[side] += 1;
                    }
                    for (c, (name, _)) in counters.iter_mut().zip(&compared) {
                        c.add(batch.column_by_name(name).unwrap(), &sel, &w)?;
                    }
                    let now: usize = counters.iter().map(|c| c.bytes()).sum();
                    if now > held {
                        budget
                            .account(now - held, "BubbleUp's value counters")
                            .map_err(|e| DataFusionError::External(Box::new(e)))?;
                        held = now;
                    }
                }
                Ok::<(), DataFusionError>(())
            };
            self.timed(budget, stream_all).await?;
        }
        let events = counted[0] + counted[1];
        // Shares come from what was counted; the sizes are exact even when that was a sample,
        // and a side's counts scale by exact over counted weight where values are ranked.
        let (sizes, scale) = match &sampled {
            Some((_, _, w)) => {
                let ratio = |i: usize| {
                    if totals[i] > 0 {
                        w[i] as f64 / totals[i] as f64
                    } else {
                        1.0
                    }
                };
                (*w, [ratio(0), ratio(1)])
            }
            None => (totals, [1.0, 1.0]),
        };
        let sampled = sampled.map(|(sample, rows, _): (Sample, [u64; 2], [i64; 2])| bubbleup::Sampled {
            selection_rows: [counted[0], rows[0]],
            baseline_rows: [counted[1], rows[1]],
            every: sample.every,
            block_rows: sample.block,
        });

        let top = req.top_values.unwrap_or(bubbleup::DEFAULT_TOP_VALUES).clamp(1, 100);
        let mut columns: Vec<bubbleup::ColumnReport> = counters
            .iter()
            .zip(&compared)
            .map(|(c, (name, ty))| {
                let (score, comparison) = c.report(totals, top, scale);
                bubbleup::ColumnReport {
                    column: name.clone(),
                    ty: ty.name(),
                    score,
                    comparison,
                }
            })
            .collect();
        columns.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.column.cmp(&b.column)));
        Ok(bubbleup::BubbleUpAnswer {
            selection: bubbleup::Count { count: sizes[0] },
            baseline: bubbleup::Count { count: sizes[1] },
            columns,
            meta: bubbleup::BubbleUpMeta {
                events_examined: events,
                elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
                start_time: sonde_model::time::format_us(plan.start_us),
                end_time: sonde_model::time::format_us(plan.end_us),
                measure: "total variation distance between the selection's and the baseline's distributions",
                sampled,
            },
        })
    }
}

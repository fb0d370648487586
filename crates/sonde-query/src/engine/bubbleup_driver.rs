//! BubbleUp: the selection and the baseline queried, then compared column by column
//! (the comparison itself is `crate::bubbleup`).

use super::*;

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

        // Pass 1: the range of every numeric column over the population, in one query.
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
            let df = base.clone().aggregate(vec![], aggs).map_err(|e| self.df_error(e))?;
            let batches = self.collect(budget, df, "BubbleUp's value ranges").await?;
            if let Some(b) = batches.iter().find(|b| b.num_rows() > 0) {
                for (i, (n, _)) in numeric.iter().enumerate() {
                    let lo = json::cell(b.column_by_name(&format!("lo{i}")).unwrap().as_ref(), 0).as_f64();
                    let hi = json::cell(b.column_by_name(&format!("hi{i}")).unwrap().as_ref(), 0).as_f64();
                    ranges.insert(n.clone(), (lo.unwrap_or(0.0), hi.unwrap_or(0.0)));
                }
            }
        }

        // Pass 2: one stream over the population, every column's counters updated per batch.
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
        select.push(selected.alias("__selected"));
        let df = base.select(select).map_err(|e| self.df_error(e))?;
        let mut totals = [0i64; 2];
        let mut events = 0u64;
        // The counters' bytes, held in the request's budget as they grow.
        let mut held = 0usize;
        let stream_all = async {
            let mut stream = df.execute_stream().await?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let sel = batch.column_by_name("__selected").unwrap().as_boolean().clone();
                let w = bubbleup::weights(batch.column_by_name(SR).unwrap())?;
                for i in 0..batch.num_rows() {
                    totals[if sel.is_valid(i) && sel.value(i) { 0 } else { 1 }] += w[i];
                }
                events += batch.num_rows() as u64;
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

        let top = req.top_values.unwrap_or(bubbleup::DEFAULT_TOP_VALUES).clamp(1, 100);
        let mut columns: Vec<bubbleup::ColumnReport> = counters
            .iter()
            .zip(&compared)
            .map(|(c, (name, ty))| {
                let (score, comparison) = c.report(totals, top);
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
            selection: bubbleup::Count { count: totals[0] },
            baseline: bubbleup::Count { count: totals[1] },
            columns,
            meta: bubbleup::BubbleUpMeta {
                events_examined: events,
                elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
                start_time: sonde_model::time::format_us(plan.start_us),
                end_time: sonde_model::time::format_us(plan.end_us),
                measure: "total variation distance between the selection's and the baseline's distributions",
            },
        })
    }
}

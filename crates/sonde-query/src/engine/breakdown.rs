//! Breakdowns: a spec's results per group, its time series, rates, concurrency and
//! heatmaps, from a few DataFrame queries over the dataset's table.

use super::*;

/// What running a spec produced.
pub(super) struct Output {
    pub(super) series: Vec<Value>,
    pub(super) results: Vec<Value>,
    pub(super) groups: usize,
    pub(super) truncated: bool,
    /// What the queries used of a cluster's workers (on a query node).
    pub(super) distributed: Option<crate::distributed::Distribution>,
}

/// What the steps of a breakdown build up, group by group.
pub(super) struct Partial {
    /// The groups that made the cut, in result order.
    pub(super) groups: Vec<GroupKey>,
    /// Each group's position in `groups`.
    pub(super) index: HashMap<GroupKey, usize>,
    /// Per group, its values (breakdowns and calculations).
    pub(super) results: Vec<Map<String, Value>>,
    /// Per (time bucket, group), its values.
    pub(super) series: BTreeMap<(i64, usize), Map<String, Value>>,
    /// Per calculation, the base values per (group, bucket) of rates and CONCURRENCY.
    pub(super) per_bucket: Vec<HashMap<(usize, i64), Option<f64>>>,
    /// Per HEATMAP calculation, its value range over the groups kept.
    pub(super) heat_range: Vec<(Option<f64>, Option<f64>)>,
    /// Whether the limit cut groups off.
    pub(super) truncated: bool,
}

impl Partial {
    fn into_output(self, plan: &Plan) -> Output {
        let Partial {
            groups,
            results,
            series,
            truncated,
            ..
        } = self;
        // Results only: rates and CONCURRENCY still went through their buckets, unanswered.
        let series = if plan.series { series } else { BTreeMap::new() };
        let series_json: Vec<Value> = series
            .into_iter()
            .map(|((t, g), mut m)| {
                for (i, (name, _)) in plan.breakdowns.iter().enumerate() {
                    m.insert(name.clone(), groups[g][i].clone());
                }
                json!({"time": sonde_model::time::format_us(plan.start_us + t * plan.granularity_s * 1_000_000), "data": m})
            })
            .collect();
        let groups_n = results.len();
        Output {
            series: series_json,
            results: results.into_iter().map(|m| json!({ "data": m })).collect(),
            groups: groups_n,
            truncated,
            distributed: None,
        }
    }
}

/// How the one aggregate of [`Run::fine_aggregates`] answers the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fine {
    /// Rows per (bucket, group) whose partial aggregates roll up per group.
    Rollup,
    /// Rows per (bucket, group) and per group (`t` null), from grouping sets.
    GroupingSets,
}

pub(super) struct Run<'a> {
    pub(super) plan: &'a Plan,
    pub(super) engine: &'a QueryEngine,
    pub(super) table: &'a DatasetTable,
    pub(super) req: &'a RequestBudget,
    /// What the run's queries used of the cluster so far.
    pub(super) used: std::sync::Mutex<Option<crate::distributed::Distribution>>,
}

pub(super) fn b_alias(i: usize) -> String {
    format!("b{i}")
}
pub(super) fn c_alias(i: usize) -> String {
    format!("c{i}")
}

/// One group's breakdown values (as they are answered), compared and hashed by value, so the
/// series and heatmap rows find their group directly (they used to go through JSON text).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct GroupKey(Vec<Value>);

impl Eq for GroupKey {}

impl std::hash::Hash for GroupKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Equal values hash equally: a cell's number is an integer or a float, never both.
        for v in &self.0 {
            match v {
                Value::Null => 0u8.hash(state),
                Value::Bool(b) => (1u8, b).hash(state),
                Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => (2u8, i).hash(state),
                    (None, Some(u)) => (3u8, u).hash(state),
                    // -0.0 == 0.0, so both hash as 0.0 (JSON has no NaN).
                    _ => (4u8, (n.as_f64().unwrap_or_default() + 0.0).to_bits()).hash(state),
                },
                Value::String(s) => (5u8, s).hash(state),
                other => (6u8, other.to_string()).hash(state),
            }
        }
    }
}

impl std::ops::Index<usize> for GroupKey {
    type Output = Value;
    fn index(&self, i: usize) -> &Value {
        &self.0[i]
    }
}

pub(super) fn group_of(batch: &RecordBatch, row: usize, n: usize) -> GroupKey {
    GroupKey(
        (0..n)
            .map(|i| json::cell(batch.column_by_name(&b_alias(i)).unwrap().as_ref(), row))
            .collect(),
    )
}

impl Run<'_> {
    pub(super) fn group_exprs(&self) -> Vec<Expr> {
        self.plan
            .breakdowns
            .iter()
            .enumerate()
            .map(|(i, (name, _))| ident(name).alias(b_alias(i)))
            .collect()
    }

    /// The results' aggregates (the hidden count, each plain calculation's, each HEATMAP's
    /// value range) and the expressions finishing them per group (breakdowns first).
    pub(super) fn result_aggregates(&self) -> (Vec<Expr>, Vec<Expr>) {
        let plan = self.plan;
        let mut aggs = vec![sum(ident(SR)).alias("hidden_count")];
        let mut finals: Vec<Expr> = (0..plan.breakdowns.len()).map(|i| ident(b_alias(i))).collect();
        for (i, c) in plan.calcs.iter().enumerate() {
            let column = c.column.as_ref().map(|(n, _)| n.as_str());
            if c.op.is_simple() {
                let (a, f) = calc_aggregate(plan, i);
                aggs.extend(a);
                finals.push(f);
            } else if c.op == CalcOp::Heatmap {
                let col = column.expect("HEATMAP has a column");
                aggs.push(min(as_f64(col)).alias(heat_lo(i)));
                aggs.push(max(as_f64(col)).alias(heat_hi(i)));
                finals.extend([ident(heat_lo(i)), ident(heat_hi(i))]);
            }
        }
        finals.push(ident("hidden_count"));
        (aggs, finals)
    }

    /// One aggregate answering both the results and the series, when the breakdown has few
    /// groups (see `DatasetTable::many_groups`: otherwise groups times buckets would be nearly
    /// as many rows as the events) and every calculation is per group and per bucket (no rates
    /// or CONCURRENCY); `None` otherwise.
    ///
    /// - When every calculation rolls up (COUNT, SUM, AVG, MIN, MAX, HEATMAP's value range,
    ///   sketched percentiles, COUNT_DISTINCT from sets of distinct values):
    ///   partial aggregates per time bucket and group, which the results roll up per group.
    /// - Otherwise (exact percentiles, COUNT_DISTINCT counted at once): grouping sets
    ///   `(t, groups)` and `(groups)`,
    ///   so one scan feeds both; the results are the rows whose `t` is null.
    pub(super) fn fine_aggregates(&self, base: &DataFrame, aggs: &[Expr]) -> Result<Option<(DataFrame, Fine)>> {
        let plan = self.plan;
        let per_bucket_only = plan.calcs.iter().any(|c| !c.op.is_simple() && c.op != CalcOp::Heatmap);
        if per_bucket_only || plan.breakdowns.iter().any(|(b, _)| self.table.many_groups(b)) {
            return Ok(None);
        }
        let all_roll_up = plan
            .calcs
            .iter()
            .all(|c| c.op == CalcOp::Heatmap || rolls_up(plan, c.op));
        if all_roll_up {
            let mut gexprs = vec![bucket_expr(plan, None).alias("t")];
            gexprs.extend(self.group_exprs());
            return Ok(Some((
                self.df(base.clone().aggregate(gexprs, aggs.to_vec()))?,
                Fine::Rollup,
            )));
        }
        // The keys as columns of their own first (grouping sets take plain expressions), named
        // so as not to hide a dataset column the calculations read; renamed after.
        let key = |i: Option<usize>| i.map_or("__sonde_t".to_string(), |i| format!("__sonde_b{i}"));
        let nb = plan.breakdowns.len();
        let mut keyed = self.df(base.clone().with_column(&key(None), bucket_expr(plan, None)))?;
        for (i, (name, _)) in plan.breakdowns.iter().enumerate() {
            keyed = self.df(keyed.with_column(&key(Some(i)), ident(name)))?;
        }
        let groups: Vec<Expr> = (0..nb).map(|i| ident(key(Some(i)))).collect();
        let mut with_t = vec![ident(key(None))];
        with_t.extend(groups.iter().cloned());
        let sets = Expr::GroupingSet(datafusion::logical_expr::GroupingSet::GroupingSets(vec![
            with_t, groups,
        ]));
        let df = self.df(keyed.aggregate(vec![sets], aggs.to_vec()))?;
        // Renamed as the other paths name them, without the engine's internal grouping id.
        let mut out = vec![ident(key(None)).alias("t")];
        out.extend((0..nb).map(|i| ident(key(Some(i))).alias(b_alias(i))));
        out.extend(aggs.iter().map(|a| ident(a.schema_name().to_string())));
        Ok(Some((self.df(df.select(out))?, Fine::GroupingSets)))
    }

    /// `df` (a row per group, or per bucket and group, with the calculations' columns) with a
    /// column per formula.
    fn with_formulas(&self, mut df: DataFrame) -> Result<DataFrame> {
        for i in 0..self.plan.formulas.len() {
            df = self.df(df.with_column(&f_alias(i), formula_expr(self.plan, i)))?;
        }
        Ok(df)
    }

    /// `df`'s rows, across the cluster's workers when there are some (see
    /// [`QueryEngine::collect_spread`]).
    pub(super) async fn collect(&self, df: DataFrame) -> Result<Vec<RecordBatch>> {
        let (batches, used) = self
            .engine
            .collect_spread(self.req, df, "the query's aggregates")
            .await?;
        let mut so_far = self.used.lock().unwrap_or_else(|p| p.into_inner());
        *so_far = crate::distributed::Distribution::merged(so_far.take(), used);
        Ok(batches)
    }

    /// Holds what `rows` rows of `cells` JSON values each will cost once built (a `Value` in a
    /// map is about 128 bytes with its key), before building them.
    pub(super) fn account_json(&self, rows: usize, cells: usize, what: &str) -> Result<()> {
        self.req
            .account(rows.saturating_mul(cells.max(1)).saturating_mul(128), what)
    }

    pub(super) fn df<T>(&self, r: Result<T, DataFusionError>) -> Result<T> {
        r.map_err(|e| self.engine.df_error(e))
    }

    pub(super) async fn execute(&self, base: DataFrame) -> Result<Output> {
        // The result aggregates, built once: the fine table and the results both use them.
        let (aggs, finals) = self.result_aggregates();
        let fine = self.fine_table(&base, &aggs).await?;
        let mut p = self.results(&base, fine.as_ref(), aggs, finals).await?;
        // Later queries only need the groups that made the cut (past the limit and havings).
        let restricted = if p.truncated || !self.plan.havings.is_empty() {
            self.df(base.filter(group_filter(self.plan, &p.groups)))?
        } else {
            base
        };
        // Rates and CONCURRENCY are made of their per-bucket values even in the results.
        let per_bucket = self
            .plan
            .calcs
            .iter()
            .any(|c| !c.op.is_simple() && c.op != CalcOp::Heatmap);
        if self.plan.series || per_bucket {
            self.series(&mut p, fine.as_ref(), &restricted).await?;
        }
        self.rates(&mut p);
        self.concurrency(&mut p, &restricted).await?;
        self.heatmaps(&mut p, &restricted).await?;
        let mut out = p.into_output(self.plan);
        out.distributed = self.used.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(out)
    }

    /// When every calculation rolls up from partial aggregates per time bucket and group,
    /// one scan computes those ("fine"), and the results and the series are both answered
    /// from that small table instead of scanning the events twice.
    ///
    /// Made of precomputed per-segment partials where the plan allows (see `precomputed`),
    /// even for results only; otherwise computed only when the series is answered from it too.
    async fn fine_table(&self, base: &DataFrame, aggs: &[Expr]) -> Result<Option<(DataFrame, Fine)>> {
        let fine = match self.fine_from_partials(aggs).await? {
            Some(df) => Some((df, Fine::Rollup)),
            None if self.plan.series => self.fine_aggregates(base, aggs)?,
            None => None,
        };
        Ok(match fine {
            // Collected (and counted against the request) rather than `cache()`d, which would
            // hold the partials outside every budget.
            Some((f, kind)) => {
                let state = f.clone().into_parts().0;
                let logical: SchemaRef = Arc::new(f.schema().as_arrow().clone());
                let batches = self.collect(f).await?;
                // The batches' own schema: the logical one may differ in nullability (a
                // derived column's `COALESCE(…, false)` is never null as planned, yet its
                // physical field says nullable), which the table would refuse.
                let schema = batches.first().map_or(logical, |b| b.schema());
                let table = datafusion::datasource::MemTable::try_new(schema, vec![batches]);
                let df = self.df(table.and_then(|t| SessionContext::new_with_state(state).read_table(Arc::new(t))))?;
                Some((df, kind))
            }
            None => None,
        })
    }

    /// 1. Results: plain aggregates per group, HAVING, ORDER BY, LIMIT. Each HEATMAP's value
    ///    range comes along (per group; combined here over the groups that made the cut).
    async fn results(
        &self,
        base: &DataFrame,
        fine: Option<&(DataFrame, Fine)>,
        aggs: Vec<Expr>,
        finals: Vec<Expr>,
    ) -> Result<Partial> {
        let plan = self.plan;
        let nb = plan.breakdowns.len();
        let mut results_df = match fine {
            Some((f, Fine::Rollup)) => {
                let groups: Vec<Expr> = (0..nb).map(|i| ident(b_alias(i))).collect();
                self.df(f.clone().aggregate(groups, aggs.iter().map(rollup).collect()))?
            }
            // The per-group grouping set: `t` is null there (never in a per-bucket row).
            Some((f, Fine::GroupingSets)) => self.df(f.clone().filter(ident("t").is_null()))?,
            None => self.df(base.clone().aggregate(self.group_exprs(), aggs))?,
        };
        results_df = self.with_formulas(self.df(results_df.select(finals))?)?;
        // Without breakdowns SQL answers one row even when nothing matched; no events, no group.
        results_df = self.df(results_df.filter(ident("hidden_count").is_not_null()))?;
        for h in &plan.havings {
            let c = match h.on {
                OrderKey::Formula(i) => ident(f_alias(i)),
                OrderKey::Calc(i) | OrderKey::Breakdown(i) => ident(c_alias(i)),
            };
            let v = lit(h.value);
            let cond = match h.op {
                FilterOp::Eq => c.eq(v),
                FilterOp::Ne => c.not_eq(v),
                FilterOp::Gt => c.gt(v),
                FilterOp::Ge => c.gt_eq(v),
                FilterOp::Lt => c.lt(v),
                _ => c.lt_eq(v),
            };
            results_df = self.df(results_df.filter(cond))?;
        }
        let mut sort: Vec<SortExpr> = plan
            .orders
            .iter()
            .map(|(k, desc)| {
                let e = match k {
                    OrderKey::Calc(i) => ident(c_alias(*i)),
                    OrderKey::Breakdown(i) => ident(b_alias(*i)),
                    OrderKey::Formula(i) => ident(f_alias(*i)),
                };
                e.sort(!desc, false)
            })
            .collect();
        if plan.orders.is_empty() {
            sort.push(ident("hidden_count").sort(false, false));
        }
        sort.extend((0..nb).map(|i| ident(b_alias(i)).sort(true, false)));
        results_df = self.df(results_df.sort(sort))?;
        results_df = self.df(results_df.limit(0, Some(plan.limit + 1)))?;
        let batches = self.collect(results_df).await?;

        let mut groups: Vec<GroupKey> = Vec::new();
        let mut results: Vec<Map<String, Value>> = Vec::new();
        // Per HEATMAP calculation: the value range over the groups kept.
        let mut heat_range: Vec<(Option<f64>, Option<f64>)> = vec![(None, None); plan.calcs.len()];
        'rows: for b in &batches {
            for row in 0..b.num_rows() {
                if groups.len() == plan.limit + 1 {
                    break 'rows;
                }
                for (i, c) in plan.calcs.iter().enumerate() {
                    if c.op == CalcOp::Heatmap && groups.len() < plan.limit {
                        let cell = |name: String| json::cell(b.column_by_name(&name).unwrap().as_ref(), row).as_f64();
                        let (lo, hi) = &mut heat_range[i];
                        if let Some(v) = cell(heat_lo(i)) {
                            *lo = Some(lo.map_or(v, |l: f64| l.min(v)));
                        }
                        if let Some(v) = cell(heat_hi(i)) {
                            *hi = Some(hi.map_or(v, |h: f64| h.max(v)));
                        }
                    }
                }
                let key = group_of(b, row, nb);
                let mut m = Map::new();
                for (i, (name, _)) in plan.breakdowns.iter().enumerate() {
                    m.insert(name.clone(), key[i].clone());
                }
                for (i, c) in plan.calcs.iter().enumerate() {
                    if c.op.is_simple() {
                        m.insert(
                            c.key.clone(),
                            json::cell(b.column_by_name(&c_alias(i)).unwrap().as_ref(), row),
                        );
                    }
                }
                for (i, f) in plan.formulas.iter().enumerate() {
                    m.insert(
                        f.name.clone(),
                        json::cell(b.column_by_name(&f_alias(i)).unwrap().as_ref(), row),
                    );
                }
                groups.push(key);
                results.push(m);
            }
        }
        let truncated = groups.len() > plan.limit;
        groups.truncate(plan.limit);
        results.truncate(plan.limit);
        let index = groups.iter().enumerate().map(|(i, g)| (g.clone(), i)).collect();
        Ok(Partial {
            groups,
            index,
            results,
            series: BTreeMap::new(),
            per_bucket: vec![HashMap::new(); plan.calcs.len()],
            heat_range,
            truncated,
        })
    }

    /// 2. Series: the same aggregates (and the bases of rates) per bucket and group.
    async fn series(&self, p: &mut Partial, fine: Option<&(DataFrame, Fine)>, restricted: &DataFrame) -> Result<()> {
        let plan = self.plan;
        let nb = plan.breakdowns.len();
        let Partial {
            groups,
            index: group_index,
            series,
            per_bucket,
            ..
        } = p;
        if !groups.is_empty() {
            let mut aggs = Vec::new();
            let mut finals: Vec<Expr> = vec![ident("t")];
            finals.extend((0..nb).map(|i| ident(b_alias(i))));
            for (i, c) in plan.calcs.iter().enumerate() {
                if c.op != CalcOp::Heatmap {
                    let (a, f) = calc_aggregate(plan, i);
                    aggs.extend(a);
                    finals.push(f);
                }
            }
            if !aggs.is_empty() {
                let df = match fine {
                    // Rows of groups that did not make the cut are skipped below.
                    Some((f, Fine::Rollup)) => f.clone(),
                    Some((f, Fine::GroupingSets)) => self.df(f.clone().filter(ident("t").is_not_null()))?,
                    None => {
                        let mut gexprs = vec![bucket_expr(plan, None).alias("t")];
                        gexprs.extend(self.group_exprs());
                        self.df(restricted.clone().aggregate(gexprs, aggs))?
                    }
                };
                let df = self.with_formulas(self.df(df.select(finals))?)?;
                let batches = self.collect(df).await?;
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                self.account_json(
                    rows,
                    nb + plan.calcs.len() + 2,
                    "the time series (groups × time buckets)",
                )?;
                for b in batches {
                    let t_col = b.column_by_name("t").unwrap().clone();
                    for row in 0..b.num_rows() {
                        let Some(t) = json::cell(t_col.as_ref(), row).as_i64() else {
                            continue;
                        };
                        let key = group_of(&b, row, nb);
                        let Some(&g) = group_index.get(&key) else { continue };
                        let m = series.entry((t, g)).or_default();
                        for (i, c) in plan.calcs.iter().enumerate() {
                            if c.op == CalcOp::Heatmap {
                                continue;
                            }
                            let v = json::cell(b.column_by_name(&c_alias(i)).unwrap().as_ref(), row);
                            if c.op.is_simple() {
                                m.insert(c.key.clone(), v);
                            } else {
                                per_bucket[i].insert((g, t), v.as_f64());
                            }
                        }
                        for (i, f) in plan.formulas.iter().enumerate() {
                            m.insert(
                                f.name.clone(),
                                json::cell(b.column_by_name(&f_alias(i)).unwrap().as_ref(), row),
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// 3a. Rates: per-second change of the base aggregate between adjacent buckets.
    fn rates(&self, p: &mut Partial) {
        let plan = self.plan;
        let Partial {
            groups,
            results,
            series,
            per_bucket,
            ..
        } = p;
        let g_s = plan.granularity_s as f64;
        for (i, c) in plan.calcs.iter().enumerate() {
            if !matches!(c.op, CalcOp::RateAvg | CalcOp::RateSum | CalcOp::RateMax) {
                continue;
            }
            let mut rates_per_group: Vec<Vec<f64>> = vec![Vec::new(); groups.len()];
            for (&(g, t), v) in &per_bucket[i] {
                let prev = per_bucket[i].get(&(g, t - 1)).copied().flatten();
                let rate = match (v, prev) {
                    (Some(v), Some(p)) => Some((v - p) / g_s),
                    _ => None,
                };
                if let Some(r) = rate {
                    rates_per_group[g].push(r);
                }
                series
                    .entry((t, g))
                    .or_default()
                    .insert(c.key.clone(), rate.map_or(Value::Null, float));
            }
            for (g, rates) in rates_per_group.iter().enumerate() {
                let mean = (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64);
                results[g].insert(c.key.clone(), mean.map_or(Value::Null, float));
            }
        }
    }

    /// 3b. CONCURRENCY: spans started up to a bucket minus spans ended before it.
    async fn concurrency(&self, p: &mut Partial, restricted: &DataFrame) -> Result<()> {
        let plan = self.plan;
        let nb = plan.breakdowns.len();
        let Partial {
            index: group_index,
            results,
            series,
            per_bucket,
            ..
        } = p;
        if let Some((i, c)) = plan.calcs.iter().enumerate().find(|(_, c)| c.op == CalcOp::Concurrency) {
            let end_us = cast(ident("duration_ms") * lit(1000.0), DataType::Int64);
            let mut gexprs = vec![bucket_expr(plan, Some(end_us)).alias("t")];
            gexprs.extend(self.group_exprs());
            let df = self.df(restricted
                .clone()
                .filter(concurrency_span())
                .and_then(|d| d.aggregate(gexprs, vec![sum(ident(SR)).alias("ended")])))?;
            let mut ended: HashMap<(usize, i64), i64> = HashMap::new();
            for b in self.collect(df).await? {
                let t_col = b.column_by_name("t").unwrap().clone();
                let e_col = b.column_by_name("ended").unwrap().clone();
                for row in 0..b.num_rows() {
                    let key = group_of(&b, row, nb);
                    if let (Some(&g), Some(t), Some(e)) = (
                        group_index.get(&key),
                        json::cell(t_col.as_ref(), row).as_i64(),
                        json::cell(e_col.as_ref(), row).as_i64(),
                    ) {
                        *ended.entry((g, t)).or_default() += e;
                    }
                }
            }
            let buckets = plan.buckets();
            for (g, result) in results.iter_mut().enumerate() {
                let (mut started, mut finished, mut peak) = (0i64, 0i64, None::<i64>);
                for t in 0..buckets {
                    started += per_bucket[i].get(&(g, t)).copied().flatten().unwrap_or(0.0) as i64;
                    if t > 0 {
                        finished += ended.get(&(g, t - 1)).copied().unwrap_or(0);
                    }
                    let now = started - finished;
                    if now > 0 || series.contains_key(&(t, g)) {
                        series
                            .entry((t, g))
                            .or_default()
                            .insert(c.key.clone(), Value::from(now));
                        peak = Some(peak.map_or(now, |p| p.max(now)));
                    }
                }
                result.insert(c.key.clone(), peak.map_or(Value::Null, Value::from));
            }
        }
        Ok(())
    }

    /// 3c. HEATMAP: value range over the filtered events, then a histogram per bucket and group.
    async fn heatmaps(&self, p: &mut Partial, restricted: &DataFrame) -> Result<()> {
        let plan = self.plan;
        let nb = plan.breakdowns.len();
        let Partial {
            groups,
            index: group_index,
            results,
            series,
            heat_range,
            ..
        } = p;
        for (i, c) in plan.calcs.iter().enumerate() {
            if c.op != CalcOp::Heatmap || groups.is_empty() {
                continue;
            }
            let col = c.column.as_ref().unwrap().0.clone();
            let (Some(lo), Some(hi)) = heat_range[i] else {
                for r in results.iter_mut() {
                    r.insert(c.key.clone(), Value::Null);
                }
                continue;
            };
            let width = heatmap_width(lo, hi);
            let vb = cast((as_f64(&col) - lit(lo)) / lit(width), DataType::Int64);
            // Results only: one histogram per group, every time bucket as `t = 0`.
            let t = match plan.series {
                true => bucket_expr(plan, None),
                false => lit(0i64),
            };
            let mut gexprs = vec![t.alias("t"), vb.alias("v")];
            gexprs.extend(self.group_exprs());
            let df = self.df(restricted
                .clone()
                .filter(ident(&col).is_not_null())
                .and_then(|d| d.aggregate(gexprs, vec![sum(ident(SR)).alias("n")])))?;
            let nbk = spec::HEATMAP_BUCKETS;
            let mut hist: BTreeMap<(i64, usize), Vec<i64>> = BTreeMap::new();
            let mut totals: Vec<Vec<i64>> = vec![vec![0; nbk]; groups.len()];
            for b in self.collect(df).await? {
                for row in 0..b.num_rows() {
                    let key = group_of(&b, row, nb);
                    let (Some(&g), Some(t), Some(v), Some(n)) = (
                        group_index.get(&key),
                        json::cell(b.column_by_name("t").unwrap().as_ref(), row).as_i64(),
                        json::cell(b.column_by_name("v").unwrap().as_ref(), row).as_i64(),
                        json::cell(b.column_by_name("n").unwrap().as_ref(), row).as_i64(),
                    ) else {
                        continue;
                    };
                    let v = (v.max(0) as usize).min(nbk - 1);
                    hist.entry((t, g)).or_insert_with(|| vec![0; nbk])[v] += n;
                    totals[g][v] += n;
                }
            }
            self.account_json(hist.len() + totals.len(), nbk, "heatmap histograms")?;
            for ((t, g), counts) in hist {
                series
                    .entry((t, g))
                    .or_default()
                    .insert(c.key.clone(), heatmap_json(lo, hi, width, &counts));
            }
            for (g, counts) in totals.iter().enumerate() {
                results[g].insert(c.key.clone(), heatmap_json(lo, hi, width, counts));
            }
        }
        Ok(())
    }
}

/// The percentile calculations sharing calculation `i`'s values (its column under the same
/// filters), `i` among them, in order; empty when `i` is not a percentile.
fn sharing_percentiles(plan: &Plan, i: usize) -> Vec<usize> {
    let c = &plan.calcs[i];
    if !matches!(c.op, CalcOp::Percentile(_)) {
        return Vec::new();
    }
    let only = calc_filter(plan, i);
    (0..plan.calcs.len())
        .filter(|&j| {
            let d = &plan.calcs[j];
            matches!(d.op, CalcOp::Percentile(_)) && d.column == c.column && calc_filter(plan, j) == only
        })
        .collect()
}

/// How many collections of values the plan's exact percentiles hold (one per column and
/// filters, see [`calc_aggregate`]).
pub(super) fn percentile_collections(plan: &Plan) -> u64 {
    (0..plan.calcs.len())
        .filter(|&i| sharing_percentiles(plan, i).first() == Some(&i))
        .count() as u64
}

/// Calculation `i`'s aggregates and the expression giving its value from them.
///
/// The percentiles of one column under the same filters share one aggregate (see
/// [`percentiles_of`]): the first of them carries it, aliased `q{first}`, and the others only
/// read it, so P50, P90 and P99 of a column hold its values once.
pub(super) fn calc_aggregate(plan: &Plan, i: usize) -> (Vec<Expr>, Expr) {
    let c = &plan.calcs[i];
    let column = c.column.as_ref().map(|(n, _)| n.as_str());
    let only = calc_filter(plan, i);
    if c.op == CalcOp::CountDistinct && plan.distinct_sets {
        let alias = c_alias(i);
        let set = format!("{alias}_set");
        let value = only_where(only.as_ref(), ident(column.expect("COUNT_DISTINCT has a column")));
        return (
            vec![crate::distinct::distinct().call(vec![value]).alias(&set)],
            crate::distinct::distinct_count().call(vec![ident(&set)]).alias(alias),
        );
    }
    let (CalcOp::Percentile(p), Some(name)) = (c.op, column) else {
        return aggregate_of(c.op, column, &c_alias(i), only.as_ref());
    };
    let sharing = sharing_percentiles(plan, i);
    let mut ps: Vec<f64> = Vec::new();
    for &j in &sharing {
        if let CalcOp::Percentile(q) = plan.calcs[j].op
            && !ps.contains(&q)
        {
            ps.push(q);
        }
    }
    let k = ps
        .iter()
        .position(|&q| q == p)
        .expect("its own percentile is among them");
    let shared = format!("q{}", sharing[0]);
    let (agg, answer) = percentiles_of(name, &shared, &ps, k, only.as_ref(), plan.sketched);
    let aggs = if sharing[0] == i { vec![agg] } else { Vec::new() };
    (aggs, answer.alias(c_alias(i)))
}

/// Whether calculation `op`'s partial aggregates roll up (sums, minimums, maximums and, when
/// the plan sketches its percentiles or keeps sets of distinct values, sketches and sets).
pub(super) fn rolls_up(plan: &Plan, op: CalcOp) -> bool {
    match op {
        CalcOp::Count | CalcOp::Sum | CalcOp::Avg | CalcOp::Min | CalcOp::Max => true,
        CalcOp::Percentile(_) => plan.sketched,
        CalcOp::CountDistinct => plan.distinct_sets,
        _ => false,
    }
}

/// The partial aggregate rolling `agg` (an aggregate aliased `name`) up over rows of partial
/// results that carry it as column `name`: sums of sums, minimum of minimums, and so on.
pub(super) fn rollup(agg: &Expr) -> Expr {
    let Expr::Alias(alias) = agg else {
        unreachable!("aggregates here are aliased")
    };
    let Expr::AggregateFunction(f) = alias.expr.as_ref() else {
        unreachable!("aggregates here are aggregate functions")
    };
    let col = ident(&alias.name);
    match f.func.name() {
        "sum" => sum(col),
        "min" => min(col),
        "max" => max(col),
        "sonde_sketch" | "sonde_sketch_merge" => crate::sketch::sketch_merge().call(vec![col]),
        "sonde_distinct" | "sonde_distinct_merge" => crate::distinct::distinct_merge().call(vec![col]),
        other => unreachable!("{other} does not roll up"),
    }
    .alias(&alias.name)
}

/// Whether the filters are likely to keep few rows: some filter every event must pass is an
/// equality or a list of values. (`!=`, ranges, `exists` and the negations usually keep most.)
pub(super) fn selective(plan: &Plan) -> bool {
    let narrow = |f: &spec::PlanFilter| matches!(f.op, FilterOp::Eq | FilterOp::In | FilterOp::StartsWith);
    if plan.any {
        !plan.filters.is_empty() && plan.filters.iter().all(narrow)
    } else {
        plan.filters.iter().any(narrow)
    }
}

pub(super) fn heat_lo(i: usize) -> String {
    format!("h{i}_lo")
}

pub(super) fn heat_hi(i: usize) -> String {
    format!("h{i}_hi")
}

pub(super) fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// Width of a HEATMAP value bucket: the range split in [`spec::HEATMAP_BUCKETS`] (1 when all
/// values are equal).
pub(super) fn heatmap_width(lo: f64, hi: f64) -> f64 {
    if hi > lo {
        (hi - lo) / spec::HEATMAP_BUCKETS as f64
    } else {
        1.0
    }
}

/// A HEATMAP value: `{"min", "max", "bucket_width", "counts"}`; `counts[i]` is the sample-rate
/// weighted number of events with `min + i·bucket_width <= value < min + (i+1)·bucket_width`
/// (the last bucket also holds `max`).
pub(super) fn heatmap_json(lo: f64, hi: f64, width: f64, counts: &[i64]) -> Value {
    json!({"min": lo, "max": hi, "bucket_width": width, "counts": counts})
}

/// Restricts events to the given groups (for series when the limit cut groups off).
pub(super) fn group_filter(plan: &Plan, groups: &[GroupKey]) -> Expr {
    // Per breakdown, the values the kept groups have: a superset of the groups (rows of other
    // combinations are dropped when they are matched to groups), and a flat expression — one
    // `OR` per group would nest 10,000 deep and overflow the stack of whoever walks it.
    let mut parts = Vec::new();
    for (i, (name, ty)) in plan.breakdowns.iter().enumerate() {
        let mut seen = std::collections::HashSet::new();
        let mut values = Vec::new();
        let mut nulls = false;
        for g in groups {
            let v = &g[i];
            if v.is_null() {
                nulls = true;
                continue;
            }
            if !seen.insert(v.to_string()) {
                continue;
            }
            values.push(match (ty, v) {
                (ColumnType::Bool, Value::Bool(b)) => lit(*b),
                (ColumnType::Int, v) => lit(v.as_i64().unwrap_or_default()),
                (ColumnType::Float, v) => lit(v.as_f64().unwrap_or_default()),
                (_, Value::String(s)) => lit(s.clone()),
                (_, other) => lit(other.to_string()),
            });
        }
        let present = (!values.is_empty()).then(|| ident(name).in_list(values, false));
        parts.push(match (present, nulls) {
            (Some(p), true) => p.or(ident(name).is_null()),
            (Some(p), false) => p,
            (None, true) => ident(name).is_null(),
            (None, false) => lit(false),
        });
    }
    parts.into_iter().reduce(Expr::and).unwrap_or(lit(true))
}

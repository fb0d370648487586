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

/// How each side (selection, baseline) of `rows` rows is read when about `keep` rows are
/// counted in all (`None`: counted whole). A side holding at most half of them is counted whole
/// and the other side gets the rest. When both are larger, each is sampled at its own rate, so
/// that the rows *read* (the side's `scanned` rows, those its filters leave to the scan, times
/// its rate) add up to about `keep`, split to minimise the shares' sampling error for that
/// much reading: a side that matches one row in `d` it reads gets a share ∝ 1/√d (a
/// selection dense in its box gets more than one spread thin over its range).
fn side_samples(rows: [u64; 2], keep: u64, scanned: [u64; 2]) -> [Option<Sample>; 2] {
    let [sel, rest] = rows;
    if sel + rest <= keep {
        return [None, None];
    }
    let half = keep / 2;
    let room = match (sel <= half, rest <= half) {
        (true, _) => [sel, keep - sel],
        (_, true) => [keep - rest, rest],
        _ => {
            // Rows read per row matched, at least 1; then k_i = keep / (√d_i (√d_s + √d_b)).
            let root = [0, 1].map(|i| (scanned[i].max(rows[i]) as f64 / rows[i].max(1) as f64).sqrt());
            [0, 1].map(|i| (keep as f64 / (root[i] * (root[0] + root[1]))) as u64)
        }
    };
    [0, 1].map(|i| Sample::of(rows[i], room[i], scanned[i].max(rows[i])))
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
        let table = self.table(dataset).await?;
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
        let (selected, excluded, box_range): (Expr, Vec<String>, Option<(i64, i64)>) = match &req.selection {
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
                (e, vec![column.clone()], Some((t0, t1)))
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
                    None,
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
        // The rows a side is read from: a heatmap box's own time range, or the population's.
        let box_rows = box_range.map_or(range_rows, |(t0, t1)| {
            table.rows_in_range(t0.max(plan.start_us), t1.min(plan.end_us) - 1)
        });
        let samples = sizes
            .as_ref()
            .map_or([None, None], |s| side_samples(s.rows, keep, [box_rows, range_rows]));
        let sampled = match (&sizes, samples) {
            (Some(s), samples) if samples != [None, None] => Some((samples, s.rows, s.weights)),
            _ => None,
        };
        // What is counted, each row with its side: `__selected` (true: the selection).
        let df_err = |e| self.df_error(e);
        let frame = match sampled {
            None => base
                .clone()
                .with_column("__selected", selected.clone().is_true())
                .map_err(df_err)?,
            Some(_) => {
                // Each side from the whole population or from a sample at its own rate, so that
                // a large selection beside a larger baseline is not thinned to the baseline's
                // rate; the two in one frame, so that their scans run side by side.
                let mut sides = Vec::with_capacity(2);
                for (side, sample) in [(true, samples[0]), (false, samples[1])] {
                    let from = match sample {
                        None => base.clone(),
                        Some(sample) => self
                            .plan_frame(&ctx, &Arc::new(table.sampled(sample)), &plan, &all_derived, budget)
                            .await?
                            .filter(where_clause(&plan, &table))
                            .map_err(df_err)?,
                    };
                    // As a filter, the selection's own time range and values prune segments,
                    // row groups and pages (`IS TRUE` around it would hide them).
                    let rows = match side {
                        true => from.filter(selected.clone()),
                        false => from.filter(selected.clone().is_not_true()),
                    };
                    sides.push(
                        rows.and_then(|d| d.with_column("__selected", lit(side)))
                            .map_err(df_err)?,
                    );
                }
                let Ok([sel, rest]) = <[DataFrame; 2]>::try_from(sides) else {
                    unreachable!("one frame per side")
                };
                sel.union(rest).map_err(df_err)?
            }
        };

        // The numeric columns' buckets span their range over what is counted. When their
        // values fit (a sample's, or a small population's: an eighth of a query's memory and a
        // quarter of the answer's cap, of which the other counters take at most half, with an
        // eighth to spare for the estimate), they are kept as the rows are counted and
        // bucketed after, so the rows are read once; otherwise a first read finds the ranges.
        let numeric: Vec<&(String, ColumnType)> = compared.iter().filter(|(_, t)| bubbleup::is_numeric(*t)).collect();
        let most_counted: u64 = match &sampled {
            Some((samples, rows, _)) => (0..2)
                .map(|i| samples[i].map_or(rows[i], |s| rows[i].div_ceil(s.every) + s.block))
                .sum(),
            None => range_rows,
        };
        let deferred_bytes = most_counted.saturating_mul(8 * numeric.len() as u64 + 9);
        let room = (self.config.memory_limit / 8).min(budget.cap() / 4) as u64;
        let one_read = !numeric.is_empty() && deferred_bytes.saturating_add(deferred_bytes / 8) <= room;

        // Pass 1 (unless `one_read`): the range of every numeric column over what is counted.
        let mut ranges: HashMap<String, (f64, f64)> = HashMap::new();
        if !numeric.is_empty() && !one_read {
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
            let df = frame.clone().aggregate(vec![], aggs).map_err(|e| self.df_error(e))?;
            let batches = self.collect(budget, df, "BubbleUp's value ranges").await?;
            if let Some(b) = batches.iter().find(|b| b.num_rows() > 0) {
                for (i, (n, _)) in numeric.iter().enumerate() {
                    let cell = |name: String| json::cell(b.column_by_name(&name).unwrap().as_ref(), 0).as_f64();
                    let (Some(lo), Some(hi)) = (cell(format!("lo{i}")), cell(format!("hi{i}"))) else {
                        continue;
                    };
                    ranges.insert(n.clone(), (lo, hi));
                }
            }
        }

        // Pass 2: one stream, every column's counters updated per batch.
        // Their distinct values share half the answer's cap (the report built from them is
        // far smaller than they are).
        let per_column = (budget.cap() / 2 / compared.len().max(1))
            .clamp(bubbleup::MIN_DISTINCT_BYTES, bubbleup::MAX_DISTINCT_BYTES);
        let mut counters: Vec<bubbleup::Counter> = compared
            .iter()
            .map(|(n, t)| match (bubbleup::is_numeric(*t), ranges.get(n)) {
                (true, _) if one_read => bubbleup::Counter::deferred(),
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
        // With `one_read`, every row's side (true: the selection) and weight, for the deferred
        // counters.
        let (mut sides, mut weights): (Vec<bool>, Vec<i64>) = (Vec::new(), Vec::new());
        // The counters' bytes, held in the request's budget as they grow.
        let mut held = 0usize;
        let df = frame.select(select).map_err(|e| self.df_error(e))?;
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
                if one_read {
                    bubbleup::grow(&mut sides, w.len());
                    sides.extend((0..w.len()).map(|i| sel.is_valid(i) && sel.value(i)));
                    bubbleup::grow(&mut weights, w.len());
                    weights.extend_from_slice(&w);
                }
                for (c, (name, _)) in counters.iter_mut().zip(&compared) {
                    c.add(batch.column_by_name(name).unwrap(), &sel, &w)?;
                }
                let now: usize =
                    counters.iter().map(|c| c.bytes()).sum::<usize>() + sides.capacity() + weights.capacity() * 8;
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
        let counters: Vec<bubbleup::Counter> = counters.into_iter().map(|c| c.resolve(&sides, &weights)).collect();
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
        let blocks = |s: Option<Sample>| {
            s.map(|s| bubbleup::Blocks {
                every: s.every,
                block_rows: s.block,
            })
        };
        let sampled = sampled.map(|(samples, rows, _)| bubbleup::Sampled {
            selection_rows: [counted[0], rows[0]],
            baseline_rows: [counted[1], rows[1]],
            selection_blocks: blocks(samples[0]),
            baseline_blocks: blocks(samples[1]),
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
                    // Columns that split the events alike (`error` and the status code) score
                    // the same but for the order their shares were summed in: rounded, they
                    // tie, and rank by name whichever rows were read.
                    score: (score * 1e9).round() / 1e9,
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

#[cfg(test)]
mod tests {
    use super::side_samples;

    #[test]
    fn sides_are_sampled_only_past_half_the_rows_and_then_each_at_its_own_rate() {
        // Everything fits: both whole.
        assert_eq!(side_samples([100, 400], 500, [1_000, 1_000]), [None, None]);
        // A small selection is counted whole; the baseline gets the rest.
        let [s, b] = side_samples([200, 9_800], 1_000, [400, 10_000]);
        assert_eq!(s, None);
        assert_eq!(b.unwrap().every, 9_800usize.div_ceil(800) as u64);
        // Both large: the selection, one row in three of its box, gets 1/(√3(√3+1)) ≈ 0.21 of
        // the rows, the baseline (all of its range) 1/(1+√3) ≈ 0.37; rows read ≈ keep (each rate
        // rounded to one in a whole number, so a little under).
        let [s, b] = side_samples([540_000, 9_460_000], 500_000, [1_620_000, 9_460_000]);
        let (s, b) = (s.unwrap(), b.unwrap());
        let (ks, kb) = (540_000 / s.every, 9_460_000 / b.every);
        assert!((85_000..=115_000).contains(&ks), "{s:?}");
        assert!((160_000..=190_000).contains(&kb), "{b:?}");
        let read = 1_620_000 / s.every + 9_460_000 / b.every;
        assert!((400_000..=520_000).contains(&read), "{read}");
    }
}

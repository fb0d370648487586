//! Raw events: the newest matches first, whole events from the oldest of their times on.

use super::*;
use sonde_storage::source::SegmentId;

impl QueryEngine {
    /// Raw events matching filters and a time range, newest first, as the answer's JSON text
    /// (`{"events": [...], "meta": {...}}`), built within the request's budget.
    /// Derived columns (stored and the request's own) are shown as columns of each event.
    pub async fn events(
        &self,
        dataset: &DatasetName,
        req: &EventsRequest,
        defs: &Definitions,
        budget: &RequestBudget,
    ) -> Result<Vec<u8>> {
        let started = Instant::now();
        let table = self.table(dataset).await?;
        let columns = queryable_columns(&table);
        let spec = req.population.spec(req.limit);
        let stored = defs.for_dataset(dataset.as_str());
        let plan = spec::plan_with(&spec, &columns, &stored, sonde_model::time::now_us())?;
        let shown = spec::derived_columns(&columns, &stored.derived, &spec.calculated_fields)?;
        if let Some(cols) = &req.columns {
            for (i, c) in cols.iter().enumerate() {
                if c != TIMESTAMP_COLUMN && !columns.contains_key(c) && !shown.iter().any(|(n, _)| n == c) {
                    return Err(spec::SpecError {
                        field: format!("columns[{i}]"),
                        message: format!("unknown column {c:?}"),
                        position: None,
                    }
                    .into());
                }
            }
        }
        let ctx = self.session()?;
        let stats = table.stats();
        let offset = req.offset.unwrap_or(0) as usize;
        // First the times of the newest matches alone (the filter's columns and the timestamp),
        // then whole events only from the oldest of those times on: time-sorted segments let
        // the second scan skip every page before it, so the other columns are decoded for a
        // sliver of the rows instead of every match.
        let wanted = offset + plan.limit;
        let cutoff = self.newest_times_cutoff(&ctx, &table, &plan, wanted, budget).await?;
        let mut filter = where_clause(&plan, &table);
        if let Some(t) = cutoff {
            filter = filter.and(ident(TIMESTAMP_COLUMN).gt_eq(ts_lit(t)));
        }
        let mut df = self
            .plan_frame(&ctx, &table, &plan, &shown, budget)
            .await?
            .filter(filter)
            .and_then(|df| df.sort(newest_first()))
            .and_then(|df| df.limit(offset, Some(plan.limit)))
            .map_err(|e| self.df_error(e))?;
        if let Some(cols) = &req.columns {
            let mut sel = vec![ident(TIMESTAMP_COLUMN)];
            sel.extend(cols.iter().filter(|c| *c != TIMESTAMP_COLUMN).map(ident));
            df = df.select(sel).map_err(|e| self.df_error(e))?;
        } else if !plan.relations.is_empty() {
            // The events' own columns, not what the relations joined on to them.
            let own: Vec<Expr> = df
                .schema()
                .fields()
                .iter()
                .filter(|f| !f.name().starts_with("__rel"))
                .map(|f| ident(f.name()))
                .collect();
            df = df.select(own).map_err(|e| self.df_error(e))?;
        }
        let batches = self.collect(budget, df, "raw events").await?;
        let scan = stats.lock().unwrap().clone();
        #[derive(Serialize)]
        struct Answer<'a> {
            events: json::Rows<'a>,
            meta: Value,
        }
        let answer = Answer {
            // Absent fields are left out of each event, as they were never sent.
            events: json::Rows {
                batches: &batches,
                skip_nulls: true,
            },
            meta: json!({
                "rows_examined": scan.rows_examined,
                "segments_scanned": scan.segments_scanned,
                "segments_total": scan.segments_total,
                "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
                "start_time": sonde_model::time::format_us(plan.start_us),
                "end_time": sonde_model::time::format_us(plan.end_us),
            }),
        };
        json::to_bytes(&answer, budget)
    }

    /// The time of the `wanted`-th newest match, when there are that many (`None` otherwise).
    ///
    /// The newest matches usually lie in the newest segments, so they are looked for there
    /// first: the buffered rows and the two newest segments, then twice as many older segments
    /// each round, until the `wanted`-th newest time found is at least as new as every segment
    /// left (a day of 100 segments then reads one or two of them, not the day). A relational
    /// filter reads the whole table at once (its relations span the segments).
    async fn newest_times_cutoff(
        &self,
        ctx: &SessionContext,
        table: &Arc<DatasetTable>,
        plan: &Plan,
        wanted: usize,
        budget: &RequestBudget,
    ) -> Result<Option<i64>> {
        if wanted == 0 {
            return Ok(None);
        }
        let mut segments: Vec<(i64, SegmentId)> = table
            .snapshot()
            .segments
            .iter()
            .filter(|s| s.max_ts_us >= plan.start_us && s.min_ts_us < plan.end_us)
            .map(|s| (s.max_ts_us, s.id))
            .collect();
        segments.sort_unstable_by(|a, b| b.cmp(a));
        let whole = !plan.relations.is_empty();
        let mut times: Vec<i64> = Vec::new();
        let (mut next, mut group) = (0, 2);
        loop {
            // The first round reads the buffered rows too; `whole` reads everything at once.
            let part = if whole {
                next = segments.len();
                table.clone()
            } else if next == 0 {
                next = group.min(segments.len());
                Arc::new(table.without_segments(segments[next..].iter().map(|s| s.1)))
            } else {
                let ids: Vec<SegmentId> = segments[next..(next + group).min(segments.len())]
                    .iter()
                    .map(|s| s.1)
                    .collect();
                next += ids.len();
                Arc::new(table.segments_only(ids))
            };
            group *= 2;
            let df = self
                .plan_frame(ctx, &part, plan, &plan.derived, budget)
                .await?
                .filter(where_clause(plan, &part))
                .and_then(|df| df.select(vec![ident(TIMESTAMP_COLUMN)]))
                .and_then(|df| df.sort(newest_first()))
                .and_then(|df| df.limit(0, Some(wanted)))
                .map_err(|e| self.df_error(e))?;
            for b in self.collect(budget, df, "the newest matches' times").await? {
                let ts = b.column(0).as_any().downcast_ref::<TimestampMicrosecondArray>();
                times.extend(ts.into_iter().flat_map(|a| a.iter().flatten()));
            }
            times.sort_unstable_by(|a, b| b.cmp(a));
            times.truncate(wanted);
            let cutoff = (times.len() == wanted).then(|| times[wanted - 1]);
            match (cutoff, segments.get(next)) {
                // Every segment left ends before the cutoff: none holds a newer match.
                (Some(t), Some(&(max_ts, _))) if max_ts <= t => return Ok(Some(t)),
                (cutoff, None) => return Ok(cutoff),
                _ => {}
            }
        }
    }
}

/// The order raw events are answered in: newest first.
fn newest_first() -> Vec<SortExpr> {
    vec![ident(TIMESTAMP_COLUMN).sort(false, false)]
}

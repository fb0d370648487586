//! A breakdown's partial aggregates per time bucket and group (the "fine" table of
//! `breakdown`) put together from precomputed per-segment partials ([`crate::partials`]) where
//! it can: the segments wholly inside the range are read from the cache, or aggregated per
//! segment in one scan and kept; the segments at the range's edges and the write buffer are
//! aggregated as usual; the three roll up into the same table a full scan would give.

use super::*;
use crate::table::SEGMENT_COLUMN;
use arrow::datatypes::{Field, Schema};
use sonde_storage::source::SegmentId;

/// Whether `plan`, past its calculations, can be answered from per-segment partials: each
/// segment's rows are aggregated on their own (no relational fields, which join spans across
/// segments), the groups are few, and no filter looks up an id (a trace or span id names one
/// request: its partials would never be asked for again, and the id indexes already skip the
/// segments without it).
pub(super) fn partials_fit(engine: &QueryEngine, table: &DatasetTable, plan: &Plan) -> bool {
    engine.partials.enabled()
        && plan.relations.is_empty()
        // A dataset with a field of that name would collide with the segment column.
        && !table.snapshot().columns.contains_key(SEGMENT_COLUMN)
        && !plan
            .filters
            .iter()
            .chain(plan.calcs.iter().flat_map(|c| c.filters.iter()))
            .any(|f| table.is_indexed(&f.column))
        && !plan.breakdowns.iter().any(|(b, _)| table.many_groups(b))
}

/// The segments wholly inside `plan`'s range: the ones partials answer (every row of theirs
/// passes the time filter).
fn segments_inside(table: &DatasetTable, plan: &Plan) -> Vec<SegmentId> {
    table
        .snapshot()
        .segments
        .iter()
        .filter(|s| s.min_ts_us >= plan.start_us && s.max_ts_us < plan.end_us)
        .map(|s| s.id)
        .collect()
}

/// The columns `plan` counts distinct values of.
fn distinct_columns(plan: &Plan) -> impl Iterator<Item = &str> {
    plan.calcs
        .iter()
        .filter(|c| c.op == CalcOp::CountDistinct)
        .filter_map(|c| c.column.as_ref().map(|(n, _)| n.as_str()))
}

/// Whether `plan`'s COUNT_DISTINCT should come from sets of distinct values, which roll up from
/// partials (see [`crate::distinct`]): only where partials will answer it — it fits
/// ([`partials_fit`]), every other calculation rolls up, and some segment lies wholly inside
/// its range — and no column counted is an id (indexed: nearly one value per event) or one
/// whose sets were too large before ([`crate::partials::PartialsCache::refuse_sets`]).
/// Elsewhere a set would be built only to be counted.
pub(super) fn distinct_sets_apply(engine: &QueryEngine, table: &DatasetTable, plan: &Plan) -> bool {
    let dataset = table.snapshot().dataset.to_string();
    distinct_columns(plan).next().is_some()
        && plan
            .calcs
            .iter()
            .all(|c| c.op == CalcOp::CountDistinct || rolls_up(plan, c.op))
        && partials_fit(engine, table, plan)
        && !segments_inside(table, plan).is_empty()
        && distinct_columns(plan).all(|c| !table.is_indexed(c) && !engine.partials.sets_refused(&dataset, c))
}

/// Remembers that the columns `plan` counts distinct values of have too many for sets.
pub(super) fn refuse_sets(engine: &QueryEngine, table: &DatasetTable, plan: &Plan) {
    let dataset = table.snapshot().dataset.to_string();
    for c in distinct_columns(plan) {
        engine.partials.refuse_sets(&dataset, c);
    }
}

impl Run<'_> {
    /// Whether this plan's fine table can be made of per-segment partials: it fits
    /// ([`partials_fit`]), every calculation rolls up (COUNT, SUM, AVG, MIN, MAX, sketched
    /// percentiles, COUNT_DISTINCT from sets), and no later step reads every row anyway
    /// (HEATMAP's histograms, CONCURRENCY).
    fn partials_apply(&self) -> bool {
        partials_fit(self.engine, self.table, self.plan) && self.plan.calcs.iter().all(|c| rolls_up(self.plan, c.op))
    }

    /// What decides a segment's partials for this plan (see [`crate::partials`]): the plan
    /// without its range (only the buckets' phase), order, limit and formulas, and the table
    /// schema.
    fn shape(&self) -> Arc<str> {
        use datafusion::catalog::TableProvider;
        let plan = self.plan;
        let g_us = plan.granularity_s * 1_000_000;
        let key = Plan {
            start_us: plan.start_us.rem_euclid(g_us),
            end_us: 0,
            orders: Vec::new(),
            havings: Vec::new(),
            limit: 0,
            compare_offset_s: None,
            formulas: Vec::new(),
            series: false,
            ..plan.clone()
        };
        format!(
            "{}\n{key:?}\n{:?}",
            self.table.snapshot().dataset,
            self.table.schema().fields()
        )
        .into()
    }

    /// The fine table (per bucket and group, the partial aggregates `aggs`) from precomputed
    /// partials, or `None` when the plan cannot use them or no segment lies wholly inside
    /// its range.
    pub(super) async fn fine_from_partials(&self, aggs: &[Expr]) -> Result<Option<DataFrame>> {
        use datafusion::catalog::TableProvider;
        if !self.partials_apply() {
            return Ok(None);
        }
        let plan = self.plan;
        let g_us = plan.granularity_s * 1_000_000;
        let inside = segments_inside(self.table, plan);
        if inside.is_empty() {
            return Ok(None);
        }
        let cache = &self.engine.partials;
        let shape = self.shape();
        let mut parts: Vec<RecordBatch> = Vec::new();
        let mut missing: Vec<SegmentId> = Vec::new();
        for id in &inside {
            match cache.get(&shape, *id, plan.start_us, g_us) {
                Some(b) => parts.extend(b),
                None => missing.push(*id),
            }
        }
        // The cached parts count against the request like the collected ones do.
        let cached: usize = parts.iter().map(|b| b.get_array_memory_size()).sum();
        self.req.account(cached, "the precomputed partials")?;
        let ctx = self.engine.session_with_pushdown(selective(plan))?;
        let mut keys = vec![bucket_expr(plan, None).alias("t")];
        keys.extend(self.group_exprs());

        // The segments not yet precomputed: one scan, aggregated per segment too, then split.
        let mut computed = ScanStats::default();
        if !missing.is_empty() {
            let table = Arc::new(self.table.segments_only(missing.iter().copied()));
            let mut per_segment = vec![ident(SEGMENT_COLUMN)];
            per_segment.extend(keys.iter().cloned());
            let df = self
                .engine
                .plan_frame(&ctx, &table, plan, &plan.derived, self.req)
                .await?
                .filter(where_clause(plan, &table))
                .and_then(|d| d.aggregate(per_segment, aggs.to_vec()));
            let batches = self.collect(self.df(df)?).await?;
            computed = table.stats().lock().unwrap().clone();
            for id in &missing {
                let own = split_segment(&batches, *id).map_err(internal)?;
                // Sets too large to keep would be built again by every query, for nothing.
                if !cache.insert(&shape, *id, plan.start_us, own.clone()) && plan.distinct_sets {
                    refuse_sets(self.engine, self.table, plan);
                }
                parts.extend(own);
            }
        }

        // The rest (segments at the edges of the range, the buffer) as usual.
        let rest = Arc::new(self.table.without_segments(inside.iter().copied()));
        let df = self
            .engine
            .plan_frame(&ctx, &rest, plan, &plan.derived, self.req)
            .await?
            .filter(where_clause(plan, &rest))
            .and_then(|d| d.aggregate(keys, aggs.to_vec()));
        let df = self.df(df)?;
        // Every part in one schema, all nullable (the planned and the physical nullability of
        // a column may differ; the values and types do not).
        let schema = Arc::new(Schema::new(
            df.schema()
                .as_arrow()
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        parts.extend(self.collect(df).await?);
        let parts = parts
            .into_iter()
            .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;

        {
            let scanned = rest.stats().lock().unwrap().clone();
            let stats = self.table.stats();
            let mut st = stats.lock().unwrap();
            st.segments_total = self.table.snapshot().segments.len();
            st.segments_scanned = scanned.segments_scanned + computed.segments_scanned;
            st.segments_pruned_by_index = scanned.segments_pruned_by_index + computed.segments_pruned_by_index;
            st.rows_examined = scanned.rows_examined + computed.rows_examined;
            st.segments_precomputed = inside.len() - missing.len();
        }

        let table = datafusion::datasource::MemTable::try_new(schema, vec![parts]);
        let merged = table.and_then(|t| {
            let t: Arc<dyn TableProvider> = Arc::new(t);
            let mut groups = vec![ident("t")];
            groups.extend((0..plan.breakdowns.len()).map(|i| ident(b_alias(i))));
            ctx.read_table(t)?.aggregate(groups, aggs.iter().map(rollup).collect())
        });
        Ok(Some(self.df(merged)?))
    }
}

/// The rows of `batches` (partials per segment, bucket and group) of segment `id`, without the
/// segment column.
fn split_segment(batches: &[RecordBatch], id: SegmentId) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
    use arrow::array::UInt64Array;
    let mut out = Vec::new();
    for b in batches {
        let i = b.schema().index_of(SEGMENT_COLUMN)?;
        let keep = arrow::compute::kernels::cmp::eq(b.column(i), &UInt64Array::new_scalar(id.0))?;
        if keep.true_count() == 0 {
            continue;
        }
        let rows = arrow::compute::filter_record_batch(b, &keep)?;
        let columns: Vec<usize> = (0..rows.num_columns()).filter(|c| *c != i).collect();
        out.push(rows.project(&columns)?);
    }
    Ok(out)
}

//! Trace lookup: every span of a trace in every dataset the caller may read, as a tree.

use super::*;

impl QueryEngine {
    /// Every span of a trace, across every dataset with a `trace.trace_id` column, with its
    /// tree ([`sonde_model::trace`]: each span once, whatever duplicates, shared ids or cycles
    /// the data holds), as the answer's JSON text. The id is looked up in every form it may have
    /// been stored in (16 or 32 hex digits, either case). Segments whose id index or bloom
    /// filter rules it out are not read, and buffered events are filtered by it before anything
    /// else touches them.
    pub async fn trace(
        &self,
        trace_id: &str,
        visible: &(dyn Fn(&str) -> bool + Sync),
        budget: &RequestBudget,
    ) -> Result<Vec<u8>> {
        const TRACE_ID: &str = "trace.trace_id";
        let started = Instant::now();
        let forms = sonde_model::trace::trace_id_forms(trace_id);
        let id_filter = ident(TRACE_ID).in_list(forms.iter().map(|f| lit(f.clone())).collect(), false);
        let mut spans: Vec<Value> = Vec::new();
        let mut meta = TraceMeta::default();
        for info in self.source.datasets().into_iter().filter(|i| visible(i.name.as_str())) {
            let table = self.table(&info.name).await?;
            if table.snapshot().columns.get(TRACE_ID).map(|c| c.ty) != Some(ColumnType::String) {
                continue;
            }
            let ctx = self.session()?;
            let df = ctx
                .read_table(table.clone())
                .and_then(|df| df.filter(id_filter.clone()))
                .map_err(|e| self.df_error(e))?;
            let task = Arc::new(df.task_ctx());
            let plan = self.timed(budget, df.create_physical_plan()).await?;
            let batches = self
                .collect_plan(budget, plan.clone(), task, "the trace's spans")
                .await?;
            meta.add(plan.as_ref());
            let stats = table.stats().lock().unwrap().clone();
            meta.segments_total += stats.segments_total;
            meta.segments_scanned += stats.segments_scanned;
            meta.segments_pruned_by_index += stats.segments_pruned_by_index;
            meta.datasets_searched += 1;
            let cells: usize = batches.iter().map(|b| b.num_rows() * b.num_columns()).sum();
            budget.account(cells.saturating_mul(128), "the trace's spans")?;
            for mut row in json::rows(&batches) {
                if let Value::Object(m) = &mut row {
                    m.retain(|_, v| !v.is_null());
                    m.insert("dataset".into(), json!(info.name.as_str()));
                }
                spans.push(row);
            }
            budget.check_time()?;
        }
        if spans.is_empty() {
            return Err(QueryError::NotFound(format!(
                "no spans with trace.trace_id = {trace_id:?}"
            )));
        }
        // By time (parsed: RFC3339 text with and without fractions does not sort as text).
        spans.sort_by_cached_key(|s| {
            s["timestamp"]
                .as_str()
                .and_then(|t| sonde_model::time::parse_time_str(t).ok())
                .unwrap_or(0)
        });
        let refs: Vec<SpanRef<'_>> = spans.iter().map(span_ref).collect();
        let (nodes, tree) = sonde_model::trace::build(&refs);
        #[derive(Serialize)]
        struct Node<'a> {
            index: usize,
            span_id: Option<&'a str>,
            parent: Option<usize>,
            depth: usize,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            missing_parent: bool,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            cycle: bool,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            shared_id: bool,
            #[serde(skip_serializing_if = "<[usize]>::is_empty")]
            duplicates: &'a [usize],
        }
        #[derive(Serialize)]
        struct Answer<'a> {
            trace_id: &'a str,
            spans: &'a [Value],
            tree: Vec<Node<'a>>,
            meta: Value,
        }
        let answer = Answer {
            trace_id,
            spans: &spans,
            tree: nodes
                .iter()
                .map(|n| Node {
                    index: n.index,
                    span_id: refs[n.index].span_id,
                    parent: n.parent,
                    depth: n.depth,
                    missing_parent: n.missing_parent,
                    cycle: n.cycle,
                    shared_id: n.shared_id,
                    duplicates: &n.duplicates,
                })
                .collect(),
            meta: json!({
                "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
                "spans": spans.len(),
                "roots": tree.roots,
                "duplicates": tree.duplicates,
                "cycles_broken": tree.cycles,
                "shared_ids": tree.shared,
                "max_depth": tree.max_depth,
                "trace_id_forms": forms,
                "datasets_searched": meta.datasets_searched,
                "segments_total": meta.segments_total,
                "segments_scanned": meta.segments_scanned,
                "segments_pruned_by_index": meta.segments_pruned_by_index,
                "row_groups_pruned_by_bloom_filter": meta.bloom_pruned,
                "row_groups_matched_by_bloom_filter": meta.bloom_matched,
                "row_groups_pruned_by_statistics": meta.stats_pruned,
                "bytes_scanned": meta.bytes_scanned,
            }),
        };
        json::to_bytes(&answer, budget)
    }
}

/// What the tree builder needs of a span: its ids, its kind and a fingerprint of its content
/// (every field but the dataset it was found in, so a copy loaded into another dataset is a
/// copy).
pub(super) fn span_ref(s: &Value) -> SpanRef<'_> {
    use std::hash::{Hash, Hasher};
    let text = |k: &str| s.get(k).and_then(|v| v.as_str());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Value::Object(m) = s {
        for (k, v) in m.iter().filter(|(k, _)| k.as_str() != "dataset") {
            k.hash(&mut h);
            v.to_string().hash(&mut h);
        }
    }
    SpanRef {
        span_id: text("trace.span_id"),
        parent_id: text("trace.parent_id"),
        kind: text("span.kind"),
        fingerprint: h.finish(),
    }
}

/// Scan metrics of a trace lookup, read from DataFusion's Parquet scan after execution.
#[derive(Debug, Default)]
pub(super) struct TraceMeta {
    datasets_searched: usize,
    segments_total: usize,
    segments_scanned: usize,
    segments_pruned_by_index: usize,
    bloom_pruned: usize,
    bloom_matched: usize,
    stats_pruned: usize,
    bytes_scanned: usize,
}

impl TraceMeta {
    fn add(&mut self, plan: &dyn datafusion::physical_plan::ExecutionPlan) {
        use datafusion::physical_plan::metrics::MetricValue;
        if let Some(metrics) = plan.metrics() {
            for m in metrics.iter() {
                match m.value() {
                    MetricValue::PruningMetrics { name, pruning_metrics }
                        if name == "row_groups_pruned_bloom_filter" =>
                    {
                        self.bloom_pruned += pruning_metrics.pruned();
                        self.bloom_matched += pruning_metrics.matched();
                    }
                    MetricValue::PruningMetrics { name, pruning_metrics } if name == "row_groups_pruned_statistics" => {
                        self.stats_pruned += pruning_metrics.pruned();
                    }
                    MetricValue::Count { name, count } if name == "bytes_scanned" => {
                        self.bytes_scanned += count.value()
                    }
                    _ => {}
                }
            }
        }
        for child in plan.children() {
            self.add(child.as_ref());
        }
    }
}

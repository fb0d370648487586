//! Running a planned query across a cluster's query nodes (datafusion-distributed), or here:
//! SQL and the query specs' aggregates go through [`QueryEngine::collect_spread`].

use super::*;
use crate::buffer_scan::MOVED_ON;
use crate::distributed::{self, Cluster, Distribution};
use datafusion::logical_expr::LogicalPlan;
use std::sync::atomic::Ordering::Relaxed;

/// How the error of a distributed run begins when a worker refused a plan valid here.
const REFUSED: &str = "a worker refused the plan";

impl QueryEngine {
    /// Collects `df`'s rows across the cluster's workers when this node is part of one and the
    /// plan can travel (see [`distributed::portable`]), else here; with what it used of the
    /// cluster. A distributed run that fails for a reason other than the query is run again:
    /// workers that no longer accept a connection are left out (of this run and of the next
    /// queries, until their member files have gone stale) and it runs over the others; when
    /// every worker still answers (the fault is elsewhere: a refused key, say), or that run
    /// fails too, it runs on this node alone. A run that failed because fresh rows it named
    /// moved on, or because a worker refused the plan, runs alone at once, without probing.
    pub(super) async fn collect_spread(
        &self,
        req: &RequestBudget,
        df: DataFrame,
        what: &str,
    ) -> Result<(Vec<RecordBatch>, Option<Distribution>)> {
        let Some(cluster) = &self.cluster else {
            return Ok((self.collect(req, df, what).await?, None));
        };
        let ran = self.run_spread(cluster, &df, req, what).await;
        if !matches!(ran, Ok(None)) {
            cluster.counts.queries.fetch_add(1, Relaxed);
        }
        let e = match ran {
            Ok(Some((batches, used))) => return Ok((batches, Some(used))),
            Ok(None) => return Ok((self.collect(req, df, what).await?, None)),
            Err(QueryError::Internal(e)) => e,
            Err(e) => return Err(e),
        };
        // Rows a plan named that moved on (a flush since it was planned), or a plan a worker
        // refuses: no node is at fault, and this node alone holds what the plan names.
        let left_out = match e.contains(MOVED_ON) || e.starts_with(REFUSED) {
            true => Vec::new(),
            false => cluster.leave_out_unreachable().await,
        };
        let mut e = e;
        if !left_out.is_empty() {
            let names: Vec<String> = left_out.iter().map(ToString::to_string).collect();
            tracing::warn!(error = %e, left_out = ?names, "a distributed query failed; running it again over the workers still reachable");
            cluster.counts.retried_on_workers.fetch_add(1, Relaxed);
            match self.run_spread(cluster, &df, req, what).await {
                Ok(Some((batches, mut used))) => {
                    used.retried = Some(e);
                    used.left_out = names;
                    return Ok((batches, Some(used)));
                }
                // Failed over the others too: the last resort is this node alone.
                Err(QueryError::Internal(again)) => e = again,
                Err(other) => return Err(other),
                Ok(None) => {}
            }
        }
        tracing::warn!(error = %e, "a distributed query failed; running it again on this node alone");
        cluster.counts.retried_alone.fetch_add(1, Relaxed);
        let batches = self.collect(req, df, what).await?;
        let alone = Distribution {
            workers: 1,
            stages: 1,
            tasks: 1,
            retried_alone: Some(e),
            ..Distribution::default()
        };
        Ok((batches, Some(alone)))
    }

    /// Plans and runs `df` across the cluster's workers, with its own session's settings and
    /// memory pool; `EXPLAIN` answers the distributed plan (DataFusion's own EXPLAIN does not
    /// go through the distributed planner). `None` when the plan cannot travel.
    async fn run_spread(
        &self,
        cluster: &Cluster,
        df: &DataFrame,
        req: &RequestBudget,
        what: &str,
    ) -> Result<Option<(Vec<RecordBatch>, Distribution)>> {
        let own = df.task_ctx();
        let (state, recorder) = cluster
            .session(own.session_config().clone(), own.runtime_env())
            .map_err(internal)?;
        let logical = df.logical_plan();
        let explained = match logical {
            LogicalPlan::Explain(e) => Some(e),
            _ => None,
        };
        // Optimized once, here, so that only the columns the query reads are computed (a view
        // carries every derived column of its dataset) before asking whether it can travel;
        // the distributed planner then takes the optimized plan as it is.
        let optimized = state
            .optimize(explained.map_or(logical, |e| e.plan.as_ref()))
            .map_err(|e| self.df_error(e))?;
        if !distributed::portable(&optimized, &state) {
            return Ok(None);
        }
        let plan = self
            .timed(req, state.query_planner().create_physical_plan(&optimized, &state))
            .await?;
        if let Some(e) = explained {
            let used = recorder.distribution(&plan, &cluster.config.self_url);
            let text = |rows: [&str; 2]| Arc::new(arrow::array::StringArray::from(rows.to_vec()));
            let logical_text = e.plan.display_indent().to_string();
            let batch = RecordBatch::try_new(
                Arc::new(e.schema.as_arrow().clone()),
                vec![
                    text(["logical_plan", "distributed_plan"]),
                    text([logical_text.as_str(), distributed::explain(&plan).as_str()]),
                ],
            )
            .map_err(internal)?;
            return Ok(Some((vec![batch], used)));
        }
        let task = Arc::new(datafusion::execution::TaskContext::from(&state));
        let batches = match self.collect_plan(req, plan.clone(), task, what).await {
            Ok(b) => b,
            // The plan was valid here, so a worker that finds it invalid is out of step with
            // this node (an older version without one of Sonde's functions, say): not the
            // caller's fault, and this node alone can still answer.
            Err(QueryError::Sql(e)) => return Err(QueryError::Internal(format!("{REFUSED}: {e}"))),
            Err(e) => return Err(e),
        };
        Ok(Some((batches, recorder.distribution(&plan, &cluster.config.self_url))))
    }
}

//! SQL over the datasets a caller may read, read-only, answered as JSON, CSV or Arrow IPC.

use super::*;
use crate::distributed::{self, Cluster, Distribution};
use datafusion::logical_expr::LogicalPlan;

impl QueryEngine {
    /// Runs read-only SQL over the datasets `visible` admits (each is a table named after it,
    /// with its derived columns as columns; the others do not exist for this query) and
    /// encodes the answer in `format`, all within the request's budget: the rows collected
    /// and the text written both count against it.
    pub async fn sql(
        &self,
        sql: &str,
        format: SqlFormat,
        visible: &(dyn Fn(&str) -> bool + Sync),
        defs: &Definitions,
        budget: &RequestBudget,
    ) -> Result<Vec<u8>> {
        let started = Instant::now();
        let (schema, batches, distributed) = self.sql_batches(sql, visible, defs, budget).await?;
        match format {
            SqlFormat::Json => {
                #[derive(Serialize)]
                struct Column {
                    name: String,
                    r#type: String,
                }
                #[derive(Serialize)]
                struct Answer<'a> {
                    columns: Vec<Column>,
                    rows: json::Rows<'a>,
                    meta: Value,
                }
                let answer = Answer {
                    columns: schema
                        .fields()
                        .iter()
                        .map(|f| Column {
                            name: f.name().clone(),
                            r#type: f.data_type().to_string(),
                        })
                        .collect(),
                    rows: json::Rows {
                        batches: &batches,
                        skip_nulls: false,
                    },
                    meta: json!({
                        "rows": batches.iter().map(|b| b.num_rows()).sum::<usize>(),
                        "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
                        "distributed": distributed,
                    }),
                };
                json::to_bytes(&answer, budget)
            }
            SqlFormat::Csv => {
                let mut out = json::BudgetWriter::new(budget);
                let written = {
                    let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
                    batches.iter().try_for_each(|b| w.write(b))
                };
                match written {
                    Ok(()) => out.finish(),
                    Err(e) => Err(out.fail(e)),
                }
            }
            SqlFormat::Arrow => {
                let mut out = json::BudgetWriter::new(budget);
                let written = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema).and_then(|mut w| {
                    batches.iter().try_for_each(|b| w.write(b))?;
                    w.finish()
                });
                match written {
                    Ok(()) => out.finish(),
                    Err(e) => Err(out.fail(e)),
                }
            }
        }
    }

    /// The answer's schema and rows, and what it used of the cluster (on a query node).
    async fn sql_batches(
        &self,
        sql: &str,
        visible: &(dyn Fn(&str) -> bool + Sync),
        defs: &Definitions,
        budget: &RequestBudget,
    ) -> Result<(SchemaRef, Vec<RecordBatch>, Option<Distribution>)> {
        let ctx = self.session()?;
        for info in self.source.datasets().into_iter().filter(|i| visible(i.name.as_str())) {
            let table = self.table(&info.name)?;
            let name = datafusion::common::TableReference::bare(info.name.as_str());
            let stored = defs.derived.for_dataset(info.name.as_str());
            let columns = spec::derived_columns(&queryable_columns(&table), &stored, &[])?;
            if columns.is_empty() {
                ctx.register_table(name, table).map_err(internal)?;
            } else {
                // A view: the table's columns, then each derived column computed in the scan.
                let view = self.frame(&ctx, &table, &columns, false)?.into_view();
                ctx.register_table(name, view).map_err(internal)?;
            }
        }
        let opts = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self
            .timed(budget, ctx.sql_with_options(sql, opts))
            .await
            .map_err(|e| match e {
                QueryError::Internal(m) => QueryError::Sql(m),
                other => other,
            })?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let mut retried = None;
        if let Some(cluster) = &self.cluster {
            let ran = self.sql_distributed(cluster, df.logical_plan(), budget).await;
            if !matches!(ran, Ok(None)) {
                cluster
                    .counts
                    .queries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            match ran {
                Ok(Some((batches, used))) => return Ok((schema, batches, Some(used))),
                Ok(None) => {}
                // A worker that died, cannot be reached or refused: asked once more, on this
                // node alone (a dead node's member file lasts until --lease runs out, so the
                // next queries may try it again and come back here).
                Err(QueryError::Internal(e)) => {
                    tracing::warn!(error = %e, "a distributed SQL query failed; running it again on this node alone");
                    cluster
                        .counts
                        .retried_alone
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    retried = Some(Distribution {
                        workers: 1,
                        stages: 1,
                        tasks: 1,
                        retried_alone: Some(e),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        let batches = self.collect(budget, df, "the SQL result's rows").await?;
        Ok((schema, batches, retried))
    }

    /// Plans and runs `logical` across the cluster's workers; `EXPLAIN` answers the
    /// distributed plan (DataFusion's own EXPLAIN does not go through the distributed planner).
    /// `None` when the plan calls a function a worker would not know by its name (see
    /// `distributed::portable`): it then runs on this node alone.
    async fn sql_distributed(
        &self,
        cluster: &Cluster,
        logical: &LogicalPlan,
        budget: &RequestBudget,
    ) -> Result<Option<(Vec<RecordBatch>, Distribution)>> {
        let (state, recorder) = cluster
            .session(self.session_config(true), self.runtime()?)
            .map_err(internal)?;
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
            .timed(budget, state.query_planner().create_physical_plan(&optimized, &state))
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
        let batches = self
            .collect_plan(budget, plan.clone(), task, "the SQL result's rows")
            .await?;
        Ok(Some((batches, recorder.distribution(&plan, &cluster.config.self_url))))
    }
}

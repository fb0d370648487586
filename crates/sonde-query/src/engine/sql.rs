//! SQL over the datasets a caller may read, read-only, answered as JSON, CSV or Arrow IPC.

use super::*;
use crate::distributed::Distribution;

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
        // Only the datasets the statement names are registered (a table's snapshot may read an
        // ingest node's fresh rows); all of them when it cannot be parsed here (the error then
        // comes from planning, below).
        let named: Option<Vec<String>> = {
            let state = ctx.state();
            let dialect = state.config().options().sql_parser.dialect;
            state
                .sql_to_statement(sql, &dialect)
                .and_then(|st| state.resolve_table_references(&st))
                .ok()
                .map(|refs| refs.iter().map(|r| r.table().to_string()).collect())
        };
        let is_named = |name: &str| named.as_ref().is_none_or(|n| n.iter().any(|t| t == name));
        for info in self.source.datasets().into_iter().filter(|i| visible(i.name.as_str())) {
            if !is_named(info.name.as_str()) {
                continue;
            }
            let table = self.table(&info.name).await?;
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
        let (batches, used) = self.collect_spread(budget, df, "the SQL result's rows").await?;
        Ok((schema, batches, used))
    }
}

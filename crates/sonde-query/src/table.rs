//! The dataset table: one DataFusion table over a dataset's Parquet segments *and* its write
//! buffer, so that an event is queryable the moment it is acknowledged.
//!
//! `scan` first prunes whole segments with the catalog's time bounds (no file is opened for a
//! segment outside the query's time range), then builds a Parquet scan over the rest with the
//! query's filters as a pruning predicate (row-group statistics, page index, bloom filters) and
//! filter pushdown, and unions it with the buffered batches. The table schema is the dataset's
//! widened schema: DataFusion's default expression adapter reads older segments by name, fills
//! columns a segment lacks with nulls and casts narrower types (an `Int64` segment column in a
//! `Utf8` table column reads as text).

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue, project_schema};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::{CachedParquetFileReaderFactory, ParquetRowSelection};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result;
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use object_store::ObjectStore;
use sonde_model::TIMESTAMP_COLUMN;
use sonde_storage::schema::{arrow_type, timestamp_type};
use sonde_storage::source::{DatasetSnapshot, IndexCache, SegmentId, SegmentMeta, hash_value};
use std::sync::{Arc, Mutex};

/// The URL under which the segment store is registered with DataFusion.
pub const STORE_URL: &str = "sonde://segments";

/// What one scan touched, reported in a query's `meta`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Segments the dataset has.
    pub segments_total: usize,
    /// Segments read (overlapping the time range).
    pub segments_scanned: usize,
    /// Rows in the segments read plus buffered rows: the rows the query had to examine.
    pub rows_examined: u64,
    /// Segments skipped because their id index lacks every value an equality filter asks for.
    pub segments_pruned_by_index: usize,
    /// Segments answered from precomputed partials instead (set by the engine, not the scan).
    pub segments_precomputed: usize,
}

/// A snapshot of one dataset as a DataFusion table.
#[derive(Debug)]
pub struct DatasetTable {
    snapshot: DatasetSnapshot,
    schema: SchemaRef,
    /// The buffered batches as the buffer holds them (each with its own schema).
    buffered: Vec<RecordBatch>,
    /// The same cast to the table schema, made on the first scan that needs all of them.
    adapted: std::sync::OnceLock<Arc<Vec<RecordBatch>>>,
    metadata_cache: Arc<FileMetadataCache>,
    store: Arc<dyn ObjectStore>,
    index: Arc<IndexCache>,
    stats: Arc<Mutex<ScanStats>>,
    /// Read only these rows (BubbleUp over a large population); `None`: every row.
    sample: Option<Sample>,
    /// Which segments this table reads (all, by default).
    part: Part,
}

/// Which part of a snapshot a table reads: the whole of it, some segments only (each row
/// carrying its segment's id in [`SEGMENT_COLUMN`], no buffered rows), or everything but some
/// segments. The precomputed partial aggregates use the last two: per-segment partials for the
/// segments they keep, and one ordinary scan of the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Part {
    #[default]
    Whole,
    Only(std::collections::BTreeSet<SegmentId>),
    Except(std::collections::BTreeSet<SegmentId>),
}

/// The column naming each row's segment in a table made by [`DatasetTable::segments_only`].
pub const SEGMENT_COLUMN: &str = "__sonde_segment";

/// A systematic sample of a table's rows: the rows are numbered in one order over the whole
/// table (segments in catalog order, then the buffered rows), and the kept rows are blocks of
/// `block` consecutive numbers, one block in every `every`. Blocks rather than single rows so
/// the Parquet reader skips whole pages instead of decoding them and dropping most rows; one
/// numbering over the table so the sample keeps one row in `every` within a block's rounding
/// however the rows are split into segments, and covers the time evenly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// One block kept in this many (≥ 1).
    pub every: u64,
    /// Rows per block (≥ 1).
    pub block: u64,
}

impl Sample {
    /// The sample keeping about `keep` of `rows` matching rows, in blocks sized so that the
    /// `scanned` rows they are read from hold about 64 of them or more (128 to 32,768 rows a
    /// block); `None` when that is every row.
    pub fn of(rows: u64, keep: u64, scanned: u64) -> Option<Sample> {
        let every = rows.div_ceil(keep.max(1));
        (every > 1).then(|| Sample {
            every,
            block: (scanned / every / 64).clamp(128, 32_768),
        })
    }

    /// The kept rows among the `rows` rows numbered from `offset`, as `(start, len)` runs
    /// relative to `offset`, in order.
    fn runs(&self, offset: u64, rows: u64) -> Vec<(u64, u64)> {
        let (every, block) = (self.every.max(1), self.block.max(1));
        let end = offset + rows;
        let mut out = Vec::new();
        // The first kept block that ends after `offset`.
        let mut b = (offset / block).div_ceil(every) * every;
        while b * block < end {
            let from = (b * block).max(offset);
            let to = ((b + 1) * block).min(end);
            if to > from {
                out.push((from - offset, to - from));
            }
            b += every;
        }
        out
    }

    /// The kept rows of a segment of `rows` rows numbered from `offset`, as a Parquet row
    /// selection over the file.
    fn row_selection(&self, offset: u64, rows: u64) -> parquet::arrow::arrow_reader::RowSelection {
        use parquet::arrow::arrow_reader::RowSelector;
        let mut selectors = Vec::new();
        let mut at = 0;
        for (start, len) in self.runs(offset, rows) {
            if start > at {
                selectors.push(RowSelector::skip((start - at) as usize));
            }
            selectors.push(RowSelector::select(len as usize));
            at = start + len;
        }
        if at < rows {
            selectors.push(RowSelector::skip((rows - at) as usize));
        }
        selectors.into()
    }
}

impl DatasetTable {
    /// Wraps a snapshot. `metadata_cache` keeps Parquet footers across queries.
    pub fn new(
        snapshot: DatasetSnapshot,
        store: Arc<dyn ObjectStore>,
        metadata_cache: Arc<FileMetadataCache>,
        index: Arc<IndexCache>,
    ) -> Result<DatasetTable> {
        let schema = table_schema(&snapshot);
        let buffered = snapshot.buffered.iter().filter(|b| b.num_rows() > 0).cloned().collect();
        Ok(DatasetTable {
            snapshot,
            schema,
            buffered,
            adapted: Default::default(),
            metadata_cache,
            store,
            index,
            stats: Default::default(),
            sample: None,
            part: Part::Whole,
        })
    }

    /// The same snapshot with its own scan stats, to be narrowed by the callers below.
    fn copy(&self) -> DatasetTable {
        DatasetTable {
            snapshot: self.snapshot.clone(),
            schema: self.schema.clone(),
            buffered: self.buffered.clone(),
            adapted: self.adapted.clone(),
            metadata_cache: self.metadata_cache.clone(),
            store: self.store.clone(),
            index: self.index.clone(),
            stats: Default::default(),
            sample: self.sample,
            part: self.part.clone(),
        }
    }

    /// Whether this table reads a sample of the rows.
    pub(crate) fn is_sampled(&self) -> bool {
        self.sample.is_some()
    }

    /// The same snapshot, reading only the rows of `sample` (its own scan stats).
    pub fn sampled(&self, sample: Sample) -> DatasetTable {
        DatasetTable {
            sample: Some(sample),
            ..self.copy()
        }
    }

    /// The same snapshot reading only the segments `ids` and none of the buffered rows, with
    /// one more column, [`SEGMENT_COLUMN`] (`UInt64`), holding each row's segment id, so that
    /// one scan can aggregate per segment.
    pub fn segments_only(&self, ids: impl IntoIterator<Item = SegmentId>) -> DatasetTable {
        let mut fields: Vec<Field> = self.schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(SEGMENT_COLUMN, DataType::UInt64, false));
        DatasetTable {
            schema: Arc::new(Schema::new(fields)),
            buffered: Vec::new(),
            adapted: Default::default(),
            part: Part::Only(ids.into_iter().collect()),
            ..self.copy()
        }
    }

    /// The same snapshot without the segments `ids` (every other segment and the buffered rows).
    pub fn without_segments(&self, ids: impl IntoIterator<Item = SegmentId>) -> DatasetTable {
        DatasetTable {
            part: Part::Except(ids.into_iter().collect()),
            ..self.copy()
        }
    }

    /// The segments this table reads, in catalog order.
    fn segments(&self) -> impl Iterator<Item = &SegmentMeta> {
        self.snapshot
            .segments
            .iter()
            .map(|s| s.as_ref())
            .filter(|s| match &self.part {
                Part::Whole => true,
                Part::Only(ids) => ids.contains(&s.id),
                Part::Except(ids) => !ids.contains(&s.id),
            })
    }

    /// Rows of the segments overlapping `[lo, hi]` (µs, inclusive) plus every buffered row:
    /// from the catalog, without reading a file; at least the rows a scan of that range reads.
    pub fn rows_in_range(&self, lo: i64, hi: i64) -> u64 {
        let segments: u64 = self
            .segments()
            .filter(|s| s.max_ts_us >= lo && s.min_ts_us <= hi)
            .map(|s| s.rows)
            .sum();
        segments + self.buffered.iter().map(|b| b.num_rows() as u64).sum::<u64>()
    }

    /// The stats of the scans run so far (shared, so they can be read after execution).
    pub fn stats(&self) -> Arc<Mutex<ScanStats>> {
        self.stats.clone()
    }

    /// Whether a breakdown by `column` has many groups (ids, addresses, users, measurements):
    /// as recorded when its segments were written, or sampled from the buffered events.
    pub fn many_groups(&self, column: &str) -> bool {
        use sonde_storage::schema::{MANY_GROUPS, distinct_fraction};
        let s = &self.snapshot;
        s.segments
            .iter()
            .any(|m| m.distinct_columns.iter().any(|c| c == column))
            || s.buffered.iter().any(|b| {
                b.column_by_name(column)
                    .and_then(distinct_fraction)
                    .is_some_and(|f| f > MANY_GROUPS)
            })
    }

    /// Whether `column` has a per-segment id index (trace and span ids): a filter on it
    /// names one request, not a view anyone asks for twice.
    pub fn is_indexed(&self, column: &str) -> bool {
        self.index.is_indexed(column)
    }

    /// The snapshot behind the table.
    pub fn snapshot(&self) -> &DatasetSnapshot {
        &self.snapshot
    }

    /// Earliest and latest event time (µs, inclusive) of every event the table holds, from the
    /// catalog for segments and from the buffered batches themselves; `None` when empty.
    pub fn data_time_bounds(&self) -> Option<(i64, i64)> {
        use arrow::array::AsArray;
        use arrow::datatypes::TimestampMicrosecondType;
        let segments = self.segments().map(|s| (s.min_ts_us, s.max_ts_us));
        let buffered = self.buffered.iter().filter_map(|b| {
            let ts = b.column_by_name(TIMESTAMP_COLUMN)?;
            let ts = ts.as_primitive_opt::<TimestampMicrosecondType>()?;
            Some((arrow::compute::min(ts)?, arrow::compute::max(ts)?))
        });
        segments.chain(buffered).reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
    }
}

/// The table schema of a dataset: `timestamp`, `samplerate`, then every column at its widest
/// type, all nullable (a segment may lack any of them).
pub fn table_schema(snapshot: &DatasetSnapshot) -> SchemaRef {
    let mut fields = vec![
        Field::new(TIMESTAMP_COLUMN, timestamp_type(), false),
        Field::new(sonde_model::SAMPLE_RATE_COLUMN, DataType::Int64, false),
    ];
    fields.extend(
        snapshot
            .columns
            .iter()
            .map(|(name, c)| Field::new(name, arrow_type(c.ty), true)),
    );
    Arc::new(Schema::new(fields))
}

/// Casts a buffered batch to the table schema (missing columns null, narrower types widened).
fn adapt_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    sonde_storage::schema::adapt_to_schema(batch, schema)
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
}

/// Event-time bounds (µs, inclusive) implied by a conjunction of filters, for segment pruning.
pub fn time_bounds(filters: &[Expr]) -> (i64, i64) {
    let mut lo = i64::MIN;
    let mut hi = i64::MAX;
    for f in filters {
        collect_bounds(f, &mut lo, &mut hi);
    }
    (lo, hi)
}

fn collect_bounds(e: &Expr, lo: &mut i64, hi: &mut i64) {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            collect_bounds(left, lo, hi);
            collect_bounds(right, lo, hi);
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (col_left, value, op) = match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) if c.name == TIMESTAMP_COLUMN => (true, v, *op),
                (Expr::Literal(v, _), Expr::Column(c)) if c.name == TIMESTAMP_COLUMN => (false, v, *op),
                _ => return,
            };
            let Some(us) = timestamp_literal_us(value) else { return };
            let op = if col_left { Some(op) } else { op.swap() };
            // Strict bounds exclude the bound itself: `timestamp < end` does not need a segment
            // that starts exactly at `end`.
            match op {
                Some(Operator::Gt) => *lo = (*lo).max(us.saturating_add(1)),
                Some(Operator::GtEq) => *lo = (*lo).max(us),
                Some(Operator::Lt) => *hi = (*hi).min(us.saturating_sub(1)),
                Some(Operator::LtEq) => *hi = (*hi).min(us),
                Some(Operator::Eq) => {
                    *lo = (*lo).max(us);
                    *hi = (*hi).min(us);
                }
                _ => {}
            }
        }
        Expr::Between(b) if !b.negated => {
            if let (Expr::Column(c), Expr::Literal(l, _), Expr::Literal(h, _)) =
                (b.expr.as_ref(), b.low.as_ref(), b.high.as_ref())
                && c.name == TIMESTAMP_COLUMN
            {
                if let Some(l) = timestamp_literal_us(l) {
                    *lo = (*lo).max(l);
                }
                if let Some(h) = timestamp_literal_us(h) {
                    *hi = (*hi).min(h);
                }
            }
        }
        _ => {}
    }
}

/// Values that equality filters require of indexed columns: `(column, values)`, where an event
/// must have one of the values in that column to match. Understands `=`, `IN` and the `OR`
/// chains DataFusion rewrites short `IN` lists into, under `AND`s.
fn index_needles(filters: &[Expr], index: &IndexCache) -> Vec<(String, Vec<String>)> {
    fn text(v: &ScalarValue) -> Option<String> {
        match v {
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
                Some(s.clone())
            }
            _ => None,
        }
    }
    /// `(column, values)` if `e` holds only when the column has one of the values.
    fn any_of(e: &Expr, index: &IndexCache) -> Option<(String, Vec<String>)> {
        match e {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) => match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c))
                    if index.is_indexed(&c.name) =>
                {
                    Some((c.name.clone(), vec![text(v)?]))
                }
                _ => None,
            },
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Or,
                right,
            }) => {
                let (a, mut ha) = any_of(left, index)?;
                let (b, hb) = any_of(right, index)?;
                (a == b).then(|| {
                    ha.extend(hb);
                    (a, ha)
                })
            }
            Expr::InList(l) if !l.negated => match l.expr.as_ref() {
                Expr::Column(c) if index.is_indexed(&c.name) => {
                    let values = l
                        .list
                        .iter()
                        .map(|x| match x {
                            Expr::Literal(v, _) => text(v),
                            _ => None,
                        })
                        .collect::<Option<Vec<String>>>()?;
                    Some((c.name.clone(), values))
                }
                _ => None,
            },
            _ => None,
        }
    }
    fn walk(e: &Expr, index: &IndexCache, out: &mut Vec<(String, Vec<String>)>) {
        if let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) = e
        {
            walk(left, index, out);
            walk(right, index, out);
        } else if let Some(n) = any_of(e, index) {
            out.push(n);
        }
    }
    let mut out = Vec::new();
    for f in filters {
        walk(f, index, &mut out);
    }
    out
}

/// The rows of a buffered batch whose needle columns each hold one of their values; `None`
/// when no row does.
fn rows_with_needles(batch: &RecordBatch, needles: &[(String, Vec<String>)]) -> Result<Option<RecordBatch>> {
    use arrow::array::{BooleanArray, StringArray};
    use arrow::compute::kernels::{boolean, cmp};
    let mut keep: Option<BooleanArray> = None;
    for (column, values) in needles {
        let Some(col) = batch.column_by_name(column) else {
            return Ok(None);
        };
        // A column widened from another type in this buffer is compared as text, as the table
        // schema reads it.
        let col = arrow::compute::cast(col, &DataType::Utf8)?;
        let mut any: Option<BooleanArray> = None;
        for v in values {
            let m = cmp::eq(&col, &StringArray::new_scalar(v.as_str()))?;
            any = Some(match any {
                Some(a) => boolean::or(&a, &m)?,
                None => m,
            });
        }
        let Some(any) = any else { return Ok(None) };
        keep = Some(match keep {
            Some(k) => boolean::and(&k, &any)?,
            None => any,
        });
    }
    let Some(keep) = keep else {
        return Ok(Some(batch.clone()));
    };
    if keep.true_count() == 0 {
        return Ok(None);
    }
    Ok(Some(arrow::compute::filter_record_batch(batch, &keep)?))
}

fn timestamp_literal_us(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampSecond(Some(s), _) => s.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(s), _) => s.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(s), _) => Some(*s),
        // Rounded outwards by the caller's inclusive comparison; a nanosecond bound is floored.
        ScalarValue::TimestampNanosecond(Some(s), _) => Some(s.div_euclid(1_000)),
        _ => None,
    }
}

#[async_trait]
impl TableProvider for DatasetTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Inexact: filters prune segments, row groups and pages, and DataFusion still applies
        // them to the rows that remain, so correctness never depends on pruning.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projected = project_schema(&self.schema, projection)?;
        let (lo, hi) = time_bounds(filters);
        let in_time: Vec<_> = self
            .segments()
            .filter(|s| s.max_ts_us >= lo && s.min_ts_us <= hi)
            .collect();
        // Needle filters on indexed id columns skip segments whose index lacks every value.
        let needles = index_needles(filters, &self.index);
        let in_time_count = in_time.len();
        let mut segments = Vec::with_capacity(in_time.len());
        let hashed: Vec<(&String, Vec<u32>)> = needles
            .iter()
            .map(|(c, values)| (c, values.iter().map(|v| hash_value(v)).collect()))
            .collect();
        'segments: for s in in_time {
            for (column, hashes) in &hashed {
                let idx = self
                    .index
                    .get(&self.store, s, column)
                    .await
                    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
                if !idx.is_some_and(|bm| hashes.iter().any(|h| bm.contains(*h))) {
                    continue 'segments;
                }
            }
            segments.push(s);
        }
        let pruned_by_index = in_time_count - segments.len();
        // Buffered events: with id needles, only the rows holding one of the ids (a trace
        // lookup over a full buffer then copies and casts a few rows, not the buffer);
        // otherwise all of them, cast to the table schema once per table.
        let buffered: Arc<Vec<RecordBatch>> = if needles.is_empty() {
            match self.adapted.get() {
                Some(b) => b.clone(),
                None => {
                    let all = self
                        .buffered
                        .iter()
                        .map(|b| adapt_batch(b, &self.schema))
                        .collect::<Result<Vec<_>>>()?;
                    self.adapted.get_or_init(|| Arc::new(all)).clone()
                }
            }
        } else {
            let mut out = Vec::new();
            for b in &self.buffered {
                if let Some(kept) = rows_with_needles(b, &needles)? {
                    out.push(adapt_batch(&kept, &self.schema)?);
                }
            }
            Arc::new(out)
        };
        // On a query node of a cluster, all of them are its copy of an ingest node's buffer:
        // a plan names them by position (a worker reads its own copy), see `buffer_scan`.
        let fresh = match (&self.snapshot.fresh, &self.sample) {
            (Some(at), None) if needles.is_empty() && !buffered.is_empty() => Some(at.clone()),
            _ => None,
        };
        // A sample takes the same pattern over the buffered rows, in their order.
        let buffered = match &self.sample {
            Some(sample) => {
                let all: u64 = buffered.iter().map(|b| b.num_rows() as u64).sum();
                let segment_rows: u64 = self.snapshot.segments.iter().map(|s| s.rows).sum();
                let mut runs = sample.runs(segment_rows, all).into_iter().peekable();
                let mut out = Vec::new();
                let mut offset = 0u64;
                for b in buffered.iter() {
                    let end = offset + b.num_rows() as u64;
                    while let Some(&(start, len)) = runs.peek() {
                        if start >= end {
                            break;
                        }
                        // The part of the run inside this batch; the rest continues in the next.
                        let from = start.max(offset);
                        let to = (start + len).min(end);
                        out.push(b.slice((from - offset) as usize, (to - from) as usize));
                        if start + len <= end {
                            runs.next();
                        } else {
                            break;
                        }
                    }
                    offset = end;
                }
                Arc::new(out)
            }
            None => buffered,
        };
        {
            let mut st = self.stats.lock().unwrap();
            st.segments_total = self.segments().count();
            st.segments_pruned_by_index = pruned_by_index;
            // A scan reads its segments itself (the engine sets this after its own scans).
            st.segments_precomputed = 0;
            // Every query of one spec scans the same time range, so the last scan speaks for all.
            st.segments_scanned = segments.len();
            st.rows_examined = segments.iter().map(|s| s.rows).sum::<u64>()
                + buffered.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        }

        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !segments.is_empty() {
            // A segments-only table's last column is the segment id, a partition value per file.
            let with_segment = matches!(self.part, Part::Only(_));
            let file_schema = match with_segment {
                true => Arc::new(Schema::new(
                    self.schema.fields()[..self.schema.fields().len() - 1].to_vec(),
                )),
                false => self.schema.clone(),
            };
            let table_schema = TableSchema::builder(file_schema)
                .with_table_partition_cols(match with_segment {
                    true => vec![Arc::new(Field::new(SEGMENT_COLUMN, DataType::UInt64, false))],
                    false => vec![],
                })
                .build();
            let mut source = ParquetSource::new(table_schema)
                .with_table_parquet_options(state.default_table_options().parquet)
                .with_pushdown_filters(true)
                .with_reorder_filters(true)
                .with_enable_page_index(true)
                .with_bloom_filter_on_read(true)
                .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(
                    self.store.clone(),
                    self.metadata_cache.clone(),
                )));
            if let Some(expr) = conjunction(filters.to_vec()) {
                let df_schema = DFSchema::try_from(self.schema.clone())?;
                source = source.with_predicate(state.create_physical_expr(expr, &df_schema)?);
            }
            // Where each segment's rows start in the table's numbering (for a sample).
            let mut offsets = std::collections::HashMap::new();
            let mut at = 0u64;
            for s in &self.snapshot.segments {
                offsets.insert(s.id, at);
                at += s.rows;
            }
            let files: Vec<PartitionedFile> = segments
                .iter()
                .map(|s| {
                    let mut file = PartitionedFile::new(s.path.clone(), s.bytes);
                    if with_segment {
                        file.partition_values = vec![ScalarValue::UInt64(Some(s.id.0))];
                    }
                    match &self.sample {
                        Some(sample) => {
                            file.with_extension(ParquetRowSelection::new(sample.row_selection(offsets[&s.id], s.rows)))
                        }
                        None => file,
                    }
                })
                .collect();
            let groups = FileGroup::new(files).split_files(state.config().target_partitions().max(1));
            let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(STORE_URL)?, Arc::new(source))
                .with_file_groups(groups)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            inputs.push(DataSourceExec::from_data_source(config));
        }
        match fresh {
            Some(at) => inputs.push(Arc::new(crate::buffer_scan::BufferScanExec::new(
                self.snapshot.dataset.clone(),
                at,
                buffered,
                self.schema.clone(),
                projection.cloned(),
                limit,
            )?)),
            None if !buffered.is_empty() => {
                let mem = MemorySourceConfig::try_new(&[buffered.to_vec()], self.schema.clone(), projection.cloned())?
                    .with_limit(limit);
                inputs.push(DataSourceExec::from_data_source(mem));
            }
            None => {}
        }
        match inputs.len() {
            0 => Ok(Arc::new(EmptyExec::new(projected))),
            1 => Ok(inputs.pop().unwrap()),
            _ => UnionExec::try_new(inputs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{ident, lit};

    #[test]
    fn a_sample_keeps_one_block_in_every_n() {
        let s = Sample { every: 3, block: 2 };
        // Rows 0..11 numbered from 0: blocks 0 and 3 (rows 0-1, 6-7).
        assert_eq!(s.runs(0, 11), vec![(0, 2), (6, 2)]);
        // Numbered from 5: row 5 is in block 2 (dropped), rows 6-7 block 3 (kept), 12-13 block 6.
        assert_eq!(s.runs(5, 11), vec![(1, 2), (7, 2)]);
        // A part starting inside a kept block keeps its rest.
        assert_eq!(s.runs(7, 4), vec![(0, 1)]);
        assert_eq!(s.runs(0, 7), vec![(0, 2), (6, 1)]);
        // However the rows are split, the kept rows are the same ones.
        let whole: Vec<u64> = s.runs(0, 40).iter().flat_map(|&(a, n)| a..a + n).collect();
        let mut split = Vec::new();
        for (from, len) in [(0, 5), (5, 1), (6, 17), (23, 17)] {
            split.extend(s.runs(from, len).iter().flat_map(|&(a, n)| from + a..from + a + n));
        }
        assert_eq!(whole, split);
        // The Parquet selection covers the file exactly: skip and select runs add up to it.
        let sel = s.row_selection(5, 11);
        let total: usize = sel.iter().map(|r| r.row_count).sum();
        assert_eq!(total, 11);
        assert_eq!(sel.row_count(), 4);
        assert_eq!(Sample::of(1000, 2000, 1000), None);
        let s = Sample::of(10_000_000, 1_000_000, 10_000_000).unwrap();
        assert_eq!((s.every, s.block), (10, 15_625));
        assert_eq!(Sample::of(200_000, 20_000, 200_000).unwrap().block, 312);
    }

    #[test]
    fn time_bounds_from_filters() {
        let ts = |us| lit(ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into())));
        let f = vec![
            ident("timestamp").gt_eq(ts(100)).and(ident("timestamp").lt(ts(200))),
            ident("x").eq(lit(1)),
        ];
        assert_eq!(time_bounds(&f), (100, 199));
        let f = vec![ts(50).lt(ident("timestamp"))];
        assert_eq!(time_bounds(&f), (51, i64::MAX));
        assert_eq!(time_bounds(&[]), (i64::MIN, i64::MAX));
    }
}

//! Fresh rows on a cluster's query nodes, named in a plan instead of carried by it.
//!
//! A query node holds a copy of each ingest node's write buffer (`sonde_storage::fresh`), and a
//! snapshot names its part of that copy by position: rows `[0, n)` of the events after flushed
//! position `F` on ingest node `O` at epoch `E` ([`FreshPosition`]). Until `O` flushes past `F`,
//! those are the same rows on every query node and on `O` itself. So a table scan over a
//! snapshot with such a position reads its buffered rows through a [`BufferScanExec`], which
//! travels as that position and a row range (a few dozen bytes, [`BufferScanCodec`]), not as
//! the rows:
//!
//! - on the node that planned it, it reads the snapshot's own rows;
//! - on another worker, a [`FreshReader`] reads them from that node's copy, and the part its
//!   copy does not hold yet from `O` (which answers only while it stands at `E` and `F`; a
//!   flush in between fails the task, and the query runs again on the planning node alone);
//! - the distributed planner splits a large range into several tasks, each a slice of rows, as
//!   it splits Parquet scans into byte ranges.

use crate::memory::batch_bytes;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sonde_model::DatasetName;
use sonde_storage::source::FreshPosition;
use std::fmt;
use std::sync::Arc;

/// Reads a dataset's fresh rows on a query node of a cluster, for a [`BufferScanExec`] planned
/// on another node.
#[async_trait]
pub trait FreshReader: Send + Sync + fmt::Debug {
    /// Rows `[from, to)` of `dataset`'s buffered events after `at.after` on `at.owner`, in
    /// order, as batches with their own schemas; an error when they cannot be had any more
    /// (the owner flushed past `at.after`, or changed epoch), the owner cannot be reached, or
    /// the part read from it would take more than `max_bytes`.
    async fn read(
        &self,
        dataset: &DatasetName,
        at: &FreshPosition,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<FreshRead, FreshError>;
}

/// Why a [`FreshReader`] could not read the rows asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreshError {
    /// The owner no longer holds them at that position (it flushed past it, or holds other
    /// rows there): the catalog moves on shortly, and a new snapshot names other rows.
    Moved(String),
    /// The owner could not be reached, or refused.
    Unreachable(String),
    /// They take more bytes than the reader was allowed.
    TooLarge(String),
}

impl fmt::Display for FreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreshError::Moved(why) => write!(f, "{MOVED_ON}: {why}"),
            FreshError::Unreachable(why) | FreshError::TooLarge(why) => f.write_str(why),
        }
    }
}

/// What a [`FreshReader`] read.
#[derive(Debug, Default)]
pub struct FreshRead {
    /// The rows, in order, as batches with their own schemas.
    pub batches: Vec<RecordBatch>,
    /// Bytes read from elsewhere for this query to have them (the answers they were decoded
    /// from, which they share; not this node's copy, which `--max-buffer-bytes` bounds): the
    /// query's memory pool holds these until the rows are handed on.
    pub fetched_bytes: usize,
}

/// How the error of a fresh-row scan begins when its rows can no longer be read as the plan
/// names them (the ingest node flushed, or a column widened, since it was planned): the node
/// that planned it still holds them, so the query runs again there at once.
pub const MOVED_ON: &str = "fresh rows moved on";

/// Which rows a [`BufferScanExec`] reads and how, as it travels between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slice {
    dataset: DatasetName,
    at: FreshPosition,
    from: u64,
    to: u64,
    projection: Option<Vec<usize>>,
    limit: Option<usize>,
    /// Bytes of the rows in memory, as the planning node held them (to size tasks).
    bytes: usize,
}

/// A scan of rows `[from, to)` of a query node's copy of one dataset's fresh events, cast to
/// the table's schema (see the module's note).
#[derive(Debug, Clone)]
pub struct BufferScanExec {
    slice: Slice,
    table_schema: SchemaRef,
    /// On the planning node: the snapshot's rows `[0, at.rows)`, already in the table's schema.
    held: Option<Arc<Vec<RecordBatch>>>,
    /// On another node: where the rows come from.
    reader: Option<Arc<dyn FreshReader>>,
    properties: Arc<PlanProperties>,
}

impl BufferScanExec {
    /// A scan of every row of a snapshot's copy, `held` in the table's schema.
    pub(crate) fn new(
        dataset: DatasetName,
        at: FreshPosition,
        held: Arc<Vec<RecordBatch>>,
        table_schema: SchemaRef,
        projection: Option<Vec<usize>>,
        limit: Option<usize>,
    ) -> Result<BufferScanExec> {
        let slice = Slice {
            dataset,
            from: 0,
            to: at.rows,
            at,
            projection,
            limit,
            bytes: held.iter().map(batch_bytes).sum(),
        };
        BufferScanExec::of(slice, table_schema, Some(held), None)
    }

    /// The scan of `slice` over a table of `table_schema`.
    fn of(
        slice: Slice,
        table_schema: SchemaRef,
        held: Option<Arc<Vec<RecordBatch>>>,
        reader: Option<Arc<dyn FreshReader>>,
    ) -> Result<BufferScanExec> {
        let schema = match &slice.projection {
            Some(p) => Arc::new(table_schema.project(p)?),
            None => table_schema.clone(),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(BufferScanExec {
            slice,
            table_schema,
            held,
            reader,
            properties,
        })
    }

    /// Tasks worth running for these rows when a task should read about `bytes_per_task`.
    pub(crate) fn tasks_for(&self, bytes_per_task: usize) -> usize {
        let rows = (self.slice.to - self.slice.from) as usize;
        self.slice.bytes.div_ceil(bytes_per_task.max(1)).clamp(1, rows.max(1))
    }

    /// The same scan cut into `n` consecutive slices of rows, one per task.
    pub(crate) fn split(&self, n: usize) -> Vec<Arc<dyn ExecutionPlan>> {
        let whole = &self.slice;
        let rows = whole.to - whole.from;
        let n = n.max(1) as u64;
        (0..n)
            .map(|i| {
                let mut part = self.clone();
                part.slice.from = whole.from + rows * i / n;
                part.slice.to = whole.from + rows * (i + 1) / n;
                part.slice.bytes = whole.bytes / n as usize;
                Arc::new(part) as Arc<dyn ExecutionPlan>
            })
            .collect()
    }

    /// Fails when a column of `batch` (read on another node than the planner) is wider than the
    /// table's type for it: the ingest node widened it since the plan was made, and casting its
    /// values back would not give the planner's answer.
    fn check_not_wider(&self, batch: &RecordBatch) -> Result<()> {
        use sonde_storage::schema::column_type_of;
        for field in batch.schema().fields() {
            let Ok(table) = self.table_schema.field_with_name(field.name()) else {
                continue;
            };
            if let (Some(got), Some(want)) = (column_type_of(field.data_type()), column_type_of(table.data_type()))
                && got.widen(want) != want
            {
                return Err(DataFusionError::Execution(format!(
                    "{MOVED_ON}: dataset {}: column {} is {} on the ingest node, {} in the plan",
                    self.slice.dataset,
                    field.name(),
                    got.name(),
                    want.name()
                )));
            }
        }
        Ok(())
    }

    /// The rows `[from, to)`, projected, at most `limit` of them.
    fn finish(&self, rows: impl IntoIterator<Item = RecordBatch>) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        let mut left = self.slice.limit.unwrap_or(usize::MAX);
        for b in rows {
            if left == 0 {
                break;
            }
            let b = if b.num_rows() > left { b.slice(0, left) } else { b };
            left -= b.num_rows();
            out.push(match &self.slice.projection {
                Some(p) => b.project(p)?,
                None => b,
            });
        }
        Ok(out)
    }
}

/// `batches` cut to their rows `[from, to)`, counting from the first.
fn slice_rows(batches: &[RecordBatch], from: u64, to: u64) -> Vec<RecordBatch> {
    sonde_storage::source::rows_between(batches, from, to, usize::MAX)
}

impl DisplayAs for BufferScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let s = &self.slice;
        write!(
            f,
            "BufferScanExec: dataset={}, rows={}..{} after={} on {}@{}",
            s.dataset, s.from, s.to, s.at.after.0, s.at.owner.node, s.at.owner.epoch
        )?;
        if let Some(l) = s.limit {
            write!(f, ", limit={l}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for BufferScanExec {
    fn name(&self) -> &str {
        "BufferScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        match children.is_empty() {
            true => Ok(self),
            false => Err(DataFusionError::Internal("BufferScanExec has no children".into())),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<datafusion::execution::SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "BufferScanExec has one partition, not {partition}"
            )));
        }
        let schema = self.schema();
        if let Some(held) = &self.held {
            let rows = self.finish(slice_rows(held, self.slice.from, self.slice.to))?;
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::iter(rows.into_iter().map(Ok)),
            )));
        }
        let reader = self.reader.clone().ok_or_else(|| {
            DataFusionError::Internal("a BufferScanExec decoded without a reader of fresh rows".into())
        })?;
        let scan = self.clone();
        let reservation = MemoryConsumer::new("BufferScanExec").register(context.memory_pool());
        let rows = async move {
            // The node that planned the scan held these rows within its own bound, so they are
            // counted once read, not capped before.
            let read = reader
                .read(
                    &scan.slice.dataset,
                    &scan.slice.at,
                    scan.slice.from,
                    scan.slice.to,
                    usize::MAX,
                )
                .await
                .map_err(|e| {
                    DataFusionError::Execution(format!("fresh rows of dataset {}: {e}", scan.slice.dataset))
                })?;
            reservation.try_grow(read.fetched_bytes)?;
            let raw = read.batches;
            let got: u64 = raw.iter().map(|b| b.num_rows() as u64).sum();
            let want = scan.slice.to - scan.slice.from;
            if got != want {
                return Err(DataFusionError::Execution(format!(
                    "{MOVED_ON}: dataset {}: {got} rows read where the plan names {}",
                    scan.slice.dataset, want
                )));
            }
            let mut adapted = Vec::with_capacity(raw.len());
            for b in raw {
                scan.check_not_wider(&b)?;
                adapted.push(
                    sonde_storage::schema::adapt_to_schema(&b, &scan.table_schema)
                        .map_err(|e| DataFusionError::External(Box::new(e)))?,
                );
            }
            let rows = scan.finish(adapted)?;
            // The reservation lives as long as the rows are being handed out.
            Ok(futures::stream::iter(rows.into_iter().map(move |b| {
                let _held = &reservation;
                Ok(b)
            })))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(rows).try_flatten().boxed(),
        )))
    }
}

/// The version of [`BufferScanCodec`]'s encoding, part of [`crate::distributed::plan_version`]:
/// raise it whenever a change to [`Slice`] or to the encoding would make another build misread
/// a plan.
pub const ENCODING_VERSION: u32 = 1;

/// Encodes a [`BufferScanExec`] as its [`Slice`] in JSON (the table schema as an Arrow IPC
/// schema message after it), and decodes it with this node's [`FreshReader`]. Registered on every
/// coordinating session and every worker of a cluster.
#[derive(Debug, Clone)]
pub struct BufferScanCodec {
    reader: Arc<dyn FreshReader>,
}

impl BufferScanCodec {
    /// A codec whose decoded scans read through `reader`.
    pub fn new(reader: Arc<dyn FreshReader>) -> BufferScanCodec {
        BufferScanCodec { reader }
    }
}

impl PhysicalExtensionCodec for BufferScanCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        _inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let bad = |what: String| DataFusionError::Internal(format!("a BufferScanExec that cannot be read: {what}"));
        let len = buf.get(..4).ok_or_else(|| bad("too short".into()))?;
        let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
        let head = buf.get(4..4 + len).ok_or_else(|| bad("too short".into()))?;
        let slice: Slice = serde_json::from_slice(head).map_err(|e| bad(e.to_string()))?;
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(&buf[4 + len..]), None)?;
        Ok(Arc::new(BufferScanExec::of(
            slice,
            reader.schema(),
            None,
            Some(self.reader.clone()),
        )?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some(scan) = node.downcast_ref::<BufferScanExec>() else {
            return Err(DataFusionError::NotImplemented(format!(
                "the buffer-scan codec encodes BufferScanExec only, not {}",
                node.name()
            )));
        };
        let head = serde_json::to_vec(&scan.slice).map_err(|e| DataFusionError::External(Box::new(e)))?;
        buf.extend_from_slice(&(head.len() as u32).to_le_bytes());
        buf.extend_from_slice(&head);
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut *buf, &scan.table_schema)?;
        writer.finish()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use sonde_storage::Lsn;
    use sonde_storage::source::Owner;
    use std::sync::Mutex;

    /// A scan of all of `at`'s rows as another node than the planner runs it, through `reader`.
    fn read_through(at: FreshPosition, table_schema: SchemaRef, reader: Arc<dyn FreshReader>) -> BufferScanExec {
        let slice = Slice {
            dataset: DatasetName::new("d").unwrap(),
            from: 0,
            to: at.rows,
            at,
            projection: None,
            limit: None,
            bytes: 0,
        };
        BufferScanExec::of(slice, table_schema, None, Some(reader)).unwrap()
    }

    /// A reader that answers from fixed batches and records what it was asked.
    #[derive(Debug)]
    struct Fixed {
        rows: Vec<RecordBatch>,
        asked: Mutex<Vec<(u64, u64)>>,
    }

    #[async_trait]
    impl FreshReader for Fixed {
        async fn read(
            &self,
            _d: &DatasetName,
            _at: &FreshPosition,
            from: u64,
            to: u64,
            _max: usize,
        ) -> Result<FreshRead, FreshError> {
            self.asked.lock().unwrap().push((from, to));
            Ok(FreshRead {
                batches: slice_rows(&self.rows, from, to),
                fetched_bytes: 0,
            })
        }
    }

    fn batch(lo: i64, hi: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let n: Vec<i64> = (lo..hi).collect();
        let s: Vec<String> = n.iter().map(|i| format!("v{i}")).collect();
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(n)), Arc::new(StringArray::from(s))],
        )
        .unwrap()
    }

    async fn run(plan: Arc<dyn ExecutionPlan>) -> Vec<i64> {
        let ctx = Arc::new(TaskContext::default());
        let batches: Vec<RecordBatch> = plan.execute(0, ctx).unwrap().try_collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let col = b
                    .column_by_name("n")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                col.values().to_vec()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_scan_travels_as_its_position_and_its_slices_read_every_row_once() {
        let rows = vec![batch(0, 7), batch(7, 8), batch(8, 20)];
        let schema = rows[0].schema();
        let at = FreshPosition {
            owner: Owner {
                node: "ingest-1".into(),
                epoch: 3,
            },
            after: Lsn(41),
            rows: 20,
        };
        let scan = BufferScanExec::new(
            DatasetName::new("d").unwrap(),
            at,
            Arc::new(rows.clone()),
            schema,
            None,
            None,
        )
        .unwrap();
        assert_eq!(run(Arc::new(scan.clone())).await, (0..20).collect::<Vec<_>>());

        let reader = Arc::new(Fixed {
            rows,
            asked: Mutex::default(),
        });
        let codec = BufferScanCodec::new(reader.clone());
        let converter = datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {};
        let mut all = Vec::new();
        for part in scan.split(3) {
            let mut buf = Vec::new();
            codec.try_encode(part.clone(), &mut buf, &converter).unwrap();
            assert!(
                buf.len() < 1024,
                "a position and a schema, not rows: {} bytes",
                buf.len()
            );
            let decoded = codec
                .try_decode(&buf, &[], &TaskContext::default(), &converter)
                .unwrap();
            assert_eq!(decoded.schema(), part.schema());
            all.extend(run(decoded).await);
        }
        assert_eq!(
            all,
            (0..20).collect::<Vec<_>>(),
            "three slices, every row once, in order"
        );
        assert_eq!(*reader.asked.lock().unwrap(), vec![(0, 6), (6, 13), (13, 20)]);

        // A projection and a limit travel too.
        let narrow = BufferScanExec::new(
            DatasetName::new("d").unwrap(),
            scan.slice.at.clone(),
            scan.held.clone().unwrap(),
            scan.table_schema.clone(),
            Some(vec![0]),
            Some(9),
        )
        .unwrap();
        let mut buf = Vec::new();
        codec.try_encode(Arc::new(narrow), &mut buf, &converter).unwrap();
        let decoded = codec
            .try_decode(&buf, &[], &TaskContext::default(), &converter)
            .unwrap();
        assert_eq!(decoded.schema().fields().len(), 1);
        assert_eq!(run(decoded).await, (0..9).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_reader_that_answers_other_rows_than_named_fails_the_task() {
        let rows = vec![batch(0, 5)];
        let at = FreshPosition {
            owner: Owner {
                node: "ingest-1".into(),
                epoch: 1,
            },
            after: Lsn(0),
            rows: 8,
        };
        let schema = rows[0].schema();
        let reader = Arc::new(Fixed {
            rows,
            asked: Mutex::default(),
        });
        let scan = read_through(at, schema, reader);
        let ctx = Arc::new(TaskContext::default());
        let got: Result<Vec<RecordBatch>> = scan.execute(0, ctx).unwrap().try_collect().await;
        let e = got.unwrap_err().to_string();
        assert!(e.contains("5 rows read where the plan names 8"), "{e}");
        assert!(e.contains(MOVED_ON), "the query runs again where it was planned: {e}");
    }

    #[tokio::test]
    async fn a_column_widened_on_the_ingest_node_since_planning_fails_the_task() {
        // Planned when `n` was an int; the ingest node has since seen a float in it.
        let planned = batch(0, 3).schema();
        let widened = Arc::new(Schema::new(vec![Field::new("n", DataType::Float64, true)]));
        let rows = vec![
            RecordBatch::try_new(
                widened,
                vec![Arc::new(arrow::array::Float64Array::from(vec![0.5, 1.0, 2.0]))],
            )
            .unwrap(),
        ];
        let at = FreshPosition {
            owner: Owner {
                node: "ingest-1".into(),
                epoch: 1,
            },
            after: Lsn(0),
            rows: 3,
        };
        let reader = Arc::new(Fixed {
            rows,
            asked: Mutex::default(),
        });
        let scan = read_through(at, planned, reader);
        let got: Result<Vec<RecordBatch>> = scan
            .execute(0, Arc::new(TaskContext::default()))
            .unwrap()
            .try_collect()
            .await;
        let e = got.unwrap_err().to_string();
        assert!(
            e.contains(MOVED_ON) && e.contains("column n is float on the ingest node, int in the plan"),
            "{e}"
        );
    }
}

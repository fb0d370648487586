//! The shape of distributed plans over Sonde's tables, pinned as text (what `EXPLAIN` answers
//! on a query node of a cluster): how datafusion-distributed cuts a scan of segments and fresh
//! rows into stages and tasks over four workers. Planning needs no worker to be up, so these
//! plans are made without any. Each plan is compared with its text in `plan_shapes/`: when
//! datafusion-distributed is upgraded, a changed shape shows here first, and the new text is
//! written with `SONDE_BLESS=1 cargo test -p sonde-query plan_shape` and read before it is
//! committed.

use crate::buffer_scan::{FreshError, FreshRead, FreshReader};
use crate::distributed::ClusterConfig;
use crate::{QueryEngine, SqlFormat};
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{Field, Schema};
use async_trait::async_trait;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use serde_json::Value;
use sonde_model::{ColumnType, DatasetName};
use sonde_storage::Lsn;
use sonde_storage::schema::{arrow_type, timestamp_type};
use sonde_storage::source::{
    ColumnEntry, DatasetInfo, DatasetSnapshot, DatasetSource, FreshPosition, IndexCache, Owner, SegmentId, SegmentMeta,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
const MIB: u64 = 1 << 20;

/// One dataset of `segments` segments of 48 MiB each, plus `fresh` rows copied from ingest
/// node `ing-1` (none: no fresh rows).
#[derive(Debug)]
struct Planned {
    segments: Vec<Arc<SegmentMeta>>,
    fresh: Vec<RecordBatch>,
    columns: BTreeMap<String, ColumnEntry>,
    store: Arc<InMemory>,
    index: Arc<IndexCache>,
}

impl Planned {
    fn new(segments: u64, fresh: usize) -> Planned {
        let segments = (0..segments)
            .map(|i| {
                Arc::new(SegmentMeta {
                    id: SegmentId(i + 1),
                    path: format!("datasets/d/seg-{:04}.parquet", i + 1),
                    rows: 1_000_000,
                    bytes: 48 * MIB,
                    raw_bytes: 400 * MIB,
                    min_ts_us: T0 + i as i64 * 60_000_000,
                    max_ts_us: T0 + (i as i64 + 1) * 60_000_000 - 1,
                    min_lsn: Lsn(i * 10 + 1),
                    max_lsn: Lsn(i * 10 + 10),
                    columns: vec![
                        ("service".into(), ColumnType::String),
                        ("duration_ms".into(), ColumnType::Float),
                    ],
                    distinct_columns: Vec::new(),
                })
            })
            .collect();
        let entry = |ty| ColumnEntry {
            ty,
            first_seen_us: T0,
            last_seen_us: T0 + 3_600_000_000,
        };
        let fresh = (fresh > 0).then(|| batch(fresh)).into_iter().collect();
        Planned {
            segments,
            fresh,
            columns: [
                ("service".to_string(), entry(ColumnType::String)),
                ("duration_ms".to_string(), entry(ColumnType::Float)),
            ]
            .into_iter()
            .collect(),
            store: Arc::new(InMemory::new()),
            index: Arc::new(IndexCache::new(vec!["trace.trace_id".into()], 1 << 20)),
        }
    }
}

fn batch(n: usize) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("timestamp", timestamp_type(), false),
        Field::new("samplerate", arrow_type(ColumnType::Int), false),
        Field::new("service", arrow_type(ColumnType::String), true),
        Field::new("duration_ms", arrow_type(ColumnType::Float), true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from_iter_values((0..n as i64).map(|i| T0 + i)).with_timezone("UTC")),
        Arc::new(Int64Array::from(vec![1; n])),
        Arc::new(StringArray::from_iter_values((0..n).map(|i| ["api", "db"][i % 2]))),
        Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

impl DatasetSource for Planned {
    fn datasets(&self) -> Vec<DatasetInfo> {
        vec![DatasetInfo {
            name: DatasetName::new("d").unwrap(),
            segment_rows: self.segments.iter().map(|s| s.rows).sum(),
            buffered_rows: self.fresh.iter().map(|b| b.num_rows() as u64).sum(),
            segments: self.segments.len(),
            segment_bytes: self.segments.iter().map(|s| s.bytes).sum(),
            time_bounds: Some((T0, T0 + 3_600_000_000)),
        }]
    }
    fn snapshot(&self, dataset: &DatasetName) -> Option<DatasetSnapshot> {
        let rows: u64 = self.fresh.iter().map(|b| b.num_rows() as u64).sum();
        (dataset.as_str() == "d").then(|| DatasetSnapshot {
            dataset: dataset.clone(),
            segments: self.segments.clone(),
            buffered: self.fresh.clone(),
            columns: self.columns.clone(),
            fresh: (rows > 0).then(|| FreshPosition {
                owner: Owner {
                    node: "ing-1".into(),
                    epoch: 4,
                },
                after: Lsn(self.segments.len() as u64 * 10),
                rows,
            }),
        })
    }
    fn segment_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }
    fn segment_index(&self) -> Arc<IndexCache> {
        self.index.clone()
    }
}

/// Planning never reads fresh rows.
#[derive(Debug)]
struct Unread;

#[async_trait]
impl FreshReader for Unread {
    async fn read(
        &self,
        _: &DatasetName,
        _: &FreshPosition,
        _: u64,
        _: u64,
        _: usize,
    ) -> Result<FreshRead, FreshError> {
        Err(FreshError::Unreachable("planning reads no rows".into()))
    }
}

/// The distributed plan of `sql` over `source` on node w1 of workers w1..w4, a partition of a
/// task being about `bytes_per_partition` bytes.
async fn explain(source: Planned, sql: &str, bytes_per_partition: usize) -> String {
    let worker = |i: usize| Url::parse(&format!("http://w{i}.test:4317")).unwrap();
    let engine = QueryEngine::new(Arc::new(source), Default::default())
        .unwrap()
        .with_fresh_reader(Arc::new(Unread))
        .with_cluster(ClusterConfig {
            self_url: worker(1),
            key: None,
            bytes_per_partition,
            max_message_bytes: 64 << 20,
            leave_out_for: Duration::from_secs(4),
        })
        .unwrap();
    engine.peers().unwrap().set((1..=4).map(worker).collect());
    let visible = |_: &str| true;
    let out = engine
        .sql(
            &format!("EXPLAIN {sql}"),
            SqlFormat::Json,
            &visible,
            &Default::default(),
            &engine.request(),
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["rows"][1]["plan_type"], "distributed_plan", "{v}");
    v["rows"][1]["plan"].as_str().unwrap().to_string()
}

/// Compares `plan` with `plan_shapes/<name>.txt` (or writes it there under `SONDE_BLESS=1`).
fn assert_shape(name: &str, plan: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("src/plan_shapes/{name}.txt"));
    let got: String = plan.lines().map(|l| format!("{}\n", l.trim_end())).collect();
    if std::env::var_os("SONDE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        got == want,
        "the distributed plan changed from {}:\n--- want\n{want}\n--- got\n{got}",
        path.display()
    );
}

const BY_SERVICE: &str = r#"SELECT service, COUNT(*) AS n, SUM(duration_ms) AS total FROM d GROUP BY service"#;

/// 12 segments of 48 MiB at 16 MiB a partition and 2 partitions a task want 18 tasks; four
/// workers give four, each reading its quarter of the bytes (segments cut in byte ranges), a
/// partial aggregate shuffled by group to a final one.
#[tokio::test]
async fn segments_alone_are_cut_into_one_task_per_worker_and_shuffled_by_group() {
    let plan = explain(Planned::new(12, 0), BY_SERVICE, 16 << 20).await;
    assert!(!plan.contains("BufferScanExec"), "{plan}");
    assert_shape("segments_alone", &plan);
}

/// The union of 12 segments and 4,000 fresh rows runs in every task, each task reading a
/// quarter of the segments' bytes and a quarter of the fresh rows, which are named by their
/// position (no rows inside the plan).
#[tokio::test]
async fn fresh_rows_beside_segments_are_split_with_them_in_every_task() {
    let plan = explain(Planned::new(12, 4000), BY_SERVICE, 16 << 20).await;
    assert!(!plan.contains("partition_sizes"), "no rows inside the plan: {plan}");
    assert_shape("segments_and_fresh", &plan);
}

/// 400,000 fresh rows (about 11 MiB in memory) at 1 MiB × 2 partitions a task want six tasks;
/// four workers: four slices of 100,000 rows, which cover the rows once, in order.
#[tokio::test]
async fn fresh_rows_alone_are_cut_into_slices_one_per_task() {
    let plan = explain(Planned::new(0, 400_000), BY_SERVICE, 1 << 20).await;
    assert_shape("fresh_alone", &plan);
}

/// A union whose other branch reads nothing (here no segment is in its time range) is still
/// spread: the empty scan runs in every task instead of holding the stage to one.
#[tokio::test]
async fn an_empty_branch_does_not_hold_a_union_to_one_task() {
    let sql = "SELECT COUNT(*) AS n FROM (SELECT service FROM d UNION ALL \
               SELECT service FROM d WHERE \"timestamp\" > TIMESTAMP '2030-01-01T00:00:00Z')";
    let plan = explain(Planned::new(12, 0), sql, 16 << 20).await;
    assert!(plan.contains("EmptyExec"), "{plan}");
    assert_shape("union_with_empty_branch", &plan);
}

/// A join with rows written in the query (a `VALUES` list, held in memory like a trace-id
/// lookup's fresh rows): those rows are either collected whole by a join running in one task,
/// or shuffled by key from the one task that holds them, never read by one task of many that
/// each need them all.
#[tokio::test]
async fn a_join_with_values_keeps_their_rows_where_every_task_sees_them() {
    let sql = "SELECT v.team, COUNT(*) AS n FROM d JOIN (VALUES ('api', 'edge'), ('db', 'core')) AS v(svc, team) \
               ON d.service = v.svc GROUP BY v.team";
    let plan = explain(Planned::new(12, 0), sql, 16 << 20).await;
    assert_shape("join_with_values", &plan);
}

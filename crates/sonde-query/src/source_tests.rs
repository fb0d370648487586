//! The engine over a source that is not the storage: datasets held in memory as Arrow batches,
//! as a query node would hold batches fetched from another process. Answers are checked
//! against sums done by hand over the same rows.

use crate::{QueryEngine, QuerySpec, SqlFormat};
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{Field, Schema};
use object_store::ObjectStore;
use object_store::memory::InMemory;
use serde_json::{Value, json};
use sonde_model::{ColumnType, DatasetName};
use sonde_storage::schema::{arrow_type, timestamp_type};
use sonde_storage::source::{ColumnEntry, DatasetInfo, DatasetSnapshot, DatasetSource, IndexCache};
use std::collections::BTreeMap;
use std::sync::Arc;

const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

/// One dataset, all of it "buffered": no segments, no object store contents.
#[derive(Debug)]
struct InMemorySource {
    name: DatasetName,
    batches: Vec<RecordBatch>,
    columns: BTreeMap<String, ColumnEntry>,
    store: Arc<InMemory>,
    index: Arc<IndexCache>,
}

impl DatasetSource for InMemorySource {
    fn datasets(&self) -> Vec<DatasetInfo> {
        vec![DatasetInfo {
            name: self.name.clone(),
            segment_rows: 0,
            buffered_rows: self.batches.iter().map(|b| b.num_rows() as u64).sum(),
            segments: 0,
            segment_bytes: 0,
            time_bounds: Some((T0, T0 + 10_000_000)),
        }]
    }
    fn snapshot(&self, dataset: &DatasetName) -> Option<DatasetSnapshot> {
        (dataset == &self.name).then(|| DatasetSnapshot {
            dataset: self.name.clone(),
            segments: Vec::new(),
            buffered: self.batches.clone(),
            columns: self.columns.clone(),
            fresh: None,
        })
    }
    fn segment_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }
    fn segment_index(&self) -> Arc<IndexCache> {
        self.index.clone()
    }
}

/// A batch of events at `T0 + i s` with the given services and (optionally) durations; batches
/// may have different columns, as buffers of one dataset do.
fn batch(start: i64, services: &[&str], durations: Option<&[f64]>) -> RecordBatch {
    let n = services.len();
    let mut fields = vec![
        Field::new("timestamp", timestamp_type(), false),
        Field::new("samplerate", arrow_type(ColumnType::Int), false),
        Field::new("service", arrow_type(ColumnType::String), true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::from_iter_values((0..n as i64).map(|i| T0 + (start + i) * 1_000_000))
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from(vec![1; n])),
        Arc::new(StringArray::from(services.to_vec())),
    ];
    if let Some(d) = durations {
        fields.push(Field::new("duration_ms", arrow_type(ColumnType::Float), true));
        columns.push(Arc::new(Float64Array::from(d.to_vec())));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

fn engine() -> QueryEngine {
    let entry = |ty| ColumnEntry {
        ty,
        first_seen_us: T0,
        last_seen_us: T0 + 10_000_000,
    };
    let source = InMemorySource {
        name: DatasetName::new("mem").unwrap(),
        batches: vec![
            batch(0, &["api", "db", "api"], Some(&[10.0, 2.5, 30.0])),
            // A later buffer without the duration column.
            batch(3, &["db", "web"], None),
        ],
        columns: [
            ("service".to_string(), entry(ColumnType::String)),
            ("duration_ms".to_string(), entry(ColumnType::Float)),
        ]
        .into_iter()
        .collect(),
        store: Arc::new(InMemory::new()),
        index: Arc::new(IndexCache::new(vec!["trace.trace_id".into()], 1 << 20)),
    };
    QueryEngine::new(Arc::new(source), Default::default()).unwrap()
}

#[tokio::test]
async fn breakdowns_and_sql_over_an_in_memory_source() {
    let engine = engine();
    let ds = DatasetName::new("mem").unwrap();
    let spec: QuerySpec = serde_json::from_value(json!({
        "calculations": [{"op": "COUNT"}, {"op": "SUM", "column": "duration_ms"}],
        "breakdowns": ["service"],
        "orders": [{"column": "service", "order": "ascending"}],
        "start_time": T0 / 1_000_000, "end_time": T0 / 1_000_000 + 60,
    }))
    .unwrap();
    let r = engine
        .query(&ds, &spec, &Default::default(), &engine.request())
        .await
        .unwrap();
    let rows: Vec<(Value, Value, Value)> = r
        .data
        .results
        .iter()
        .map(|g| {
            (
                g["data"]["service"].clone(),
                g["data"]["COUNT"].clone(),
                g["data"]["SUM(duration_ms)"].clone(),
            )
        })
        .collect();
    // By hand: api = 10 + 30 over two events; db = 2.5 and one event without a duration; web
    // has no duration at all.
    assert_eq!(
        rows,
        vec![
            (json!("api"), json!(2), json!(40.0)),
            (json!("db"), json!(2), json!(2.5)),
            (json!("web"), json!(1), Value::Null),
        ]
    );

    let visible = |_: &str| true;
    let out = engine
        .sql(
            "SELECT count(*) AS n FROM mem WHERE duration_ms IS NULL",
            SqlFormat::Json,
            &visible,
            &Default::default(),
            &engine.request(),
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["rows"], json!([{"n": 2}]), "{v}");

    let e = engine
        .query(
            &DatasetName::new("other").unwrap(),
            &spec,
            &Default::default(),
            &engine.request(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("other"), "{e}");
}

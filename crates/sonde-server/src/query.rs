//! Query handlers: Honeycomb query specs, raw events, SQL, and Honeycomb's query-data flow
//! (`/1/queries` → `/1/query_results`).

use crate::auth::{Caller, Scope};
use crate::{AppState, error::ApiError};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sonde_model::DatasetName;
use sonde_query::{BubbleUpRequest, EventsRequest, QueryError, QuerySpec};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let status = match &e {
            QueryError::NoSuchDataset(_) => StatusCode::NOT_FOUND,
            QueryError::Invalid(_) | QueryError::Sql(_) | QueryError::Memory { .. } => StatusCode::BAD_REQUEST,
            QueryError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            QueryError::Internal(_) => {
                tracing::error!(error = %e, "query failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError {
            status,
            message: e.to_string(),
            retry_after: None,
        }
    }
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid {what}: {e}")))
}

/// `POST /api/query/{dataset}`: a Honeycomb query specification.
pub(crate) async fn query(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let ds = DatasetName::new(&raw)?;
    let _slot = state.begin_query(&caller, Some(&ds)).await?;
    let spec: QuerySpec = parse_body(&body, "query specification")?;
    let r = state.engine.query(&ds, &spec).await?;
    Ok(Json(json!({ "data": r.data, "meta": r.meta })))
}

/// `POST /api/events/{dataset}`: raw events, newest first.
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let ds = DatasetName::new(&raw)?;
    let _slot = state.begin_query(&caller, Some(&ds)).await?;
    let req: EventsRequest = if body.is_empty() {
        EventsRequest::default()
    } else {
        parse_body(&body, "events request")?
    };
    Ok(Json(state.engine.events(&ds, &req).await?))
}

#[derive(Deserialize)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    format: Option<String>,
}

/// `POST /api/sql`: `{"sql": "…", "format": "json" | "csv" | "arrow"}`, read-only.
pub(crate) async fn sql(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let _slot = state.begin_query(&caller, None).await?;
    let req: SqlRequest = parse_body(&body, "SQL request")?;
    let started = std::time::Instant::now();
    // A key limited to some datasets sees only their tables: the others do not exist for it.
    let (schema, batches) = state.engine.sql(&req.sql, &|ds| caller.covers(ds)).await?;
    match req.format.as_deref().unwrap_or("json") {
        "json" => {
            let columns: Vec<Value> = schema
                .fields()
                .iter()
                .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
                .collect();
            let rows = sonde_query::json::rows(&batches);
            let n = rows.len();
            Ok(Json(json!({
                "columns": columns,
                "rows": rows,
                "meta": {"rows": n, "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0}
            }))
            .into_response())
        }
        "csv" => {
            let mut out = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
                for b in &batches {
                    w.write(b).map_err(|e| ApiError::internal(e.to_string()))?;
                }
            }
            Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], Body::from(out)).into_response())
        }
        "arrow" => {
            let mut out = Vec::new();
            {
                let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                for b in &batches {
                    w.write(b).map_err(|e| ApiError::internal(e.to_string()))?;
                }
                w.finish().map_err(|e| ApiError::internal(e.to_string()))?;
            }
            Ok((
                [(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
                Body::from(out),
            )
                .into_response())
        }
        other => Err(ApiError::bad_request(format!(
            "unknown format {other:?}: use json, csv or arrow"
        ))),
    }
}

/// Saved queries and query results of Honeycomb's query-data API, bounded (oldest dropped).
#[derive(Debug, Default)]
pub struct SavedQueries {
    inner: Mutex<Saved>,
    next: AtomicU64,
}

#[derive(Debug, Default)]
struct Saved {
    specs: HashMap<String, (DatasetName, QuerySpec)>,
    results: HashMap<String, (DatasetName, Value)>,
    order: VecDeque<String>,
}

const MAX_SAVED: usize = 1000;

impl SavedQueries {
    fn id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:x}{:04x}", sonde_model::time::now_us(), n & 0xffff)
    }

    fn remember(&self, id: &str, f: impl FnOnce(&mut Saved)) {
        let mut s = self.inner.lock().unwrap();
        f(&mut s);
        s.order.push_back(id.to_string());
        while s.order.len() > MAX_SAVED {
            if let Some(old) = s.order.pop_front() {
                s.specs.remove(&old);
                s.results.remove(&old);
            }
        }
    }
}

/// `POST /1/queries/{dataset}`: saves a query spec, answers its id.
pub(crate) async fn create_query(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let ds = DatasetName::new(&raw)?;
    let _slot = state.begin_query(&caller, Some(&ds)).await?;
    let spec: QuerySpec = parse_body(&body, "query specification")?;
    // Validate now, so a bad spec fails here rather than when its results are asked for.
    let mut out = serde_json::to_value(&spec).unwrap_or_default();
    state.engine.validate(&ds, &spec)?;
    let id = state.saved.id();
    state.saved.remember(&id, |s| {
        s.specs.insert(id.clone(), (ds, spec));
    });
    out["id"] = json!(id);
    Ok(Json(out))
}

#[derive(Deserialize)]
struct ResultRequest {
    query_id: String,
}

/// `POST /1/query_results/{dataset}`: runs a saved query; the result is complete at once.
pub(crate) async fn create_result(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ds = DatasetName::new(&raw)?;
    let _slot = state.begin_query(&caller, Some(&ds)).await?;
    let req: ResultRequest = parse_body(&body, "query result request")?;
    let saved = state.saved.inner.lock().unwrap().specs.get(&req.query_id).cloned();
    let (qds, spec) = saved.ok_or_else(|| ApiError::not_found(format!("query {:?} does not exist", req.query_id)))?;
    if qds != ds {
        return Err(ApiError::bad_request(format!(
            "query {:?} belongs to dataset {qds}",
            req.query_id
        )));
    }
    let r = state.engine.query(&ds, &spec).await?;
    let id = state.saved.id();
    let answer = json!({
        "id": id,
        "query_id": req.query_id,
        "complete": true,
        "data": {"series": r.data["series"], "results": r.data["results"]},
        "meta": r.meta,
        "links": {"query_url": format!("/?dataset={ds}&query={}", req.query_id)},
    });
    state.saved.remember(&id, |s| {
        s.results.insert(id.clone(), (ds.clone(), answer.clone()));
    });
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `GET /1/query_results/{dataset}/{id}`.
pub(crate) async fn get_result(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((raw, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let ds = DatasetName::new(&raw)?;
    state.access.require(&caller, Scope::Query, Some(ds.as_str()))?;
    let r = state.saved.inner.lock().unwrap().results.get(&id).cloned();
    // A result is found only under the dataset it was made for.
    r.filter(|(rds, _)| *rds == ds)
        .map(|(_, v)| Json(v))
        .ok_or_else(|| ApiError::not_found(format!("query result {id:?} does not exist")))
}

/// `POST /api/bubbleup/{dataset}`: selection vs baseline across every column.
pub(crate) async fn bubbleup(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let ds = DatasetName::new(&raw)?;
    let _slot = state.begin_query(&caller, Some(&ds)).await?;
    let req: BubbleUpRequest = parse_body(&body, "BubbleUp request")?;
    Ok(Json(state.engine.bubbleup(&ds, &req).await?))
}

/// `GET /api/traces/{dataset}/{trace_id}`: every span of the trace, in every dataset.
pub(crate) async fn trace(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((raw, trace_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let ds = DatasetName::new(&raw)?;
    let _slot = state.begin_query(&caller, Some(&ds)).await?;
    if state.storage.dataset_info(&ds).is_none() {
        return Err(ApiError::not_found(format!("dataset {ds:?} does not exist")));
    }
    if trace_id.is_empty() || trace_id.len() > 256 {
        return Err(ApiError::bad_request("trace id must be 1 to 256 characters"));
    }
    // Spans are searched in every dataset the caller may read.
    let v = state.engine.trace(&trace_id, &|d| caller.covers(d)).await?;
    if v["spans"].as_array().is_none_or(|s| s.is_empty()) {
        return Err(ApiError::not_found(format!(
            "no spans with trace.trace_id = {trace_id:?}"
        )));
    }
    Ok(Json(v))
}

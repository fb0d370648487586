//! Query handlers: Honeycomb query specs, raw events, SQL, and Honeycomb's query-data flow
//! (`/1/queries` → `/1/query_results`).

use crate::extract::{Authorized, Describe, Query, QueryCall, Querying};
use crate::{AppState, error::ApiError};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sonde_model::DatasetName;
use sonde_query::{BubbleUpRequest, EventsRequest, QueryError, QuerySpec, RequestBudget, SqlFormat};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let status = match &e {
            QueryError::NoSuchDataset(_) | QueryError::NotFound(_) => StatusCode::NOT_FOUND,
            QueryError::Invalid(_)
            | QueryError::Sql(_)
            | QueryError::Memory { .. }
            | QueryError::AnswerTooLarge { .. } => StatusCode::BAD_REQUEST,
            // Other requests hold the memory: the same request succeeds once they are done.
            QueryError::Overloaded(_) => {
                return ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: e.to_string(),
                    retry_after: Some(1),
                    position: None,
                };
            }
            QueryError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            QueryError::Internal(_) => {
                tracing::error!(error = %e, "query failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let position = match &e {
            QueryError::Invalid(s) => s.position,
            _ => None,
        };
        ApiError {
            status,
            message: e.to_string(),
            retry_after: None,
            position,
        }
    }
}

/// An answer already encoded within its request's budget; the budget is held until the body
/// has been handed to the connection, so the bytes stay counted while they wait to be sent.
fn answer(body: Vec<u8>, content_type: &'static str, budget: RequestBudget) -> Response {
    let chunk = futures::stream::once(async move {
        let _held = budget;
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(body))
    });
    ([(header::CONTENT_TYPE, content_type)], Body::from_stream(chunk)).into_response()
}

/// A JSON answer built as `Value`s, encoded within the request's budget.
fn json_answer(value: &impl serde::Serialize, budget: RequestBudget) -> Result<Response, ApiError> {
    let body = sonde_query::json::to_bytes(value, &budget)?;
    Ok(answer(body, "application/json", budget))
}

/// `POST /api/query/{dataset}`: a Honeycomb query specification.
pub(crate) async fn query(State(state): State<Arc<AppState>>, q: QueryCall<QuerySpec>) -> Result<Response, ApiError> {
    let defs = crate::definitions::load(&state).await?;
    let budget = state.engine.request();
    let r = state.engine.query(q.dataset()?, &q.body, &defs, &budget).await?;
    json_answer(&r, budget)
}

/// `POST /api/events/{dataset}`: raw events, newest first.
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    q: QueryCall<EventsRequest>,
) -> Result<Response, ApiError> {
    let defs = crate::definitions::load(&state).await?;
    let budget = state.engine.request();
    let body = state.engine.events(q.dataset()?, &q.body, &defs, &budget).await?;
    Ok(answer(body, "application/json", budget))
}

#[derive(Deserialize)]
pub(crate) struct SqlRequest {
    sql: String,
    #[serde(default)]
    format: Option<String>,
}

impl Describe for SqlRequest {
    const WHAT: &'static str = "SQL request";
}

/// `POST /api/sql`: `{"sql": "…", "format": "json" | "csv" | "arrow"}`, read-only.
pub(crate) async fn sql(State(state): State<Arc<AppState>>, q: QueryCall<SqlRequest>) -> Result<Response, ApiError> {
    let caller = q.caller();
    let req = &q.body;
    let format = match req.format.as_deref().unwrap_or("json") {
        "json" => SqlFormat::Json,
        "csv" => SqlFormat::Csv,
        "arrow" => SqlFormat::Arrow,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown format {other:?}: use json, csv or arrow"
            )));
        }
    };
    let defs = crate::definitions::load(&state).await?;
    let budget = state.engine.request();
    // A key limited to some datasets sees only their tables: the others do not exist for it.
    let body = state
        .engine
        .sql(&req.sql, format, &|ds| caller.covers(ds), &defs, &budget)
        .await?;
    Ok(answer(body, format.content_type(), budget))
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
    results: HashMap<String, (DatasetName, QueryResultAnswer)>,
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

impl SavedQueries {
    /// The saved queries of `dataset` (any, for `__all__`) that name the column `name`.
    pub(crate) fn naming(&self, dataset: &str, name: &str) -> Vec<String> {
        let inner = self.inner.lock().unwrap();
        inner
            .specs
            .iter()
            .filter(|(_, (ds, spec))| {
                (dataset == sonde_model::derived::ALL_DATASETS || ds.as_str() == dataset) && spec.names_column(name)
            })
            .map(|(id, _)| format!("saved query {id:?}"))
            .collect()
    }
}

/// `POST /1/queries/{dataset}`: saves a query spec, answers its id.
pub(crate) async fn create_query(
    State(state): State<Arc<AppState>>,
    q: QueryCall<QuerySpec>,
) -> Result<Json<SavedQuery>, ApiError> {
    let ds = q.dataset()?.clone();
    let spec = q.body.clone();
    // Validate now, so a bad spec fails here rather than when its results are asked for.
    state
        .engine
        .validate(&ds, &spec, &crate::definitions::load(&state).await?)?;
    let id = state.saved.id();
    state.saved.remember(&id, |s| {
        s.specs.insert(id.clone(), (ds, spec.clone()));
    });
    Ok(Json(SavedQuery { spec, id }))
}

/// `POST /1/queries/{dataset}`'s answer: the spec as saved, with its id (Honeycomb's shape).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SavedQuery {
    #[serde(flatten)]
    spec: QuerySpec,
    id: String,
}

/// A query result of Honeycomb's query-data API.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueryResultAnswer {
    id: String,
    query_id: String,
    /// Always true: results are computed before they are answered.
    complete: bool,
    data: sonde_query::QueryData,
    meta: sonde_query::QueryMeta,
    links: Links,
}

/// Where a query result can be looked at.
#[derive(Debug, Clone, Serialize)]
struct Links {
    /// The UI's own permalink form (`q` = the spec as JSON), so the link opens this query even
    /// after the saved query has been forgotten.
    query_url: String,
}

#[derive(Deserialize)]
pub(crate) struct ResultRequest {
    query_id: String,
    /// Results only, without the time series (Honeycomb's field; see `QuerySpec::disable_series`).
    #[serde(default)]
    disable_series: bool,
    /// Most groups, overriding the query's own `limit` (≤ 10,000, as Honeycomb's).
    #[serde(default)]
    limit: Option<i64>,
}

impl Describe for ResultRequest {
    const WHAT: &'static str = "query result request";
}

/// `POST /1/query_results/{dataset}`: runs a saved query; the result is complete at once.
pub(crate) async fn create_result(
    State(state): State<Arc<AppState>>,
    q: QueryCall<ResultRequest>,
) -> Result<(StatusCode, Json<QueryResultAnswer>), ApiError> {
    let ds = q.dataset()?.clone();
    let req = &q.body;
    let saved = state.saved.inner.lock().unwrap().specs.get(&req.query_id).cloned();
    let (qds, spec) = saved.ok_or_else(|| ApiError::not_found(format!("query {:?} does not exist", req.query_id)))?;
    if qds != ds {
        return Err(ApiError::bad_request(format!(
            "query {:?} belongs to dataset {qds}",
            req.query_id
        )));
    }
    // The result's own options apply to this run only; the saved query (and its link) stay.
    let mut run = spec.clone();
    if req.disable_series {
        run.disable_series = Some(true);
    }
    if req.limit.is_some() {
        run.limit = req.limit;
    }
    let defs = crate::definitions::load(&state).await?;
    let budget = state.engine.request();
    let r = state.engine.query(&ds, &run, &defs, &budget).await?;
    let id = state.saved.id();
    let answer = QueryResultAnswer {
        id: id.clone(),
        query_id: req.query_id.clone(),
        complete: true,
        data: r.data,
        meta: r.meta,
        links: Links {
            query_url: ui_link(&ds, &spec),
        },
    };
    state.saved.remember(&id, |s| {
        s.results.insert(id.clone(), (ds.clone(), answer.clone()));
    });
    Ok((StatusCode::CREATED, Json(answer)))
}

/// The UI's permalink for a query: `/?dataset=…&q=<the spec as JSON>`, percent-encoded.
fn ui_link(ds: &DatasetName, spec: &QuerySpec) -> String {
    let q = serde_json::to_string(spec).unwrap_or_default();
    format!("/?dataset={}&q={}", percent_encode(ds.as_str()), percent_encode(&q))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /1/query_results/{dataset}/{id}`.
pub(crate) async fn get_result(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<QueryResultAnswer>, ApiError> {
    let ds = access.dataset()?;
    let r = state.saved.inner.lock().unwrap().results.get(&id).cloned();
    // A result is found only under the dataset it was made for.
    r.filter(|(rds, _)| rds == ds)
        .map(|(_, v)| Json(v))
        .ok_or_else(|| ApiError::not_found(format!("query result {id:?} does not exist")))
}

/// `POST /api/bubbleup/{dataset}`: selection vs baseline across every column.
pub(crate) async fn bubbleup(
    State(state): State<Arc<AppState>>,
    q: QueryCall<BubbleUpRequest>,
) -> Result<Response, ApiError> {
    let defs = crate::definitions::load(&state).await?;
    let budget = state.engine.request();
    let v = state.engine.bubbleup(q.dataset()?, &q.body, &defs, &budget).await?;
    json_answer(&v, budget)
}

/// `GET /api/traces/{dataset}/{trace_id}`: every span of the trace, in every dataset.
pub(crate) async fn trace(
    State(state): State<Arc<AppState>>,
    q: Querying,
    Path((_, trace_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let ds = q.dataset()?;
    if state.storage.dataset_info(ds).is_none() {
        return Err(ApiError::no_such_dataset(ds));
    }
    let caller = q.caller();
    if trace_id.is_empty() || trace_id.len() > 256 {
        return Err(ApiError::bad_request("trace id must be 1 to 256 characters"));
    }
    // Spans are searched in every dataset the caller may read.
    let budget = state.engine.request();
    let body = state.engine.trace(&trace_id, &|d| caller.covers(d), &budget).await?;
    Ok(answer(body, "application/json", budget))
}

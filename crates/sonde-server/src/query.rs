//! Query handlers: Honeycomb query specs, raw events, SQL, BubbleUp and traces. Honeycomb's
//! saved queries and query results are in `queries`.

use crate::extract::{Describe, QueryCall, Querying};
use crate::{AppState, error::ApiError};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sonde_query::{BubbleUpRequest, EventsRequest, QueryError, QuerySpec, RequestBudget, SqlFormat};
use std::sync::Arc;

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let status = match &e {
            QueryError::NoSuchDataset(_) | QueryError::NotFound(_) => StatusCode::NOT_FOUND,
            QueryError::Invalid(_)
            | QueryError::Sql(_)
            | QueryError::Memory { .. }
            | QueryError::AnswerTooLarge { .. } => StatusCode::BAD_REQUEST,
            // Other requests hold the memory, or an ingest node's fresh rows cannot be had: the
            // same request succeeds once they are done, or the rows are flushed.
            QueryError::Overloaded(_) | QueryError::Unavailable(_) => {
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

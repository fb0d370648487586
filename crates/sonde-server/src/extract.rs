//! What every handler opens with, written once: the caller's right to act on the dataset named
//! in the path ([`Authorized`]), a query slot for the routes that run queries ([`Querying`]),
//! and a JSON body read within `--max-body-bytes` and parsed with an error naming what it is
//! ([`JsonBody`]).

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Path, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use sonde_ingest::BodyError;
use sonde_model::DatasetName;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

/// A scope as a type, so a handler states the scope it needs in its signature.
pub(crate) trait ScopeMarker: Send + Sync {
    /// The scope.
    const SCOPE: Scope;
}

/// The `ingest` scope.
pub(crate) struct Ingest;
/// The `query` scope.
pub(crate) struct Query;
/// The `manage` scope.
pub(crate) struct Manage;
/// The `admin` scope.
pub(crate) struct Admin;

impl ScopeMarker for Ingest {
    const SCOPE: Scope = Scope::Ingest;
}
impl ScopeMarker for Query {
    const SCOPE: Scope = Scope::Query;
}
impl ScopeMarker for Manage {
    const SCOPE: Scope = Scope::Manage;
}
impl ScopeMarker for Admin {
    const SCOPE: Scope = Scope::Admin;
}

/// A caller allowed the scope `S` on the dataset in the path (`{dataset}`, validated: a 400
/// names the naming rule), or on every dataset for routes without one: 401 without a valid
/// key, 403 without the scope or the dataset.
pub(crate) struct Authorized<S> {
    /// Who is calling.
    pub(crate) caller: Caller,
    dataset: Option<DatasetName>,
    _scope: PhantomData<S>,
}

impl<S> Authorized<S> {
    /// The path's dataset. Only for routes with `{dataset}` (a 500 otherwise: a routing bug).
    pub(crate) fn dataset(&self) -> Result<&DatasetName, ApiError> {
        self.dataset
            .as_ref()
            .ok_or_else(|| ApiError::internal("this route names no dataset"))
    }
}

impl<S: ScopeMarker> FromRequestParts<Arc<AppState>> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let caller = state.access.caller(&parts.headers)?;
        let names_dataset = parts
            .extensions
            .get::<MatchedPath>()
            .is_some_and(|m| m.as_str().contains("{dataset}"));
        let dataset = match Path::<HashMap<String, String>>::from_request_parts(parts, state).await {
            Ok(Path(params)) => params.get("dataset").map(|d| DatasetName::new(d)).transpose()?,
            // A dataset that is not even text (`%FF`) is the client's mistake, as before.
            Err(rejection) if names_dataset => {
                return Err(ApiError::bad_request(format!(
                    "invalid dataset in the path: {}",
                    rejection.body_text()
                )));
            }
            // Routes without path parameters have none to give: no dataset.
            Err(_) => None,
        };
        state
            .access
            .require(&caller, S::SCOPE, dataset.as_ref().map(|d| d.as_str()))?;
        Ok(Authorized {
            caller,
            dataset,
            _scope: PhantomData,
        })
    }
}

/// A caller allowed to query (as [`Authorized<Query>`]) holding one of the
/// `--max-concurrent-queries` slots until the handler returns; 429 when none frees up soon.
/// For queries without a body; those with one use [`QueryCall`], which reads the body first.
pub(crate) struct Querying {
    /// The caller and the path's dataset.
    pub(crate) access: Authorized<Query>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Querying {
    /// Who is calling.
    pub(crate) fn caller(&self) -> &Caller {
        &self.access.caller
    }
    /// The path's dataset.
    pub(crate) fn dataset(&self) -> Result<&DatasetName, ApiError> {
        self.access.dataset()
    }
}

impl FromRequestParts<Arc<AppState>> for Querying {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let access = Authorized::<Query>::from_request_parts(parts, state).await?;
        let slot = state.query_slot().await?;
        Ok(Querying { access, _slot: slot })
    }
}

/// A query with a JSON body: the caller authorised (as [`Authorized<Query>`]), then the body
/// read and parsed (as [`JsonBody`]), and only then a query slot taken, so a client sending its
/// body slowly holds no slot while it does.
pub(crate) struct QueryCall<T> {
    /// The caller and the path's dataset.
    pub(crate) access: Authorized<Query>,
    /// The parsed body.
    pub(crate) body: T,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl<T> QueryCall<T> {
    /// Who is calling.
    pub(crate) fn caller(&self) -> &Caller {
        &self.access.caller
    }
    /// The path's dataset.
    pub(crate) fn dataset(&self) -> Result<&DatasetName, ApiError> {
        self.access.dataset()
    }
}

impl<T: DeserializeOwned + Describe + Send> FromRequest<Arc<AppState>> for QueryCall<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let access = Authorized::<Query>::from_request_parts(&mut parts, state).await?;
        let JsonBody(body) = JsonBody::<T>::from_request(Request::from_parts(parts, body), state).await?;
        let slot = state.query_slot().await?;
        Ok(QueryCall {
            access,
            body,
            _slot: slot,
        })
    }
}

/// A request body type, named for error messages (`invalid query specification: …`).
pub(crate) trait Describe: Sized {
    /// What the body is.
    const WHAT: &'static str;
    /// The value of an empty body, if one is allowed.
    fn when_empty() -> Option<Self> {
        None
    }
}

/// A JSON body of type `T`, read within `--max-body-bytes` (413 past it) and parsed (400
/// naming `T::WHAT` and the problem).
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned + Describe> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let declared = declared_length(req.headers());
        let bytes = read_limited(req.into_body(), state.config.max_body_bytes, declared).await?;
        if bytes.iter().all(u8::is_ascii_whitespace)
            && let Some(v) = T::when_empty()
        {
            return Ok(JsonBody(v));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid {}: {e}", T::WHAT)))
    }
}

/// Reads a body, refusing it (413) once it passes `limit` bytes.
/// `declared` (the request's `Content-Length`, if any) sizes the buffer once, within the limit,
/// rather than growing and copying it as the body comes. Every body of every route is read here.
pub(crate) async fn read_limited(
    body: axum::body::Body,
    limit: usize,
    declared: Option<usize>,
) -> Result<Vec<u8>, ApiError> {
    use futures::StreamExt;
    let mut out: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let mut seen = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        seen += chunk.len();
        if seen <= limit {
            out.extend_from_slice(&chunk);
        } else if seen > limit.saturating_add(DRAIN_BYTES) {
            break;
        } else {
            // Past the limit: keep reading (and dropping) a bounded amount, so that a client
            // still sending its body gets to read the 413 rather than a broken connection.
            out = Vec::new();
        }
    }
    if seen > limit {
        return Err(BodyError::TooLarge { size: seen, limit }.into());
    }
    Ok(out)
}

/// How much of an oversized body is read and dropped before the 413 is sent.
const DRAIN_BYTES: usize = 64 << 20;

/// A request's `Content-Length`, if it gives one.
pub(crate) fn declared_length(headers: &axum::http::HeaderMap) -> Option<usize> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl Describe for sonde_query::QuerySpec {
    const WHAT: &'static str = "query specification";
}
impl Describe for sonde_query::EventsRequest {
    const WHAT: &'static str = "events request";
    fn when_empty() -> Option<Self> {
        Some(Self::default())
    }
}
impl Describe for sonde_query::BubbleUpRequest {
    const WHAT: &'static str = "BubbleUp request";
}

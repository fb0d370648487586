//! Ingest handlers: Honeycomb's single-event and batch endpoints, and NDJSON.

use crate::extract::{Authorized, Ingest, declared_length, read_limited};
use crate::{AppState, error::ApiError, forward};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use sonde_ingest::{EncodedBatch, decompress, envelope, json as batch_json, msgpack, ndjson as lines};
use sonde_model::{DatasetName, time};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Bodies above this are decoded on the blocking pool, so big batches do not stall the
/// async workers that answer other requests.
const INLINE_DECODE_BYTES: usize = 64 * 1024;

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn is_msgpack(headers: &HeaderMap) -> bool {
    header_str(headers, header::CONTENT_TYPE.as_str()).is_some_and(|ct| ct.contains("msgpack"))
}

async fn decode_off_thread<T, F>(size: usize, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    if size <= INLINE_DECODE_BYTES {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("decoder panicked: {e}")))?
}

/// Stores the good events of a decoded body as one WAL record, and returns each input event's
/// refusal (`None`: stored), in input order.
async fn store(state: &AppState, ds: &DatasetName, decoded: EncodedBatch) -> Result<Vec<Option<String>>, Stored> {
    let refusals: Vec<Option<String>> = decoded
        .refusals
        .iter()
        .map(|r| {
            r.as_ref().map(|e| {
                state.stats.events_rejected.fetch_add(1, Ordering::Relaxed);
                e.to_string()
            })
        })
        .collect();
    match state.storage.ingest_encoded(vec![(ds.clone(), decoded.events)]).await {
        Ok(_) => {}
        Err(sonde_storage::Error::NotOwner { owner, .. }) => return Err(Stored::Elsewhere(owner)),
        Err(e) => return Err(Stored::Failed(e.into())),
    }
    state.stats.ingest_requests.fetch_add(1, Ordering::Relaxed);
    Ok(refusals)
}

/// Why [`store`] stored nothing.
enum Stored {
    /// Another ingest node of the cluster writes the dataset.
    Elsewhere(String),
    /// Refused.
    Failed(ApiError),
}

/// Takes a request's events here, or passes the request on to the node of a cluster that
/// writes its dataset (see `forward`): `Ok(Err(answer))` is the writer's answer to relay.
async fn take_or_forward<T>(
    state: &AppState,
    ds: &DatasetName,
    path: &str,
    headers: &HeaderMap,
    plain: Bytes,
    take: impl std::future::Future<Output = Result<T, Stored>>,
) -> Result<Result<T, Response>, ApiError> {
    match take.await {
        Ok(t) => Ok(Ok(t)),
        Err(Stored::Failed(e)) => Err(e),
        Err(Stored::Elsewhere(owner)) if forward::was_forwarded(headers) => {
            Err(ApiError::from(sonde_storage::Error::NotOwner {
                dataset: ds.clone(),
                owner,
            }))
        }
        Err(Stored::Elsewhere(owner)) => Ok(Err(forward::forward(state, path, headers, plain, &[owner]).await?)),
    }
}

/// The batch endpoint's answer, `[{"status":202},{"status":400,"error":"…"},…]`, written
/// directly: a `serde_json::Value` map per event was a measurable share of ingest's allocations.
fn batch_statuses(refusals: &[Option<String>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + refusals.len() * 17);
    out.push(b'[');
    for (i, r) in refusals.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match r {
            None => out.extend_from_slice(br#"{"status":202}"#),
            Some(e) => {
                out.extend_from_slice(br#"{"status":400,"error":"#);
                serde_json::to_writer(&mut out, e).expect("writing to a Vec cannot fail");
                out.push(b'}');
            }
        }
    }
    out.push(b']');
    out
}

/// Reads the body (refusing more than `max_body_bytes` on the wire) and undoes its encoding
/// (refusing more than `max_body_bytes` once inflated). The body is held in the process
/// memory bound (`--memory-limit`) until the returned reservation drops, at the end of the
/// request: many large bodies at once get 503s, not the kernel's OOM killer.
pub(crate) async fn body_bytes(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Vec<u8>, sonde_query::memory::Reservation), ApiError> {
    let limit = state.config.max_body_bytes;
    let raw = read_limited(body, limit, declared_length(headers)).await?;
    let budget = state.engine.memory_budget();
    let overloaded = |e: sonde_query::memory::BudgetExceeded| ApiError {
        status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
        message: e.to_string(),
        retry_after: Some(1),
        position: None,
    };
    let mut held = budget.reserve(raw.capacity(), "a request body").map_err(overloaded)?;
    // A plain body comes back as it is; an encoded one is inflated (the two held at once only
    // inside `decompress`) and its reservation moves to the inflated copy.
    let plain = decompress(header_str(headers, "content-encoding"), raw, limit)?;
    let now = plain.capacity();
    match now.checked_sub(held.size()) {
        Some(more) => held.try_grow(more).map_err(overloaded)?,
        None => held.shrink(held.size() - now),
    }
    if plain.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request("request body is empty"));
    }
    Ok((plain, held))
}

/// `POST /1/events/{dataset}`: one event; time and sample rate from headers.
pub(crate) async fn single_event(
    State(state): State<Arc<AppState>>,
    access: Authorized<Ingest>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let ds = access.dataset()?;
    let (plain, _held) = body_bytes(&state, &headers, body).await?;
    let path = format!("/1/events/{ds}");
    if let Some(nodes) = forward::query_node_targets(&state, ds, &headers).await? {
        return forward::forward(&state, &path, &headers, plain.into(), &nodes).await;
    }
    let limits = &state.config.limits;
    let plain = Bytes::from(plain);
    let event = (|| {
        let data = if is_msgpack(&headers) {
            msgpack::decode_value(&plain, limits)?
        } else {
            batch_json::parse_json(&plain, limits)?
        };
        envelope::single_event(
            &data,
            header_str(&headers, "x-honeycomb-event-time"),
            header_str(&headers, "x-honeycomb-samplerate"),
            time::now_us(),
            limits,
        )
    })()
    .map_err(ApiError::from)?;
    let stored = store(&state, ds, EncodedBatch::from(vec![Ok(event)]));
    match take_or_forward(&state, ds, &path, &headers, plain, stored).await? {
        Ok(_) => Ok((StatusCode::ACCEPTED, Json(json!({}))).into_response()),
        Err(answer) => Ok(answer),
    }
}

/// `POST /1/batch/{dataset}`: an array of `{"data", "time", "samplerate"}`, answered with one
/// status per item.
pub(crate) async fn batch(
    State(state): State<Arc<AppState>>,
    access: Authorized<Ingest>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let ds = access.dataset()?;
    let (plain, _held) = body_bytes(&state, &headers, body).await?;
    let plain = Bytes::from(plain);
    let path = format!("/1/batch/{ds}");
    if let Some(nodes) = forward::query_node_targets(&state, ds, &headers).await? {
        return forward::forward(&state, &path, &headers, plain, &nodes).await;
    }
    let limits = state.config.limits.clone();
    let is_msgpack = is_msgpack(&headers);
    let body = plain.clone();
    let decoded = decode_off_thread(plain.len(), move || {
        let plain = body;
        let now = time::now_us();
        Ok(if is_msgpack {
            EncodedBatch::from(msgpack::decode_batch(&plain, now, &limits)?)
        } else {
            batch_json::decode_batch_encoded(&plain, now, &limits)?
        })
    })
    .await?;
    let stored = store(&state, ds, decoded);
    match take_or_forward(&state, ds, &path, &headers, plain, stored).await? {
        Ok(refusals) => Ok(([(header::CONTENT_TYPE, "application/json")], batch_statuses(&refusals)).into_response()),
        Err(answer) => Ok(answer),
    }
}

/// `POST /api/ingest/{dataset}`: newline-delimited JSON objects.
pub(crate) async fn ndjson(
    State(state): State<Arc<AppState>>,
    access: Authorized<Ingest>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let ds = access.dataset()?;
    let (plain, _held) = body_bytes(&state, &headers, body).await?;
    let plain = Bytes::from(plain);
    let path = format!("/api/ingest/{ds}");
    if let Some(nodes) = forward::query_node_targets(&state, ds, &headers).await? {
        return forward::forward(&state, &path, &headers, plain, &nodes).await;
    }
    let limits = state.config.limits.clone();
    let body = plain.clone();
    let decoded = decode_off_thread(plain.len(), move || {
        Ok(lines::decode_encoded(&body, time::now_us(), &limits))
    })
    .await?;
    let stored = store(&state, ds, decoded.batch);
    let refusals = match take_or_forward(&state, ds, &path, &headers, plain, stored).await? {
        Ok(refusals) => refusals,
        Err(answer) => return Ok(answer),
    };
    let errors: Vec<Value> = refusals
        .iter()
        .zip(&decoded.line_numbers)
        .filter_map(|(r, line)| r.as_ref().map(|e| json!({"line": line, "status": 400, "error": e})))
        .collect();
    let accepted = refusals.len() - errors.len();
    let status = if accepted == 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"accepted": accepted, "rejected": errors.len(), "errors": errors})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_statuses_are_json() {
        let out = batch_statuses(&[None, Some("bad \"x\"\n".into()), None]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!([{"status": 202}, {"status": 400, "error": "bad \"x\"\n"}, {"status": 202}])
        );
        assert_eq!(batch_statuses(&[]), b"[]");
    }
}

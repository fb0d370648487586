//! OpenTelemetry ingest over OTLP/HTTP (protobuf and JSON) and OTLP/gRPC. The mapping of spans
//! and log records to events is [`sonde_ingest::otlp`]; here are the transports, the caller's
//! rights over every dataset a request maps to, and the store: all of a request's events, over
//! all its datasets, go into one WAL append that is acknowledged (after the fsync) or refused
//! as a whole, so a retry after a refusal never doubles part of a request (see
//! `Storage::ingest_all` for the crash case, which is any request's).

use crate::AppState;
use crate::auth::{Access, Caller, Scope};
use crate::error::ApiError;
use crate::extract::{Authorized, Ingest};
use crate::forward;
use crate::ingest::body_bytes;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse, logs_service_server,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse, trace_service_server,
};
use prost::Message;
use serde_json::{Value, json};
use sonde_ingest::otlp::{Logs, Mapped, Signal, Traces};
use sonde_model::DatasetName;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Stores mapped events, all datasets at once (see the module's note), answered after the
/// fsync. A caller whose key does not cover every dataset the events map to is refused before
/// anything is written. On a cluster, the datasets another node writes are passed on to it,
/// each as a Honeycomb batch, after the ones taken here are stored: a part refused there fails
/// the request, saying which datasets were stored already (a retry stores those again).
pub(crate) async fn store(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    mapped: &mut Mapped,
) -> Result<usize, ApiError> {
    for ds in mapped.datasets.keys() {
        Access::require_dataset(caller, ds.as_str())?;
    }
    let mut here = Vec::new();
    let mut elsewhere = Vec::new();
    for (ds, events) in std::mem::take(&mut mapped.datasets) {
        match forward::targets(state, &ds, headers).await? {
            None => here.push((ds, events)),
            Some(nodes) => elsewhere.push((ds, events, nodes)),
        }
    }
    let mut stored: usize = here.iter().map(|(_, events)| events.len()).sum();
    let mut stored_in: Vec<String> = here.iter().map(|(ds, _)| ds.to_string()).collect();
    if !here.is_empty() {
        state.storage.ingest_all(here).await?;
        state.stats.ingest_requests.fetch_add(1, Ordering::Relaxed);
    }
    // Records refused here; those a writer refuses are counted there.
    let refused_here = mapped.rejected;
    // Bodies well under the writers' `--max-body-bytes` (the same on every node).
    let max_body = state.config.max_body_bytes / 2;
    for (ds, events, nodes) in elsewhere {
        for (sent, body) in forward::batch_bodies(&events, max_body) {
            let passed =
                forward::forward(state, &format!("/1/batch/{ds}"), &batch_headers(headers), body, &nodes).await;
            let refused = |message: String| {
                let before = match stored_in.is_empty() {
                    true => String::new(),
                    false => format!(" (the events of {} were stored)", stored_in.join(", ")),
                };
                format!("dataset {ds}: {message}{before}")
            };
            let resp = passed.map_err(|e| ApiError {
                message: refused(e.message.clone()),
                ..e
            })?;
            let status = resp.status();
            // Bounded: a relayed answer is read up to a limit (`read_bounded`).
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .map_err(|e| ApiError::internal(refused(e.to_string())))?;
            if status != StatusCode::OK {
                let said: Value = serde_json::from_slice(&body).unwrap_or_default();
                let message = said["error"]
                    .as_str()
                    .map_or_else(|| String::from_utf8_lossy(&body).into_owned(), str::to_string);
                let again = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
                return Err(ApiError {
                    status,
                    message: refused(message),
                    retry_after: again.then_some(1),
                    position: None,
                });
            }
            // The writer's answer per event: 202, or 400 with its reason.
            let answers: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
            if answers.len() != sent {
                return Err(ApiError::internal(refused(format!(
                    "the ingest node answered {} statuses for {sent} events",
                    answers.len()
                ))));
            }
            for a in &answers {
                if a["status"] == 202 {
                    stored += 1;
                } else {
                    mapped.rejected += 1;
                    if mapped.errors.len() < 5 {
                        mapped.errors.push(a["error"].as_str().unwrap_or("refused").to_string());
                    }
                }
            }
        }
        stored_in.push(ds.to_string());
    }
    state
        .stats
        .events_rejected
        .fetch_add(refused_here as u64, Ordering::Relaxed);
    Ok(stored)
}

/// The headers a part passed on as a batch carries: JSON, and the caller's key.
fn batch_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    out.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    for name in ["x-honeycomb-team", "authorization"] {
        if let Some(v) = headers.get(name) {
            out.insert(name, v.clone());
        }
    }
    out
}

fn dataset_header(headers: &HeaderMap) -> Result<Option<DatasetName>, ApiError> {
    match headers.get("x-honeycomb-dataset").and_then(|v| v.to_str().ok()) {
        Some(d) if !d.is_empty() => Ok(Some(DatasetName::new(d)?)),
        _ => Ok(None),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(ApiError::unsupported_media(format!(
            "unsupported Content-Type {ct:?}: OTLP/HTTP takes application/x-protobuf or application/json"
        ))),
    }
}

fn respond<M: Message>(enc: Encoding, msg: M, json: Value) -> Response {
    match enc {
        Encoding::Protobuf => ([(header::CONTENT_TYPE, "application/x-protobuf")], msg.encode_to_vec()).into_response(),
        Encoding::Json => ([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response(),
    }
}

fn decode<M: Message + Default + for<'de> serde::Deserialize<'de>>(enc: Encoding, body: &[u8]) -> Result<M, ApiError> {
    match enc {
        Encoding::Protobuf => M::decode(body).map_err(|e| ApiError::bad_request(format!("invalid OTLP protobuf: {e}"))),
        Encoding::Json => {
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid OTLP JSON: {e}")))
        }
    }
}

/// `POST /v1/traces` and `POST /v1/logs`: one handler, generic over the signal.
pub(crate) async fn http_export<S: Signal>(
    State(state): State<Arc<AppState>>,
    access: Authorized<Ingest>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let enc = encoding(&headers)?;
    let ds = dataset_header(&headers)?;
    let (plain, _held) = body_bytes(&state, &headers, body).await?;
    let req: S::Request = decode(enc, &plain)?;
    let mut mapped = S::map(&req, ds.as_ref(), &state.config.limits, sonde_model::time::now_us());
    store(&state, &access.caller, &headers, &mut mapped).await?;
    let (msg, json) = S::respond(mapped.refused());
    Ok(respond(enc, msg, json))
}

/// `POST /v1/metrics` is not supported: say so clearly rather than 404.
pub(crate) async fn http_metrics() -> (StatusCode, axum::Json<Value>) {
    (
        StatusCode::NOT_IMPLEMENTED,
        axum::Json(json!({"error": "Sonde stores traces and logs; OTLP metrics are not supported"})),
    )
}

/// The OTLP/gRPC services, over the same mapping and storage.
#[derive(Debug, Clone)]
pub struct Grpc {
    state: Arc<AppState>,
}

impl Grpc {
    /// Services for `state`.
    pub fn new(state: Arc<AppState>) -> Grpc {
        Grpc { state }
    }

    /// The caller and the dataset header of a request, read from the same headers and by the
    /// same rules as over HTTP (gRPC metadata are HTTP/2 headers); counted as refused when
    /// either is bad.
    fn begin(&self, md: &tonic::metadata::MetadataMap) -> Result<(Caller, Option<DatasetName>), tonic::Status> {
        let headers = md.clone().into_headers();
        let begin = || {
            let caller = self.state.access.caller(&headers)?;
            self.state.access.require(&caller, Scope::Ingest, None)?;
            Ok((caller, dataset_header(&headers)?))
        };
        begin().map_err(|e| self.refused(e))
    }

    /// Counts a refused request in `sonde_requests_rejected_total`, as the HTTP ingest routes'
    /// layer does.
    fn count(&self, status: tonic::Status) -> tonic::Status {
        self.state.stats.requests_rejected.fetch_add(1, Ordering::Relaxed);
        status
    }

    fn refused(&self, e: ApiError) -> tonic::Status {
        self.count(api_status(e))
    }
}

/// The gRPC status for an HTTP-edge error, by its HTTP status.
fn api_status(e: ApiError) -> tonic::Status {
    match e.status {
        StatusCode::UNAUTHORIZED => tonic::Status::unauthenticated(e.message),
        StatusCode::FORBIDDEN => tonic::Status::permission_denied(e.message),
        StatusCode::TOO_MANY_REQUESTS => tonic::Status::resource_exhausted(e.message),
        StatusCode::SERVICE_UNAVAILABLE => tonic::Status::unavailable(e.message),
        s if s.is_client_error() => tonic::Status::invalid_argument(e.message),
        _ => tonic::Status::internal(e.message),
    }
}

impl Grpc {
    /// One export over gRPC, for either signal.
    async fn export<S: Signal>(
        &self,
        request: tonic::Request<S::Request>,
    ) -> Result<tonic::Response<S::Response>, tonic::Status> {
        let (caller, ds) = self.begin(request.metadata())?;
        let mut mapped = S::map(
            request.get_ref(),
            ds.as_ref(),
            &self.state.config.limits,
            sonde_model::time::now_us(),
        );
        let headers = request.metadata().clone().into_headers();
        store(&self.state, &caller, &headers, &mut mapped)
            .await
            .map_err(|e| self.refused(e))?;
        Ok(tonic::Response::new(S::respond(mapped.refused()).0))
    }
}

#[tonic::async_trait]
impl trace_service_server::TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        Grpc::export::<Traces>(self, request).await
    }
}

#[tonic::async_trait]
impl logs_service_server::LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        Grpc::export::<Logs>(self, request).await
    }
}

/// Serves OTLP/gRPC on `listener` until `shutdown` resolves, with `workers` (a query node's
/// distributed-SQL worker) beside it.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    workers: Option<tonic::service::Routes>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    use tonic::codec::CompressionEncoding;
    let svc = Grpc::new(state.clone());
    let max = state.config.max_body_bytes;
    let traces = trace_service_server::TraceServiceServer::new(svc.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(max);
    let logs = logs_service_server::LogsServiceServer::new(svc)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(max);
    // A query node's distributed-SQL worker shares the port (gRPC routes by service name).
    let routes = match workers {
        Some(w) => w.add_service(traces),
        None => tonic::service::Routes::new(traces),
    };
    tonic::transport::Server::builder()
        .add_routes(routes.add_service(logs))
        // TCP_NODELAY, as tonic sets it on listeners it binds itself: without it a worker's
        // small answers wait for the peer's delayed ACK (about 40 ms a hop).
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

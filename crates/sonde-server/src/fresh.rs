//! Fresh events across a cluster, over HTTP: an ingest node serves its write buffer
//! (`GET /internal/v1/buffer/{dataset}`), a query node copies it every `--fresh-interval` (see
//! `sonde_storage::fresh` for why each event is then counted exactly once), and a query node
//! running a task of another's plan reads the fresh rows the plan names from its copy, the part
//! its copy lacks from the ingest node ([`FreshRowsReader`]).

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use arrow::array::RecordBatch;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sonde_model::DatasetName;
use sonde_query::buffer_scan::{FreshError, FreshRead, FreshReader};
use sonde_storage::Lsn;
use sonde_storage::Storage;
use sonde_storage::fresh::{BufferRead, FreshPosition, FreshTarget, Owner, decode_batches, encode_batches};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Bytes of buffered rows (in memory) an ingest node answers per request at most; a query node
/// catching up asks again.
const MAX_ANSWER_BYTES: usize = 16 << 20;
/// Bytes of one answer a query node reads at most: `MAX_ANSWER_BYTES` of rows and the batch
/// that crossed it (a sealed write-buffer chunk is 64 MiB at most), about as large as IPC frames.
const MAX_READ_BYTES: usize = 128 << 20;
/// Requests a query node makes for one dataset per round at most, so that one busy dataset
/// does not hold up the others.
const MAX_REQUESTS_PER_ROUND: usize = 8;
/// The header of a buffer answer giving the rows buffered in all.
const ROWS_HEADER: &str = "x-sonde-buffered-rows";
/// The header of a 409 answer giving the ingest node's flushed position.
const FLUSHED_HEADER: &str = "x-sonde-flushed-lsn";

/// What a query node asks of an ingest node's buffer.
#[derive(Debug, Deserialize)]
pub(crate) struct BufferAsk {
    epoch: u64,
    after: u64,
    #[serde(default)]
    from_row: u64,
    /// Rows before this one only (a worker reading the slice of rows a plan names).
    #[serde(default)]
    to_row: Option<u64>,
}

/// `GET /internal/v1/buffer/{dataset}?epoch=E&after=F&from_row=N[&to_row=M]` (an ingest node of
/// a cluster): the dataset's buffered events after flushed position `F`, from row `N` on (before
/// row `M`), as
/// length-prefixed Arrow IPC streams; 409 with `x-sonde-flushed-lsn` when the dataset is
/// flushed through another position (read the catalog again), 421 when this node does not
/// write it at epoch `E`. Reading events needs the query scope.
pub(crate) async fn buffer(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(dataset): Path<String>,
    Query(ask): Query<BufferAsk>,
) -> Result<Response, ApiError> {
    state.access.require(&caller, Scope::Query, Some(&dataset))?;
    let name = DatasetName::new(&dataset).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let read = state.storage.buffered_since(
        &name,
        ask.epoch,
        Lsn(ask.after),
        ask.from_row,
        ask.to_row,
        MAX_ANSWER_BYTES,
    )?;
    match read {
        BufferRead::Moved { flushed_lsn } => {
            let mut r = ApiError::conflict(format!(
                "dataset {dataset} is flushed through position {} here, not {}: read the catalog again",
                flushed_lsn.0, ask.after
            ))
            .into_response();
            r.headers_mut().insert(FLUSHED_HEADER, HeaderValue::from(flushed_lsn.0));
            Ok(r)
        }
        BufferRead::Rows { batches, total_rows } => {
            let body = tokio::task::spawn_blocking(move || encode_batches(&batches))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))??;
            let mut headers = HeaderMap::new();
            headers.insert(ROWS_HEADER, HeaderValue::from(total_rows));
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.sonde.arrow-frames"),
            );
            Ok((StatusCode::OK, headers, body).into_response())
        }
    }
}

/// How a query node copies fresh events.
#[derive(Debug, Clone)]
pub struct FreshConfig {
    /// Time between two rounds of requests (`--fresh-interval`).
    pub interval: Duration,
    /// The API key sent to ingest nodes (`--cluster-key`), when they check keys.
    pub key: Option<String>,
    /// Bytes the copies may hold in all (`--max-buffer-bytes`, a query node's own buffer
    /// share): past it no more rows are copied until a flush frees some, and queries read the
    /// rows past the copies from the ingest nodes.
    pub max_bytes: usize,
}

/// A query node's loop: every `interval`, each followed dataset's new buffered events are
/// copied from its ingest node, until `stop` resolves.
pub async fn run(state: Arc<AppState>, config: FreshConfig, stop: impl std::future::Future<Output = ()>) {
    let client = BufferClient::new(config.key.clone());
    let mut full_warned = false;
    tokio::pin!(stop);
    loop {
        let mut moved = Vec::new();
        // A node that failed once this round is not asked again until the next: a dead or hung
        // ingest node costs one timeout a round, not one per dataset it writes.
        let mut failed: Vec<String> = Vec::new();
        for target in state.storage.fresh_targets() {
            if failed.contains(&target.owner.node) {
                continue;
            }
            let held = state.storage.fresh_bytes();
            if held >= config.max_bytes {
                if !full_warned {
                    tracing::warn!(
                        held,
                        limit = config.max_bytes,
                        "copies of ingest nodes' buffers are full (--max-buffer-bytes); queries read the fresh events past them from the ingest nodes until they flush"
                    );
                    full_warned = true;
                }
            } else {
                full_warned = false;
            }
            let dataset = target.dataset.clone();
            let node = target.owner.node.clone();
            match copy_dataset(&state, &client, &config, target).await {
                Ok(true) => moved.push(dataset),
                Ok(false) => {}
                Err(e) => {
                    failed.push(node);
                    state.stats.fresh_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "copying fresh events failed; trying again next round");
                }
            }
        }
        // An ingest node flushed past the catalog read here: read it now, and copy the events
        // after the flush at once rather than a round later.
        if !moved.is_empty() {
            match state.storage.follow_catalog().await {
                Ok(()) => {
                    for target in state.storage.fresh_targets() {
                        if moved.contains(&target.dataset)
                            && let Err(e) = copy_dataset(&state, &client, &config, target).await
                        {
                            state.stats.fresh_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(error = %e, "copying fresh events failed; trying again next round");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading the shared catalog failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = &mut stop => return,
        }
    }
}

/// One request for an ingest node's buffered rows of a dataset.
struct Ask<'a> {
    dataset: &'a DatasetName,
    owner: &'a Owner,
    after: Lsn,
    from_row: u64,
    /// The row to stop before, if not at the end of the buffer.
    to_row: Option<u64>,
}

/// What an ingest node answered an [`Ask`].
enum Asked {
    /// Rows from the row asked for on (up to the node's answer bound), the rows it holds, and
    /// the bytes of the answer (which the decoded rows share).
    Rows {
        batches: Vec<RecordBatch>,
        total: u64,
        bytes: usize,
    },
    /// It has flushed past the position asked for.
    Moved,
}

/// Asks ingest nodes for their buffered rows: at the addresses their member files give (kept
/// until a request to one fails), with the cluster key.
#[derive(Debug)]
struct BufferClient {
    http: reqwest::Client,
    /// `--cluster-key`, when the ingest nodes check keys.
    key: Option<String>,
    /// Ingest nodes' addresses, as their member files gave them.
    urls: std::sync::Mutex<HashMap<String, String>>,
}

impl BufferClient {
    fn new(key: Option<String>) -> BufferClient {
        BufferClient {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a client with timeouts only"),
            key,
            urls: Default::default(),
        }
    }

    /// Sends `ask` to its dataset's ingest node, found through `storage`.
    async fn send(&self, storage: &Storage, ask: &Ask<'_>) -> Result<Asked, String> {
        let node = &ask.owner.node;
        let known = self.urls.lock().unwrap().get(node).cloned();
        let base = match known {
            Some(u) => u,
            None => {
                let url = storage
                    .node_url(node)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("ingest node {node} has not announced its address"))?;
                self.urls.lock().unwrap().insert(node.clone(), url.clone());
                url
            }
        };
        self.send_to(&base, ask).await.map_err(|(e, forget)| {
            if forget {
                // The node may have moved: read its member file again next time.
                self.urls.lock().unwrap().remove(node);
            }
            e
        })
    }

    /// Sends `ask` to `base`; an error says whether the node's address should be looked up again.
    async fn send_to(&self, base: &str, ask: &Ask<'_>) -> Result<Asked, (String, bool)> {
        let node = &ask.owner.node;
        let mut req = self
            .http
            .get(format!("{base}/internal/v1/buffer/{}", ask.dataset))
            .query(&[
                ("epoch", ask.owner.epoch),
                ("after", ask.after.0),
                ("from_row", ask.from_row),
            ]);
        if let Some(to) = ask.to_row {
            req = req.query(&[("to_row", to)]);
        }
        if let Some(key) = &self.key {
            req = req.header("x-honeycomb-team", key);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| (format!("ingest node {node} at {base}: {e}"), true))?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::CONFLICT => return Ok(Asked::Moved),
            status => {
                let text = resp.text().await.unwrap_or_default();
                return Err((
                    format!("ingest node {node} answered {status}: {text}"),
                    status == StatusCode::MISDIRECTED_REQUEST,
                ));
            }
        }
        let total: u64 = resp
            .headers()
            .get(ROWS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| (format!("ingest node {node} answered without {ROWS_HEADER}"), false))?;
        let body = crate::forward::read_bounded(resp, MAX_READ_BYTES, &format!("ingest node {node}"))
            .await
            .map_err(|e| (e, false))?;
        let batches = decode_batches(&body).map_err(|e| (e.to_string(), false))?;
        Ok(Asked::Rows {
            batches,
            total,
            bytes: body.len(),
        })
    }
}

/// Reads the fresh rows a plan from another query node names (`sonde_query::buffer_scan`): from
/// this node's copy as far as it holds them, the rest from the ingest node that holds them.
#[derive(Debug)]
pub struct FreshRowsReader {
    storage: Arc<Storage>,
    client: BufferClient,
}

impl FreshRowsReader {
    /// A reader over `storage`'s copies, asking ingest nodes with `key` (`--cluster-key`).
    pub fn new(storage: Arc<Storage>, key: Option<String>) -> FreshRowsReader {
        FreshRowsReader {
            storage,
            client: BufferClient::new(key),
        }
    }
}

#[async_trait::async_trait]
impl FreshReader for FreshRowsReader {
    async fn read(
        &self,
        dataset: &DatasetName,
        at: &FreshPosition,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<FreshRead, FreshError> {
        let (mut rows, mut next) = self.storage.fresh_slice(dataset, &at.owner, at.after, from, to);
        let mut fetched_bytes = 0;
        if next >= to {
            return Ok(FreshRead {
                batches: rows,
                fetched_bytes,
            });
        }
        // This node's copy is a pull behind the planner's, or stands elsewhere: ask the owner.
        let node = &at.owner.node;
        while next < to {
            let ask = Ask {
                dataset,
                owner: &at.owner,
                after: at.after,
                from_row: next,
                to_row: Some(to),
            };
            let batches = match self
                .client
                .send(&self.storage, &ask)
                .await
                .map_err(FreshError::Unreachable)?
            {
                Asked::Rows { batches, bytes, .. } => {
                    // The decoded rows share the answer's buffer: it is what they hold.
                    fetched_bytes += bytes;
                    if fetched_bytes > max_bytes {
                        return Err(FreshError::TooLarge(format!(
                            "the rows {next}..{to} read from ingest node {node} take more than {max_bytes} bytes"
                        )));
                    }
                    batches
                }
                Asked::Moved => {
                    return Err(FreshError::Moved(format!(
                        "ingest node {node} has flushed past position {} since the query was planned",
                        at.after.0
                    )));
                }
            };
            if batches.iter().all(|b| b.num_rows() == 0) {
                return Err(FreshError::Moved(format!(
                    "ingest node {node} holds {next} rows, not the {to} the query names"
                )));
            }
            for b in batches {
                let n = (b.num_rows() as u64).min(to - next);
                if n > 0 {
                    rows.push(b.slice(0, n as usize));
                    next += n;
                    self.storage.stats.fresh_rows_read.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
        Ok(FreshRead {
            batches: rows,
            fetched_bytes,
        })
    }
}

/// Copies one dataset's new buffered rows; whether its ingest node has flushed past the catalog
/// this node has read.
async fn copy_dataset(
    state: &AppState,
    client: &BufferClient,
    config: &FreshConfig,
    mut target: FreshTarget,
) -> Result<bool, String> {
    for _ in 0..MAX_REQUESTS_PER_ROUND {
        // With the copies full, only how many rows the node holds (a query reads those past the
        // copy from it), and whether it has flushed.
        let full = state.storage.fresh_bytes() >= config.max_bytes;
        let ask = Ask {
            dataset: &target.dataset,
            owner: &target.owner,
            after: target.after,
            from_row: target.from_row,
            to_row: full.then_some(target.from_row),
        };
        let (batches, total) = match client.send(&state.storage, &ask).await? {
            Asked::Rows { batches, total, .. } => (batches, total),
            Asked::Moved => return Ok(true),
        };
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        if !state.storage.add_fresh(&target, batches, total) || rows == 0 {
            return Ok(false);
        }
        target.from_row += rows;
        if target.from_row >= total || state.storage.fresh_bytes() >= config.max_bytes {
            return Ok(false);
        }
    }
    Ok(false)
}

//! Ingest requests on a cluster go to the node that writes their dataset: a query node passes
//! every one on (to the dataset's ingest node, or for a new dataset to the ingest nodes in
//! rendezvous-hash order), and an ingest node passes on those of a dataset another ingest node
//! writes. The answer is the writer's, relayed: an acknowledgement still means durable on the
//! writer. A request is passed on once at most (`x-sonde-forwarded-by`).

use crate::AppState;
use crate::error::ApiError;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sonde_model::DatasetName;
use sonde_storage::Role;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

/// The header naming the node that passed a request on.
pub(crate) const FORWARDED_HEADER: &str = "x-sonde-forwarded-by";
/// Request headers passed on with the body (the body is sent decompressed).
const PASSED_HEADERS: [&str; 5] = [
    "content-type",
    "x-honeycomb-team",
    "authorization",
    "x-honeycomb-event-time",
    "x-honeycomb-samplerate",
];

/// The HTTP client and the nodes' addresses (read from their member files once, again after a
/// failure).
#[derive(Debug)]
pub(crate) struct Forwarder {
    http: reqwest::Client,
    urls: RwLock<HashMap<String, String>>,
    /// The ingest nodes that are up, as last listed and when: listing the bucket's member files
    /// (a LIST and a GET per node) for every request passed on would cost more than the request.
    members: tokio::sync::Mutex<Option<(std::time::Instant, Members)>>,
}

/// Nodes as (name, base URL).
type Members = Vec<(String, String)>;

/// How long a listing of the ingest nodes serves the requests passed on.
const MEMBERS_FRESH_FOR: Duration = Duration::from_secs(1);

impl Forwarder {
    /// A forwarder whose requests take at most `timeout`.
    pub(crate) fn new(timeout: Duration) -> Forwarder {
        Forwarder {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(1))
                .timeout(timeout)
                .build()
                .expect("a client with timeouts only"),
            urls: RwLock::new(HashMap::new()),
            members: tokio::sync::Mutex::new(None),
        }
    }

    /// The ingest nodes that are up, listed at most once every [`MEMBERS_FRESH_FOR`].
    async fn ingest_nodes(&self, state: &AppState) -> Result<Members, ApiError> {
        let mut members = self.members.lock().await;
        if let Some((at, nodes)) = members.as_ref()
            && at.elapsed() < MEMBERS_FRESH_FOR
        {
            return Ok(nodes.clone());
        }
        let nodes = state.storage.ingest_nodes().await?;
        *members = Some((std::time::Instant::now(), nodes.clone()));
        Ok(nodes)
    }
}

/// Whether a request was passed on by another node already.
pub(crate) fn was_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_HEADER)
}

/// On a query node: the ingest nodes to pass an ingest request for `ds` to, in order (the
/// dataset's writer, then the ingest nodes that are up in rendezvous order, which is the
/// order for a new dataset too); `None` on other roles, which take events themselves.
pub(crate) async fn query_node_targets(
    state: &AppState,
    ds: &DatasetName,
    headers: &HeaderMap,
) -> Result<Option<Vec<String>>, ApiError> {
    if state.storage.config().role != Role::Query {
        return Ok(None);
    }
    if was_forwarded(headers) {
        return Err(ApiError::from(sonde_storage::Error::Role {
            role: "query",
            action: "take events passed on by another node",
        }));
    }
    let owner = state.storage.owner_of(ds);
    let nodes = state.forwarder.ingest_nodes(state).await?;
    {
        let mut urls = state.forwarder.urls.write().unwrap();
        urls.extend(nodes.iter().cloned());
    }
    let mut names: Vec<String> = nodes.into_iter().map(|(n, _)| n).collect();
    names.sort_by_key(|n| std::cmp::Reverse(rendezvous(n, ds)));
    // The writer first; should it not answer, the others in the order a new dataset would
    // take: the first whose lease check finds the writer down takes the dataset over.
    if let Some(owner) = owner {
        names.retain(|n| *n != owner);
        names.insert(0, owner);
    }
    if names.is_empty() {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("no ingest node has announced itself in the bucket to take events for dataset {ds}"),
            retry_after: Some(1),
            position: None,
        });
    }
    Ok(Some(names))
}

/// Where a part of a request for `ds` goes on a cluster: `None` to take it here (a single
/// server, or an ingest node that writes the dataset or has just claimed it), else the nodes to
/// pass it on to, in order (see [`query_node_targets`]; an ingest node's: the dataset's writer).
pub(crate) async fn targets(
    state: &AppState,
    ds: &DatasetName,
    headers: &HeaderMap,
) -> Result<Option<Vec<String>>, ApiError> {
    match state.storage.config().role {
        Role::All => Ok(None),
        Role::Query => query_node_targets(state, ds, headers).await,
        Role::Ingest => match state.storage.claim(ds).await {
            Ok(()) => Ok(None),
            Err(sonde_storage::Error::NotOwner { owner, .. }) if !was_forwarded(headers) => Ok(Some(vec![owner])),
            Err(e) => Err(e.into()),
        },
    }
}

/// Events as Honeycomb batch bodies (`[{"time", "samplerate", "data"}]`) of at most
/// `max_bytes` each (an event larger than that alone in its body), to pass on a part of a
/// request that another node writes (OTLP, whose spans go to several datasets).
pub(crate) fn batch_bodies(events: &[sonde_model::Event], max_bytes: usize) -> Vec<(usize, Bytes)> {
    let mut bodies = Vec::new();
    let (mut body, mut count) = (b"[".to_vec(), 0usize);
    for e in events {
        let data: serde_json::Map<String, serde_json::Value> =
            e.fields.iter().map(|(name, v)| (name.clone(), v.to_json())).collect();
        let item = serde_json::to_vec(&serde_json::json!({
            "time": sonde_model::time::format_us(e.timestamp_us),
            "samplerate": e.sample_rate,
            "data": data,
        }))
        .expect("JSON values serialise");
        if count > 0 && body.len() + item.len() + 2 > max_bytes {
            body.push(b']');
            bodies.push((count, Bytes::from(std::mem::replace(&mut body, b"[".to_vec()))));
            count = 0;
        }
        if count > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&item);
        count += 1;
    }
    if count > 0 {
        body.push(b']');
        bodies.push((count, Bytes::from(body)));
    }
    bodies
}

/// A node's weight for a dataset: the node with the highest weight takes a new dataset.
fn rendezvous(node: &str, ds: &DatasetName) -> u64 {
    sonde_model::rendezvous_weight(node, ds.as_str())
}

/// Passes the request on to the first of `nodes` that answers (other than with 421, not its
/// dataset), and relays its answer; 503 naming them when none does.
pub(crate) async fn forward(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
    nodes: &[String],
) -> Result<Response, ApiError> {
    let mut failures = Vec::new();
    for node in nodes {
        // The address known here first; if it fails, the node's member file again (a node
        // restarted on another port announces its new address).
        let cached = state.forwarder.urls.read().unwrap().get(node).cloned();
        let mut tried: Option<String> = None;
        for _ in 0..2 {
            let url = match (&cached, &tried) {
                (Some(u), None) => u.clone(),
                _ => match state.storage.node_url(node).await? {
                    Some(u) if Some(&u) != tried.as_ref() => {
                        state.forwarder.urls.write().unwrap().insert(node.clone(), u.clone());
                        u
                    }
                    Some(_) => break,
                    None => {
                        failures.push(format!("{node}: no member file"));
                        break;
                    }
                },
            };
            match send(state, &url, path, headers, body.clone()).await {
                // Not that node's dataset (its writer is up, as far as that node knows): the
                // next node, then a 503 that names them all.
                Ok(resp) if resp.status().as_u16() == StatusCode::MISDIRECTED_REQUEST.as_u16() => {
                    let said = resp.text().await.unwrap_or_default();
                    failures.push(format!("{node}: {}", said.chars().take(300).collect::<String>()));
                    break;
                }
                Ok(resp) => {
                    state
                        .stats
                        .requests_forwarded
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return relay(node, resp).await;
                }
                Err(e) => {
                    state.forwarder.urls.write().unwrap().remove(node);
                    failures.push(format!("{node} at {url}: {e}"));
                    tried = Some(url);
                }
            }
        }
    }
    Err(ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!(
            "no ingest node took the events (tried {}); retry later",
            failures.join("; ")
        ),
        retry_after: Some(1),
        position: None,
    })
}

/// Sends the request to one node.
async fn send(
    state: &AppState,
    url: &str,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut req = state
        .forwarder
        .http
        .post(format!("{url}{path}"))
        .header(FORWARDED_HEADER, &state.storage.config().node_name)
        .body(body);
    for name in PASSED_HEADERS {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v);
        }
    }
    req.send().await
}

/// An answer from another node of the cluster, read whole up to `limit` bytes: a node that
/// answers more (a bug, or not a Sonde node) is refused rather than read into memory.
pub(crate) async fn read_bounded(mut resp: reqwest::Response, limit: usize, what: &str) -> Result<Bytes, String> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!(
            "{what}: an answer of {} bytes, above the {limit} a node reads",
            resp.content_length().unwrap_or(0)
        ));
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{what}: {e}"))? {
        if body.len() + chunk.len() > limit {
            return Err(format!("{what}: an answer above the {limit} bytes a node reads"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The most of an ingest node's answer a node relays (a batch's statuses are a few bytes an
/// event).
const MAX_RELAYED_BYTES: usize = 64 << 20;

/// The node's answer as this node's, naming the node in `x-sonde-written-by`.
async fn relay(node: &str, resp: reqwest::Response) -> Result<Response, ApiError> {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp.headers().get("content-type").cloned();
    let retry_after = resp.headers().get("retry-after").cloned();
    let answer = read_bounded(resp, MAX_RELAYED_BYTES, &format!("ingest node {node}'s answer"))
        .await
        .map_err(ApiError::internal)?;
    let mut out = (status, answer).into_response();
    let h = out.headers_mut();
    if let Some(ct) = content_type {
        h.insert("content-type", ct);
    }
    if let Some(ra) = retry_after {
        h.insert("retry-after", ra);
    }
    if let Ok(v) = HeaderValue::from_str(node) {
        h.insert("x-sonde-written-by", v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_bodies_keep_every_value_and_stay_under_the_bound() {
        use sonde_model::{Event, FieldValue};
        let events: Vec<Event> = (0..50)
            .map(|i| Event {
                timestamp_us: 1_767_225_600_000_001 + i,
                sample_rate: 1 + i % 3,
                fields: vec![
                    ("service.name".into(), FieldValue::Str(format!("svc \"{i}\"\n"))),
                    ("duration_ms".into(), FieldValue::Float(2.0)),
                    ("big".into(), FieldValue::Int(i64::MAX - i)),
                    ("error".into(), FieldValue::Bool(i % 2 == 0)),
                ],
            })
            .collect();
        let bodies = batch_bodies(&events, 1000);
        assert!(bodies.len() > 5, "{} bodies", bodies.len());
        let mut items = Vec::new();
        for (count, body) in &bodies {
            assert!(body.len() <= 1000, "{} bytes", body.len());
            let parsed: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
            assert_eq!(parsed.len(), *count);
            items.extend(parsed);
        }
        assert_eq!(items.len(), events.len());
        for (item, e) in items.iter().zip(&events) {
            assert_eq!(
                sonde_model::time::parse_time_value(&item["time"]).unwrap(),
                e.timestamp_us
            );
            assert_eq!(item["samplerate"], e.sample_rate);
            let data = &item["data"];
            assert_eq!(
                data["service.name"].as_str(),
                Some(match &e.fields[0].1 {
                    FieldValue::Str(s) => s.as_str(),
                    _ => unreachable!(),
                })
            );
            assert!(data["duration_ms"].is_f64(), "{data}");
            assert_eq!(
                data["big"].as_i64(),
                Some(match e.fields[2].1 {
                    FieldValue::Int(i) => i,
                    _ => unreachable!(),
                })
            );
            assert!(data["error"].is_boolean());
        }
        // An event larger than the bound goes alone.
        assert_eq!(batch_bodies(&events[..3], 10).len(), 3);
    }

    #[test]
    fn rendezvous_spreads_datasets_and_moves_few_when_a_node_joins() {
        fn winner(nodes: &[&'static str], ds: &DatasetName) -> &'static str {
            nodes.iter().max_by_key(|n| rendezvous(n, ds)).unwrap()
        }
        let datasets: Vec<DatasetName> = (0..400)
            .map(|i| DatasetName::new(&format!("ds-{i}")).unwrap())
            .collect();
        let two = ["ingest-1", "ingest-2"];
        let three = ["ingest-1", "ingest-2", "ingest-3"];
        let on_first = datasets.iter().filter(|d| winner(&two, d) == "ingest-1").count();
        assert!((120..=280).contains(&on_first), "{on_first} of 400 on one of two nodes");
        // A third node takes about a third, and only from the others: nothing moves between them.
        let mut moved_to_new = 0;
        for d in &datasets {
            let (before, after) = (winner(&two, d), winner(&three, d));
            if before != after {
                assert_eq!(after, "ingest-3", "{d} moved between old nodes");
                moved_to_new += 1;
            }
        }
        assert!((80..=190).contains(&moved_to_new), "{moved_to_new} of 400 moved");
    }
}

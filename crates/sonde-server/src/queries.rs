//! Honeycomb's query-data API: saved queries (`/1/queries/{dataset}`) and their results
//! (`/1/query_results/{dataset}`).
//!
//! A saved query is immutable, as Honeycomb's are: saving the same spec again in the same
//! dataset answers the id it already has, so boards, triggers and the UI that save the query
//! they show do not pile up copies. Saved queries are kept in a document beside the catalog
//! (`sonde_storage::documents`), like derived columns, so they survive a restart and a second
//! server over the same bucket finds them; each dataset holds at most `--max-saved-objects`.
//! Results are computed when asked for and kept in memory only (the last
//! [`MAX_RESULTS`] of them): they are answers, not objects.

use crate::extract::{Authorized, Describe, Query, QueryCall};
use crate::objects::{check_room, new_id, now};
use crate::{AppState, error::ApiError};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sonde_model::DatasetName;
use sonde_query::QuerySpec;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;

/// The document holding every saved query.
const DOCUMENT: &str = "queries";

/// Query results kept for `GET /1/query_results/{dataset}/{id}`; older ones are forgotten.
pub(crate) const MAX_RESULTS: usize = 1000;

/// A saved query as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredQuery {
    pub(crate) id: String,
    pub(crate) query: QuerySpec,
    pub(crate) created_at: String,
}

/// Every saved query, by dataset.
pub(crate) type Stored = BTreeMap<String, Vec<StoredQuery>>;

/// Every saved query.
pub(crate) async fn load(state: &AppState) -> Result<Stored, ApiError> {
    Ok(state.storage.documents().load(DOCUMENT).await?)
}

/// The saved query `id` of `dataset`, if there is one.
pub(crate) fn find<'a>(all: &'a Stored, dataset: &str, id: &str) -> Option<&'a StoredQuery> {
    all.get(dataset)?.iter().find(|q| q.id == id)
}

/// The saved query `id` of whichever dataset holds it, with that dataset.
pub(crate) fn find_any<'a>(all: &'a Stored, id: &str) -> Option<(&'a str, &'a StoredQuery)> {
    all.iter()
        .find_map(|(ds, list)| list.iter().find(|q| q.id == id).map(|q| (ds.as_str(), q)))
}

/// The saved queries of `dataset` (of any dataset, for `__all__`) that name the column `name`,
/// described for an error message.
pub(crate) fn naming(all: &Stored, dataset: &str, name: &str) -> Vec<String> {
    all.iter()
        .filter(|(ds, _)| dataset == sonde_model::derived::ALL_DATASETS || ds.as_str() == dataset)
        .flat_map(|(ds, list)| {
            list.iter()
                .filter(|q| q.query.names_column(name))
                .map(move |q| format!("saved query {:?} of {ds}", q.id))
        })
        .collect()
}

/// The query results computed lately, bounded (oldest dropped).
#[derive(Debug, Default)]
pub struct QueryResults {
    inner: Mutex<Results>,
}

#[derive(Debug, Default)]
struct Results {
    by_id: HashMap<String, (DatasetName, QueryResultAnswer)>,
    order: VecDeque<String>,
}

impl QueryResults {
    fn remember(&self, ds: DatasetName, answer: QueryResultAnswer) {
        let mut s = self.inner.lock().unwrap();
        s.order.push_back(answer.id.clone());
        s.by_id.insert(answer.id.clone(), (ds, answer));
        while s.order.len() > MAX_RESULTS {
            if let Some(old) = s.order.pop_front() {
                s.by_id.remove(&old);
            }
        }
    }

    fn get(&self, id: &str) -> Option<(DatasetName, QueryResultAnswer)> {
        self.inner.lock().unwrap().by_id.get(id).cloned()
    }
}

/// A saved query as answered: the spec, with its id (Honeycomb's shape).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SavedQuery {
    #[serde(flatten)]
    spec: QuerySpec,
    id: String,
}

/// `POST /1/queries/{dataset}`: saves a query spec (or finds the same one saved before) and
/// answers it with its id.
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
    let id = save(&state, &ds, &spec).await?;
    Ok(Json(SavedQuery { spec, id }))
}

/// Saves `spec` in `ds` (already validated), or finds the same spec saved before; its id.
pub(crate) async fn save(state: &AppState, ds: &DatasetName, spec: &QuerySpec) -> Result<String, ApiError> {
    let scope = ds.as_str().to_string();
    // Most saves repeat a query already saved: answer those without rewriting the document.
    let before = load(state).await?;
    if let Some(same) = before.get(&scope).and_then(|l| l.iter().find(|s| s.query == *spec)) {
        return Ok(same.id.clone());
    }
    drop(before);
    let id = state
        .storage
        .documents()
        .update(DOCUMENT, |all: &mut Stored| {
            let list = all.entry(scope.clone()).or_default();
            if let Some(same) = list.iter().find(|s| s.query == *spec) {
                return Ok(same.id.clone());
            }
            check_room(state, "saved queries", &scope, list.len())?;
            let id = new_id();
            list.push(StoredQuery {
                id: id.clone(),
                query: spec.clone(),
                created_at: now(),
            });
            Ok::<_, ApiError>(id)
        })
        .await??;
    Ok(id)
}

/// `GET /1/queries/{dataset}/{id}`.
pub(crate) async fn get_query(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<SavedQuery>, ApiError> {
    let ds = access.dataset()?;
    let all = load(&state).await?;
    let q = find(&all, ds.as_str(), &id).ok_or_else(|| not_found(ds, &id))?;
    Ok(Json(SavedQuery {
        spec: q.query.clone(),
        id,
    }))
}

fn not_found(ds: &DatasetName, id: &str) -> ApiError {
    ApiError::not_found(format!("no saved query with id {id:?} in {ds}"))
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
    /// The UI's own permalink form (`q` = the spec as JSON), so the link opens this query
    /// whatever becomes of the saved one.
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
    let all = load(&state).await?;
    let spec = match find(&all, ds.as_str(), &req.query_id) {
        Some(s) => s.query.clone(),
        None => {
            let elsewhere = all.iter().find(|(_, l)| l.iter().any(|s| s.id == req.query_id));
            return Err(match elsewhere {
                Some((other, _)) => {
                    ApiError::bad_request(format!("query {:?} belongs to dataset {other}", req.query_id))
                }
                None => ApiError::not_found(format!("query {:?} does not exist", req.query_id)),
            });
        }
    };
    drop(all);
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
    let answer = QueryResultAnswer {
        id: new_id(),
        query_id: req.query_id.clone(),
        complete: true,
        data: r.data,
        meta: r.meta,
        links: Links {
            query_url: ui_link(&ds, &spec),
        },
    };
    state.results.remember(ds, answer.clone());
    Ok((StatusCode::CREATED, Json(answer)))
}

/// The UI's permalink for a query: `/?dataset=…&q=<the spec as JSON>`, percent-encoded.
pub(crate) fn ui_link(ds: &DatasetName, spec: &QuerySpec) -> String {
    let q = serde_json::to_string(spec).unwrap_or_default();
    format!("/?dataset={}&q={}", percent_encode(ds.as_str()), percent_encode(&q))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
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
    // A result is found only under the dataset it was made for.
    state
        .results
        .get(&id)
        .filter(|(rds, _)| rds == ds)
        .map(|(_, v)| Json(v))
        .ok_or_else(|| ApiError::not_found(format!("query result {id:?} does not exist")))
}

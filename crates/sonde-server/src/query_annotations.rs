//! Honeycomb's query annotations, `/1/query_annotations/{dataset}`: a name and a description
//! given to a saved query. A saved query with an annotation is what Honeycomb (and the UI)
//! calls a saved query; one query may carry several.
//!
//! Kept in a document beside the catalog, like the queries they name; each dataset holds at
//! most `--max-saved-objects`. `source` says where an annotation was made: `query` (the
//! default: saved from the query builder) or `board` (made for a board panel); a listing
//! leaves board annotations out unless `?include_board_annotations=true`, as Honeycomb's does.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Authorized, Describe, JsonBody, Manage, Query};
use crate::objects::{add_in, change_in, check_text, delete_in, find_in, new_id, now};
use axum::Json;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

const DOCUMENT: &str = "query_annotations";

/// Honeycomb's limits.
const MAX_NAME_CHARS: usize = 320;
const MAX_DESCRIPTION_CHARS: usize = 1023;

/// A query annotation, as stored and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Annotation {
    id: String,
    name: String,
    #[serde(default)]
    description: String,
    /// The saved query named; it cannot change.
    query_id: String,
    /// `query` or `board`.
    source: String,
    created_at: String,
    updated_at: String,
}

/// An annotation as a client sends it (read-only fields sent back are ignored). `PUT` replaces
/// the name and description whole; `query_id`, if given, must be the one it has.
#[derive(Debug, Deserialize)]
pub(crate) struct AnnotationBody {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    query_id: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

impl Describe for AnnotationBody {
    const WHAT: &'static str = "query annotation";
}

/// `?include_board_annotations=`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    include_board_annotations: bool,
}

/// Every annotation, by dataset.
pub(crate) type Annotations = BTreeMap<String, Vec<Annotation>>;

impl Annotation {
    /// Its id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }
    /// The saved query it names.
    pub(crate) fn query_id(&self) -> &str {
        &self.query_id
    }
}

/// Every annotation.
pub(crate) async fn load(state: &AppState) -> Result<Annotations, ApiError> {
    Ok(state.storage.documents().load(DOCUMENT).await?)
}

fn scope(access: &Authorized<impl Sized>) -> Result<String, ApiError> {
    Ok(access.dataset()?.as_str().to_string())
}

fn not_found(scope: &str, id: &str) -> ApiError {
    ApiError::not_found(format!("no query annotation with id {id:?} in {scope}"))
}

fn check_fields(body: &AnnotationBody) -> Result<(), ApiError> {
    check_text("name", &body.name, MAX_NAME_CHARS, true)?;
    check_text("description", &body.description, MAX_DESCRIPTION_CHARS, false)?;
    match body.source.as_deref() {
        None | Some("query") | Some("board") => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "source: must be \"query\" or \"board\", got {other:?}"
        ))),
    }
}

/// The annotations of `dataset` (all of them, or only those made from queries).
pub(crate) async fn of_dataset(state: &AppState, dataset: &str, with_board: bool) -> Result<Vec<Annotation>, ApiError> {
    let all = load(state).await?;
    Ok(all
        .get(dataset)
        .into_iter()
        .flatten()
        .filter(|a| with_board || a.source == "query")
        .cloned()
        .collect())
}

/// `GET /1/query_annotations/{dataset}`: oldest first.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
    UrlQuery(q): UrlQuery<ListQuery>,
) -> Result<Json<Vec<Annotation>>, ApiError> {
    let scope = scope(&access)?;
    Ok(Json(of_dataset(&state, &scope, q.include_board_annotations).await?))
}

/// `POST /1/query_annotations/{dataset}`: names a saved query of the dataset.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    JsonBody(body): JsonBody<AnnotationBody>,
) -> Result<(StatusCode, Json<Annotation>), ApiError> {
    let scope = scope(&access)?;
    check_fields(&body)?;
    let query_id = body
        .query_id
        .clone()
        .filter(|q| !q.is_empty())
        .ok_or_else(|| ApiError::bad_request("query_id: required, the id of a saved query (POST /1/queries)"))?;
    let queries = crate::queries::load(&state).await?;
    if crate::queries::find(&queries, &scope, &query_id).is_none() {
        return Err(ApiError::not_found(format!(
            "query_id: no saved query with id {query_id:?} in {scope}"
        )));
    }
    let at = now();
    let a = Annotation {
        id: new_id(),
        name: body.name,
        description: body.description,
        query_id,
        source: body.source.unwrap_or_else(|| "query".to_string()),
        created_at: at.clone(),
        updated_at: at,
    };
    let created = add_in(&state, DOCUMENT, &scope, "query annotations", a).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /1/query_annotations/{dataset}/{id}`.
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Annotation>, ApiError> {
    let scope = scope(&access)?;
    Ok(Json(
        find_in(&state, DOCUMENT, &scope, &id, || not_found(&scope, &id)).await?,
    ))
}

/// `PUT /1/query_annotations/{dataset}/{id}`: a new name and description (a full replace, as
/// Honeycomb's: a description left out becomes empty).
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<AnnotationBody>,
) -> Result<Json<Annotation>, ApiError> {
    let scope = scope(&access)?;
    check_fields(&body)?;
    let changed = change_in(
        &state,
        DOCUMENT,
        &scope,
        &id,
        || not_found(&scope, &id),
        |a: &mut Annotation| {
            if let Some(q) = body.query_id.as_deref().filter(|q| !q.is_empty() && *q != a.query_id) {
                return Err(ApiError::bad_request(format!(
                    "query_id: cannot be changed (from {:?} to {q:?}); create a new annotation instead",
                    a.query_id
                )));
            }
            a.name = body.name;
            a.description = body.description;
            if let Some(s) = body.source {
                a.source = s;
            }
            a.updated_at = now();
            Ok(())
        },
    )
    .await?;
    Ok(Json(changed))
}

/// `DELETE /1/query_annotations/{dataset}/{id}`: the saved query itself stays (queries are
/// immutable); 409 while a board shows it.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let scope = scope(&access)?;
    if let Some(board) = crate::boards::showing(&state, &id).await?.first() {
        return Err(ApiError::conflict(format!(
            "query annotation {id:?} is shown on {board}; remove that panel first"
        )));
    }
    delete_in::<Annotation>(&state, DOCUMENT, &scope, &id, || not_found(&scope, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

impl crate::objects::Keyed for Annotation {
    fn key(&self) -> &str {
        &self.id
    }
}

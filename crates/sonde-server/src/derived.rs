//! Honeycomb's derived-columns API, `/1/derived_columns/{dataset}` (`__all__` for every
//! dataset): create, list, find by alias, read, change and delete the expressions queries may
//! name as columns. They are kept in one document beside the catalog (see
//! `sonde_storage::documents`), read on every request, so a second server over the same
//! bucket answers with the same ones.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Authorized, Describe, JsonBody, Manage, Query};
use crate::objects::{check_room, new_id, now};
use axum::Json;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sonde_model::derived::{self, ALL_DATASETS, DerivedColumn, DerivedSet, ExprError};
use sonde_model::{ColumnType, DatasetName, spec};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The document holding every derived column.
const DOCUMENT: &str = "derived_columns";

/// Longest alias and description (Honeycomb's limits).
const MAX_ALIAS_CHARS: usize = 255;

/// Every stored derived column, as the queries of this request will see them.
pub(crate) async fn load(state: &AppState) -> Result<DerivedSet, ApiError> {
    Ok(state.storage.documents().load(DOCUMENT).await?)
}

/// A derived column as a client sends it (the read-only fields Honeycomb's clients send back,
/// `created_at` and `updated_at`, are ignored).
#[derive(Debug, Deserialize)]
pub(crate) struct DerivedBody {
    #[serde(default)]
    id: Option<String>,
    alias: String,
    expression: String,
    #[serde(default)]
    description: String,
}

impl Describe for DerivedBody {
    const WHAT: &'static str = "derived column";
}

#[derive(Debug, Deserialize)]
pub(crate) struct AliasQuery {
    alias: Option<String>,
}

fn scope(access: &Authorized<impl Sized>) -> Result<String, ApiError> {
    Ok(access.dataset()?.as_str().to_string())
}

fn expr_error(field: &str, e: ExprError) -> ApiError {
    ApiError {
        position: Some(e.position),
        ..ApiError::bad_request(format!("{field}: {}", e.message))
    }
}

/// The columns the derived columns of `scope` are checked against: the dataset's (with
/// `samplerate`), or none for `__all__` and for a dataset that has no events yet (only the
/// syntax is checked then; queries check the rest).
fn columns_of(state: &AppState, scope: &str) -> Option<BTreeMap<String, ColumnType>> {
    let ds = DatasetName::new(scope).ok().filter(|_| scope != ALL_DATASETS)?;
    Some(state.storage.snapshot(&ds)?.queryable_columns())
}

/// Checks a new or changed column of `scope` among the others it would sit with.
fn validate(state: &AppState, scope: &str, set: &DerivedSet, d: &DerivedColumn) -> Result<(), ApiError> {
    let chars = d.alias.chars().count();
    if chars == 0 || chars > MAX_ALIAS_CHARS {
        return Err(ApiError::bad_request(format!(
            "alias: must be 1 to {MAX_ALIAS_CHARS} characters"
        )));
    }
    if sonde_model::is_reserved_name(&d.alias) {
        return Err(ApiError::bad_request(format!(
            "alias: {:?} is a reserved column",
            d.alias
        )));
    }
    if d.expression.trim().is_empty() {
        return Err(ApiError::bad_request("expression: must not be empty"));
    }
    if d.description.chars().count() > MAX_ALIAS_CHARS {
        return Err(ApiError::bad_request(format!(
            "description: at most {MAX_ALIAS_CHARS} characters"
        )));
    }
    derived::parse(&d.expression).map_err(|e| expr_error("expression", e))?;
    let Some(columns) = columns_of(state, scope) else {
        return Ok(());
    };
    let mut with = set.clone();
    let list = with.0.entry(scope.to_string()).or_default();
    list.retain(|o| o.alias != d.alias);
    list.push(d.clone());
    spec::check_derived(&columns, &with.for_dataset(scope), &d.alias)
        .map(|_| ())
        .map_err(|e| expr_error("expression", e))
}

/// `GET /1/derived_columns/{dataset}`: all of them, or with `?alias=` the one (404 if none).
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
    UrlQuery(q): UrlQuery<AliasQuery>,
) -> Result<Response, ApiError> {
    let scope = scope(&access)?;
    let set = load(&state).await?;
    let own = set.0.get(&scope).cloned().unwrap_or_default();
    match q.alias {
        Some(alias) => own
            .into_iter()
            .find(|d| d.alias == alias)
            .map(|d| Json(d).into_response())
            .ok_or_else(|| ApiError::not_found(format!("no derived column with alias {alias:?} in {scope}"))),
        None => Ok(Json(own).into_response()),
    }
}

/// `POST /1/derived_columns/{dataset}`: creates one (409 if the alias is taken).
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    JsonBody(body): JsonBody<DerivedBody>,
) -> Result<Response, ApiError> {
    let scope = scope(&access)?;
    let at = now();
    let d = DerivedColumn {
        id: new_id(),
        alias: body.alias,
        expression: body.expression,
        description: body.description,
        created_at: at.clone(),
        updated_at: at,
    };
    let created = state
        .storage
        .documents()
        .update(DOCUMENT, |set: &mut DerivedSet| {
            if set.0.get(&scope).is_some_and(|l| l.iter().any(|o| o.alias == d.alias)) {
                return Err(ApiError::conflict(format!(
                    "a derived column with alias {:?} already exists in {scope}",
                    d.alias
                )));
            }
            validate(&state, &scope, set, &d)?;
            let list = set.0.entry(scope.clone()).or_default();
            check_room(&state, "derived columns", &scope, list.len())?;
            list.push(d.clone());
            Ok(d)
        })
        .await??;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /1/derived_columns/{dataset}/{id}`.
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<DerivedColumn>, ApiError> {
    let scope = scope(&access)?;
    let id = &params["id"];
    let set = load(&state).await?;
    set.0
        .get(&scope)
        .and_then(|l| l.iter().find(|d| &d.id == id))
        .cloned()
        .map(Json)
        .ok_or_else(|| not_found(&scope, id))
}

fn not_found(scope: &str, id: &str) -> ApiError {
    ApiError::not_found(format!("no derived column with id {id:?} in {scope}"))
}

/// `PUT /1/derived_columns/{dataset}/{id}`: a new expression or description (the alias cannot
/// change: queries name the column by it).
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    Path(params): Path<HashMap<String, String>>,
    JsonBody(body): JsonBody<DerivedBody>,
) -> Result<Json<DerivedColumn>, ApiError> {
    let scope = scope(&access)?;
    let id = params["id"].clone();
    if body.id.as_ref().is_some_and(|b| *b != id) {
        return Err(ApiError::bad_request("id: does not match the path"));
    }
    let changed = state
        .storage
        .documents()
        .update(DOCUMENT, |set: &mut DerivedSet| {
            let current = set
                .0
                .get(&scope)
                .and_then(|l| l.iter().find(|d| d.id == id))
                .cloned()
                .ok_or_else(|| not_found(&scope, &id))?;
            if current.alias != body.alias {
                return Err(ApiError::bad_request(format!(
                    "alias: cannot be changed (from {:?}); create a new derived column instead",
                    current.alias
                )));
            }
            let d = DerivedColumn {
                expression: body.expression.clone(),
                description: body.description.clone(),
                updated_at: now(),
                ..current
            };
            validate(&state, &scope, set, &d)?;
            let list = set.0.get_mut(&scope).expect("found above");
            *list.iter_mut().find(|o| o.id == id).expect("found above") = d.clone();
            Ok(d)
        })
        .await??;
    Ok(Json(changed))
}

/// `DELETE /1/derived_columns/{dataset}/{id}`: 409 while another derived column names it.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let scope = scope(&access)?;
    let id = params["id"].clone();
    let saved = crate::queries::load(&state).await?;
    state
        .storage
        .documents()
        .update(DOCUMENT, |set: &mut DerivedSet| {
            let alias = set
                .0
                .get(&scope)
                .and_then(|l| l.iter().find(|d| d.id == id))
                .map(|d| d.alias.clone())
                .ok_or_else(|| not_found(&scope, &id))?;
            let mut users = users_of(set, &scope, &alias);
            users.extend(crate::queries::naming(&saved, &scope, &alias));
            if let Some(user) = users.first() {
                return Err(ApiError::conflict(format!(
                    "derived column {alias:?} is used by {user}; change or delete that first"
                )));
            }
            set.0.get_mut(&scope).expect("found above").retain(|d| d.id != id);
            Ok(())
        })
        .await??;
    Ok(StatusCode::NO_CONTENT)
}

/// The saved objects that name `alias` of `scope`: other derived columns whose expressions
/// refer to it (in the same scope, or anywhere when it is environment-wide).
fn users_of(set: &DerivedSet, scope: &str, alias: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (s, list) in &set.0 {
        if s != scope && scope != ALL_DATASETS {
            continue;
        }
        for d in list.iter().filter(|d| !(s == scope && d.alias == alias)) {
            if derived::parse(&d.expression).is_ok_and(|ast| ast.names_column(alias)) {
                out.push(format!("derived column {:?} of {s}", d.alias));
            }
        }
    }
    out
}

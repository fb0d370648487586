//! Honeycomb's markers, `/1/markers/{dataset}` (`__all__`: environment markers, drawn on every
//! dataset's graphs), and marker settings, `/1/marker_settings/{dataset}`: the colour of each
//! marker type. A marker is a moment (`start_time`) or a span (`start_time` to `end_time`) with a
//! message, a type and a link — a deploy, a feature flag flip, an incident.
//!
//! Both are kept in documents beside the catalog (`sonde_storage::documents`), one per kind,
//! by dataset; each dataset holds at most `--max-saved-objects` of each. Listing fills each
//! marker's `color` from the settings of its dataset, then from the environment's.
//!
//! Beyond Honeycomb: `GET /1/markers/{dataset}?start_time=&end_time=` lists only the markers
//! that overlap that range (unix seconds), which is what a graph needs.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Authorized, Describe, JsonBody, Manage, Query};
use crate::objects::{add_in, change_in, check_room, check_text, check_url, delete_in, new_id, now};
use axum::Json;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sonde_model::derived::ALL_DATASETS;
use std::collections::BTreeMap;
use std::sync::Arc;

const MARKERS: &str = "markers";
const SETTINGS: &str = "marker_settings";

/// Longest message (Honeycomb publishes none; a line above a graph needs no more).
const MAX_MESSAGE_CHARS: usize = 1024;
/// Longest marker type.
const MAX_TYPE_CHARS: usize = 255;

/// A marker, as stored and answered (Honeycomb's shape; empty fields are left out, as its API
/// does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Marker {
    id: String,
    /// Unix seconds.
    start_time: i64,
    /// Unix seconds; with it the marker is a span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    message: String,
    /// Markers of one type share a colour.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    kind: String,
    /// Where the message links to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    url: String,
    created_at: String,
    updated_at: String,
    /// From the marker settings, when listed; never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    color: Option<String>,
}

/// A marker as a client sends it: every field optional (Honeycomb's); on `PUT`, the fields
/// given replace the stored ones. Read-only fields sent back (`id`, `created_at`, `color`) are
/// ignored.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct MarkerBody {
    start_time: Option<i64>,
    end_time: Option<i64>,
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    url: Option<String>,
}

impl Describe for MarkerBody {
    const WHAT: &'static str = "marker";
    fn when_empty() -> Option<Self> {
        Some(Self::default())
    }
}

/// A marker type's colour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MarkerSetting {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    /// `#rrggbb`.
    color: String,
    created_at: String,
    updated_at: String,
}

/// A marker setting as a client sends it: both fields required.
#[derive(Debug, Deserialize)]
pub(crate) struct SettingBody {
    #[serde(rename = "type")]
    kind: String,
    color: String,
}

impl Describe for SettingBody {
    const WHAT: &'static str = "marker setting";
}

/// `?start_time=&end_time=` of a marker listing.
#[derive(Debug, Deserialize)]
pub(crate) struct Range {
    start_time: Option<i64>,
    end_time: Option<i64>,
}

type Markers = BTreeMap<String, Vec<Marker>>;
type Settings = BTreeMap<String, Vec<MarkerSetting>>;

fn scope(access: &Authorized<impl Sized>) -> Result<String, ApiError> {
    Ok(access.dataset()?.as_str().to_string())
}

fn not_found(what: &str, scope: &str, id: &str) -> ApiError {
    ApiError::not_found(format!("no {what} with id {id:?} in {scope}"))
}

/// Checks a marker's fields together.
fn validate(m: &Marker) -> Result<(), ApiError> {
    if m.start_time < 0 {
        return Err(ApiError::bad_request(format!(
            "start_time: must be unix seconds, got {}",
            m.start_time
        )));
    }
    if let Some(end) = m.end_time
        && end < m.start_time
    {
        return Err(ApiError::bad_request(format!(
            "end_time: {end} is before start_time {}",
            m.start_time
        )));
    }
    check_text("message", &m.message, MAX_MESSAGE_CHARS, false)?;
    check_text("type", &m.kind, MAX_TYPE_CHARS, false)?;
    check_url("url", &m.url)
}

/// Applies the fields `body` gives to `m`.
fn apply(m: &mut Marker, body: MarkerBody) {
    if let Some(t) = body.start_time {
        m.start_time = t;
    }
    if body.end_time.is_some() {
        m.end_time = body.end_time;
    }
    if let Some(v) = body.message {
        m.message = v;
    }
    if let Some(v) = body.kind {
        m.kind = v;
    }
    if let Some(v) = body.url {
        m.url = v;
    }
}

/// Fills `color` from the settings of `scope`, then of the environment.
fn colour(mut m: Marker, scope: &str, settings: &Settings) -> Marker {
    let find = |s: &str| {
        settings
            .get(s)
            .and_then(|l| l.iter().find(|x| x.kind == m.kind))
            .map(|x| x.color.clone())
    };
    m.color = find(scope).or_else(|| find(ALL_DATASETS));
    m
}

async fn settings(state: &AppState) -> Result<Settings, ApiError> {
    Ok(state.storage.documents().load(SETTINGS).await?)
}

/// `GET /1/markers/{dataset}`: its markers, oldest first, each with its type's colour.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
    UrlQuery(range): UrlQuery<Range>,
) -> Result<Json<Vec<Marker>>, ApiError> {
    let scope = scope(&access)?;
    let all: Markers = state.storage.documents().load(MARKERS).await?;
    let settings = settings(&state).await?;
    let (from, to) = (range.start_time.unwrap_or(i64::MIN), range.end_time.unwrap_or(i64::MAX));
    let mut out: Vec<Marker> = all
        .get(&scope)
        .into_iter()
        .flatten()
        .filter(|m| m.start_time <= to && m.end_time.unwrap_or(m.start_time) >= from)
        .map(|m| colour(m.clone(), &scope, &settings))
        .collect();
    out.sort_by_key(|m| m.start_time);
    Ok(Json(out))
}

/// `POST /1/markers/{dataset}`: a new marker; `start_time` defaults to now.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    JsonBody(body): JsonBody<MarkerBody>,
) -> Result<(StatusCode, Json<Marker>), ApiError> {
    let scope = scope(&access)?;
    let at = now();
    let mut m = Marker {
        id: new_id(),
        start_time: sonde_model::time::now_us() / 1_000_000,
        end_time: None,
        message: String::new(),
        kind: String::new(),
        url: String::new(),
        created_at: at.clone(),
        updated_at: at,
        color: None,
    };
    apply(&mut m, body);
    validate(&m)?;
    let created = add_in(&state, MARKERS, &scope, "markers", m).await?;
    let settings = settings(&state).await?;
    Ok((StatusCode::CREATED, Json(colour(created, &scope, &settings))))
}

/// Adds a marker at now to `scope` (a trigger's `marker` recipient): past the bound, the oldest
/// of the scope's markers of `kind` makes room, since a trigger adds them by itself.
pub(crate) async fn add(state: &AppState, scope: &str, message: &str, kind: &str) -> Result<(), ApiError> {
    let at = now();
    let m = Marker {
        id: new_id(),
        start_time: sonde_model::time::now_us() / 1_000_000,
        end_time: None,
        message: message.chars().take(MAX_MESSAGE_CHARS).collect(),
        kind: kind.to_string(),
        url: String::new(),
        created_at: at.clone(),
        updated_at: at,
        color: None,
    };
    let max = state.config.max_saved_objects;
    state
        .storage
        .documents()
        .update(MARKERS, |all: &mut Markers| {
            let list = all.entry(scope.to_string()).or_default();
            if list.len() >= max
                && let Some(oldest) = list.iter().position(|o| o.kind == m.kind)
            {
                list.remove(oldest);
            }
            check_room(state, "markers", scope, list.len())?;
            list.push(m);
            Ok::<_, ApiError>(())
        })
        .await?
}

/// `PUT /1/markers/{dataset}/{id}`: changes the fields given.
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<MarkerBody>,
) -> Result<Json<Marker>, ApiError> {
    let scope = scope(&access)?;
    let missing = || not_found("marker", &scope, &id);
    let changed = change_in(&state, MARKERS, &scope, &id, missing, |m: &mut Marker| {
        apply(m, body);
        m.updated_at = now();
        validate(m)
    })
    .await?;
    let settings = settings(&state).await?;
    Ok(Json(colour(changed, &scope, &settings)))
}

/// `DELETE /1/markers/{dataset}/{id}`: answers the marker deleted.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Marker>, ApiError> {
    let scope = scope(&access)?;
    let gone = delete_in(&state, MARKERS, &scope, &id, || not_found("marker", &scope, &id)).await?;
    Ok(Json(gone))
}

/// Checks a setting: a type, and a colour as `#rrggbb`.
fn validate_setting(body: &SettingBody) -> Result<(), ApiError> {
    check_text("type", &body.kind, MAX_TYPE_CHARS, true)?;
    let hex = body.color.strip_prefix('#').unwrap_or("");
    if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "color: must be a hex colour like #f96e11, got {:?}",
            body.color
        )));
    }
    Ok(())
}

/// `GET /1/marker_settings/{dataset}`.
pub(crate) async fn list_settings(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
) -> Result<Json<Vec<MarkerSetting>>, ApiError> {
    let scope = scope(&access)?;
    let all = settings(&state).await?;
    Ok(Json(all.get(&scope).cloned().unwrap_or_default()))
}

/// `POST /1/marker_settings/{dataset}`: a colour for a type (409 if the type has one).
pub(crate) async fn create_setting(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    JsonBody(body): JsonBody<SettingBody>,
) -> Result<(StatusCode, Json<MarkerSetting>), ApiError> {
    let scope = scope(&access)?;
    validate_setting(&body)?;
    let at = now();
    let s = MarkerSetting {
        id: new_id(),
        kind: body.kind,
        color: body.color,
        created_at: at.clone(),
        updated_at: at,
    };
    let created = state
        .storage
        .documents()
        .update(SETTINGS, |all: &mut Settings| {
            let list = all.entry(scope.clone()).or_default();
            if list.iter().any(|o| o.kind == s.kind) {
                return Err(ApiError::conflict(format!(
                    "marker type {:?} already has a colour in {scope}; change that one (PUT) instead",
                    s.kind
                )));
            }
            check_room(&state, "marker settings", &scope, list.len())?;
            list.push(s.clone());
            Ok(s)
        })
        .await??;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `PUT /1/marker_settings/{dataset}/{id}`: a new type and colour.
pub(crate) async fn update_setting(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<SettingBody>,
) -> Result<Json<MarkerSetting>, ApiError> {
    let scope = scope(&access)?;
    validate_setting(&body)?;
    let changed = state
        .storage
        .documents()
        .update(SETTINGS, |all: &mut Settings| {
            let list = all
                .get_mut(&scope)
                .ok_or_else(|| not_found("marker setting", &scope, &id))?;
            if list.iter().any(|o| o.kind == body.kind && o.id != id) {
                return Err(ApiError::conflict(format!(
                    "marker type {:?} already has a colour in {scope}",
                    body.kind
                )));
            }
            let s = list
                .iter_mut()
                .find(|s| s.id == id)
                .ok_or_else(|| not_found("marker setting", &scope, &id))?;
            s.kind = body.kind;
            s.color = body.color;
            s.updated_at = now();
            Ok(s.clone())
        })
        .await??;
    Ok(Json(changed))
}

/// `DELETE /1/marker_settings/{dataset}/{id}`.
pub(crate) async fn delete_setting(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let scope = scope(&access)?;
    delete_in::<MarkerSetting>(&state, SETTINGS, &scope, &id, || {
        not_found("marker setting", &scope, &id)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

impl crate::objects::Keyed for Marker {
    fn key(&self) -> &str {
        &self.id
    }
}

impl crate::objects::Keyed for MarkerSetting {
    fn key(&self) -> &str {
        &self.id
    }
}

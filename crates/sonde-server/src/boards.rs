//! Honeycomb's flexible boards, `/1/boards` (environment-wide, like Honeycomb's), and board
//! views, `/1/boards/{id}/views`: saved queries, text and SLOs laid out on a 12-column
//! grid, with preset filters that apply to every query panel, and named filter sets.
//!
//! A query panel names a saved query and one of its annotations (both must exist); its
//! `dataset` is filled in from the query, as Honeycomb answers it. Panels without a size get
//! their type's, and `layout_generation: "auto"` lays them out in rows. Boards are kept in one
//! document beside the catalog, each with its views; at most `--max-saved-objects` boards, and
//! 50 views per board (Honeycomb's limit).

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Authorized, Describe, JsonBody, Manage, Query};
use crate::objects::{check_room, check_text, new_id, now, null_as_default};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

const DOCUMENT: &str = "boards";

/// The grid's width in columns.
pub(crate) const GRID_COLUMNS: i64 = 12;
const MAX_NAME_CHARS: usize = 255;
const MAX_DESCRIPTION_CHARS: usize = 1024;
const MAX_TAGS: usize = 10;
const MAX_PRESET_FILTERS: usize = 5;
const MAX_ALIAS_CHARS: usize = 50;
const MAX_TEXT_CHARS: usize = 10_000;
const MAX_PANELS: usize = 100;
const MAX_VIEWS: usize = 50;

/// A board, as answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Board {
    id: String,
    name: String,
    #[serde(default)]
    description: String,
    /// Always `flexible`.
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    preset_filters: Vec<PresetFilter>,
    #[serde(default)]
    panels: Vec<Panel>,
    links: Links,
    created_at: String,
    updated_at: String,
}

/// `{"key": "team", "value": "backend"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tag {
    key: String,
    value: String,
}

/// A column every query panel of the board can be filtered on, from the board's filter bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PresetFilter {
    column: String,
    #[serde(default)]
    alias: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Links {
    board_url: String,
}

/// A panel: its type, where it sits, and the object of its type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Panel {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    position: Position,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    query_panel: Option<QueryPanel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slo_panel: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text_panel: Option<TextPanel>,
}

/// Grid cells: x and width in columns (of 12), y and height in rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Position {
    #[serde(default)]
    x_coordinate: i64,
    #[serde(default)]
    y_coordinate: i64,
    #[serde(default)]
    width: i64,
    #[serde(default)]
    height: i64,
}

/// A saved query on the board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct QueryPanel {
    query_id: String,
    query_annotation_id: String,
    /// `graph`, `table` or `combo` (both).
    #[serde(default = "graph")]
    query_style: String,
    /// The query's dataset (read-only: filled in from the query).
    #[serde(default)]
    dataset: String,
    /// How to draw it (Honeycomb's object, kept as given: `hide_markers`, `charts`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    visualization_settings: Option<Value>,
}

fn graph() -> String {
    "graph".to_string()
}

/// Markdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TextPanel {
    content: String,
}

/// A board as a client sends it. On `PUT`, `preset_filters` left out keeps the board's; `[]`
/// removes them (Honeycomb's rule).
#[derive(Debug, Deserialize)]
pub(crate) struct BoardBody {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    layout_generation: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    tags: Vec<Tag>,
    #[serde(default)]
    preset_filters: Option<Vec<PresetFilter>>,
    #[serde(default, deserialize_with = "null_as_default")]
    panels: Vec<Panel>,
}

impl Describe for BoardBody {
    const WHAT: &'static str = "board";
}

/// A named set of filters over a board (Honeycomb's board view).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct BoardView {
    id: String,
    name: String,
    filters: Vec<ViewFilter>,
}

/// One filter of a view; the field is `operation`, as Honeycomb's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ViewFilter {
    column: String,
    operation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
}

/// A board view as a client sends it.
#[derive(Debug, Deserialize)]
pub(crate) struct ViewBody {
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    filters: Vec<ViewFilter>,
}

impl Describe for ViewBody {
    const WHAT: &'static str = "board view";
}

/// A board as stored: with its views.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    board: Board,
    #[serde(default)]
    views: Vec<BoardView>,
}

type Boards = Vec<Stored>;

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no board with id {id:?}"))
}

/// The default size of a panel of `kind` (width, height).
fn default_size(kind: &str) -> (i64, i64) {
    match kind {
        "text" => (4, 4),
        "slo" => (3, 4),
        _ => (6, 6),
    }
}

/// What a board's saved objects resolve to, loaded once per request.
struct Refs {
    queries: crate::queries::Stored,
    annotations: crate::query_annotations::Annotations,
    slos: BTreeMap<String, Vec<crate::slos::Slo>>,
}

/// Checks `body` and turns it into a board (`id`, `created_at` given).
fn build(
    body: BoardBody,
    refs: &Refs,
    id: String,
    created_at: String,
    keep_filters: Vec<PresetFilter>,
) -> Result<Board, ApiError> {
    check_text("name", &body.name, MAX_NAME_CHARS, true)?;
    check_text("description", &body.description, MAX_DESCRIPTION_CHARS, false)?;
    match body.kind.as_deref() {
        Some("flexible") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "type: only \"flexible\" boards exist, got {other:?}"
            )));
        }
    }
    let auto = match body.layout_generation.as_deref() {
        None | Some("manual") => false,
        Some("auto") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "layout_generation: \"auto\" or \"manual\", got {other:?}"
            )));
        }
    };
    if body.tags.len() > MAX_TAGS {
        return Err(ApiError::bad_request(format!(
            "tags: at most {MAX_TAGS}, got {}",
            body.tags.len()
        )));
    }
    for t in &body.tags {
        let key_ok = (1..=32).contains(&t.key.len()) && t.key.bytes().all(|b| b.is_ascii_lowercase());
        let v = t.value.as_bytes();
        let value_ok = (2..=129).contains(&v.len())
            && v[0].is_ascii_lowercase()
            && v.iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'/' || *b == b'-');
        if !key_ok || !value_ok {
            return Err(ApiError::bad_request(format!(
                "tags: {{\"key\": {:?}, \"value\": {:?}}}: a key is 1 to 32 of a-z; a value starts with a-z, then 1 to 128 of a-z 0-9 / -",
                t.key, t.value
            )));
        }
    }
    let preset_filters = body.preset_filters.unwrap_or(keep_filters);
    if preset_filters.len() > MAX_PRESET_FILTERS {
        return Err(ApiError::bad_request(format!(
            "preset_filters: at most {MAX_PRESET_FILTERS}, got {}",
            preset_filters.len()
        )));
    }
    for f in &preset_filters {
        check_text("preset_filters.column", &f.column, MAX_NAME_CHARS, true)?;
        check_text("preset_filters.alias", &f.alias, MAX_ALIAS_CHARS, false)?;
    }
    if body.panels.len() > MAX_PANELS {
        return Err(ApiError::bad_request(format!(
            "panels: at most {MAX_PANELS}, got {}",
            body.panels.len()
        )));
    }
    let mut panels = body.panels;
    let mut seen = HashSet::new();
    for (i, p) in panels.iter_mut().enumerate() {
        check_panel(i, p, refs, &mut seen)?;
    }
    layout(&mut panels, auto);
    Ok(Board {
        links: Links {
            board_url: format!("/?board={id}"),
        },
        id,
        name: body.name,
        description: body.description,
        kind: "flexible".to_string(),
        tags: body.tags,
        preset_filters,
        panels,
        created_at,
        updated_at: now(),
    })
}

fn check_panel(i: usize, p: &mut Panel, refs: &Refs, seen: &mut HashSet<String>) -> Result<(), ApiError> {
    let at = format!("panels[{i}]");
    let pos = p.position;
    if pos.x_coordinate < 0 || pos.y_coordinate < 0 || pos.width < 0 || pos.height < 0 {
        return Err(ApiError::bad_request(format!(
            "{at}.position: coordinates and sizes are 0 or more"
        )));
    }
    if pos.x_coordinate + pos.width > GRID_COLUMNS {
        return Err(ApiError::bad_request(format!(
            "{at}.position: x_coordinate + width is {}, past the grid's {GRID_COLUMNS} columns",
            pos.x_coordinate + pos.width
        )));
    }
    let others = [p.query_panel.is_some(), p.slo_panel.is_some(), p.text_panel.is_some()];
    let want = match p.kind.as_str() {
        "query" => 0,
        "slo" => 1,
        "text" => 2,
        other => {
            return Err(ApiError::bad_request(format!(
                "{at}.type: \"query\", \"slo\" or \"text\", got {other:?}"
            )));
        }
    };
    if !others[want] || others.iter().filter(|x| **x).count() != 1 {
        return Err(ApiError::bad_request(format!(
            "{at}: a {} panel carries exactly one {}_panel object",
            p.kind, p.kind
        )));
    }
    if let Some(slo) = &p.slo_panel {
        let id = slo.get("slo_id").and_then(Value::as_str).unwrap_or("");
        if !refs.slos.values().flatten().any(|s| s.id == id) {
            return Err(ApiError::bad_request(format!(
                "{at}.slo_panel.slo_id: no SLO with id {id:?}"
            )));
        }
    }
    if let Some(t) = &p.text_panel {
        check_text(&format!("{at}.text_panel.content"), &t.content, MAX_TEXT_CHARS, false)?;
    }
    if let Some(q) = &mut p.query_panel {
        let (ds, _) = crate::queries::find_any(&refs.queries, &q.query_id).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{at}.query_panel.query_id: no saved query with id {:?}",
                q.query_id
            ))
        })?;
        let annotated = refs
            .annotations
            .get(ds)
            .into_iter()
            .flatten()
            .any(|a| a.id() == q.query_annotation_id && a.query_id() == q.query_id);
        if !annotated {
            return Err(ApiError::bad_request(format!(
                "{at}.query_panel.query_annotation_id: no annotation {:?} of query {:?} in {ds}",
                q.query_annotation_id, q.query_id
            )));
        }
        if !matches!(q.query_style.as_str(), "graph" | "table" | "combo") {
            return Err(ApiError::bad_request(format!(
                "{at}.query_panel.query_style: \"graph\", \"table\" or \"combo\", got {:?}",
                q.query_style
            )));
        }
        if let Some(v) = &q.visualization_settings
            && !v.is_object()
        {
            return Err(ApiError::bad_request(format!(
                "{at}.query_panel.visualization_settings: must be an object"
            )));
        }
        if !seen.insert(q.query_id.clone()) {
            return Err(ApiError::bad_request(format!(
                "{at}: a query with the same query_id can only be added to a board once ({:?})",
                q.query_id
            )));
        }
        q.dataset = ds.to_string();
    }
    Ok(())
}

/// Gives sizeless panels their type's size and, with `auto`, places every panel in rows of
/// the grid in the order given.
fn layout(panels: &mut [Panel], auto: bool) {
    let (mut x, mut y, mut row_height) = (0, 0, 0);
    for p in panels {
        let (w, h) = default_size(&p.kind);
        if p.position.width == 0 {
            p.position.width = w.min(GRID_COLUMNS - p.position.x_coordinate);
        }
        if p.position.height == 0 {
            p.position.height = h;
        }
        if auto {
            if x + p.position.width > GRID_COLUMNS {
                (x, y, row_height) = (0, y + row_height, 0);
            }
            p.position.x_coordinate = x;
            p.position.y_coordinate = y;
            x += p.position.width;
            row_height = row_height.max(p.position.height);
        }
    }
}

async fn refs(state: &AppState) -> Result<Refs, ApiError> {
    Ok(Refs {
        queries: crate::queries::load(state).await?,
        annotations: crate::query_annotations::load(state).await?,
        slos: crate::slos::load(state).await?,
    })
}

async fn load(state: &AppState) -> Result<Boards, ApiError> {
    Ok(state.storage.documents().load(DOCUMENT).await?)
}

/// `GET /1/boards`: every board, oldest first.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    _: Authorized<Query>,
) -> Result<Json<Vec<Board>>, ApiError> {
    Ok(Json(load(&state).await?.into_iter().map(|s| s.board).collect()))
}

/// `POST /1/boards`.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    _: Authorized<Manage>,
    JsonBody(body): JsonBody<BoardBody>,
) -> Result<(StatusCode, Json<Board>), ApiError> {
    let refs = refs(&state).await?;
    let board = build(body, &refs, new_id(), now(), Vec::new())?;
    let created = state
        .storage
        .documents()
        .update(DOCUMENT, |all: &mut Boards| {
            check_room(&state, "boards", "this environment", all.len())?;
            all.push(Stored {
                board: board.clone(),
                views: Vec::new(),
            });
            Ok::<_, ApiError>(board)
        })
        .await??;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /1/boards/{id}`.
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    _: Authorized<Query>,
    Path(id): Path<String>,
) -> Result<Json<Board>, ApiError> {
    load(&state)
        .await?
        .into_iter()
        .find(|s| s.board.id == id)
        .map(|s| Json(s.board))
        .ok_or_else(|| not_found(&id))
}

/// `PUT /1/boards/{id}`: the whole board replaced (but its views, and its preset filters when
/// left out).
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    _: Authorized<Manage>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<BoardBody>,
) -> Result<Json<Board>, ApiError> {
    let refs = refs(&state).await?;
    let changed = state
        .storage
        .documents()
        .update(DOCUMENT, |all: &mut Boards| {
            let s = all
                .iter_mut()
                .find(|s| s.board.id == id)
                .ok_or_else(|| not_found(&id))?;
            let board = build(
                body,
                &refs,
                id.clone(),
                s.board.created_at.clone(),
                s.board.preset_filters.clone(),
            )?;
            s.board = board.clone();
            Ok::<_, ApiError>(board)
        })
        .await??;
    Ok(Json(changed))
}

/// `DELETE /1/boards/{id}`: the board and its views.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    _: Authorized<Manage>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .storage
        .documents()
        .update(DOCUMENT, |all: &mut Boards| {
            let before = all.len();
            all.retain(|s| s.board.id != id);
            if all.len() == before {
                return Err(not_found(&id));
            }
            Ok(())
        })
        .await??;
    Ok(StatusCode::NO_CONTENT)
}

/// The boards with a panel showing the query annotation `query_annotation_id`, described for
/// an error message.
pub(crate) async fn showing(state: &AppState, query_annotation_id: &str) -> Result<Vec<String>, ApiError> {
    Ok(load(state)
        .await?
        .iter()
        .filter(|s| {
            s.board.panels.iter().any(|p| {
                p.query_panel
                    .as_ref()
                    .is_some_and(|q| q.query_annotation_id == query_annotation_id)
            })
        })
        .map(|s| format!("board {:?} ({})", s.board.name, s.board.id))
        .collect())
}

fn check_view(body: &ViewBody) -> Result<(), ApiError> {
    check_text("name", &body.name, MAX_NAME_CHARS, true)?;
    if body.filters.is_empty() {
        return Err(ApiError::bad_request("filters: a view needs at least one filter"));
    }
    let ops = sonde_query::spec::operators();
    for (i, f) in body.filters.iter().enumerate() {
        check_text(&format!("filters[{i}].column"), &f.column, MAX_NAME_CHARS, true)?;
        let Some(op) = ops.filters.iter().find(|o| o.op == f.operation) else {
            return Err(ApiError::bad_request(format!(
                "filters[{i}].operation: unknown operation {:?} (one of {})",
                f.operation,
                ops.filters.iter().map(|o| o.op).collect::<Vec<_>>().join(", ")
            )));
        };
        if op.takes_value && f.value.is_none() {
            return Err(ApiError::bad_request(format!(
                "filters[{i}].value: {:?} needs a value",
                f.operation
            )));
        }
    }
    Ok(())
}

/// `GET /1/boards/{id}/views`.
pub(crate) async fn list_views(
    State(state): State<Arc<AppState>>,
    _: Authorized<Query>,
    Path(id): Path<String>,
) -> Result<Json<Vec<BoardView>>, ApiError> {
    load(&state)
        .await?
        .into_iter()
        .find(|s| s.board.id == id)
        .map(|s| Json(s.views))
        .ok_or_else(|| not_found(&id))
}

/// `POST /1/boards/{id}/views`.
pub(crate) async fn create_view(
    State(state): State<Arc<AppState>>,
    _: Authorized<Manage>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ViewBody>,
) -> Result<(StatusCode, Json<BoardView>), ApiError> {
    check_view(&body)?;
    let view = BoardView {
        id: new_id(),
        name: body.name,
        filters: body.filters,
    };
    let created = state
        .storage
        .documents()
        .update(DOCUMENT, |all: &mut Boards| {
            let s = all
                .iter_mut()
                .find(|s| s.board.id == id)
                .ok_or_else(|| not_found(&id))?;
            if s.views.len() >= MAX_VIEWS {
                return Err(ApiError::bad_request(format!("a board has at most {MAX_VIEWS} views")));
            }
            s.views.push(view.clone());
            Ok::<_, ApiError>(view)
        })
        .await??;
    Ok((StatusCode::CREATED, Json(created)))
}

fn view_not_found(id: &str, view: &str) -> ApiError {
    ApiError::not_found(format!("no view {view:?} on board {id:?}"))
}

/// `GET /1/boards/{id}/views/{view}`.
pub(crate) async fn get_view(
    State(state): State<Arc<AppState>>,
    _: Authorized<Query>,
    Path((id, view)): Path<(String, String)>,
) -> Result<Json<BoardView>, ApiError> {
    let all = load(&state).await?;
    let s = all.iter().find(|s| s.board.id == id).ok_or_else(|| not_found(&id))?;
    s.views
        .iter()
        .find(|v| v.id == view)
        .cloned()
        .map(Json)
        .ok_or_else(|| view_not_found(&id, &view))
}

/// `PUT /1/boards/{id}/views/{view}`: a new name and filters.
pub(crate) async fn update_view(
    State(state): State<Arc<AppState>>,
    _: Authorized<Manage>,
    Path((id, view)): Path<(String, String)>,
    JsonBody(body): JsonBody<ViewBody>,
) -> Result<Json<BoardView>, ApiError> {
    check_view(&body)?;
    let changed = state
        .storage
        .documents()
        .update(DOCUMENT, |all: &mut Boards| {
            let s = all
                .iter_mut()
                .find(|s| s.board.id == id)
                .ok_or_else(|| not_found(&id))?;
            let v = s
                .views
                .iter_mut()
                .find(|v| v.id == view)
                .ok_or_else(|| view_not_found(&id, &view))?;
            v.name = body.name;
            v.filters = body.filters;
            Ok::<_, ApiError>(v.clone())
        })
        .await??;
    Ok(Json(changed))
}

/// `DELETE /1/boards/{id}/views/{view}`.
pub(crate) async fn delete_view(
    State(state): State<Arc<AppState>>,
    _: Authorized<Manage>,
    Path((id, view)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .storage
        .documents()
        .update(DOCUMENT, |all: &mut Boards| {
            let s = all
                .iter_mut()
                .find(|s| s.board.id == id)
                .ok_or_else(|| not_found(&id))?;
            let before = s.views.len();
            s.views.retain(|v| v.id != view);
            if s.views.len() == before {
                return Err(view_not_found(&id, &view));
            }
            Ok(())
        })
        .await??;
    Ok(StatusCode::NO_CONTENT)
}

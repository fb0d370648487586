//! Honeycomb's triggers, `/1/triggers/{dataset}`: a query evaluated on a schedule, its value
//! (per breakdown group) compared with a threshold, and its recipients notified. The checks are
//! Honeycomb's (its Terraform provider's validator): one calculation (not HEATMAP or
//! CONCURRENCY), at most one having, no orders, limit or absolute times; a time range of at
//! least the frequency, at most four times it and at most a day; a frequency that is a whole
//! number of minutes from 1 to 1,440 (`--trigger-min-frequency` lowers the floor, for tests and
//! quick feedback). The schedule, the evaluation and the deliveries are in `alerts`.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Authorized, Describe, JsonBody, Manage, Query};
use crate::objects::{add_in, change_in, check_text, delete_in, find_in, new_id, now, null_as_default};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sonde_model::DatasetName;
use sonde_query::QuerySpec;
use std::collections::BTreeMap;
use std::sync::Arc;

const DOCUMENT: &str = "triggers";
const MAX_NAME_CHARS: usize = 120;
const MAX_DESCRIPTION_CHARS: usize = 1023;
/// The longest range a trigger's query may cover.
const MAX_RANGE_S: i64 = 86_400;
/// The days a window may name, Sunday first (day 0, as `alerts` numbers them).
pub(crate) const DAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// A trigger, as stored and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Trigger {
    pub(crate) id: String,
    pub(crate) dataset_slug: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) disabled: bool,
    pub(crate) query_id: String,
    /// The saved query, answered beside its id.
    pub(crate) query: QuerySpec,
    pub(crate) threshold: Threshold,
    pub(crate) frequency: i64,
    pub(crate) alert_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) evaluation_schedule_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) evaluation_schedule: Option<Schedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) baseline_details: Option<Baseline>,
    #[serde(default)]
    pub(crate) recipients: Vec<TriggerRecipient>,
    #[serde(default)]
    pub(crate) tags: Vec<Value>,
    /// Whether it is firing now (from the evaluations; never stored from a client).
    #[serde(default)]
    pub(crate) triggered: bool,
    created_at: String,
    updated_at: String,
}

/// `{"op": ">", "value": 1000, "exceeded_limit": 1}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Threshold {
    pub(crate) op: String,
    pub(crate) value: f64,
    /// Consecutive evaluations over the threshold before it fires (1 to 5).
    #[serde(default = "one")]
    pub(crate) exceeded_limit: u32,
}

fn one() -> u32 {
    1
}

/// When a `window` trigger runs: on these days, between these UTC times (`HH:mm`; an end at or
/// before the start ends the next day).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Schedule {
    pub(crate) window: Window,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Window {
    pub(crate) days_of_week: Vec<String>,
    pub(crate) start_time: String,
    pub(crate) end_time: String,
}

/// Compare with the same query `offset_minutes` earlier: the threshold applies to the change
/// (`value`: the difference; `percentage`: the difference in % of the earlier value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Baseline {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) offset_minutes: i64,
}

/// A recipient of a trigger: a stored one by `id`, or one given inline by `type` and `target`
/// (Honeycomb's `marker` recipients are inline: the target is the marker's message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TriggerRecipient {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) details: Option<Value>,
}

/// A trigger as a client sends it: `query` or `query_id`.
#[derive(Debug, Deserialize)]
pub(crate) struct TriggerBody {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    query: Option<QuerySpec>,
    #[serde(default)]
    query_id: Option<String>,
    threshold: Threshold,
    #[serde(default)]
    frequency: Option<i64>,
    #[serde(default)]
    alert_type: Option<String>,
    #[serde(default)]
    evaluation_schedule_type: Option<String>,
    #[serde(default)]
    evaluation_schedule: Option<Schedule>,
    #[serde(default)]
    baseline_details: Option<Baseline>,
    #[serde(default, deserialize_with = "null_as_default")]
    recipients: Vec<TriggerRecipient>,
    #[serde(default, deserialize_with = "null_as_default")]
    tags: Vec<Value>,
}

impl Describe for TriggerBody {
    const WHAT: &'static str = "trigger";
}

/// Every trigger, by dataset.
pub(crate) type Triggers = BTreeMap<String, Vec<Trigger>>;

/// Every trigger.
pub(crate) async fn load(state: &AppState) -> Result<Triggers, ApiError> {
    Ok(state.storage.documents().load(DOCUMENT).await?)
}

fn not_found(scope: &str, id: &str) -> ApiError {
    ApiError::not_found(format!("no trigger with id {id:?} in {scope}"))
}

/// The result key of a trigger's one calculation (`COUNT`, `P99(duration_ms)`).
pub(crate) fn value_key(spec: &QuerySpec) -> String {
    let c = &spec.calculations[0];
    match (&c.name, &c.column) {
        (Some(n), _) => n.clone(),
        (None, Some(col)) => format!("{}({col})", c.op),
        (None, None) => c.op.clone(),
    }
}

/// Checks the query against Honeycomb's trigger restrictions; fills its time range.
fn check_query(spec: &mut QuerySpec, frequency: i64) -> Result<(), ApiError> {
    if spec.calculations.len() != 1 || !spec.formulas.is_empty() {
        return Err(ApiError::bad_request(
            "query: a trigger's query has exactly one calculation (and no formulas)",
        ));
    }
    let c = &spec.calculations[0];
    if matches!(c.op.as_str(), "HEATMAP" | "CONCURRENCY") {
        return Err(ApiError::bad_request(format!(
            "query: {} cannot be a trigger's calculation",
            c.op
        )));
    }
    if c.name.is_some() || !c.filters.is_empty() {
        return Err(ApiError::bad_request(
            "query: a trigger's calculation has no name and no filters of its own",
        ));
    }
    if spec.havings.len() > 1 {
        return Err(ApiError::bad_request("query: at most one having"));
    }
    if !spec.orders.is_empty() || spec.limit.is_some() {
        return Err(ApiError::bad_request(
            "query: a trigger's query has no orders and no limit",
        ));
    }
    if spec.start_time.is_some() || spec.end_time.is_some() {
        return Err(ApiError::bad_request(
            "query: a trigger's query has a time_range, not start_time or end_time (it runs over the range before each evaluation)",
        ));
    }
    let range = *spec.time_range.get_or_insert(frequency);
    if range < frequency || range > 4 * frequency || range > MAX_RANGE_S {
        return Err(ApiError::bad_request(format!(
            "query.time_range: {range} s; with a frequency of {frequency} s it must be {frequency} to {} s",
            (4 * frequency).min(MAX_RANGE_S)
        )));
    }
    Ok(())
}

fn hhmm(field: &str, v: &str) -> Result<(), ApiError> {
    let ok = v.len() == 5
        && v.as_bytes()[2] == b':'
        && v[..2].parse::<u32>().is_ok_and(|h| h < 24)
        && v[3..].parse::<u32>().is_ok_and(|m| m < 60);
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{field}: a UTC time as HH:mm, got {v:?}"
        )))
    }
}

/// Checks everything but the query and the recipients.
fn check_fields(state: &AppState, body: &TriggerBody, frequency: i64) -> Result<(), ApiError> {
    check_text("name", &body.name, MAX_NAME_CHARS, true)?;
    check_text("description", &body.description, MAX_DESCRIPTION_CHARS, false)?;
    let min = state.config.min_trigger_frequency.as_secs().max(1) as i64;
    let step = min.min(60);
    if frequency < min || frequency > MAX_RANGE_S || frequency % step != 0 {
        return Err(ApiError::bad_request(format!(
            "frequency: {frequency} s; a multiple of {step} s from {min} to {MAX_RANGE_S} (the floor is set with --trigger-min-frequency / SONDE_TRIGGER_MIN_FREQUENCY)"
        )));
    }
    let t = &body.threshold;
    if !matches!(t.op.as_str(), ">" | ">=" | "<" | "<=") {
        return Err(ApiError::bad_request(format!(
            "threshold.op: one of > >= < <=, got {:?}",
            t.op
        )));
    }
    if !t.value.is_finite() {
        return Err(ApiError::bad_request("threshold.value: must be a number"));
    }
    if !(1..=5).contains(&t.exceeded_limit) {
        return Err(ApiError::bad_request(format!(
            "threshold.exceeded_limit: 1 to 5, got {}",
            t.exceeded_limit
        )));
    }
    match body.alert_type.as_deref() {
        None | Some("on_change") | Some("on_true") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "alert_type: \"on_change\" or \"on_true\", got {other:?}"
            )));
        }
    }
    match (body.evaluation_schedule_type.as_deref(), &body.evaluation_schedule) {
        (None | Some("frequency"), _) => {}
        (Some("window"), Some(s)) => {
            if s.window.days_of_week.is_empty() {
                return Err(ApiError::bad_request(
                    "evaluation_schedule.window.days_of_week: at least one day",
                ));
            }
            for d in &s.window.days_of_week {
                if !DAYS.contains(&d.as_str()) {
                    return Err(ApiError::bad_request(format!(
                        "evaluation_schedule.window.days_of_week: {d:?} is not a day (monday, …)"
                    )));
                }
            }
            hhmm("evaluation_schedule.window.start_time", &s.window.start_time)?;
            hhmm("evaluation_schedule.window.end_time", &s.window.end_time)?;
        }
        (Some("window"), None) => {
            return Err(ApiError::bad_request(
                "evaluation_schedule: required with evaluation_schedule_type \"window\"",
            ));
        }
        (Some(other), _) => {
            return Err(ApiError::bad_request(format!(
                "evaluation_schedule_type: \"frequency\" or \"window\", got {other:?}"
            )));
        }
    }
    if let Some(b) = &body.baseline_details {
        if !matches!(b.kind.as_str(), "value" | "percentage") {
            return Err(ApiError::bad_request(format!(
                "baseline_details.type: \"value\" or \"percentage\", got {:?}",
                b.kind
            )));
        }
        if ![60, 1440, 10080, 40320].contains(&b.offset_minutes) {
            return Err(ApiError::bad_request(format!(
                "baseline_details.offset_minutes: 60, 1440, 10080 or 40320, got {}",
                b.offset_minutes
            )));
        }
    }
    Ok(())
}

/// Checks the recipients: stored ones must exist; inline ones name a known type.
fn check_recipients(list: &[TriggerRecipient], stored: &[crate::recipients::Recipient]) -> Result<(), ApiError> {
    for (i, r) in list.iter().enumerate() {
        match (&r.id, &r.kind) {
            (Some(id), _) if !stored.iter().any(|s| &s.id == id) => {
                return Err(ApiError::bad_request(format!(
                    "recipients[{i}].id: no recipient with id {id:?}"
                )));
            }
            (Some(_), _) => {}
            (None, Some(kind)) => {
                let inline = crate::recipients::Recipient::inline(kind, r.target.as_deref().unwrap_or(""));
                crate::recipients::check(kind, &inline.details)
                    .map_err(|e| ApiError::bad_request(format!("recipients[{i}]: {}", e.message)))?;
            }
            (None, None) => {
                return Err(ApiError::bad_request(format!(
                    "recipients[{i}]: an id, or a type and a target"
                )));
            }
        }
    }
    Ok(())
}

/// Builds a trigger from `body`, saving its query when given inline.
async fn build(
    state: &AppState,
    ds: &DatasetName,
    body: TriggerBody,
    id: String,
    created_at: String,
    disabled_before: bool,
) -> Result<Trigger, ApiError> {
    let frequency = body.frequency.unwrap_or(900);
    check_fields(state, &body, frequency)?;
    let stored = crate::recipients::load(state).await?;
    check_recipients(&body.recipients, &stored)?;
    let mut spec = match (&body.query, &body.query_id) {
        (Some(q), _) => q.clone(),
        (None, Some(qid)) => {
            let all = crate::queries::load(state).await?;
            crate::queries::find(&all, ds.as_str(), qid)
                .map(|q| q.query.clone())
                .ok_or_else(|| ApiError::bad_request(format!("query_id: no saved query with id {qid:?} in {ds}")))?
        }
        (None, None) => return Err(ApiError::bad_request("query or query_id: a trigger needs its query")),
    };
    check_query(&mut spec, frequency)?;
    let defs = crate::definitions::load(state).await?;
    state.engine.validate(ds, &spec, &defs)?;
    let query_id = crate::queries::save(state, ds, &spec).await?;
    Ok(Trigger {
        id,
        dataset_slug: ds.as_str().to_string(),
        name: body.name,
        description: body.description,
        disabled: body.disabled.unwrap_or(disabled_before),
        query_id,
        query: spec,
        threshold: body.threshold,
        frequency,
        alert_type: body.alert_type.unwrap_or_else(|| "on_change".to_string()),
        evaluation_schedule_type: body.evaluation_schedule_type,
        evaluation_schedule: body.evaluation_schedule,
        baseline_details: body.baseline_details,
        recipients: body.recipients,
        tags: body.tags,
        triggered: false,
        created_at,
        updated_at: now(),
    })
}

/// A trigger as answered: with whether it is firing now.
async fn answered(state: &AppState, mut t: Trigger) -> Trigger {
    t.triggered = crate::alerts::firing(state).await.contains(&t.id);
    t
}

/// `GET /1/triggers/{dataset}`.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
) -> Result<Json<Vec<Trigger>>, ApiError> {
    let ds = access.dataset()?;
    let firing = crate::alerts::firing(&state).await;
    let mut out = load(&state).await?.remove(ds.as_str()).unwrap_or_default();
    for t in &mut out {
        t.triggered = firing.contains(&t.id);
    }
    Ok(Json(out))
}

/// `POST /1/triggers/{dataset}`.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    JsonBody(body): JsonBody<TriggerBody>,
) -> Result<(StatusCode, Json<Trigger>), ApiError> {
    let ds = access.dataset()?.clone();
    let t = build(&state, &ds, body, new_id(), now(), false).await?;
    let created = add_in(&state, DOCUMENT, ds.as_str(), "triggers", t).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /1/triggers/{dataset}/{id}`.
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Trigger>, ApiError> {
    let ds = access.dataset()?.as_str();
    let t = find_in(&state, DOCUMENT, ds, &id, || not_found(ds, &id)).await?;
    Ok(Json(answered(&state, t).await))
}

/// `PUT /1/triggers/{dataset}/{id}`: the whole trigger (`disabled` kept when left out).
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<TriggerBody>,
) -> Result<Json<Trigger>, ApiError> {
    let ds = access.dataset()?.clone();
    let missing = || not_found(ds.as_str(), &id);
    let current: Trigger = find_in(&state, DOCUMENT, ds.as_str(), &id, missing).await?;
    let t = build(
        &state,
        &ds,
        body,
        id.clone(),
        current.created_at.clone(),
        current.disabled,
    )
    .await?;
    let changed = change_in(&state, DOCUMENT, ds.as_str(), &id, missing, |slot: &mut Trigger| {
        *slot = t;
        Ok(())
    })
    .await?;
    Ok(Json(answered(&state, changed).await))
}

/// `DELETE /1/triggers/{dataset}/{id}`.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ds = access.dataset()?.as_str();
    delete_in::<Trigger>(&state, DOCUMENT, ds, &id, || not_found(ds, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The triggers that notify recipient `id`, described for an error message.
pub(crate) async fn naming_recipient(state: &AppState, id: &str) -> Result<Vec<String>, ApiError> {
    Ok(using_recipient(state, id)
        .await?
        .iter()
        .map(|t| format!("trigger {} of {}", t["name"], t["dataset_slug"]))
        .collect())
}

/// The triggers that notify recipient `id`, as answered.
pub(crate) async fn using_recipient(state: &AppState, id: &str) -> Result<Vec<Value>, ApiError> {
    Ok(load(state)
        .await?
        .into_values()
        .flatten()
        .filter(|t| t.recipients.iter().any(|r| r.id.as_deref() == Some(id)))
        .map(|t| serde_json::to_value(t).unwrap_or_default())
        .collect())
}

impl crate::objects::Keyed for Trigger {
    fn key(&self) -> &str {
        &self.id
    }
}

//! Honeycomb's burn alerts, `/1/burn_alerts/{dataset}`: an SLO's error budget watched every
//! minute by the trigger scheduler (`alerts`), notifying the same recipients.
//!
//! - `exhaustion_time`: the budget left, at the rate it burnt over the last quarter of
//!   `exhaustion_minutes` (the *Observability Engineering* book's lookback of a quarter of the
//!   lookahead; at least a minute), would be gone within `exhaustion_minutes` (or is gone).
//! - `budget_rate`: the bad events of the last `budget_rate_window_minutes` used at least
//!   `budget_rate_decrease_threshold_per_million` of the whole budget.
//!
//! Both read the SLO's per-minute counters (brought up to date first), so an evaluation costs
//! the minutes since the last one, not the SLO's window. They notify when they start holding
//! (TRIGGERED) and when they stop (OK).

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Authorized, Describe, JsonBody, Manage, Query};
use crate::objects::{add_in, change_in, check_text, delete_in, find_in, new_id, now, null_as_default};
use crate::slos::{Counters, Slo};
use crate::triggers::TriggerRecipient;
use axum::Json;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

const DOCUMENT: &str = "burn_alerts";

/// A burn alert, as stored and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct BurnAlert {
    pub(crate) id: String,
    pub(crate) alert_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exhaustion_minutes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) budget_rate_window_minutes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) budget_rate_decrease_threshold_per_million: Option<i64>,
    #[serde(default)]
    pub(crate) description: String,
    pub(crate) slo: SloRef,
    pub(crate) recipients: Vec<TriggerRecipient>,
    /// Whether it holds now (from the evaluations).
    #[serde(default)]
    pub(crate) triggered: bool,
    dataset: String,
    created_at: String,
    updated_at: String,
}

/// `{"id": "…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SloRef {
    pub(crate) id: String,
}

/// A burn alert as a client sends it.
#[derive(Debug, Deserialize)]
pub(crate) struct BurnBody {
    #[serde(default)]
    alert_type: Option<String>,
    #[serde(default)]
    exhaustion_minutes: Option<i64>,
    #[serde(default)]
    budget_rate_window_minutes: Option<i64>,
    #[serde(default)]
    budget_rate_decrease_threshold_per_million: Option<i64>,
    #[serde(default)]
    description: String,
    slo: SloRef,
    #[serde(default, deserialize_with = "null_as_default")]
    recipients: Vec<TriggerRecipient>,
}

impl Describe for BurnBody {
    const WHAT: &'static str = "burn alert";
}

#[derive(Debug, Deserialize)]
pub(crate) struct BySlo {
    slo_id: Option<String>,
}

/// Every burn alert, by dataset.
pub(crate) type Burns = BTreeMap<String, Vec<BurnAlert>>;

/// Every burn alert.
pub(crate) async fn load(state: &AppState) -> Result<Burns, ApiError> {
    Ok(state.storage.documents().load(DOCUMENT).await?)
}

fn not_found(ds: &str, id: &str) -> ApiError {
    ApiError::not_found(format!("no burn alert with id {id:?} in {ds}"))
}

async fn build(
    state: &AppState,
    ds: &str,
    body: BurnBody,
    id: String,
    created_at: String,
) -> Result<BurnAlert, ApiError> {
    let slo = crate::slos::find(state, ds, &body.slo.id)
        .await
        .map_err(|_| ApiError::bad_request(format!("slo.id: no SLO with id {:?} in {ds}", body.slo.id)))?;
    check_text("description", &body.description, 1023, false)?;
    let kind = body.alert_type.unwrap_or_else(|| "exhaustion_time".to_string());
    let mut alert = BurnAlert {
        id,
        alert_type: kind.clone(),
        exhaustion_minutes: None,
        budget_rate_window_minutes: None,
        budget_rate_decrease_threshold_per_million: None,
        description: body.description,
        slo: body.slo,
        recipients: body.recipients,
        triggered: false,
        dataset: ds.to_string(),
        created_at,
        updated_at: now(),
    };
    match kind.as_str() {
        "exhaustion_time" => {
            let m = body
                .exhaustion_minutes
                .ok_or_else(|| ApiError::bad_request("exhaustion_minutes: required for an exhaustion_time alert"))?;
            if m < 0 {
                return Err(ApiError::bad_request(format!("exhaustion_minutes: 0 or more, got {m}")));
            }
            alert.exhaustion_minutes = Some(m);
        }
        "budget_rate" => {
            let w = body
                .budget_rate_window_minutes
                .ok_or_else(|| ApiError::bad_request("budget_rate_window_minutes: required for a budget_rate alert"))?;
            let period = slo.time_period_days * 1440;
            if w < 60 || w > period {
                return Err(ApiError::bad_request(format!(
                    "budget_rate_window_minutes: 60 to the SLO's {period} minutes, got {w}"
                )));
            }
            let t = body.budget_rate_decrease_threshold_per_million.ok_or_else(|| {
                ApiError::bad_request("budget_rate_decrease_threshold_per_million: required for a budget_rate alert")
            })?;
            if !(1..=1_000_000).contains(&t) {
                return Err(ApiError::bad_request(format!(
                    "budget_rate_decrease_threshold_per_million: 1 to 1000000 (1% is 10000), got {t}"
                )));
            }
            alert.budget_rate_window_minutes = Some(w);
            alert.budget_rate_decrease_threshold_per_million = Some(t);
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "alert_type: \"exhaustion_time\" or \"budget_rate\", got {other:?}"
            )));
        }
    }
    if alert.recipients.is_empty() {
        return Err(ApiError::bad_request("recipients: at least one"));
    }
    let stored = crate::recipients::load(state).await?;
    for (i, r) in alert.recipients.iter().enumerate() {
        if let Some(rid) = &r.id
            && !stored.iter().any(|s| &s.id == rid)
        {
            return Err(ApiError::bad_request(format!(
                "recipients[{i}].id: no recipient with id {rid:?}"
            )));
        }
    }
    Ok(alert)
}

/// What an evaluation found: whether the alert holds, and the figures it read.
pub(crate) fn holds(alert: &BurnAlert, slo: &Slo, c: &Counters, now_min: i64) -> (bool, Value) {
    let (good, bad) = c.sum(i64::MIN, i64::MAX);
    let budget = (1.0 - slo.target_per_million as f64 / 1e6) * (good + bad) as f64;
    let f = crate::slos::figures(good, bad, slo.target_per_million);
    let mut facts = json!({"compliance": f.compliance, "budget_remaining": f.budget_remaining});
    let held = match alert.alert_type.as_str() {
        "exhaustion_time" => {
            let ahead = alert.exhaustion_minutes.unwrap_or(0);
            let lookback = (ahead / 4).max(1);
            let (_, recent_bad) = c.sum(now_min - lookback, now_min);
            let left = budget - bad as f64;
            let rate = recent_bad as f64 / lookback as f64;
            let minutes_left = if left <= 0.0 {
                0.0
            } else if rate > 0.0 {
                left / rate
            } else {
                f64::INFINITY
            };
            facts["minutes_to_exhaustion"] = if minutes_left.is_finite() {
                json!(minutes_left)
            } else {
                Value::Null
            };
            left <= 0.0 || minutes_left <= ahead as f64
        }
        _ => {
            let window = alert.budget_rate_window_minutes.unwrap_or(60);
            let (_, recent_bad) = c.sum(now_min - window, now_min);
            let used = if budget > 0.0 {
                recent_bad as f64 / budget
            } else if recent_bad > 0 {
                1.0
            } else {
                0.0
            };
            facts["budget_used_in_window_per_million"] = json!(used * 1e6);
            used * 1e6 >= alert.budget_rate_decrease_threshold_per_million.unwrap_or(1) as f64
        }
    };
    (held, facts)
}

/// Evaluates `alert` for `period` and records what follows (see `alerts::decide`).
pub(crate) async fn evaluate(state: &AppState, alert: &BurnAlert, period: i64) -> Result<(), ApiError> {
    let slo = crate::slos::find(state, &alert.dataset, &alert.slo.id).await?;
    let c = crate::slos::refresh(state, &slo).await?;
    let (held, facts) = holds(alert, &slo, &c, c.through());
    let rule = crate::alerts::Rule {
        id: &alert.id,
        dataset: &alert.dataset,
        exceeded_limit: 1,
        on_true: false,
        recipients: &alert.recipients,
    };
    crate::alerts::decide(state, rule, period, Some(held), |status| {
        let what = if alert.alert_type == "exhaustion_time" {
            format!(
                "the error budget would run out within {} minutes",
                alert.exhaustion_minutes.unwrap_or(0)
            )
        } else {
            format!(
                "the last {} minutes used at least {}% of the error budget",
                alert.budget_rate_window_minutes.unwrap_or(0),
                alert.budget_rate_decrease_threshold_per_million.unwrap_or(0) as f64 / 10_000.0
            )
        };
        json!({
            "version": "v0.1.0",
            "id": alert.id,
            "name": slo.name,
            "type": alert.alert_type,
            "status": status,
            "summary": format!("{}: {}", if status == "TRIGGERED" { "Burn alert" } else { "Resolved" }, slo.name),
            "description": if alert.description.is_empty() { what } else { alert.description.clone() },
            "slo": {"id": slo.id, "name": slo.name, "target_per_million": slo.target_per_million,
                    "time_period_days": slo.time_period_days},
            "figures": facts,
            "timestamp": sonde_model::time::format_us(period * 1_000_000),
        })
    })
    .await
}

async fn answered(state: &AppState, mut b: BurnAlert) -> BurnAlert {
    b.triggered = crate::alerts::firing(state).await.contains(&b.id);
    b
}

/// `GET /1/burn_alerts/{dataset}?slo_id=`: the SLO's burn alerts (all of the dataset's without it).
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
    UrlQuery(q): UrlQuery<BySlo>,
) -> Result<Json<Vec<BurnAlert>>, ApiError> {
    let ds = access.dataset()?;
    let firing = crate::alerts::firing(&state).await;
    let mut out = load(&state).await?.remove(ds.as_str()).unwrap_or_default();
    out.retain(|b| q.slo_id.as_ref().is_none_or(|s| *s == b.slo.id));
    for b in &mut out {
        b.triggered = firing.contains(&b.id);
    }
    Ok(Json(out))
}

/// `POST /1/burn_alerts/{dataset}`.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    JsonBody(body): JsonBody<BurnBody>,
) -> Result<(StatusCode, Json<BurnAlert>), ApiError> {
    let ds = access.dataset()?.as_str().to_string();
    let b = build(&state, &ds, body, new_id(), now()).await?;
    let created = add_in(&state, DOCUMENT, &ds, "burn alerts", b).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /1/burn_alerts/{dataset}/{id}`.
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<BurnAlert>, ApiError> {
    let ds = access.dataset()?.as_str();
    let b = find_in(&state, DOCUMENT, ds, &id, || not_found(ds, &id)).await?;
    Ok(Json(answered(&state, b).await))
}

/// `PUT /1/burn_alerts/{dataset}/{id}`.
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<BurnBody>,
) -> Result<Json<BurnAlert>, ApiError> {
    let ds = access.dataset()?.as_str();
    let current: BurnAlert = find_in(&state, DOCUMENT, ds, &id, || not_found(ds, &id)).await?;
    let b = build(&state, ds, body, id.clone(), current.created_at).await?;
    let changed = change_in(
        &state,
        DOCUMENT,
        ds,
        &id,
        || not_found(ds, &id),
        |slot: &mut BurnAlert| {
            *slot = b;
            Ok(())
        },
    )
    .await?;
    Ok(Json(answered(&state, changed).await))
}

/// `DELETE /1/burn_alerts/{dataset}/{id}`.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ds = access.dataset()?.as_str();
    delete_in::<BurnAlert>(&state, DOCUMENT, ds, &id, || not_found(ds, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

impl crate::objects::Keyed for BurnAlert {
    fn key(&self) -> &str {
        &self.id
    }
}

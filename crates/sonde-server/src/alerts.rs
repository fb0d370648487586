//! The trigger scheduler: each enabled trigger is evaluated once per `frequency`, at the start
//! of each aligned period (`floor(now / frequency) * frequency`) plus a per-trigger jitter of up
//! to a tenth of the period (at most 30 s), so triggers of one frequency do not all run at the
//! same instant. A trigger runs at most once at a time. Its state — the last period evaluated,
//! the consecutive evaluations over the threshold, whether it is firing — is written with the
//! notifications it decided to send (an outbox) in one document, before any is sent: after a
//! crash or a restart, a period already evaluated is not evaluated again (nothing re-fires and
//! no resolve is lost), the notifications not yet sent are sent, and periods missed while the
//! server was down are covered by one evaluation of the current period.
//!
//! An evaluation runs the trigger's query (results only) over the `time_range` before the
//! period's start, compares each breakdown group's value (or, with `baseline_details`, its
//! change since `offset_minutes` earlier) with the threshold, and fires when some group has
//! crossed it for `exceeded_limit` evaluations in a row. `on_change` notifies when it starts
//! firing (TRIGGERED, with the groups over the threshold) and when it stops (OK); `on_true`
//! notifies on every evaluation while it fires, and once when it stops.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Authorized, Query};
use crate::recipients::{Outcome, Recipient};
use crate::triggers::{Trigger, TriggerRecipient, value_key};
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sonde_model::DatasetName;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The states and the outbox, written together.
const RUNS: &str = "trigger_runs";
/// What was delivered, per trigger.
const DELIVERIES: &str = "trigger_deliveries";
/// Deliveries kept per trigger.
const MAX_DELIVERIES: usize = 100;
/// How often the scheduler looks for work.
const TICK: Duration = Duration::from_millis(500);

/// A trigger's state between evaluations.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RunState {
    /// The start (unix s) of the last period evaluated.
    last_period: i64,
    /// Evaluations in a row with a group over the threshold.
    consecutive: u32,
    triggered: bool,
}

/// A notification decided but not yet delivered.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    id: String,
    trigger_id: String,
    dataset: String,
    recipient: TriggerRecipient,
    /// The marker message, for `marker` recipients.
    message: String,
    payload: Value,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Runs {
    #[serde(default)]
    states: BTreeMap<String, RunState>,
    #[serde(default)]
    outbox: Vec<Pending>,
}

/// One delivery, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Delivery {
    /// The notification's id (its outbox entry), so a crash after sending records it once.
    #[serde(default)]
    id: String,
    at: String,
    /// `TRIGGERED` or `OK`.
    notification: String,
    recipient: TriggerRecipient,
    #[serde(flatten)]
    outcome: Outcome,
}

/// The triggers and burn alerts firing now, by id (one read, however many are listed).
pub(crate) async fn firing(state: &AppState) -> HashSet<String> {
    let runs: Runs = state.storage.documents().load(RUNS).await.unwrap_or_default();
    runs.states
        .into_iter()
        .filter(|(_, s)| s.triggered)
        .map(|(id, _)| id)
        .collect()
}

/// `GET /1/triggers/{dataset}/{id}/deliveries` and `GET /1/burn_alerts/{dataset}/{id}/deliveries`
/// (Sonde's own): the last deliveries, oldest first, each with its outcome.
pub(crate) async fn deliveries(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Vec<Delivery>>, ApiError> {
    let ds = access.dataset()?;
    let known = crate::triggers::load(&state)
        .await?
        .get(ds.as_str())
        .is_some_and(|l| l.iter().any(|t| t.id == id))
        || crate::burn_alerts::load(&state)
            .await?
            .get(ds.as_str())
            .is_some_and(|l| l.iter().any(|b| b.id == id));
    if !known {
        return Err(ApiError::not_found(format!(
            "no trigger or burn alert with id {id:?} in {ds}"
        )));
    }
    let all: BTreeMap<String, VecDeque<Delivery>> = state.storage.documents().load(DELIVERIES).await?;
    Ok(Json(all.get(&id).cloned().unwrap_or_default().into()))
}

/// Runs the scheduler until `stop` resolves.
pub async fn run(state: Arc<AppState>, stop: impl std::future::Future<Output = ()>) {
    let http = reqwest::Client::new();
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    tokio::pin!(stop);
    // Notifications a previous run decided but did not get to send.
    spawn_deliveries(&state, &http);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        if let Err(e) = tick(&state, &http, &running).await {
            tracing::warn!(error = %e.message, "trigger scheduler");
        }
    }
}

/// The jitter of a trigger: up to a tenth of its period, at most 30 s, the same at every run.
fn jitter(t: &Trigger) -> i64 {
    let h =
        t.id.bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let span = (t.frequency / 10).min(30);
    if span == 0 { 0 } else { (h % span as u64) as i64 }
}

/// Whether a `window` trigger may run in the period starting at `period` (unix s).
fn in_window(t: &Trigger, period: i64) -> bool {
    let Some(s) = t
        .evaluation_schedule
        .as_ref()
        .filter(|_| t.evaluation_schedule_type.as_deref() == Some("window"))
    else {
        return true;
    };
    let mins = |v: &str| v[..2].parse::<i64>().unwrap_or(0) * 60 + v[3..].parse::<i64>().unwrap_or(0);
    let (start, end) = (mins(&s.window.start_time), mins(&s.window.end_time));
    let day = (period.div_euclid(86_400) + 4).rem_euclid(7); // 1970-01-01 was a Thursday.
    let minute = period.rem_euclid(86_400) / 60;
    let on = |d: i64| {
        s.window
            .days_of_week
            .iter()
            .any(|x| x == crate::triggers::DAYS[d.rem_euclid(7) as usize])
    };
    if end > start {
        on(day) && minute >= start && minute < end
    } else {
        // Past midnight: from start on a listed day to end on the day after.
        (on(day) && minute >= start) || (on(day - 1) && minute < end)
    }
}

async fn tick(
    state: &Arc<AppState>,
    http: &reqwest::Client,
    running: &Arc<Mutex<HashSet<String>>>,
) -> Result<(), ApiError> {
    let triggers = crate::triggers::load(state).await?;
    let burns = crate::burn_alerts::load(state).await?;
    if triggers.is_empty() && burns.is_empty() {
        return Ok(());
    }
    let runs: Runs = state.storage.documents().load(RUNS).await?;
    if !runs.outbox.is_empty() {
        spawn_deliveries(state, http);
    }
    let now = sonde_model::time::now_us() / 1_000_000;
    for t in triggers.into_values().flatten().filter(|t| !t.disabled) {
        let period = now.div_euclid(t.frequency) * t.frequency;
        let last = runs.states.get(&t.id).map_or(i64::MIN, |s| s.last_period);
        if period <= last || now < period + jitter(&t) {
            continue;
        }
        if !running.lock().unwrap().insert(t.id.clone()) {
            continue; // Still running the previous period.
        }
        let (state, http, running) = (state.clone(), http.clone(), running.clone());
        tokio::spawn(async move {
            let id = t.id.clone();
            if !in_window(&t, period) {
                let _ = record(&state, &t, period, None).await;
            } else {
                match evaluate(&state, &t, period).await {
                    Ok(crossing) => {
                        if let Err(e) = record(&state, &t, period, Some(crossing)).await {
                            tracing::warn!(trigger = %id, error = %e.message, "recording a trigger's evaluation");
                        }
                        spawn_deliveries(&state, &http);
                    }
                    Err(e) => tracing::warn!(trigger = %id, error = %e.message, "evaluating a trigger"),
                }
            }
            running.lock().unwrap().remove(&id);
        });
    }
    let step = burn_period(state);
    let period = now.div_euclid(step) * step;
    for b in burns.into_values().flatten() {
        let last = runs.states.get(&b.id).map_or(i64::MIN, |s| s.last_period);
        if period <= last || !running.lock().unwrap().insert(b.id.clone()) {
            continue;
        }
        let (state, http, running) = (state.clone(), http.clone(), running.clone());
        tokio::spawn(async move {
            match crate::burn_alerts::evaluate(&state, &b, period).await {
                Ok(()) => spawn_deliveries(&state, &http),
                Err(e) => tracing::warn!(burn_alert = %b.id, error = %e.message, "evaluating a burn alert"),
            }
            running.lock().unwrap().remove(&b.id);
        });
    }
    Ok(())
}

/// `t`'s query over the `time_range` before `end` (unix s): what an evaluation runs, and what
/// its notification links to.
fn over_range(t: &Trigger, end: i64) -> sonde_query::QuerySpec {
    let mut spec = t.query.clone();
    let range = spec.time_range.take().unwrap_or(t.frequency);
    spec.start_time = Some(json!(end - range));
    spec.end_time = Some(json!(end));
    spec
}

/// Every group of an evaluation, and those over the threshold.
struct Crossing {
    groups: Vec<(Map<String, Value>, f64)>,
    over: Vec<(Map<String, Value>, f64)>,
}

/// The value per group of `t`'s query over `[end - range, end)`.
async fn values(
    state: &AppState,
    t: &Trigger,
    ds: &DatasetName,
    end: i64,
) -> Result<Vec<(Map<String, Value>, f64)>, ApiError> {
    let mut spec = over_range(t, end);
    spec.disable_series = Some(true);
    let key = value_key(&t.query);
    let defs = crate::definitions::load(state).await?;
    let budget = state.engine.request();
    let r = match state.engine.query(ds, &spec, &defs, &budget).await {
        Ok(r) => r,
        // A dataset with no events yet has no groups: nothing is over any threshold.
        Err(sonde_query::QueryError::NoSuchDataset(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(r.data
        .results
        .iter()
        .filter_map(|row| {
            let mut data = row.get("data")?.as_object()?.clone();
            let v = data.remove(&key)?.as_f64()?;
            Some((data, v))
        })
        .collect())
}

async fn evaluate(state: &AppState, t: &Trigger, period: i64) -> Result<Crossing, ApiError> {
    let ds = DatasetName::new(&t.dataset_slug).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut groups = values(state, t, &ds, period).await?;
    if let Some(b) = &t.baseline_details {
        let before: Vec<_> = values(state, t, &ds, period - b.offset_minutes * 60).await?;
        groups = groups
            .into_iter()
            .filter_map(|(g, v)| {
                let prev = before.iter().find(|(pg, _)| *pg == g).map_or(0.0, |(_, p)| *p);
                let change = if b.kind == "percentage" {
                    if prev == 0.0 {
                        return None; // No earlier value: no percentage to compare.
                    }
                    (v - prev) / prev.abs() * 100.0
                } else {
                    v - prev
                };
                Some((g, change))
            })
            .collect();
    }
    let th = &t.threshold;
    let over = groups
        .iter()
        .filter(|(_, v)| match th.op.as_str() {
            ">" => *v > th.value,
            ">=" => *v >= th.value,
            "<" => *v < th.value,
            _ => *v <= th.value,
        })
        .cloned()
        .collect();
    Ok(Crossing { groups, over })
}

fn operator_words(op: &str) -> &'static str {
    match op {
        ">" => "greater than",
        ">=" => "greater than or equal to",
        "<" => "less than",
        _ => "less than or equal to",
    }
}

fn describe_group(g: &Map<String, Value>) -> String {
    if g.is_empty() {
        return "all events".to_string();
    }
    g.iter()
        .map(|(k, v)| format!("{k}:{}", v.as_str().map_or_else(|| v.to_string(), str::to_string)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Honeycomb's default trigger payload; its links start with `base` (`--public-url`).
fn payload(t: &Trigger, status: &str, c: &Crossing, period: i64, base: &str) -> Value {
    let groups = |list: &[(Map<String, Value>, f64)]| -> Vec<Value> {
        list.iter().map(|(g, v)| json!({"Group": g, "Result": v})).collect()
    };
    let words = operator_words(&t.threshold.op);
    let description = match c.over.first() {
        Some((g, v)) if status == "TRIGGERED" => format!(
            "Currently {words} threshold value ({}) for {} (value {v})",
            t.threshold.value,
            describe_group(g)
        ),
        _ => format!("No longer {words} threshold value ({})", t.threshold.value),
    };
    let spec = over_range(t, period);
    let base = base.trim_end_matches('/');
    let url = match DatasetName::new(&t.dataset_slug) {
        Ok(ds) => format!("{base}{}", crate::queries::ui_link(&ds, &spec)),
        Err(_) => String::new(),
    };
    let trigger_url = format!("{base}/?dataset={}", crate::queries::percent_encode(&t.dataset_slug));
    json!({
        "version": "v0.1.0",
        "id": t.id,
        "name": t.name,
        "trigger_url": trigger_url,
        "status": status,
        "summary": format!("{}: {}", if status == "TRIGGERED" { "Triggered" } else { "Resolved" }, t.name),
        "description": description,
        "operator": words,
        "threshold": t.threshold.value,
        "result_url": url,
        "result_groups": groups(&c.groups),
        "result_groups_triggered": if status == "TRIGGERED" { groups(&c.over) } else { Vec::new() },
        "timestamp": sonde_model::time::format_us(period * 1_000_000),
    })
}

/// Writes the evaluation of `period` of trigger `t` (none: outside its window) and the
/// notifications it calls for, in one document.
async fn record(state: &AppState, t: &Trigger, period: i64, crossing: Option<Crossing>) -> Result<(), ApiError> {
    let rule = Rule {
        id: &t.id,
        dataset: &t.dataset_slug,
        exceeded_limit: t.threshold.exceeded_limit,
        on_true: t.alert_type == "on_true",
        recipients: &t.recipients,
    };
    let crossed = crossing.as_ref().map(|c| !c.over.is_empty());
    decide(state, rule, period, crossed, |status| {
        let c = crossing.as_ref().expect("a decision comes from an evaluation");
        payload(t, status, c, period, &state.config.public_url)
    })
    .await
}

/// What `decide` needs of an alerting rule (a trigger or a burn alert).
pub(crate) struct Rule<'a> {
    pub(crate) id: &'a str,
    pub(crate) dataset: &'a str,
    pub(crate) exceeded_limit: u32,
    pub(crate) on_true: bool,
    pub(crate) recipients: &'a [TriggerRecipient],
}

/// Records the evaluation of `period` of `rule` (`crossed`: whether its condition held; none:
/// not evaluated, outside its window) and queues the notifications that follow, in one write:
/// `payload` builds the notification of a status (`TRIGGERED` or `OK`).
pub(crate) async fn decide(
    state: &AppState,
    rule: Rule<'_>,
    period: i64,
    crossed: Option<bool>,
    payload: impl FnOnce(&str) -> Value,
) -> Result<(), ApiError> {
    state
        .storage
        .documents()
        .update(RUNS, |runs: &mut Runs| {
            let s = runs.states.entry(rule.id.to_string()).or_default();
            if s.last_period >= period {
                return Ok::<_, ApiError>(()); // Another server got there first.
            }
            s.last_period = period;
            let Some(crossed) = crossed else {
                return Ok(());
            };
            s.consecutive = if crossed { s.consecutive.saturating_add(1) } else { 0 };
            let fire = s.consecutive >= rule.exceeded_limit;
            let notify = if rule.on_true {
                fire || s.triggered
            } else {
                fire != s.triggered
            };
            s.triggered = fire;
            if notify {
                let p = payload(if fire { "TRIGGERED" } else { "OK" });
                let message = format!(
                    "{}: {}",
                    p["summary"].as_str().unwrap_or(""),
                    p["description"].as_str().unwrap_or("")
                );
                for r in rule.recipients {
                    runs.outbox.push(Pending {
                        id: crate::objects::new_id(),
                        trigger_id: rule.id.to_string(),
                        dataset: rule.dataset.to_string(),
                        recipient: r.clone(),
                        message: r
                            .target
                            .clone()
                            .filter(|x| !x.is_empty())
                            .unwrap_or_else(|| message.clone()),
                        payload: p.clone(),
                    });
                }
            }
            Ok(())
        })
        .await?
}

/// The period burn alerts are evaluated at: a minute (Honeycomb's), or the trigger floor when
/// `--trigger-min-frequency` is lower.
fn burn_period(state: &AppState) -> i64 {
    (state.config.min_trigger_frequency.as_secs() as i64).clamp(1, 60)
}

/// Delivers what the outbox holds, in the background; each delivery leaves the outbox and is
/// recorded once done.
fn spawn_deliveries(state: &Arc<AppState>, http: &reqwest::Client) {
    static DRAINING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DRAINING.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return; // The running drain picks up what was just added.
    }
    let (state, http) = (state.clone(), http.clone());
    tokio::spawn(async move {
        loop {
            let runs: Runs = match state.storage.documents().load(RUNS).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the trigger outbox");
                    break;
                }
            };
            let Some(p) = runs.outbox.first().cloned() else {
                break;
            };
            // The record is written before the notification leaves the outbox, and names it:
            // a crash between the two finds it recorded and does not send it again, so each
            // delivery is recorded exactly once (a crash during the send itself sends it again).
            let recorded: BTreeMap<String, VecDeque<Delivery>> =
                state.storage.documents().load(DELIVERIES).await.unwrap_or_default();
            let done = recorded
                .get(&p.trigger_id)
                .is_some_and(|l| l.iter().any(|d| d.id == p.id));
            if !done {
                let outcome = deliver_one(&state, &http, &p).await;
                let d = Delivery {
                    id: p.id.clone(),
                    at: crate::objects::now(),
                    notification: p.payload["status"].as_str().unwrap_or("").to_string(),
                    recipient: p.recipient.clone(),
                    outcome,
                };
                let recorded = state
                    .storage
                    .documents()
                    .update(DELIVERIES, |all: &mut BTreeMap<String, VecDeque<Delivery>>| {
                        let list = all.entry(p.trigger_id.clone()).or_default();
                        list.push_back(d);
                        while list.len() > MAX_DELIVERIES {
                            list.pop_front();
                        }
                        Ok::<_, ApiError>(())
                    })
                    .await;
                if let Err(e) = recorded {
                    tracing::warn!(error = %e, "recording a trigger delivery");
                }
            }
            let removed = state
                .storage
                .documents()
                .update(RUNS, |runs: &mut Runs| {
                    runs.outbox.retain(|o| o.id != p.id);
                    Ok::<_, ApiError>(())
                })
                .await;
            if let Err(e) = removed {
                // Without this the drain would send the same notification forever.
                tracing::warn!(error = %e, "removing a delivered notification from the outbox");
                break;
            }
        }
        DRAINING.store(false, std::sync::atomic::Ordering::Release);
    });
}

async fn deliver_one(state: &AppState, http: &reqwest::Client, p: &Pending) -> Outcome {
    let r = match (&p.recipient.id, &p.recipient.kind) {
        (Some(id), _) => crate::recipients::load(state)
            .await
            .ok()
            .and_then(|all| all.into_iter().find(|r| &r.id == id)),
        (None, Some(kind)) => Some(Recipient::inline(kind, p.recipient.target.as_deref().unwrap_or(""))),
        (None, None) => None,
    };
    let kind = p.payload["type"]
        .as_str()
        .filter(|k| matches!(*k, "exhaustion_time" | "budget_rate"))
        .unwrap_or("trigger");
    let none = Value::Null;
    let n = crate::recipients::Notification {
        id: &p.id,
        dataset: &p.dataset,
        message: &p.message,
        payload: &p.payload,
        kind,
        alert_details: p.recipient.details.as_ref().unwrap_or(&none),
    };
    match r {
        Some(r) => crate::recipients::deliver(state, http, &r, &n).await,
        None => Outcome {
            status: "failed".to_string(),
            http_status: None,
            attempts: 0,
            error: "the recipient no longer exists".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(days: &[&str], start: &str, end: &str) -> Trigger {
        serde_json::from_value(json!({
            "id": "t", "dataset_slug": "d", "name": "n", "query_id": "q", "query": {"calculations": [{"op": "COUNT"}]},
            "threshold": {"op": ">", "value": 1}, "frequency": 60, "alert_type": "on_change",
            "evaluation_schedule_type": "window",
            "evaluation_schedule": {"window": {"days_of_week": days, "start_time": start, "end_time": end}},
            "created_at": "", "updated_at": ""
        }))
        .unwrap()
    }

    #[test]
    fn evaluation_windows_follow_days_and_utc_times_across_midnight() {
        // 2026-12-04 was a Friday.
        let friday = 1_796_342_400; // 2026-12-04T00:00:00Z
        let at = |day: i64, h: i64, m: i64| friday + day * 86_400 + h * 3600 + m * 60;
        let t = trigger(&["monday", "friday"], "13:00", "21:00");
        assert!(in_window(&t, at(0, 13, 0)));
        assert!(in_window(&t, at(0, 20, 59)));
        assert!(!in_window(&t, at(0, 21, 0)));
        assert!(!in_window(&t, at(0, 12, 59)));
        assert!(!in_window(&t, at(1, 14, 0)), "saturday");
        assert!(in_window(&t, at(3, 14, 0)), "monday");
        // Past midnight: from 22:00 on a listed day to 02:00 the day after.
        let night = trigger(&["friday"], "22:00", "02:00");
        assert!(in_window(&night, at(0, 23, 0)));
        assert!(
            in_window(&night, at(1, 1, 59)),
            "saturday morning belongs to friday's window"
        );
        assert!(!in_window(&night, at(1, 2, 0)));
        assert!(!in_window(&night, at(0, 1, 0)), "friday morning belongs to thursday's");
    }
}

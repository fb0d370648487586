//! Honeycomb's recipients, `/1/recipients`: where a trigger's notifications go, and their
//! delivery.
//!
//! Sonde delivers three kinds itself: `webhook` (an HTTP POST of Honeycomb's default JSON
//! payload, its secret in `X-Honeycomb-Webhook-Token`, its own headers; retried with backoff
//! within a timeout), `marker` (a marker on the trigger's dataset) and `log` (a line in the
//! server's log, Sonde's own). `email`, `slack`, `pagerduty` and `msteams_workflow` recipients
//! are accepted and stored in Honeycomb's shape, so its Terraform provider and scripts work, but
//! reaching those services needs them: a delivery to one is recorded as not sent, and the README
//! says to point a webhook at a relay instead. Every delivery is recorded with its outcome.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Authorized, Describe, JsonBody, Manage, Query};
use crate::objects::{check_room, check_text, check_url, new_id, now};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const DOCUMENT: &str = "recipients";

/// The kinds of recipient, and the `details` field each needs.
const KINDS: &[(&str, &str)] = &[
    ("webhook", "webhook_url"),
    ("marker", ""),
    ("log", ""),
    ("email", "email_address"),
    ("slack", "slack_channel"),
    ("pagerduty", "pagerduty_integration_key"),
    ("msteams_workflow", "webhook_url"),
];

/// Headers a webhook recipient may not set: Sonde sets them.
const RESERVED_HEADERS: &[&str] = &["content-type", "user-agent", "x-honeycomb-webhook-token"];

/// Longest a webhook delivery waits for an answer, per attempt.
pub(crate) const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per webhook delivery (waiting 1 s, 2 s, 4 s between them).
pub(crate) const WEBHOOK_ATTEMPTS: u32 = 4;

/// A recipient, as stored and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Recipient {
    pub(crate) id: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) details: Value,
    created_at: String,
    updated_at: String,
}

impl Recipient {
    /// A recipient given inline in a trigger (`{"type": "marker", "target": "deploys"}`).
    pub(crate) fn inline(kind: &str, target: &str) -> Recipient {
        let details = match kind {
            "webhook" => json!({"webhook_url": target}),
            "email" => json!({"email_address": target}),
            "slack" => json!({"slack_channel": target}),
            "pagerduty" => json!({"pagerduty_integration_key": target}),
            _ => json!({}),
        };
        Recipient {
            id: String::new(),
            kind: kind.to_string(),
            details,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }
}

/// A recipient as a client sends it.
#[derive(Debug, Deserialize)]
pub(crate) struct RecipientBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    details: Value,
}

impl Describe for RecipientBody {
    const WHAT: &'static str = "recipient";
}

/// Every recipient.
pub(crate) async fn load(state: &AppState) -> Result<Vec<Recipient>, ApiError> {
    Ok(state.storage.documents().load(DOCUMENT).await?)
}

fn text<'a>(details: &'a Value, field: &str) -> &'a str {
    details.get(field).and_then(Value::as_str).unwrap_or("")
}

/// Checks a recipient's type and details.
pub(crate) fn check(kind: &str, details: &Value) -> Result<(), ApiError> {
    let Some((_, required)) = KINDS.iter().find(|(k, _)| *k == kind) else {
        return Err(ApiError::bad_request(format!(
            "type: one of {}, got {kind:?}",
            KINDS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
        )));
    };
    if !details.is_null() && !details.is_object() {
        return Err(ApiError::bad_request("details: must be an object"));
    }
    if !required.is_empty() && text(details, required).is_empty() {
        return Err(ApiError::bad_request(format!(
            "details.{required}: required for a {kind} recipient"
        )));
    }
    match kind {
        "webhook" | "msteams_workflow" => {
            check_text("details.webhook_name", text(details, "webhook_name"), 255, false)?;
            check_url("details.webhook_url", text(details, "webhook_url"))?;
            check_text("details.webhook_secret", text(details, "webhook_secret"), 255, false)?;
            let headers = details.get("webhook_headers").and_then(Value::as_array);
            let headers = headers.map(Vec::as_slice).unwrap_or_default();
            if headers.len() > 5 {
                return Err(ApiError::bad_request(format!(
                    "details.webhook_headers: at most 5, got {}",
                    headers.len()
                )));
            }
            check_payloads(details)?;
            for h in headers {
                let (name, value) = (text(h, "header"), text(h, "value"));
                check_text("details.webhook_headers.header", name, 64, true)?;
                check_text("details.webhook_headers.value", value, 512, false)?;
                if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str())
                    || axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || axum::http::HeaderValue::from_str(value).is_err()
                {
                    return Err(ApiError::bad_request(format!(
                        "details.webhook_headers: {name:?} cannot be set (reserved: Content-Type, User-Agent, X-Honeycomb-Webhook-Token; or not a valid header)"
                    )));
                }
            }
        }
        "pagerduty" if text(details, "pagerduty_integration_key").len() != 32 => {
            return Err(ApiError::bad_request(
                "details.pagerduty_integration_key: must be 32 characters",
            ));
        }
        _ => {}
    }
    Ok(())
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no recipient with id {id:?}"))
}

/// The kinds of notification a webhook may have its own payload for.
const PAYLOAD_KINDS: [&str; 3] = ["trigger", "exhaustion_time", "budget_rate"];

/// Checks a webhook's custom payloads (`webhook_payloads`): at most 10 template variables named
/// like `severity` (a lower-case letter, then letters and digits; at most 64), defaults of at
/// most 256 characters, and templates that parse.
fn check_payloads(details: &Value) -> Result<(), ApiError> {
    let Some(p) = details.get("webhook_payloads").filter(|p| !p.is_null()) else {
        return Ok(());
    };
    let vars = p
        .get("template_variables")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if vars.len() > 10 {
        return Err(ApiError::bad_request(format!(
            "details.webhook_payloads.template_variables: at most 10, got {}",
            vars.len()
        )));
    }
    for v in vars {
        let name = text(v, "name");
        let ok = name.len() <= 64
            && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_alphanumeric());
        if !ok {
            return Err(ApiError::bad_request(format!(
                "details.webhook_payloads.template_variables: {name:?} must be a lower-case letter, then letters and digits (at most 64)"
            )));
        }
        check_text(
            "details.webhook_payloads.template_variables.default_value",
            text(v, "default_value"),
            256,
            false,
        )?;
    }
    if let Some(templates) = p.get("payload_templates").and_then(Value::as_object) {
        for (kind, t) in templates {
            if !PAYLOAD_KINDS.contains(&kind.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "details.webhook_payloads.payload_templates: {kind:?} is not one of trigger, exhaustion_time, budget_rate"
                )));
            }
            crate::templates::check(text(t, "body")).map_err(|e| ApiError {
                position: Some(e.position),
                ..ApiError::bad_request(format!(
                    "details.webhook_payloads.payload_templates.{kind}.body: {}",
                    e.message
                ))
            })?;
        }
    }
    Ok(())
}

/// The data a custom payload template sees (Honeycomb's variables), from the default payload.
fn template_data(details: &Value, payload: &Value, alert_vars: &Value, instance: &str, dataset: &str) -> Value {
    let groups = |key: &str| -> Value {
        payload[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                let pairs: Vec<Value> = g["Group"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| json!({"Key": k, "Value": v}))
                    .collect();
                json!({"Group": pairs, "Result": g["Result"]})
            })
            .collect()
    };
    let mut vars = serde_json::Map::new();
    let p = &details["webhook_payloads"];
    for v in p["template_variables"].as_array().into_iter().flatten() {
        vars.insert(text(v, "name").to_string(), v["default_value"].clone());
    }
    for v in alert_vars["variables"].as_array().into_iter().flatten() {
        vars.insert(text(v, "name").to_string(), v["value"].clone());
    }
    json!({
        "Name": payload["name"], "ID": payload["id"], "Description": payload["description"],
        "URL": payload["trigger_url"], "Environment": "sonde", "Datasets": [dataset],
        "Operator": payload["operator"], "Threshold": payload["threshold"],
        "Result": {"URL": payload["result_url"], "Groups": groups("result_groups"), "GroupsTriggered": groups("result_groups_triggered")},
        "Alert": {"InstanceID": instance, "Description": payload["description"], "Status": payload["status"],
                  "Summary": payload["summary"], "Timestamp": payload["timestamp"], "IsTest": false},
        "Recipient": {"Secret": details["webhook_secret"]},
        "Vars": vars,
        "SLO": payload["slo"],
    })
}

/// `GET /1/recipients`.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    _: Authorized<Query>,
) -> Result<Json<Vec<Recipient>>, ApiError> {
    Ok(Json(load(&state).await?))
}

/// `POST /1/recipients`.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    _: Authorized<Manage>,
    JsonBody(body): JsonBody<RecipientBody>,
) -> Result<(StatusCode, Json<Recipient>), ApiError> {
    check(&body.kind, &body.details)?;
    let at = now();
    let r = Recipient {
        id: new_id(),
        kind: body.kind,
        details: if body.details.is_null() {
            json!({})
        } else {
            body.details
        },
        created_at: at.clone(),
        updated_at: at,
    };
    let created = state
        .storage
        .documents()
        .update(DOCUMENT, |all: &mut Vec<Recipient>| {
            check_room(&state, "recipients", "this environment", all.len())?;
            all.push(r.clone());
            Ok::<_, ApiError>(r)
        })
        .await??;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /1/recipients/{id}`.
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    _: Authorized<Query>,
    Path(id): Path<String>,
) -> Result<Json<Recipient>, ApiError> {
    load(&state)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

/// `PUT /1/recipients/{id}`: a new type and details.
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    _: Authorized<Manage>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RecipientBody>,
) -> Result<Json<Recipient>, ApiError> {
    check(&body.kind, &body.details)?;
    let changed = state
        .storage
        .documents()
        .update(DOCUMENT, |all: &mut Vec<Recipient>| {
            let r = all.iter_mut().find(|r| r.id == id).ok_or_else(|| not_found(&id))?;
            r.kind = body.kind;
            r.details = body.details;
            r.updated_at = now();
            Ok::<_, ApiError>(r.clone())
        })
        .await??;
    Ok(Json(changed))
}

/// `DELETE /1/recipients/{id}`: 409 while a trigger names it.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    _: Authorized<Manage>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if let Some(t) = crate::triggers::naming_recipient(&state, &id).await?.first() {
        return Err(ApiError::conflict(format!(
            "recipient {id:?} is used by {t}; remove it there first"
        )));
    }
    state
        .storage
        .documents()
        .update(DOCUMENT, |all: &mut Vec<Recipient>| {
            let before = all.len();
            all.retain(|r| r.id != id);
            if all.len() == before {
                return Err(not_found(&id));
            }
            Ok(())
        })
        .await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /1/recipients/{id}/triggers`: the triggers that notify it.
pub(crate) async fn triggers_of(
    State(state): State<Arc<AppState>>,
    _: Authorized<Query>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    if !load(&state).await?.iter().any(|r| r.id == id) {
        return Err(not_found(&id));
    }
    Ok(Json(crate::triggers::using_recipient(&state, &id).await?))
}

/// How one delivery ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outcome {
    /// `delivered`, `failed` or `not_sent`.
    pub(crate) status: String,
    /// The last HTTP status, for webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) http_status: Option<u16>,
    pub(crate) attempts: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) error: String,
}

/// One notification for a recipient.
pub(crate) struct Notification<'a> {
    /// Its id (`.Alert.InstanceID` of a template).
    pub(crate) id: &'a str,
    pub(crate) dataset: &'a str,
    /// The marker message, for `marker` recipients.
    pub(crate) message: &'a str,
    /// Honeycomb's default payload.
    pub(crate) payload: &'a Value,
    /// `trigger`, `exhaustion_time` or `budget_rate`: which custom payload applies.
    pub(crate) kind: &'a str,
    /// The alert's own `details` for this recipient (`variables` overriding the defaults).
    pub(crate) alert_details: &'a Value,
}

/// Delivers `n` to `r`: a webhook gets its custom payload for the kind when it has one, else
/// the default payload; `marker` makes a marker in the dataset with the message.
pub(crate) async fn deliver(state: &AppState, http: &reqwest::Client, r: &Recipient, n: &Notification<'_>) -> Outcome {
    let (dataset, message, payload) = (n.dataset, n.message, n.payload);
    let done = |status: &str, error: String| Outcome {
        status: status.to_string(),
        http_status: None,
        attempts: 1,
        error,
    };
    match r.kind.as_str() {
        "webhook" => {
            let template = r.details["webhook_payloads"]["payload_templates"][n.kind]["body"].as_str();
            let body = match template {
                Some(t) => {
                    let data = template_data(&r.details, payload, n.alert_details, n.id, dataset);
                    match crate::templates::render(t, &data) {
                        Ok(b) => b.into_bytes(),
                        Err(e) => return done("failed", format!("the {} payload template: {}", n.kind, e.message)),
                    }
                }
                None => serde_json::to_vec(payload).unwrap_or_default(),
            };
            webhook(http, &r.details, body).await
        }
        "log" => {
            tracing::warn!(recipient = %r.id, notification = %payload, "trigger notification");
            done("delivered", String::new())
        }
        "marker" => match crate::markers::add(state, dataset, message, "trigger").await {
            Ok(()) => done("delivered", String::new()),
            Err(e) => done("failed", e.message),
        },
        other => done(
            "not_sent",
            format!("{other} needs its own service: point a webhook recipient at a relay to it"),
        ),
    }
}

/// POSTs `body` (JSON) to the webhook, retrying (1 s, 2 s, 4 s apart) on a network error or a
/// 5xx/429.
async fn webhook(http: &reqwest::Client, details: &Value, body: Vec<u8>) -> Outcome {
    let url = text(details, "webhook_url");
    let mut out = Outcome {
        status: "failed".to_string(),
        http_status: None,
        attempts: 0,
        error: String::new(),
    };
    for attempt in 0..WEBHOOK_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
        }
        out.attempts = attempt + 1;
        let mut req = http
            .post(url)
            .timeout(WEBHOOK_TIMEOUT)
            .header("user-agent", concat!("sonde/", env!("CARGO_PKG_VERSION")))
            .header("content-type", "application/json")
            .body(body.clone());
        let secret = text(details, "webhook_secret");
        if !secret.is_empty() {
            req = req.header("x-honeycomb-webhook-token", secret);
        }
        for h in details
            .get("webhook_headers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            req = req.header(text(h, "header"), text(h, "value"));
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                out.http_status = Some(status.as_u16());
                if status.is_success() {
                    out.status = "delivered".to_string();
                    out.error.clear();
                    return out;
                }
                out.error = format!("answered {status}");
                if !(status.is_server_error() || status.as_u16() == 429) {
                    return out;
                }
            }
            Err(e) => out.error = e.to_string(),
        }
    }
    out
}

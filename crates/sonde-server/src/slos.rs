//! Honeycomb's SLOs, `/1/slos/{dataset}`, computed incrementally.
//!
//! The SLI is a derived column of the dataset (or environment-wide) that is `true` for a good
//! event, `false` for a bad one and `null` for one that does not count. Each SLO keeps per-minute
//! good and bad counts (sample rates weighted, as COUNT is) over its rolling `time_period_days`
//! in a document of its own (`documents/slo-{id}.json`). A read first brings them up to date:
//! only the minutes since the last one counted are queried, plus the last `LATE_MINUTES` again
//! so that events arriving late are counted; the figures are then sums over at most 43,200
//! minutes (30 days), not a scan of 30 days of events. A new SLO, or one whose SLI's expression
//! changed, is counted from its segments once, a thousand minutes per query.
//!
//! `?detailed` adds `compliance` (good ÷ qualified, in %) and `budget_remaining` (1 − bad ÷
//! budget, in %, where budget = (1 − target) × qualified; it goes negative once overspent).
//! `POST /1/reporting/slos/historical` answers the same figures at each day's end.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Authorized, Describe, JsonBody, Manage, Query};
use crate::objects::{add_in, change_in, check_text, delete_in, find_in, new_id, now, null_as_default};
use axum::Json;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sonde_model::DatasetName;
use sonde_model::derived::ALL_DATASETS;
use sonde_query::QuerySpec;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

const DOCUMENT: &str = "slos";
/// Minutes counted again at each refresh, for events that arrive late.
pub(crate) const LATE_MINUTES: i64 = 60;
/// Minutes per counting query (the engine's most time buckets).
const CHUNK_MINUTES: i64 = sonde_model::spec::MAX_BUCKETS;
const MAX_DAYS: i64 = 90;

/// An SLO, as stored and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Slo {
    pub(crate) id: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) description: String,
    pub(crate) sli: Sli,
    pub(crate) time_period_days: i64,
    pub(crate) target_per_million: i64,
    #[serde(default)]
    pub(crate) dataset_slugs: Vec<String>,
    #[serde(default)]
    pub(crate) tags: Vec<Value>,
    #[serde(default)]
    pub(crate) reset_at: Option<String>,
    created_at: String,
    updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) compliance: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) budget_remaining: Option<f64>,
}

/// `{"alias": "sli.ok"}`: the derived column that says good, bad or not counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Sli {
    pub(crate) alias: String,
}

/// An SLO as a client sends it.
#[derive(Debug, Deserialize)]
pub(crate) struct SloBody {
    name: String,
    #[serde(default)]
    description: String,
    sli: Sli,
    time_period_days: i64,
    target_per_million: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    tags: Vec<Value>,
}

impl Describe for SloBody {
    const WHAT: &'static str = "SLO";
}

#[derive(Debug, Deserialize)]
pub(crate) struct Detail {
    detailed: Option<String>,
}

/// Per-minute counts of one SLO.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Counters {
    /// The SLI's expression they were counted with; another one means counting again.
    sli: String,
    /// Minutes (unix minutes) before this one are counted.
    through: i64,
    /// Minute → (good, bad).
    minutes: BTreeMap<i64, (u64, u64)>,
}

/// The figures of an SLO over a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Figures {
    pub(crate) good: u64,
    pub(crate) bad: u64,
    /// Good ÷ qualified, in %.
    pub(crate) compliance: f64,
    /// 1 − bad ÷ budget, in %.
    pub(crate) budget_remaining: f64,
}

impl Counters {
    /// The first minute not counted yet (the current one, once brought up to date).
    pub(crate) fn through(&self) -> i64 {
        self.through
    }

    /// Good and bad over minutes `[from, to)`.
    pub(crate) fn sum(&self, from: i64, to: i64) -> (u64, u64) {
        self.minutes
            .range(from..to)
            .fold((0, 0), |(g, b), (_, (mg, mb))| (g + mg, b + mb))
    }
}

/// The figures of `good` and `bad` for a target.
pub(crate) fn figures(good: u64, bad: u64, target_per_million: i64) -> Figures {
    let qualified = (good + bad) as f64;
    let compliance = if qualified > 0.0 {
        good as f64 / qualified * 100.0
    } else {
        100.0
    };
    let budget = (1.0 - target_per_million as f64 / 1e6) * qualified;
    let budget_remaining = if budget > 0.0 {
        (1.0 - bad as f64 / budget) * 100.0
    } else if bad > 0 {
        -100.0
    } else {
        100.0
    };
    Figures {
        good,
        bad,
        compliance,
        budget_remaining,
    }
}

type Slos = BTreeMap<String, Vec<Slo>>;

/// Every SLO, by dataset.
pub(crate) async fn load(state: &AppState) -> Result<Slos, ApiError> {
    Ok(state.storage.documents().load(DOCUMENT).await?)
}

fn not_found(ds: &str, id: &str) -> ApiError {
    ApiError::not_found(format!("no SLO with id {id:?} in {ds}"))
}

/// The SLI's expression, if `alias` is a derived column `ds` sees.
async fn sli_expression(state: &AppState, ds: &str, alias: &str) -> Result<Option<String>, ApiError> {
    let set = crate::derived::load(state).await?;
    Ok(set
        .for_dataset(ds)
        .into_iter()
        .find(|d| d.alias == alias)
        .map(|d| d.expression))
}

async fn build(
    state: &AppState,
    ds: &DatasetName,
    body: SloBody,
    id: String,
    created_at: String,
) -> Result<Slo, ApiError> {
    if ds.as_str() == ALL_DATASETS {
        return Err(ApiError::bad_request(
            "SLOs over several datasets (__all__ with dataset_slugs) are not built yet: create the SLO on its dataset",
        ));
    }
    check_text("name", &body.name, 120, true)?;
    check_text("description", &body.description, 1023, false)?;
    if !(1..=MAX_DAYS).contains(&body.time_period_days) {
        return Err(ApiError::bad_request(format!(
            "time_period_days: 1 to {MAX_DAYS}, got {}",
            body.time_period_days
        )));
    }
    if !(0..=999_999).contains(&body.target_per_million) {
        return Err(ApiError::bad_request(format!(
            "target_per_million: 0 to 999999 (99.9% is 999000), got {}",
            body.target_per_million
        )));
    }
    if sli_expression(state, ds.as_str(), &body.sli.alias).await?.is_none() {
        return Err(ApiError::bad_request(format!(
            "sli.alias: no derived column {:?} in {ds} or for every dataset (create it with /1/derived_columns first)",
            body.sli.alias
        )));
    }
    // The SLI must say good or bad: a boolean (or null).
    let defs = crate::definitions::load(state).await?;
    let probe = QuerySpec {
        breakdowns: vec![body.sli.alias.clone()],
        ..QuerySpec::default()
    };
    state.engine.validate(ds, &probe, &defs)?;
    Ok(Slo {
        id,
        name: body.name,
        description: body.description,
        sli: body.sli,
        time_period_days: body.time_period_days,
        target_per_million: body.target_per_million,
        dataset_slugs: vec![ds.as_str().to_string()],
        tags: body.tags,
        reset_at: None,
        created_at,
        updated_at: now(),
        compliance: None,
        budget_remaining: None,
    })
}

/// Counts `[from, to)` (unix minutes) of `slo` from the events, a chunk per query.
async fn count(state: &AppState, slo: &Slo, from: i64, to: i64) -> Result<BTreeMap<i64, (u64, u64)>, ApiError> {
    let ds = DatasetName::new(&slo.dataset_slugs[0]).map_err(|e| ApiError::internal(e.to_string()))?;
    let defs = crate::definitions::load(state).await?;
    let mut out = BTreeMap::new();
    let mut start = from;
    while start < to {
        let end = (start + CHUNK_MINUTES).min(to);
        let spec = QuerySpec {
            calculations: vec![serde_json::from_value(json!({"op": "COUNT"})).expect("a calculation")],
            breakdowns: vec![slo.sli.alias.clone()],
            start_time: Some(json!(start * 60)),
            end_time: Some(json!(end * 60)),
            granularity: Some(60),
            limit: Some(10),
            ..QuerySpec::default()
        };
        let budget = state.engine.request();
        let r = match state.engine.query(&ds, &spec, &defs, &budget).await {
            Ok(r) => r,
            Err(sonde_query::QueryError::NoSuchDataset(_)) => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for point in &r.data.series {
            let Some(t) = point["time"]
                .as_str()
                .and_then(|t| sonde_model::time::parse_time_str(t).ok())
            else {
                continue;
            };
            let minute = t.div_euclid(60_000_000);
            let n = point["data"]["COUNT"].as_u64().unwrap_or(0);
            let e = out.entry(minute).or_insert((0, 0));
            match point["data"][&slo.sli.alias].as_bool() {
                Some(true) => e.0 += n,
                Some(false) => e.1 += n,
                None => {}
            }
        }
        start = end;
    }
    Ok(out)
}

/// Per-SLO locks, so two reads do not count the same minutes at once.
#[derive(Debug, Default)]
pub(crate) struct SloLocks(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// Brings `slo`'s counters up to the current minute and answers them.
pub(crate) async fn refresh(state: &AppState, slo: &Slo) -> Result<Counters, ApiError> {
    let lock = state
        .slo_locks
        .0
        .lock()
        .unwrap()
        .entry(slo.id.clone())
        .or_default()
        .clone();
    let _one = lock.lock().await;
    let name = format!("slo-{}", slo.id);
    let mut c: Counters = state.storage.documents().load(&name).await?;
    let expression = sli_expression(state, &slo.dataset_slugs[0], &slo.sli.alias)
        .await?
        .unwrap_or_default();
    let now_min = sonde_model::time::now_us().div_euclid(60_000_000);
    let window_start = now_min - slo.time_period_days * 1440;
    let from = if c.sli == expression && c.through > 0 {
        (c.through - LATE_MINUTES).max(window_start)
    } else {
        c = Counters {
            sli: expression,
            ..Counters::default()
        };
        window_start
    };
    if from < now_min {
        let fresh = count(state, slo, from, now_min).await?;
        let stale: Vec<i64> = c.minutes.range(from..now_min).map(|(m, _)| *m).collect();
        for m in stale {
            c.minutes.remove(&m);
        }
        c.minutes.extend(fresh);
    }
    c.minutes = c.minutes.split_off(&window_start);
    c.through = now_min;
    state
        .storage
        .documents()
        .update(&name, |doc: &mut Counters| {
            *doc = c.clone();
            Ok::<_, ApiError>(())
        })
        .await??;
    Ok(c)
}

/// `slo` with its figures over its window now.
async fn detailed(state: &AppState, mut slo: Slo) -> Result<Slo, ApiError> {
    let c = refresh(state, &slo).await?;
    let (good, bad) = c.sum(i64::MIN, i64::MAX);
    let f = figures(good, bad, slo.target_per_million);
    slo.compliance = Some(f.compliance);
    slo.budget_remaining = Some(f.budget_remaining);
    Ok(slo)
}

fn wants_detail(d: &Detail) -> bool {
    d.detailed.as_deref().is_some_and(|v| v != "false")
}

/// `GET /1/slos/{dataset}` (`?detailed` adds the figures).
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
    UrlQuery(d): UrlQuery<Detail>,
) -> Result<Json<Vec<Slo>>, ApiError> {
    let ds = access.dataset()?;
    let mut out = Vec::new();
    for s in load(&state).await?.remove(ds.as_str()).unwrap_or_default() {
        out.push(if wants_detail(&d) {
            detailed(&state, s).await?
        } else {
            s
        });
    }
    Ok(Json(out))
}

/// `POST /1/slos/{dataset}`.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    JsonBody(body): JsonBody<SloBody>,
) -> Result<(StatusCode, Json<Slo>), ApiError> {
    let ds = access.dataset()?.clone();
    let slo = build(&state, &ds, body, new_id(), now()).await?;
    let created = add_in(&state, DOCUMENT, ds.as_str(), "SLOs", slo).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The SLO `id` of `ds`.
pub(crate) async fn find(state: &AppState, ds: &str, id: &str) -> Result<Slo, ApiError> {
    find_in(state, DOCUMENT, ds, id, || not_found(ds, id)).await
}

/// `GET /1/slos/{dataset}/{id}` (`?detailed` adds the figures).
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
    Path((_, id)): Path<(String, String)>,
    UrlQuery(d): UrlQuery<Detail>,
) -> Result<Json<Slo>, ApiError> {
    let s = find(&state, access.dataset()?.as_str(), &id).await?;
    Ok(Json(if wants_detail(&d) {
        detailed(&state, s).await?
    } else {
        s
    }))
}

/// `PUT /1/slos/{dataset}/{id}`.
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<SloBody>,
) -> Result<Json<Slo>, ApiError> {
    let ds = access.dataset()?.clone();
    let current = find(&state, ds.as_str(), &id).await?;
    let slo = build(&state, &ds, body, id.clone(), current.created_at.clone()).await?;
    let changed = change_in(
        &state,
        DOCUMENT,
        ds.as_str(),
        &id,
        || not_found(ds.as_str(), &id),
        |s: &mut Slo| {
            *s = slo;
            Ok(())
        },
    )
    .await?;
    Ok(Json(changed))
}

/// `DELETE /1/slos/{dataset}/{id}`.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ds = access.dataset()?.as_str();
    let watched = crate::burn_alerts::load(&state)
        .await?
        .get(ds)
        .is_some_and(|l| l.iter().any(|b| b.slo.id == id));
    if watched {
        return Err(ApiError::conflict(format!(
            "SLO {id:?} has burn alerts; delete them first"
        )));
    }
    delete_in::<Slo>(&state, DOCUMENT, ds, &id, || not_found(ds, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /1/reporting/slos/historical`: `{"ids": […], "start_time", "end_time"}` (unix s).
#[derive(Debug, Deserialize)]
pub(crate) struct HistoryRequest {
    ids: Vec<String>,
    start_time: i64,
    end_time: i64,
}

impl Describe for HistoryRequest {
    const WHAT: &'static str = "SLO history request";
}

/// Each SLO's compliance and budget remaining at the end of each day (UTC) from `start_time` to
/// `end_time` (at most a year back), over its window ending then: from its counters, and for
/// minutes older than they keep, from the segments.
pub(crate) async fn history(
    State(state): State<Arc<AppState>>,
    _: Authorized<Query>,
    JsonBody(req): JsonBody<HistoryRequest>,
) -> Result<Json<BTreeMap<String, Vec<Value>>>, ApiError> {
    if req.ids.is_empty() || req.ids.len() > 24 {
        return Err(ApiError::bad_request(format!(
            "ids: 1 to 24 SLO ids, got {}",
            req.ids.len()
        )));
    }
    let now_s = sonde_model::time::now_us() / 1_000_000;
    if req.end_time > now_s + 60 || req.start_time > req.end_time || req.start_time < now_s - 366 * 86_400 {
        return Err(ApiError::bad_request(
            "start_time and end_time: start before end, within the last year, end not in the future",
        ));
    }
    let all = load(&state).await?;
    let mut out = BTreeMap::new();
    for id in &req.ids {
        let slo = all
            .values()
            .flatten()
            .find(|s| &s.id == id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no SLO with id {id:?}")))?;
        let mut c = refresh(&state, &slo).await?;
        // Minutes before the counters' window (a range reaching further back) are counted from
        // the segments for this answer only.
        let need = req.start_time.div_euclid(60) - slo.time_period_days * 1440;
        let kept = c.through() - slo.time_period_days * 1440;
        if need < kept {
            let older = count(&state, &slo, need, kept).await?;
            c.minutes.extend(older);
        }
        let mut points = Vec::new();
        let mut day_end = (req.start_time.div_euclid(86_400) + 1) * 86_400;
        loop {
            let at = day_end.min(req.end_time);
            let to = at.div_euclid(60);
            let (g, b) = c.sum(to - slo.time_period_days * 1440, to);
            let f = figures(g, b, slo.target_per_million);
            points.push(json!({"timestamp": at, "compliance": f.compliance, "budget_remaining": f.budget_remaining}));
            if at >= req.end_time {
                break;
            }
            day_end += 86_400;
        }
        out.insert(id.clone(), points);
    }
    Ok(Json(out))
}

/// `GET /api/slos/{dataset}/{id}` (Sonde's own, for the SLO page): the SLO with its figures,
/// and from its counters the budget burndown and the burn rate per hour, and the compliance of
/// each day (UTC) of its window.
pub(crate) async fn page(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let slo = find(&state, access.dataset()?.as_str(), &id).await?;
    let c = refresh(&state, &slo).await?;
    let to = c.through();
    let from = to - slo.time_period_days * 1440;
    let (good, bad) = c.sum(from, to);
    let total = figures(good, bad, slo.target_per_million);
    let allowed = 1.0 - slo.target_per_million as f64 / 1e6;
    // Hour by hour: the budget left so far (against the whole window's budget) and the burn
    // rate of that hour (its bad share over the allowed share; 1 burns the budget exactly).
    let budget = allowed * (good + bad) as f64;
    let (mut spent, mut hours) = (0u64, Vec::new());
    let mut h = from.div_euclid(60) * 60;
    while h < to {
        let (hg, hb) = c.sum(h.max(from), (h + 60).min(to));
        spent += hb;
        let q = (hg + hb) as f64;
        hours.push(json!({
            "time": h * 60,
            "budget_remaining": if budget > 0.0 { (1.0 - spent as f64 / budget) * 100.0 } else { 100.0 },
            "burn_rate": if q > 0.0 && allowed > 0.0 { Value::from(hb as f64 / q / allowed) } else { Value::Null },
        }));
        h += 60;
    }
    let mut days = Vec::new();
    let mut d = from.div_euclid(1440) * 1440;
    while d < to {
        let (dg, db) = c.sum(d.max(from), (d + 1440).min(to));
        if dg + db > 0 {
            let f = figures(dg, db, slo.target_per_million);
            days.push(json!({"day": d * 60, "good": dg, "bad": db, "compliance": f.compliance}));
        }
        d += 1440;
    }
    Ok(Json(json!({
        "slo": slo,
        "figures": total,
        "window": {"start_time": from * 60, "end_time": to * 60},
        "hours": hours,
        "days": days,
    })))
}

impl crate::objects::Keyed for Slo {
    fn key(&self) -> &str {
        &self.id
    }
}

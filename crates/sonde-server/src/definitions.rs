//! Honeycomb's dataset definitions, `/1/dataset_definitions/{dataset}`: which column plays which
//! role. Sonde's relational fields join on the `trace_id`, `span_id` and `parent_id` roles
//! (`trace.trace_id`, `trace.span_id`, `trace.parent_id` unless set); the other roles are kept as
//! given. Stored in one document beside the catalog, like derived columns.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Authorized, Describe, JsonBody, Manage, Query};
use axum::Json;
use axum::extract::State;
use sonde_model::definitions::{DatasetDefinition, Definitions, ROLES, RoleColumn, with_defaults};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The document holding every dataset's definition.
const DOCUMENT: &str = "dataset_definitions";

/// Everything users defined (derived columns and dataset definitions), as this request's
/// queries see it.
pub(crate) async fn load(state: &AppState) -> Result<Definitions, ApiError> {
    Ok(Definitions {
        derived: crate::derived::load(state).await?,
        datasets: state.storage.documents().load(DOCUMENT).await?,
    })
}

/// A `PATCH` body: role → its column, or `null` to unset it.
#[derive(Debug, serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct Patch(BTreeMap<String, Option<RoleColumn>>);

impl Describe for Patch {
    const WHAT: &'static str = "dataset definition";
}

/// `GET /1/dataset_definitions/{dataset}`: every role set, the trace roles with their defaults.
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    access: Authorized<Query>,
) -> Result<Json<DatasetDefinition>, ApiError> {
    let ds = access.dataset()?.to_string();
    let all: BTreeMap<String, DatasetDefinition> = state.storage.documents().load(DOCUMENT).await?;
    Ok(Json(with_defaults(all.get(&ds))))
}

/// `PATCH /1/dataset_definitions/{dataset}`: sets (or with `null` unsets) the roles given.
pub(crate) async fn patch(
    State(state): State<Arc<AppState>>,
    access: Authorized<Manage>,
    JsonBody(Patch(changes)): JsonBody<Patch>,
) -> Result<Json<DatasetDefinition>, ApiError> {
    let ds = access.dataset()?.to_string();
    for (role, column) in &changes {
        if !ROLES.contains(&role.as_str()) {
            return Err(ApiError::bad_request(format!(
                "{role}: not a role (one of {})",
                ROLES.join(", ")
            )));
        }
        if let Some(c) = column {
            if c.name.is_empty() || c.name.chars().count() > 255 {
                return Err(ApiError::bad_request(format!(
                    "{role}.name: must be 1 to 255 characters"
                )));
            }
            if c.column_type != "column" && c.column_type != "derived_column" {
                return Err(ApiError::bad_request(format!(
                    "{role}.column_type: must be column or derived_column, got {:?}",
                    c.column_type
                )));
            }
        }
    }
    let def = state
        .storage
        .documents()
        .update(DOCUMENT, |all: &mut BTreeMap<String, DatasetDefinition>| {
            let def = all.entry(ds.clone()).or_default();
            for (role, column) in changes {
                match column {
                    Some(c) => def.insert(role, c),
                    None => def.remove(&role),
                };
            }
            Ok::<_, ApiError>(def.clone())
        })
        .await??;
    Ok(Json(with_defaults(Some(&def))))
}

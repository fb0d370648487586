//! What users define about their datasets, kept by the server beside the catalog: derived
//! columns ([`crate::derived`]) and Honeycomb's dataset definitions — which column plays which
//! role. Sonde reads the trace roles (`trace_id`, `span_id`, `parent_id`) for relational fields;
//! the other roles are kept as given, for clients that read them back.

use crate::derived::{DerivedColumn, DerivedSet};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The roles a dataset definition may set (Honeycomb's).
pub const ROLES: &[&str] = &[
    "annotation_type",
    "duration_ms",
    "error",
    "link_span_id",
    "link_trace_id",
    "log_message",
    "log_severity",
    "name",
    "parent_id",
    "route",
    "service_name",
    "span_id",
    "span_kind",
    "status",
    "trace_id",
    "user",
];

/// One role's column: `{"name": "traceId", "column_type": "column"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleColumn {
    /// The column's name.
    pub name: String,
    /// `column`, or `derived_column` for a derived column's alias.
    #[serde(default = "column_type")]
    pub column_type: String,
}

fn column_type() -> String {
    "column".into()
}

/// A dataset's definition: role → column, for the roles set.
pub type DatasetDefinition = BTreeMap<String, RoleColumn>;

/// The columns relational fields join on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceColumns {
    /// The trace id (default `trace.trace_id`).
    pub trace_id: String,
    /// A span's id (default `trace.span_id`).
    pub span_id: String,
    /// A span's parent's id (default `trace.parent_id`).
    pub parent_id: String,
}

impl Default for TraceColumns {
    fn default() -> Self {
        TraceColumns {
            trace_id: "trace.trace_id".into(),
            span_id: "trace.span_id".into(),
            parent_id: "trace.parent_id".into(),
        }
    }
}

/// Everything users defined, as one request's queries see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    /// Derived columns, by scope.
    pub derived: DerivedSet,
    /// Dataset definitions, by dataset.
    pub datasets: BTreeMap<String, DatasetDefinition>,
}

/// What one dataset's queries see of [`Definitions`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetDefs {
    /// Its derived columns (its own, then the environment-wide ones).
    pub derived: Vec<DerivedColumn>,
    /// The columns its relational fields join on.
    pub trace: TraceColumns,
}

impl Definitions {
    /// What a query of `dataset` sees.
    pub fn for_dataset(&self, dataset: &str) -> DatasetDefs {
        let def = self.datasets.get(dataset);
        let role = |r: &str, default: String| def.and_then(|d| d.get(r)).map_or(default, |c| c.name.clone());
        let d = TraceColumns::default();
        DatasetDefs {
            derived: self.derived.for_dataset(dataset),
            trace: TraceColumns {
                trace_id: role("trace_id", d.trace_id),
                span_id: role("span_id", d.span_id),
                parent_id: role("parent_id", d.parent_id),
            },
        }
    }
}

/// A dataset's definition with the trace roles' defaults filled in (what the API answers).
pub fn with_defaults(def: Option<&DatasetDefinition>) -> DatasetDefinition {
    let mut out = def.cloned().unwrap_or_default();
    let d = TraceColumns::default();
    for (role, name) in [
        ("trace_id", d.trace_id),
        ("span_id", d.span_id),
        ("parent_id", d.parent_id),
    ] {
        out.entry(role.into()).or_insert(RoleColumn {
            name,
            column_type: column_type(),
        });
    }
    out
}

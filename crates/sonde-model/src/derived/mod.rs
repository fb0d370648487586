//! Derived columns (Honeycomb's "calculated fields"): an expression over an event's columns,
//! evaluated at read time as if it were one more column.
//!
//! ```text
//! "IF(GTE($http.status_code, 500), \"error\", \"ok\")"
//!     ──▶ parse::parse    (text → [`Ast`], every node with its position)
//!     ──▶ check::check    (names, arity, literal arguments, types → [`Typed`])
//!     ──▶ the query engine compiles the typed tree into one DataFusion expression
//! ```
//!
//! Everything a user can get wrong is caught here, before any data is read, as an
//! [`ExprError`] with the character position of the mistake. The semantics of each function
//! (written once, in the README's "Derived columns" section) are typed: a dataset's column has
//! one type, so each node of the tree has one too, and where Honeycomb's answer depends on the
//! row's type at run time (`EQUALS(200, "200")`) the answer is decided here from the types.

mod check;
mod parse;

pub use check::{Lit, Resolve, Resolved, Typed, TypedNode, check, unify};
pub use parse::{Ast, AstNode, parse};

use serde::{Deserialize, Serialize};

/// Longest expression accepted, in characters (Honeycomb's limit).
pub const MAX_EXPRESSION_CHARS: usize = 4095;
/// Deepest nesting of calls and parentheses: deeper trees would risk the stack of whoever
/// walks them, and no hand-written expression comes near it.
pub const MAX_DEPTH: usize = 64;
/// Most query-scoped calculated fields in one query spec (Honeycomb's limit).
pub const MAX_CALCULATED_FIELDS: usize = 100;

/// A mistake in an expression, at a character offset (0-based) of its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{message} (at character {position})")]
pub struct ExprError {
    /// What is wrong, e.g. `unknown function FOO`.
    pub message: String,
    /// Where: the 0-based character offset in the expression.
    pub position: usize,
}

impl ExprError {
    pub(crate) fn at(position: usize, message: impl Into<String>) -> ExprError {
        ExprError {
            message: message.into(),
            position,
        }
    }
}

/// A function of the expression language (infix operators are these functions too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // each variant is the function of the same name
pub enum Func {
    If,
    Switch,
    Coalesce,
    Lt,
    Lte,
    Gt,
    Gte,
    Equals,
    NotEquals,
    In,
    Exists,
    Not,
    And,
    Or,
    Sum,
    Sub,
    Mul,
    Div,
    Mod,
    Min,
    Max,
    Log10,
    Bucket,
    Int,
    Float,
    Bool,
    String,
    Concat,
    ToLower,
    StartsWith,
    EndsWith,
    Contains,
    Length,
    RegMatch,
    RegValue,
    RegCount,
    UnixTimestamp,
    EventTimestamp,
    IngestTimestamp,
    FormatTime,
}

/// One entry of the function catalogue: what the editor's autocomplete and `/api/meta` list.
#[derive(Debug, Clone, Serialize)]
pub struct FuncInfo {
    /// The name as written (upper case; any case is accepted).
    pub name: &'static str,
    /// Its group in the reference: conditional, comparison, boolean, math, cast, string,
    /// regex, time.
    pub category: &'static str,
    /// How it is called, e.g. `IF(cond, then, [cond2, then2, …], [else])`.
    pub signature: &'static str,
    /// Fewest arguments.
    pub min_args: usize,
    /// Most arguments (`None`: any number).
    pub max_args: Option<usize>,
    #[serde(skip)]
    func: Func,
}

macro_rules! catalogue {
    ($( $f:ident $name:literal $cat:literal $min:literal $max:expr, $sig:literal; )*) => {
        /// Every function, in the reference's order.
        pub const FUNCTIONS: &[FuncInfo] = &[
            $( FuncInfo { name: $name, category: $cat, signature: $sig, min_args: $min, max_args: $max, func: Func::$f }, )*
        ];
    };
}

catalogue! {
    If "IF" "conditional" 2 None, "IF(cond, then, [cond2, then2, …], [else])";
    Switch "SWITCH" "conditional" 3 None, "SWITCH(value, case1, then1, [case2, then2, …], [default])";
    Coalesce "COALESCE" "conditional" 1 None, "COALESCE(a, b, …)";
    Lt "LT" "comparison" 2 Some(2), "LT(left, right)";
    Lte "LTE" "comparison" 2 Some(2), "LTE(left, right)";
    Gt "GT" "comparison" 2 Some(2), "GT(left, right)";
    Gte "GTE" "comparison" 2 Some(2), "GTE(left, right)";
    Equals "EQUALS" "comparison" 2 Some(2), "EQUALS(a, b)";
    In "IN" "comparison" 2 None, "IN(value, option1, option2, …)";
    Exists "EXISTS" "boolean" 1 Some(1), "EXISTS(value)";
    Not "NOT" "boolean" 1 Some(1), "NOT(value)";
    And "AND" "boolean" 1 None, "AND(a, b, …)";
    Or "OR" "boolean" 1 None, "OR(a, b, …)";
    Sum "SUM" "math" 1 None, "SUM(a, b, …)";
    Sub "SUB" "math" 2 Some(2), "SUB(a, b)";
    Mul "MUL" "math" 1 None, "MUL(a, b, …)";
    Div "DIV" "math" 2 Some(2), "DIV(a, b)";
    Mod "MOD" "math" 2 Some(2), "MOD(a, b)";
    Min "MIN" "math" 1 None, "MIN(a, b, …)";
    Max "MAX" "math" 1 None, "MAX(a, b, …)";
    Log10 "LOG10" "math" 1 Some(1), "LOG10(x)";
    Bucket "BUCKET" "math" 2 Some(4), "BUCKET(value, size, [min, max])";
    Int "INT" "cast" 1 Some(1), "INT(x)";
    Float "FLOAT" "cast" 1 Some(1), "FLOAT(x)";
    Bool "BOOL" "cast" 1 Some(1), "BOOL(x)";
    String "STRING" "cast" 1 Some(1), "STRING(x)";
    Concat "CONCAT" "string" 1 None, "CONCAT(a, b, …)";
    ToLower "TO_LOWER" "string" 1 Some(1), "TO_LOWER(s)";
    StartsWith "STARTS_WITH" "string" 2 Some(2), "STARTS_WITH(s, prefix)";
    EndsWith "ENDS_WITH" "string" 2 Some(2), "ENDS_WITH(s, suffix)";
    Contains "CONTAINS" "string" 2 Some(2), "CONTAINS(s, substring)";
    Length "LENGTH" "string" 1 Some(2), "LENGTH(s, [\"chars\" | \"bytes\"])";
    RegMatch "REG_MATCH" "regex" 2 Some(2), "REG_MATCH(s, `regex`)";
    RegValue "REG_VALUE" "regex" 2 Some(2), "REG_VALUE(s, `regex`)";
    RegCount "REG_COUNT" "regex" 2 Some(2), "REG_COUNT(s, `regex`)";
    UnixTimestamp "UNIX_TIMESTAMP" "time" 1 Some(1), "UNIX_TIMESTAMP(rfc3339)";
    EventTimestamp "EVENT_TIMESTAMP" "time" 0 Some(0), "EVENT_TIMESTAMP()";
    IngestTimestamp "INGEST_TIMESTAMP" "time" 0 Some(0), "INGEST_TIMESTAMP()";
    FormatTime "FORMAT_TIME" "time" 2 Some(3), "FORMAT_TIME(`%Y-%m-%d`, epoch_seconds, [\"Europe/Paris\"])";
}

impl Func {
    /// Looks a function up by name, in any case.
    pub fn by_name(name: &str) -> Option<Func> {
        FUNCTIONS
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.func)
    }

    /// Its catalogue entry.
    pub fn info(self) -> &'static FuncInfo {
        // `!=` has no function form of its own (Honeycomb's internal D_NOT_IN).
        const NOT_EQUALS: FuncInfo = FuncInfo {
            name: "!=",
            category: "comparison",
            signature: "a != b",
            min_args: 2,
            max_args: Some(2),
            func: Func::NotEquals,
        };
        if self == Func::NotEquals {
            return &NOT_EQUALS;
        }
        FUNCTIONS
            .iter()
            .find(|f| f.func == self)
            .expect("every function is catalogued")
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        self.info().name
    }
}

/// A stored derived column, as Honeycomb's API writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DerivedColumn {
    /// Its id (assigned by the server).
    #[serde(default)]
    pub id: String,
    /// The name queries use, unique per dataset.
    pub alias: String,
    /// The expression.
    pub expression: String,
    /// What it means.
    #[serde(default)]
    pub description: String,
    /// When it was created (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    /// When it last changed (RFC 3339).
    #[serde(default)]
    pub updated_at: String,
}

/// A query-scoped calculated field: `{"name": "is_err", "expression": "GTE($status, 500)"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalculatedField {
    /// The name the rest of the query uses.
    pub name: String,
    /// The expression.
    pub expression: String,
}

/// The scope of environment-wide derived columns (Honeycomb's `__all__`).
pub const ALL_DATASETS: &str = "__all__";

/// Every stored derived column, by scope: a dataset's name, or [`ALL_DATASETS`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DerivedSet(pub std::collections::BTreeMap<String, Vec<DerivedColumn>>);

impl DerivedSet {
    /// The derived columns a query of `dataset` sees: its own, and the environment-wide ones
    /// whose alias it does not define itself.
    pub fn for_dataset(&self, dataset: &str) -> Vec<DerivedColumn> {
        let own = self.0.get(dataset).cloned().unwrap_or_default();
        let all = self.0.get(ALL_DATASETS).into_iter().flatten();
        let shared: Vec<DerivedColumn> = all
            .filter(|d| !own.iter().any(|o| o.alias == d.alias))
            .cloned()
            .collect();
        own.into_iter().chain(shared).collect()
    }
}

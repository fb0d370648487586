//! [`Ast`] → [`Typed`]: every name resolved, every call's arity and literal arguments checked,
//! and a type given to every node.
//!
//! Types follow the dataset's own widening lattice `bool < int < float < string`: where a
//! function may answer values of several types (the branches of `IF`, `SWITCH`, `COALESCE`),
//! its type is the widest of them, and narrower values are converted as a column's are when
//! it widens (`true` → 1, 1 → 1.0, anything → its `STRING()` text). A `null` literal has no
//! type (`None`) and fits anywhere.

use super::parse::{Ast, AstNode};
use super::{ExprError, Func};
use crate::ColumnType;
use std::collections::BTreeSet;

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
}

/// A checked node: its type (`None` for the `null` literal) and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Typed {
    /// The type of its values.
    pub ty: Option<ColumnType>,
    /// What it is.
    pub node: TypedNode,
}

/// The kinds of checked node. Literal arguments a function needs as literals (regex patterns,
/// time formats and zones, `LENGTH`'s mode, `BUCKET`'s bounds) stay `Lit` children, already
/// validated.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedNode {
    /// A stored column.
    Column(String),
    /// A literal.
    Lit(Lit),
    /// A call.
    Call(Func, Vec<Typed>),
}

impl Typed {
    /// The stored columns the expression reads.
    pub fn columns(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.walk(&mut |t| {
            if let TypedNode::Column(c) = &t.node {
                out.insert(c.clone());
            }
        });
        out
    }

    /// Whether it calls `f` anywhere.
    pub fn calls(&self, f: Func) -> bool {
        let mut found = false;
        self.walk(&mut |t| found |= matches!(&t.node, TypedNode::Call(g, _) if *g == f));
        found
    }

    fn walk(&self, visit: &mut impl FnMut(&Typed)) {
        visit(self);
        if let TypedNode::Call(_, args) = &self.node {
            for a in args {
                a.walk(visit);
            }
        }
    }

    /// The literal string, if this node is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.node {
            TypedNode::Lit(Lit::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The literal number, if this node is one.
    pub fn as_f64(&self) -> Option<f64> {
        match &self.node {
            TypedNode::Lit(Lit::Int(i)) => Some(*i as f64),
            TypedNode::Lit(Lit::Float(f)) => Some(*f),
            _ => None,
        }
    }
}

/// What a `$name` stands for.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// A stored column of this type.
    Column(ColumnType),
    /// Another derived column, already checked (its tree is used in place of the name).
    Derived(Typed),
}

/// Resolves `$name`s: the dataset's columns, and the derived columns in scope.
pub trait Resolve {
    /// What `name` is, `Ok(None)` when nothing has that name, or an error about the
    /// derived column it names (a mistake in it, or a cycle).
    fn resolve(&self, name: &str) -> Result<Option<Resolved>, String>;
}

impl Resolve for std::collections::BTreeMap<String, ColumnType> {
    fn resolve(&self, name: &str) -> Result<Option<Resolved>, String> {
        Ok(self.get(name).map(|t| Resolved::Column(*t)))
    }
}

/// The type holding values of every one of `types` (`None` if all are `null`).
pub fn unify(types: impl IntoIterator<Item = Option<ColumnType>>) -> Option<ColumnType> {
    types.into_iter().flatten().reduce(ColumnType::widen)
}

/// Checks a parsed expression against the names in scope.
pub fn check(ast: &Ast, scope: &dyn Resolve) -> Result<Typed, ExprError> {
    let t = node(ast, scope)?;
    // Honeycomb wraps a bare column at the root as COALESCE(x): an empty string reads as null.
    Ok(match (&ast.node, t.ty) {
        (AstNode::Column(_), ty) => Typed {
            ty,
            node: TypedNode::Call(Func::Coalesce, vec![t]),
        },
        _ => t,
    })
}

fn lit(ty: Option<ColumnType>, l: Lit) -> Typed {
    Typed {
        ty,
        node: TypedNode::Lit(l),
    }
}

fn node(ast: &Ast, scope: &dyn Resolve) -> Result<Typed, ExprError> {
    Ok(match &ast.node {
        AstNode::Null => lit(None, Lit::Null),
        AstNode::Bool(b) => lit(Some(ColumnType::Bool), Lit::Bool(*b)),
        AstNode::Int(i) => lit(Some(ColumnType::Int), Lit::Int(*i)),
        AstNode::Float(f) => lit(Some(ColumnType::Float), Lit::Float(*f)),
        AstNode::Str(s) => lit(Some(ColumnType::String), Lit::Str(s.clone())),
        AstNode::Column(name) => match scope.resolve(name) {
            Ok(Some(Resolved::Column(ty))) => Typed {
                ty: Some(ty),
                node: TypedNode::Column(name.clone()),
            },
            Ok(Some(Resolved::Derived(t))) => t,
            Ok(None) => return Err(ExprError::at(ast.pos, format!("unknown column {name:?}"))),
            Err(e) => return Err(ExprError::at(ast.pos, e)),
        },
        AstNode::Call(func, args) => call(*func, ast.pos, args, scope)?,
    })
}

fn call(func: Func, pos: usize, args: &[Ast], scope: &dyn Resolve) -> Result<Typed, ExprError> {
    let info = func.info();
    let n = args.len();
    if n < info.min_args || info.max_args.is_some_and(|m| n > m) {
        let want = match info.max_args {
            Some(m) if m == info.min_args => format!("{m}"),
            Some(m) => format!("{} to {m}", info.min_args),
            None => format!("at least {}", info.min_args),
        };
        return Err(ExprError::at(
            pos,
            format!(
                "{} takes {want} argument{}, got {n}: {}",
                info.name,
                if want == "1" { "" } else { "s" },
                info.signature
            ),
        ));
    }
    let typed: Vec<Typed> = args.iter().map(|a| node(a, scope)).collect::<Result<_, _>>()?;
    let types: Vec<Option<ColumnType>> = typed.iter().map(|t| t.ty).collect();
    use ColumnType::*;
    let need_string = |i: usize| -> Result<(), ExprError> {
        match types[i] {
            None | Some(String) => Ok(()),
            Some(t) => Err(ExprError::at(
                args[i].pos,
                format!("{} needs a string here, got {t} (convert it with STRING())", info.name),
            )),
        }
    };
    let need_literal = |i: usize, what: &str| -> Result<&str, ExprError> {
        typed[i].as_str().ok_or_else(|| {
            ExprError::at(
                args[i].pos,
                format!("{} needs {what} as a string literal here", info.name),
            )
        })
    };
    let need_number = |i: usize, what: &str| -> Result<f64, ExprError> {
        typed[i].as_f64().ok_or_else(|| {
            ExprError::at(
                args[i].pos,
                format!("{} needs {what} as a number literal here", info.name),
            )
        })
    };
    let ty = match func {
        Func::If => {
            // Values are the odd positions and, with an odd count, the last (the else).
            let values = (0..n).filter(|i| i % 2 == 1 || (n % 2 == 1 && *i == n - 1));
            unify(values.map(|i| types[i]))
        }
        Func::Switch => {
            let rest = n - 1;
            let values = (1..n).filter(|i| (i - 1) % 2 == 1 || (rest % 2 == 1 && *i == n - 1));
            unify(values.map(|i| types[i]))
        }
        Func::Coalesce => unify(types.iter().copied()),
        Func::Lt
        | Func::Lte
        | Func::Gt
        | Func::Gte
        | Func::Equals
        | Func::NotEquals
        | Func::In
        | Func::Exists
        | Func::Not
        | Func::And
        | Func::Or
        | Func::Bool
        | Func::StartsWith
        | Func::EndsWith
        | Func::Contains => Some(Bool),
        Func::Sum | Func::Sub | Func::Mul | Func::Div | Func::Mod | Func::Log10 | Func::Float => Some(Float),
        Func::EventTimestamp => Some(Float),
        Func::IngestTimestamp => {
            return Err(ExprError::at(
                pos,
                "INGEST_TIMESTAMP() is not available: Sonde does not record when each event arrived \
                 (EVENT_TIMESTAMP() is the event's own time)",
            ));
        }
        Func::Min | Func::Max => {
            let strings = types.iter().position(|t| *t == Some(String));
            let numbers = types.iter().position(|t| matches!(t, Some(Bool | Int | Float)));
            if let (Some(s), Some(x)) = (strings, numbers) {
                let at = s.max(x);
                return Err(ExprError::at(
                    args[at].pos,
                    format!(
                        "{} compares numbers or strings, not both (convert with FLOAT() or STRING())",
                        info.name
                    ),
                ));
            }
            if strings.is_some() {
                Some(String)
            } else if types.iter().all(|t| matches!(t, None | Some(Int | Bool))) && numbers.is_some() {
                Some(Int)
            } else {
                numbers.map(|_| Float)
            }
        }
        Func::Bucket => {
            let size = need_number(1, "the bucket size")?;
            if size <= 0.0 || !size.is_finite() {
                return Err(ExprError::at(args[1].pos, "BUCKET's size must be a positive number"));
            }
            if n == 3 {
                return Err(ExprError::at(pos, "BUCKET takes a min and a max, or neither"));
            }
            if n == 4 {
                let (lo, hi) = (need_number(2, "the minimum")?, need_number(3, "the maximum")?);
                if lo >= hi {
                    return Err(ExprError::at(args[2].pos, "BUCKET's min must be below its max"));
                }
            }
            Some(Float)
        }
        Func::Int => Some(Int),
        Func::String | Func::Concat => Some(String),
        Func::ToLower => {
            need_string(0)?;
            Some(String)
        }
        Func::Length => {
            need_string(0)?;
            if n == 2 {
                let mode = need_literal(1, "\"chars\" or \"bytes\"")?;
                if mode != "chars" && mode != "bytes" {
                    return Err(ExprError::at(args[1].pos, "LENGTH counts \"chars\" or \"bytes\""));
                }
            }
            Some(Int)
        }
        Func::RegMatch | Func::RegValue | Func::RegCount => {
            let pattern = need_literal(1, "the regular expression")?;
            regex::Regex::new(pattern)
                .map_err(|e| ExprError::at(args[1].pos, format!("invalid regular expression: {e}")))?;
            Some(match func {
                Func::RegMatch => Bool,
                Func::RegValue => String,
                _ => Int,
            })
        }
        Func::UnixTimestamp => {
            need_string(0)?;
            Some(Float)
        }
        Func::FormatTime => {
            let format = need_literal(0, "the format")?;
            check_time_format(format).map_err(|m| ExprError::at(args[0].pos, m))?;
            if n == 3 {
                let tz = need_literal(2, "the time zone")?;
                tz.parse::<chrono_tz::Tz>().map_err(|_| {
                    ExprError::at(
                        args[2].pos,
                        format!("unknown time zone {tz:?} (an IANA name, e.g. \"Europe/Paris\")"),
                    )
                })?;
            }
            Some(String)
        }
    };
    Ok(Typed {
        ty,
        node: TypedNode::Call(func, typed),
    })
}

/// Whether a strftime format is one chrono can write (an unknown `%` specifier is refused).
fn check_time_format(format: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
        return Err(format!(
            "invalid time format {format:?} (strftime, e.g. \"%Y-%m-%d %H:%M\")"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;
    use std::collections::BTreeMap;

    fn schema() -> BTreeMap<std::string::String, ColumnType> {
        [
            ("status", ColumnType::Int),
            ("duration_ms", ColumnType::Float),
            ("name", ColumnType::String),
            ("error", ColumnType::Bool),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn ty(s: &str) -> Result<Option<ColumnType>, ExprError> {
        check(&parse(s)?, &schema()).map(|t| t.ty)
    }

    #[test]
    fn types() {
        use ColumnType::*;
        assert_eq!(ty("IF(GTE($status, 500), \"error\", \"ok\")"), Ok(Some(String)));
        assert_eq!(ty("IF($error, 1, 2.5)"), Ok(Some(Float)));
        assert_eq!(ty("IF($error, 1, \"x\")"), Ok(Some(String)));
        assert_eq!(ty("IF($error, 1)"), Ok(Some(Int)));
        assert_eq!(ty("IF($error, null)"), Ok(None));
        assert_eq!(ty("SWITCH($name, \"a\", 1, \"b\", 2, 3.5)"), Ok(Some(Float)));
        assert_eq!(ty("$duration_ms / 1000"), Ok(Some(Float)));
        assert_eq!(ty("MAX($status, 3)"), Ok(Some(Int)));
        assert_eq!(ty("MIN($name, \"m\")"), Ok(Some(String)));
        assert_eq!(ty("REG_COUNT($name, `a+`)"), Ok(Some(Int)));
        assert_eq!(
            ty("FORMAT_TIME(\"%H\", EVENT_TIMESTAMP(), \"Australia/Sydney\")"),
            Ok(Some(String))
        );
        assert_eq!(ty("$name"), Ok(Some(String)));
    }

    #[test]
    fn mistakes_are_caught_before_any_data_is_read() {
        let e = |s: &str| ty(s).unwrap_err();
        assert_eq!(e("IF($nope, 1)").position, 3);
        assert!(e("IF($nope, 1)").message.contains("unknown column \"nope\""));
        assert!(e("SUB(1)").message.starts_with("SUB takes 2 arguments, got 1"));
        assert!(e("EXISTS()").message.starts_with("EXISTS takes 1 argument, got 0"));
        assert_eq!(e("REG_MATCH($name, $name)").position, 17);
        assert!(
            e("REG_MATCH($name, `(`)")
                .message
                .contains("invalid regular expression")
        );
        assert!(e("TO_LOWER($status)").message.contains("needs a string"));
        assert!(e("MIN($status, \"a\")").message.contains("numbers or strings"));
        assert!(e("FORMAT_TIME(\"%Q\", 1)").message.contains("invalid time format"));
        assert!(
            e("FORMAT_TIME(\"%H\", 1, \"Mars/Base\")")
                .message
                .contains("unknown time zone")
        );
        assert!(e("BUCKET($status, 0)").message.contains("positive"));
        assert!(e("LENGTH($name, \"words\")").message.contains("chars"));
    }
}

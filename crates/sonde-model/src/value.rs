//! Field values and the column-type lattice `bool < int < float < string`.
//!
//! A dataset's column has exactly one type. When a value of a wider type arrives, the column
//! widens and every earlier value is converted with [`FieldValue::cast`]; nothing is dropped,
//! because every type converts losslessly enough to a wider one (bool → 0/1, int → float,
//! anything → its JSON text).

use serde::{Deserialize, Serialize};

/// The type of a column. The order of the variants is the widening order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// `true` / `false`.
    Bool,
    /// 64-bit signed integer.
    Int,
    /// 64-bit float.
    Float,
    /// UTF-8 string.
    String,
}

impl ColumnType {
    /// The narrowest type that holds values of both `self` and `other`.
    pub fn widen(self, other: ColumnType) -> ColumnType {
        self.max(other)
    }

    /// The lowercase name used in the schema API and the catalog.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Bool => "bool",
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::String => "string",
        }
    }
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One field's value after flattening. JSON `null` fields are dropped before they get here,
/// so there is no null variant: absence is null.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A boolean.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A float (also integers beyond the i64 range).
    Float(f64),
    /// A string (also arrays and objects deeper than the flattening depth, as JSON text).
    Str(String),
}

impl FieldValue {
    /// This value's own type.
    pub fn column_type(&self) -> ColumnType {
        match self {
            FieldValue::Bool(_) => ColumnType::Bool,
            FieldValue::Int(_) => ColumnType::Int,
            FieldValue::Float(_) => ColumnType::Float,
            FieldValue::Str(_) => ColumnType::String,
        }
    }

    /// Converts to `to`, which must be at least as wide as this value's type (the lattice only
    /// widens). Narrowing requests return the value unchanged.
    pub fn cast(&self, to: ColumnType) -> FieldValue {
        match (self, to) {
            (FieldValue::Bool(b), ColumnType::Int) => FieldValue::Int(*b as i64),
            (FieldValue::Bool(b), ColumnType::Float) => FieldValue::Float(*b as i64 as f64),
            (FieldValue::Int(i), ColumnType::Float) => FieldValue::Float(*i as f64),
            (v, ColumnType::String) => FieldValue::Str(v.to_text()),
            (v, _) => v.clone(),
        }
    }

    /// The value as JSON (a float stays a float: `2.0`, not `2`).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            FieldValue::Bool(b) => serde_json::Value::from(*b),
            FieldValue::Int(i) => serde_json::Value::from(*i),
            FieldValue::Float(f) => serde_json::Value::from(*f),
            FieldValue::Str(s) => serde_json::Value::from(s.as_str()),
        }
    }

    /// The text form used when a column widens to string: the JSON spelling of the value
    /// (`true`, `42`, `1.5`), or the string itself.
    pub fn to_text(&self) -> String {
        match self {
            FieldValue::Bool(b) => b.to_string(),
            FieldValue::Int(i) => i.to_string(),
            FieldValue::Float(f) => float_text(*f),
            FieldValue::Str(s) => s.clone(),
        }
    }
}

/// A field value borrowed from where it was decoded (a WAL payload, a parsed event), so the
/// write buffer can copy strings straight into its columns without an owned [`FieldValue`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(&'a str),
}

impl ValueRef<'_> {
    /// This value's own type.
    pub fn column_type(&self) -> ColumnType {
        match self {
            ValueRef::Bool(_) => ColumnType::Bool,
            ValueRef::Int(_) => ColumnType::Int,
            ValueRef::Float(_) => ColumnType::Float,
            ValueRef::Str(_) => ColumnType::String,
        }
    }

    /// The owned value.
    pub fn to_owned_value(&self) -> FieldValue {
        match *self {
            ValueRef::Bool(b) => FieldValue::Bool(b),
            ValueRef::Int(i) => FieldValue::Int(i),
            ValueRef::Float(f) => FieldValue::Float(f),
            ValueRef::Str(s) => FieldValue::Str(s.to_string()),
        }
    }
}

impl FieldValue {
    /// The value borrowed.
    pub fn as_value_ref(&self) -> ValueRef<'_> {
        match self {
            FieldValue::Bool(b) => ValueRef::Bool(*b),
            FieldValue::Int(i) => ValueRef::Int(*i),
            FieldValue::Float(f) => ValueRef::Float(*f),
            FieldValue::Str(s) => ValueRef::Str(s),
        }
    }
}

/// Formats a float the way JSON would (`1.0` stays `1.0`, so it is distinguishable from an int).
pub fn float_text(f: f64) -> String {
    if f.is_finite() && f == f.trunc() && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_type() -> impl Strategy<Value = ColumnType> {
        prop_oneof![
            Just(ColumnType::Bool),
            Just(ColumnType::Int),
            Just(ColumnType::Float),
            Just(ColumnType::String)
        ]
    }

    fn any_value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            any::<i64>().prop_map(FieldValue::Int),
            (-1e12f64..1e12).prop_map(FieldValue::Float),
            ".{0,8}".prop_map(FieldValue::Str),
        ]
    }

    proptest! {
        #[test]
        fn widen_is_a_join(a in any_type(), b in any_type(), c in any_type()) {
            prop_assert_eq!(a.widen(b), b.widen(a));
            prop_assert_eq!(a.widen(b).widen(c), a.widen(b.widen(c)));
            prop_assert_eq!(a.widen(a), a);
            prop_assert!(a.widen(b) >= a && a.widen(b) >= b);
        }

        #[test]
        fn cast_to_a_wider_type_yields_that_type(v in any_value(), t in any_type()) {
            let target = v.column_type().widen(t);
            prop_assert_eq!(v.cast(target).column_type(), target);
        }

        #[test]
        fn cast_to_string_is_the_text_form(v in any_value()) {
            // Buffers keep values as they arrived and cast once, from the original type, so a
            // bool that passed through an int column still reads "true" once the column is text.
            prop_assert_eq!(v.cast(ColumnType::String), FieldValue::Str(v.to_text()));
        }
    }

    #[test]
    fn examples() {
        assert_eq!(FieldValue::Bool(true).cast(ColumnType::Int), FieldValue::Int(1));
        assert_eq!(FieldValue::Int(3).cast(ColumnType::Float), FieldValue::Float(3.0));
        assert_eq!(
            FieldValue::Float(3.0).cast(ColumnType::String),
            FieldValue::Str("3.0".into())
        );
        assert_eq!(FieldValue::Float(2.5).to_text(), "2.5");
        assert_eq!(FieldValue::Int(7).cast(ColumnType::String), FieldValue::Str("7".into()));
    }
}

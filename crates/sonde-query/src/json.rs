//! Arrow values → JSON, for API answers.

use arrow::array::{Array, RecordBatch};
use datafusion::common::ScalarValue;
use serde_json::{Map, Value};

/// One cell as JSON: numbers stay numbers (NaN and infinities become null), timestamps become
/// RFC3339 strings.
pub fn cell(array: &dyn Array, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match ScalarValue::try_from_array(array, row) {
        Ok(v) => scalar(&v),
        Err(_) => Value::Null,
    }
}

/// A scalar as JSON.
pub fn scalar(v: &ScalarValue) -> Value {
    match v {
        ScalarValue::Boolean(Some(b)) => Value::Bool(*b),
        ScalarValue::Int8(Some(i)) => Value::from(*i),
        ScalarValue::Int16(Some(i)) => Value::from(*i),
        ScalarValue::Int32(Some(i)) => Value::from(*i),
        ScalarValue::Int64(Some(i)) => Value::from(*i),
        ScalarValue::UInt8(Some(i)) => Value::from(*i),
        ScalarValue::UInt16(Some(i)) => Value::from(*i),
        ScalarValue::UInt32(Some(i)) => Value::from(*i),
        ScalarValue::UInt64(Some(i)) => Value::from(*i),
        ScalarValue::Float32(Some(f)) => float(*f as f64),
        ScalarValue::Float64(Some(f)) => float(*f),
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            Value::String(s.clone())
        }
        ScalarValue::TimestampMicrosecond(Some(us), _) => Value::String(sonde_model::time::format_us(*us)),
        ScalarValue::TimestampMillisecond(Some(ms), _) => Value::String(sonde_model::time::format_us(ms * 1000)),
        ScalarValue::TimestampSecond(Some(s), _) => Value::String(sonde_model::time::format_us(s * 1_000_000)),
        ScalarValue::TimestampNanosecond(Some(ns), _) => Value::String(sonde_model::time::format_us(ns / 1000)),
        v if v.is_null() => Value::Null,
        other => Value::String(other.to_string()),
    }
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// Batches as a list of row objects.
pub fn rows(batches: &[RecordBatch]) -> Vec<Value> {
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        for row in 0..b.num_rows() {
            let mut m = Map::new();
            for (i, f) in schema.fields().iter().enumerate() {
                m.insert(f.name().clone(), cell(b.column(i).as_ref(), row));
            }
            out.push(Value::Object(m));
        }
    }
    out
}

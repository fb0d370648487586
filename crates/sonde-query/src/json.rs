//! Arrow values → JSON, for API answers.

use crate::engine::QueryError;
use crate::memory::RequestBudget;
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

/// Batches as a JSON array of row objects, serialized straight from Arrow: one row's cells at
/// a time, so an answer of many rows never exists as a tree of `Value`s.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// The rows.
    pub batches: &'a [RecordBatch],
    /// Leave null cells out (raw events: a field never sent is not shown).
    pub skip_nulls: bool,
}

impl serde::Serialize for Rows<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        let n: usize = self.batches.iter().map(|b| b.num_rows()).sum();
        let mut seq = s.serialize_seq(Some(n))?;
        for b in self.batches {
            let schema = b.schema();
            for row in 0..b.num_rows() {
                seq.serialize_element(&Row {
                    batch: b,
                    schema: &schema,
                    row,
                    skip_nulls: self.skip_nulls,
                })?;
            }
        }
        return seq.end();

        struct Row<'b> {
            batch: &'b RecordBatch,
            schema: &'b arrow::datatypes::SchemaRef,
            row: usize,
            skip_nulls: bool,
        }
        impl serde::Serialize for Row<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                for (i, f) in self.schema.fields().iter().enumerate() {
                    let col = self.batch.column(i);
                    if self.skip_nulls && col.is_null(self.row) {
                        continue;
                    }
                    m.serialize_entry(f.name(), &cell(col.as_ref(), self.row))?;
                }
                m.end()
            }
        }
    }
}

/// Serializes `value` as JSON under the request's budget: the text counts against the
/// answer's cap and the process budget as it grows, and the deadline is checked as it is
/// written, so neither a huge answer nor a slow one outlives its limits.
pub fn to_bytes(value: &impl serde::Serialize, budget: &RequestBudget) -> Result<Vec<u8>, QueryError> {
    let mut w = BudgetWriter::new(budget);
    match serde_json::to_writer(&mut w, value) {
        Ok(()) => w.finish(),
        Err(e) => Err(w.fail(e)),
    }
}

/// A `Vec` that grows only as far as the request's budget allows, and stops at its deadline:
/// the sink of every encoder of answers (JSON, CSV, Arrow IPC).
#[derive(Debug)]
pub struct BudgetWriter<'a> {
    out: Vec<u8>,
    budget: &'a RequestBudget,
    accounted: usize,
    unchecked: usize,
    error: Option<QueryError>,
}

impl<'a> BudgetWriter<'a> {
    /// An empty writer drawing on `budget`.
    pub fn new(budget: &'a RequestBudget) -> BudgetWriter<'a> {
        BudgetWriter {
            out: Vec::new(),
            budget,
            accounted: 0,
            unchecked: 0,
            error: None,
        }
    }

    /// The bytes written (still counted in the request's budget until it ends).
    pub fn finish(self) -> Result<Vec<u8>, QueryError> {
        Ok(self.out)
    }

    /// The error an encoder failed with: the budget's, if it stopped the writer, else `e`'s.
    pub fn fail(mut self, e: impl std::fmt::Display) -> QueryError {
        self.error.take().unwrap_or_else(|| QueryError::Internal(e.to_string()))
    }
}

impl std::io::Write for BudgetWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let need = self.out.len() + data.len();
        if need > self.accounted {
            // In steps, so the budget is not asked once per token.
            let grow = (need - self.accounted).max(256 << 10);
            if let Err(e) = self.budget.account(grow, "the answer's JSON text") {
                self.error = Some(e);
                return Err(std::io::Error::other("answer limit"));
            }
            self.accounted += grow;
            self.out.reserve_exact(self.accounted - self.out.len());
        }
        self.unchecked += data.len();
        if self.unchecked > 1 << 20 {
            self.unchecked = 0;
            if let Err(e) = self.budget.check_time() {
                self.error = Some(e);
                return Err(std::io::Error::other("deadline"));
            }
        }
        self.out.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

//! The write buffer: one dataset's recent events as typed columns with an evolving schema.
//!
//! Events are appended in LSN order by the WAL thread right after their fsync, so the buffer
//! always holds a contiguous run of the dataset's records. A field seen for the first time
//! gets a new column backfilled with nulls; a value wider than its column's type widens the
//! column (earlier values are converted, see [`sonde_model::FieldValue::cast`]). Queries and
//! flushes see the buffer as an Arrow [`RecordBatch`] ([`WriteBuffer::to_record_batch`]), which
//! is cached until the next append so that repeated queries do not rebuild it.

use crate::wal::Lsn;
use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use sonde_model::{ColumnType, Event, FieldValue, SAMPLE_RATE_COLUMN, TIMESTAMP_COLUMN};
use std::collections::HashMap;
use std::sync::Arc;

/// The Arrow type of Sonde's timestamp column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Arrow type a column of the given Sonde type is stored as.
pub fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Int => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::String => DataType::Utf8,
    }
}

/// The Sonde type of an Arrow column type, for the types Sonde writes.
pub fn column_type_of(dt: &DataType) -> Option<ColumnType> {
    match dt {
        DataType::Boolean => Some(ColumnType::Bool),
        DataType::Int64 => Some(ColumnType::Int),
        DataType::Float64 => Some(ColumnType::Float),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(ColumnType::String),
        _ => None,
    }
}

/// Builds an Arrow array of type `ty` from values as they arrived, casting each one from its
/// own type (not through intermediate widenings, so `true` in a column that went bool → float →
/// string reads `"true"`, not `"1.0"`).
fn to_array(ty: ColumnType, values: &[Option<FieldValue>]) -> ArrayRef {
    let cast = |v: &Option<FieldValue>| {
        v.as_ref()
            .map(|v| if v.column_type() == ty { v.clone() } else { v.cast(ty) })
    };
    match ty {
        ColumnType::Bool => Arc::new(BooleanArray::from_iter(values.iter().map(|v| match cast(v) {
            Some(FieldValue::Bool(b)) => Some(b),
            _ => None,
        }))),
        ColumnType::Int => Arc::new(Int64Array::from_iter(values.iter().map(|v| match cast(v) {
            Some(FieldValue::Int(i)) => Some(i),
            _ => None,
        }))),
        ColumnType::Float => Arc::new(Float64Array::from_iter(values.iter().map(|v| match cast(v) {
            Some(FieldValue::Float(f)) => Some(f),
            _ => None,
        }))),
        ColumnType::String => Arc::new(StringArray::from_iter(values.iter().map(|v| match v {
            Some(FieldValue::Str(s)) => Some(s.clone()),
            Some(other) => Some(other.to_text()),
            None => None,
        }))),
    }
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    /// The widest type of any value so far: the column's type in the Arrow batch.
    ty: ColumnType,
    /// Values as they arrived; cast to `ty` only when the batch is built.
    values: Vec<Option<FieldValue>>,
}

/// One dataset's buffered events.
#[derive(Debug, Default)]
pub struct WriteBuffer {
    timestamps: Vec<i64>,
    sample_rates: Vec<i64>,
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    approx_bytes: usize,
    min_lsn: Option<Lsn>,
    max_lsn: Lsn,
    min_ts: i64,
    max_ts: i64,
    /// Arrival time (µs) of the oldest buffered event, for flushing by age.
    oldest_arrival_us: Option<i64>,
    cached: Option<RecordBatch>,
}

impl WriteBuffer {
    /// Appends the events of one WAL record. `known` gives the dataset's current column types
    /// (from its segments), so that a new column starts at least as wide as the dataset's.
    pub fn append(&mut self, lsn: Lsn, events: &[Event], known: &dyn Fn(&str) -> Option<ColumnType>, now_us: i64) {
        if events.is_empty() {
            return;
        }
        self.cached = None;
        self.min_lsn.get_or_insert(lsn);
        self.max_lsn = self.max_lsn.max(lsn);
        self.oldest_arrival_us.get_or_insert(now_us);
        for e in events {
            let row = self.timestamps.len();
            if row == 0 {
                self.min_ts = e.timestamp_us;
                self.max_ts = e.timestamp_us;
            }
            self.min_ts = self.min_ts.min(e.timestamp_us);
            self.max_ts = self.max_ts.max(e.timestamp_us);
            self.timestamps.push(e.timestamp_us);
            self.sample_rates.push(e.sample_rate);
            self.approx_bytes += 16;
            for (name, v) in &e.fields {
                let ci = match self.index.get(name) {
                    Some(&ci) => ci,
                    None => {
                        let ty = known(name).map_or(v.column_type(), |k| k.widen(v.column_type()));
                        self.columns.push(Column {
                            name: name.clone(),
                            ty,
                            values: vec![None; row],
                        });
                        self.index.insert(name.clone(), self.columns.len() - 1);
                        self.approx_bytes += 64 + name.len();
                        self.columns.len() - 1
                    }
                };
                let col = &mut self.columns[ci];
                col.ty = col.ty.widen(v.column_type());
                self.approx_bytes += match v {
                    FieldValue::Str(s) => 32 + s.len(),
                    _ => 32,
                };
                col.values.push(Some(v.clone()));
            }
            // Columns this event did not mention are null for it.
            for col in &mut self.columns {
                if col.values.len() == row {
                    col.values.push(None);
                }
            }
        }
    }

    /// Number of buffered events.
    pub fn rows(&self) -> usize {
        self.timestamps.len()
    }

    /// Rough bytes of memory held, for flushing by size and for backpressure.
    pub fn approx_bytes(&self) -> usize {
        self.approx_bytes
    }

    /// Lowest LSN buffered (`None` when empty).
    pub fn min_lsn(&self) -> Option<Lsn> {
        self.min_lsn
    }

    /// Highest LSN buffered.
    pub fn max_lsn(&self) -> Lsn {
        self.max_lsn
    }

    /// Event-time bounds `(min, max)` in µs, `None` when empty.
    pub fn time_bounds(&self) -> Option<(i64, i64)> {
        (self.rows() > 0).then_some((self.min_ts, self.max_ts))
    }

    /// Arrival time of the oldest buffered event.
    pub fn oldest_arrival_us(&self) -> Option<i64> {
        self.oldest_arrival_us
    }

    /// The buffered columns and their types (reserved columns first).
    pub fn column_types(&self) -> Vec<(String, ColumnType)> {
        self.columns.iter().map(|c| (c.name.clone(), c.ty)).collect()
    }

    /// The type of one buffered column.
    pub fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.index.get(name).map(|&i| self.columns[i].ty)
    }

    /// The Arrow schema of [`Self::to_record_batch`].
    pub fn schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new(TIMESTAMP_COLUMN, timestamp_type(), false),
            Field::new(SAMPLE_RATE_COLUMN, DataType::Int64, false),
        ];
        fields.extend(self.columns.iter().map(|c| Field::new(&c.name, arrow_type(c.ty), true)));
        Arc::new(Schema::new(fields))
    }

    /// The buffer as one Arrow batch (in arrival order), cached until the next append.
    pub fn to_record_batch(&mut self) -> RecordBatch {
        if let Some(b) = &self.cached {
            return b.clone();
        }
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(self.timestamps.clone()).with_timezone("UTC")),
            Arc::new(Int64Array::from(self.sample_rates.clone())),
        ];
        arrays.extend(self.columns.iter().map(|c| to_array(c.ty, &c.values)));
        let batch = RecordBatch::try_new(self.schema(), arrays).expect("buffer columns have equal lengths");
        self.cached = Some(batch.clone());
        batch
    }

    /// Reconstructs event `i` (fields in column order), for tests and debugging.
    pub fn event(&self, i: usize) -> Event {
        Event {
            timestamp_us: self.timestamps[i],
            sample_rate: self.sample_rates[i],
            fields: self
                .columns
                .iter()
                .filter_map(|c| c.values[i].as_ref().map(|v| (c.name.clone(), v.cast(c.ty))))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: i64, fields: Vec<(&str, FieldValue)>) -> Event {
        Event {
            timestamp_us: ts,
            sample_rate: 1,
            fields: fields.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
        }
    }

    #[test]
    fn new_fields_backfill_and_types_widen() {
        let mut b = WriteBuffer::default();
        let none = |_: &str| None;
        b.append(1, &[ev(10, vec![("a", FieldValue::Int(1))])], &none, 0);
        b.append(
            2,
            &[ev(
                20,
                vec![("a", FieldValue::Float(2.5)), ("b", FieldValue::Bool(true))],
            )],
            &none,
            0,
        );
        b.append(3, &[ev(5, vec![("a", FieldValue::Str("x".into()))])], &none, 0);
        assert_eq!(b.rows(), 3);
        assert_eq!(b.column_type("a"), Some(ColumnType::String));
        assert_eq!(
            b.event(0).fields,
            vec![("a".to_string(), FieldValue::Str("1".into()))],
            "cast from the int, not via float"
        );
        assert_eq!(b.event(1).fields[0].1, FieldValue::Str("2.5".into()));
        assert_eq!(b.event(2).fields.len(), 1, "b is null in the third event");
        assert_eq!(b.time_bounds(), Some((5, 20)));
        assert_eq!((b.min_lsn(), b.max_lsn()), (Some(1), 3));
        let batch = b.to_record_batch();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.num_columns(), 4);
    }

    #[test]
    fn new_columns_start_at_the_dataset_type() {
        let mut b = WriteBuffer::default();
        let known = |n: &str| (n == "a").then_some(ColumnType::Float);
        b.append(1, &[ev(1, vec![("a", FieldValue::Int(3))])], &known, 0);
        assert_eq!(b.column_type("a"), Some(ColumnType::Float));
        assert_eq!(b.event(0).fields[0].1, FieldValue::Float(3.0));
    }
}

//! The write buffer: one dataset's recent events as typed columns with an evolving schema.
//!
//! Events are appended in LSN order by the WAL thread right after their fsync, straight from
//! the record's encoded bytes ([`WriteBuffer::append_payload`]), so the buffer always holds a
//! contiguous run of the dataset's records. Values go into Arrow builders (no allocation per
//! value). A field seen for the first time gets a new column backfilled with nulls; a value
//! wider than its column's type widens the column (earlier values are converted, see
//! [`sonde_model::FieldValue::cast`]). Queries see the buffer as Arrow chunks of up to
//! [`CHUNK_ROWS`] rows ([`WriteBuffer::query_batches`]): a chunk once built is kept, so a
//! query copies only the rows appended since the previous one (at most the last, unfinished
//! chunk), not the whole buffer — a full buffer answers a trace lookup as fast as an empty one.
//! A widened column drops the chunks (their values would be of the old type). A flush takes the
//! values out of the builders without copying them ([`WriteBuffer::into_record_batch`]).

use crate::wal::{Lsn, PayloadReader};
use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BooleanArray, BooleanBuilder, Float64Array, Float64Builder, Int64Array,
    Int64Builder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use sonde_model::{ColumnType, Event, FieldValue, SAMPLE_RATE_COLUMN, TIMESTAMP_COLUMN, ValueRef};
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

/// Value `i` of an array Sonde wrote (one of the four column types), `None` when null.
fn value_at(array: &ArrayRef, i: usize) -> Option<FieldValue> {
    if array.is_null(i) {
        return None;
    }
    let any = array.as_any();
    if let Some(a) = any.downcast_ref::<BooleanArray>() {
        Some(FieldValue::Bool(a.value(i)))
    } else if let Some(a) = any.downcast_ref::<Int64Array>() {
        Some(FieldValue::Int(a.value(i)))
    } else if let Some(a) = any.downcast_ref::<Float64Array>() {
        Some(FieldValue::Float(a.value(i)))
    } else {
        any.downcast_ref::<StringArray>()
            .map(|a| FieldValue::Str(a.value(i).to_string()))
    }
}

/// One column's values. While every value has the column's type (the usual case) they go
/// straight into an Arrow builder: no allocation per value, strings copied once into one
/// buffer. The first value of another type turns the column into `Mixed`, which keeps values
/// as they arrived so that each is cast once, from its own type, when the batch is built.
#[derive(Debug)]
enum Values {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
    Mixed(Vec<Option<FieldValue>>),
}

impl Values {
    /// An empty column of type `ty` with `nulls` leading nulls.
    fn new(ty: ColumnType, nulls: usize) -> Values {
        let mut v = match ty {
            ColumnType::Bool => Values::Bool(BooleanBuilder::new()),
            ColumnType::Int => Values::Int(Int64Builder::new()),
            ColumnType::Float => Values::Float(Float64Builder::new()),
            ColumnType::String => Values::Str(StringBuilder::new()),
        };
        v.push_nulls(nulls);
        v
    }

    fn len(&self) -> usize {
        match self {
            Values::Bool(b) => b.len(),
            Values::Int(b) => b.len(),
            Values::Float(b) => b.len(),
            Values::Str(b) => b.len(),
            Values::Mixed(m) => m.len(),
        }
    }

    fn push_nulls(&mut self, n: usize) {
        match self {
            Values::Bool(b) => b.append_nulls(n),
            Values::Int(b) => b.append_nulls(n),
            Values::Float(b) => b.append_nulls(n),
            Values::Str(b) => (0..n).for_each(|_| b.append_null()),
            Values::Mixed(m) => m.resize(m.len() + n, None),
        }
    }

    /// Appends `v` if the column holds values of its type; returns the bytes it took, or
    /// `None` (nothing appended) when it does not fit.
    fn try_push(&mut self, v: ValueRef<'_>) -> Option<usize> {
        match (self, v) {
            (Values::Bool(b), ValueRef::Bool(x)) => b.append_value(x),
            (Values::Int(b), ValueRef::Int(x)) => b.append_value(x),
            (Values::Float(b), ValueRef::Float(x)) => b.append_value(x),
            (Values::Str(b), ValueRef::Str(x)) => {
                b.append_value(x);
                return Some(4 + x.len());
            }
            (Values::Mixed(m), v) => {
                let bytes = match v {
                    ValueRef::Str(x) => 32 + x.len(),
                    _ => 32,
                };
                m.push(Some(v.to_owned_value()));
                return Some(bytes);
            }
            _ => return None,
        }
        Some(8)
    }

    /// The values as an array of type `ty`, taking them out of the builder (no copy).
    fn finish(&mut self, ty: ColumnType) -> ArrayRef {
        match self {
            Values::Bool(b) => Arc::new(b.finish()),
            Values::Int(b) => Arc::new(b.finish()),
            Values::Float(b) => Arc::new(b.finish()),
            Values::Str(b) => Arc::new(b.finish()),
            Values::Mixed(m) => to_array(ty, &std::mem::take(m)),
        }
    }

    /// The values as an array of type `ty`, leaving the builder as it is.
    fn to_array(&self, ty: ColumnType) -> ArrayRef {
        match self {
            Values::Bool(b) => Arc::new(b.finish_cloned()),
            Values::Int(b) => Arc::new(b.finish_cloned()),
            Values::Float(b) => Arc::new(b.finish_cloned()),
            Values::Str(b) => Arc::new(b.finish_cloned()),
            Values::Mixed(m) => to_array(ty, m),
        }
    }

    /// Values `from..to` as an array of type `ty` of their own, copying only them.
    fn range_array(&self, ty: ColumnType, from: usize, to: usize) -> ArrayRef {
        use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
        let len = to - from;
        // The validity bits of the range, from the byte holding its first bit.
        let nulls = |bits: Option<&[u8]>| {
            bits.map(|b| {
                let bytes = Buffer::from_slice_ref(&b[from / 8..to.div_ceil(8)]);
                NullBuffer::new(BooleanBuffer::new(bytes, from % 8, len))
            })
        };
        match self {
            Values::Bool(b) => arrow::compute::concat(&[&b.finish_cloned().slice(from, len)]).expect("one array"),
            Values::Int(b) => Arc::new(Int64Array::new(
                ScalarBuffer::from(b.values_slice()[from..to].to_vec()),
                nulls(b.validity_slice()),
            )),
            Values::Float(b) => Arc::new(Float64Array::new(
                ScalarBuffer::from(b.values_slice()[from..to].to_vec()),
                nulls(b.validity_slice()),
            )),
            Values::Str(b) => {
                let offsets = &b.offsets_slice()[from..=to];
                let (start, end) = (offsets[0] as usize, offsets[len] as usize);
                let rebased: Vec<i32> = offsets.iter().map(|o| o - offsets[0]).collect();
                Arc::new(StringArray::new(
                    OffsetBuffer::new(ScalarBuffer::from(rebased)),
                    Buffer::from_slice_ref(&b.values_slice()[start..end]),
                    nulls(b.validity_slice()),
                ))
            }
            Values::Mixed(m) => to_array(ty, &m[from..to]),
        }
    }

    /// The values as they arrived, for a column turning `Mixed`.
    fn to_mixed(&self, ty: ColumnType) -> Vec<Option<FieldValue>> {
        let array = self.to_array(ty);
        (0..array.len()).map(|i| value_at(&array, i)).collect()
    }
}

#[derive(Debug)]
struct Column {
    name: String,
    /// The widest type of any value so far: the column's type in the Arrow batch.
    ty: ColumnType,
    values: Values,
}

impl Column {
    /// Appends `v` as the value of row `row` (padding the rows this column was absent from
    /// with nulls); returns the bytes it took.
    fn push(&mut self, row: usize, v: ValueRef<'_>) -> usize {
        let len = self.values.len();
        if len > row {
            // A second value for the same name in one event: flattening and the OTLP mapping
            // keep one entry per name, so only a bug gets here; the first value stays.
            debug_assert!(false, "field {:?} twice in one event", self.name);
            return 0;
        }
        self.values.push_nulls(row - len);
        self.ty = self.ty.widen(v.column_type());
        if let Some(bytes) = self.values.try_push(v) {
            return bytes;
        }
        self.values = Values::Mixed(self.values.to_mixed(self.ty));
        self.values.try_push(v).expect("a mixed column takes every value")
    }
}

/// Past this many bytes a buffer is frozen at once, whatever the flush settings: Arrow's
/// string columns hold at most 2 GiB.
pub(crate) const MAX_BUFFER_BYTES: usize = 1 << 30;

/// One dataset's buffered events.
#[derive(Debug, Default)]
pub(crate) struct WriteBuffer {
    timestamps: Vec<i64>,
    sample_rates: Vec<i64>,
    columns: Vec<Column>,
    index: HashMap<String, usize, ahash::RandomState>,
    approx_bytes: usize,
    min_lsn: Option<Lsn>,
    max_lsn: Lsn,
    min_ts: i64,
    max_ts: i64,
    /// Arrival time (µs) of the oldest buffered event, for flushing by age.
    oldest_arrival_us: Option<i64>,
    /// The query view: chunks of the first `chunked_rows` rows, in order.
    chunks: Vec<RecordBatch>,
    chunked_rows: usize,
}

/// Rows per chunk of the query view of a buffer: small enough that re-copying the unfinished
/// last chunk on every query is cheap, large enough that a full buffer is a few dozen chunks.
pub(crate) const CHUNK_ROWS: usize = 64 * 1024;

/// How the buffer learns a new column's type from the dataset's segments.
pub(crate) type KnownTypes<'a> = &'a dyn Fn(&str) -> Option<ColumnType>;

impl WriteBuffer {
    /// Appends the events of one WAL record. `known` gives the dataset's current column types
    /// (from its segments), so that a new column starts at least as wide as the dataset's.
    pub(crate) fn append(&mut self, lsn: Lsn, events: &[Event], known: KnownTypes<'_>, now_us: i64) {
        if events.is_empty() {
            return;
        }
        self.start_record(lsn, now_us);
        for e in events {
            let fields = e.fields.iter().map(|(n, v)| (n.as_str(), v.as_value_ref()));
            self.push_event(e.timestamp_us, e.sample_rate, fields, known);
        }
    }

    /// Appends the events of one WAL record straight from its encoded payload (see
    /// [`crate::wal::encode_payload`]), without making an [`Event`] of each. Returns false
    /// (with the events read so far appended) if the payload is damaged.
    pub(crate) fn append_payload(&mut self, lsn: Lsn, payload: &[u8], known: KnownTypes<'_>, now_us: i64) -> bool {
        let Some((_, mut reader)) = PayloadReader::new(payload) else {
            return false;
        };
        if reader.events_left() == 0 {
            return reader.at_end();
        }
        self.start_record(lsn, now_us);
        while let Some((ts, rate, nf)) = reader.next_event() {
            let mut damaged = false;
            let fields = (0..nf).map_while(|_| {
                let f = reader.next_field();
                damaged |= f.is_none();
                f
            });
            self.push_event(ts, rate, fields, known);
            if damaged {
                return false;
            }
        }
        reader.at_end()
    }

    fn start_record(&mut self, lsn: Lsn, now_us: i64) {
        self.min_lsn.get_or_insert(lsn);
        self.max_lsn = self.max_lsn.max(lsn);
        self.oldest_arrival_us.get_or_insert(now_us);
    }

    fn push_event<'v>(
        &mut self,
        ts: i64,
        rate: i64,
        fields: impl Iterator<Item = (&'v str, ValueRef<'v>)>,
        known: KnownTypes<'_>,
    ) {
        let row = self.timestamps.len();
        if row == 0 {
            self.min_ts = ts;
            self.max_ts = ts;
        }
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        self.timestamps.push(ts);
        self.sample_rates.push(rate);
        self.approx_bytes += 16;
        for (name, v) in fields {
            let ci = match self.index.get(name) {
                Some(&ci) => ci,
                None => {
                    let own = v.column_type();
                    let ty = known(name).map_or(own, |k| k.widen(own));
                    let values = if ty == own {
                        Values::new(ty, row)
                    } else {
                        Values::Mixed(vec![None; row])
                    };
                    self.columns.push(Column {
                        name: name.to_string(),
                        ty,
                        values,
                    });
                    self.index.insert(name.to_string(), self.columns.len() - 1);
                    self.approx_bytes += 64 + name.len() + row;
                    self.columns.len() - 1
                }
            };
            let before = self.columns[ci].ty;
            self.approx_bytes += self.columns[ci].push(row, v);
            if self.columns[ci].ty != before {
                // Built chunks hold this column's earlier values at the old type.
                self.chunks.clear();
                self.chunked_rows = 0;
            }
        }
    }

    /// Number of buffered events.
    pub(crate) fn rows(&self) -> usize {
        self.timestamps.len()
    }

    /// Bytes of memory held by the values (not counting spare capacity), for flushing by size
    /// and for backpressure.
    pub(crate) fn approx_bytes(&self) -> usize {
        self.approx_bytes
    }

    /// Lowest LSN buffered (`None` when empty).
    pub(crate) fn min_lsn(&self) -> Option<Lsn> {
        self.min_lsn
    }

    /// Highest LSN buffered.
    pub(crate) fn max_lsn(&self) -> Lsn {
        self.max_lsn
    }

    /// Event-time bounds `(min, max)` in µs, `None` when empty.
    pub(crate) fn time_bounds(&self) -> Option<(i64, i64)> {
        (self.rows() > 0).then_some((self.min_ts, self.max_ts))
    }

    /// Arrival time of the oldest buffered event.
    pub(crate) fn oldest_arrival_us(&self) -> Option<i64> {
        self.oldest_arrival_us
    }

    /// The Arrow schema of the whole buffer.
    pub(crate) fn schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new(TIMESTAMP_COLUMN, timestamp_type(), false),
            Field::new(SAMPLE_RATE_COLUMN, DataType::Int64, false),
        ];
        fields.extend(self.columns.iter().map(|c| Field::new(&c.name, arrow_type(c.ty), true)));
        Arc::new(Schema::new(fields))
    }

    /// The buffer as one Arrow batch (in arrival order), for tests.
    #[cfg(test)]
    pub(crate) fn whole_batch(&mut self) -> RecordBatch {
        self.build(|c| c.values.to_array(c.ty))
    }

    /// The buffer as chunks of up to [`CHUNK_ROWS`] rows (in arrival order, each with the schema
    /// of the buffer when it was built: later columns are absent from earlier chunks). Chunks
    /// are kept across calls; only the rows since the last full chunk are built anew.
    pub(crate) fn query_batches(&mut self) -> Vec<RecordBatch> {
        let rows = self.rows();
        if rows > self.chunked_rows {
            // Rebuild an unfinished last chunk together with the new rows.
            if self.chunks.last().is_some_and(|c| c.num_rows() < CHUNK_ROWS) {
                let last = self.chunks.pop().expect("a last chunk");
                self.chunked_rows -= last.num_rows();
            }
            let mut from = self.chunked_rows;
            while from < rows {
                let to = rows.min(from + CHUNK_ROWS);
                let chunk = self.build_range(from, to);
                self.chunks.push(chunk);
                from = to;
            }
            self.chunked_rows = rows;
        }
        self.chunks.clone()
    }

    /// Rows `from..to` as a batch of their own (values copied out of the builders).
    fn build_range(&mut self, from: usize, to: usize) -> RecordBatch {
        let rows = self.rows();
        let schema = self.schema();
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(self.timestamps[from..to].to_vec()).with_timezone("UTC")),
            Arc::new(Int64Array::from(self.sample_rates[from..to].to_vec())),
        ];
        for c in &mut self.columns {
            c.values.push_nulls(rows - c.values.len());
            arrays.push(c.values.range_array(c.ty, from, to));
        }
        RecordBatch::try_new(schema, arrays).expect("buffer columns have equal lengths")
    }

    /// The buffer as one Arrow batch, taking the values out of their builders rather than
    /// copying them: for a buffer being frozen.
    pub(crate) fn into_record_batch(mut self) -> RecordBatch {
        self.build(|c| c.values.finish(c.ty))
    }

    fn build(&mut self, mut array: impl FnMut(&mut Column) -> ArrayRef) -> RecordBatch {
        let rows = self.rows();
        let schema = self.schema();
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(self.timestamps.clone()).with_timezone("UTC")),
            Arc::new(Int64Array::from(self.sample_rates.clone())),
        ];
        for c in &mut self.columns {
            // Columns the latest events did not mention are null for them.
            c.values.push_nulls(rows - c.values.len());
            arrays.push(array(c));
        }
        RecordBatch::try_new(schema, arrays).expect("buffer columns have equal lengths")
    }

    /// The type of one buffered column, for tests.
    #[cfg(test)]
    pub(crate) fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.index.get(name).map(|&i| self.columns[i].ty)
    }

    /// Reconstructs event `i` (fields in column order), for tests.
    #[cfg(test)]
    pub(crate) fn event(&self, i: usize) -> Event {
        Event {
            timestamp_us: self.timestamps[i],
            sample_rate: self.sample_rates[i],
            fields: self
                .columns
                .iter()
                .filter(|c| i < c.values.len())
                .filter_map(|c| value_at(&c.values.to_array(c.ty), i).map(|v| (c.name.clone(), v)))
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
    fn chunks_equal_the_whole_buffer_whatever_the_appends_between_queries() {
        let mut b = WriteBuffer::default();
        let none = |_: &str| None;
        let mut lsn = 0;
        let mut row = 0i64;
        // Appends of varying sizes with queries between them; a new column, nulls, a string
        // column, and late in the run a widening (int → float) that drops the chunks.
        for (round, n) in [1usize, 5, 70_000, 3, 64 * 1024 - 9, 200, 1, 90_000, 2]
            .into_iter()
            .enumerate()
        {
            let events: Vec<Event> = (0..n)
                .map(|i| {
                    row += 1;
                    let mut f = vec![("k", FieldValue::Int(row))];
                    if i % 3 != 0 {
                        f.push(("s", FieldValue::Str(format!("v{}", row % 17))));
                    }
                    if round >= 2 && i % 2 == 0 {
                        f.push(("late", FieldValue::Bool(i % 4 == 0)));
                    }
                    if round == 7 && i == 5 {
                        f.push(("k", FieldValue::Float(0.5)));
                        f.remove(0);
                    }
                    ev(row, f)
                })
                .collect();
            lsn += 1;
            b.append(Lsn(lsn), &events, &none, 0);
            let chunks = b.query_batches();
            assert!(chunks.iter().all(|c| c.num_rows() <= CHUNK_ROWS));
            let whole = b.whole_batch();
            let schema = whole.schema();
            let adapted: Vec<RecordBatch> = chunks
                .iter()
                .map(|c| crate::segment::adapt_to_schema(c, &schema).unwrap())
                .collect();
            let joined = arrow::compute::concat_batches(&schema, &adapted).unwrap();
            assert_eq!(joined, whole, "round {round}");
        }
    }

    #[test]
    fn new_fields_backfill_and_types_widen() {
        let mut b = WriteBuffer::default();
        let none = |_: &str| None;
        b.append(Lsn(1), &[ev(10, vec![("a", FieldValue::Int(1))])], &none, 0);
        b.append(
            Lsn(2),
            &[ev(
                20,
                vec![("a", FieldValue::Float(2.5)), ("b", FieldValue::Bool(true))],
            )],
            &none,
            0,
        );
        b.append(Lsn(3), &[ev(5, vec![("a", FieldValue::Str("x".into()))])], &none, 0);
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
        assert_eq!((b.min_lsn(), b.max_lsn()), (Some(Lsn(1)), Lsn(3)));
        let batch = b.whole_batch();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.num_columns(), 4);
    }

    #[test]
    fn new_columns_start_at_the_dataset_type() {
        let mut b = WriteBuffer::default();
        let known = |n: &str| (n == "a").then_some(ColumnType::Float);
        b.append(Lsn(1), &[ev(1, vec![("a", FieldValue::Int(3))])], &known, 0);
        assert_eq!(b.column_type("a"), Some(ColumnType::Float));
        assert_eq!(b.event(0).fields[0].1, FieldValue::Float(3.0));
    }

    #[test]
    fn payload_and_events_fill_the_same_batch() {
        let events = vec![
            ev(3, vec![("s", FieldValue::Str("a".into())), ("n", FieldValue::Int(1))]),
            ev(1, vec![("n", FieldValue::Bool(true)), ("f", FieldValue::Float(0.5))]),
            ev(2, vec![]),
            ev(4, vec![("s", FieldValue::Int(7)), ("n", FieldValue::Float(2.5))]),
        ];
        let none = |_: &str| None;
        let mut from_events = WriteBuffer::default();
        from_events.append(Lsn(9), &events, &none, 0);
        let ds = sonde_model::DatasetName::new("d").unwrap();
        let payload = crate::wal::encode_payload(&ds, &events);
        let mut from_payload = WriteBuffer::default();
        assert!(from_payload.append_payload(Lsn(9), &payload, &none, 0));
        assert_eq!(from_events.whole_batch(), from_payload.whole_batch());
        assert!(!WriteBuffer::default().append_payload(Lsn(1), &payload[..payload.len() - 1], &none, 0));
        // Widened in place: `n` went int → bool-in-int → float, `s` string with an int in it.
        assert_eq!(from_payload.column_type("n"), Some(ColumnType::Float));
        assert_eq!(
            from_payload.event(1).fields[0],
            ("n".to_string(), FieldValue::Float(1.0))
        );
        assert_eq!(
            from_payload.event(3).fields[0],
            ("s".to_string(), FieldValue::Str("7".into()))
        );
        let frozen = from_payload.into_record_batch();
        assert_eq!(frozen, from_events.whole_batch());
    }
}

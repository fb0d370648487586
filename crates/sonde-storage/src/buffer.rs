//! The write buffer: one dataset's recent events as typed columns with an evolving schema.
//!
//! Events are appended in LSN order by the WAL thread right after their fsync, straight from
//! the record's encoded bytes ([`WriteBuffer::append_encoded`]), so the buffer always holds a
//! contiguous run of the dataset's records. Values go into Arrow builders (no allocation per
//! value) for an open chunk of up to [`CHUNK_ROWS`] rows; a full chunk is sealed into an Arrow
//! batch without copying, and the next chunk's builders start at the sizes the last one
//! reached, so ingest never grows (and re-copies) a buffer-sized allocation. Queries share the
//! sealed chunks and copy only the open one ([`WriteBuffer::query_batches`]); a flush takes the
//! chunks as they are ([`WriteBuffer::into_batches`]) and sorts them by time as it writes.
//!
//! A field seen for the first time gets a new column backfilled with nulls. A value narrower
//! than its column is cast to it on the way in ([`sonde_model::FieldValue::cast`]); a wider one
//! widens the column: the open chunk's earlier values are converted from their own types, and
//! sealed chunks keep the type they were sealed with until a reader brings them to the
//! buffer's schema ([`crate::segment::adapt_to_schema`]), as it does for older segments.

use crate::wal::Lsn;
use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BooleanArray, BooleanBuilder, Float64Array, Float64Builder, Int64Array,
    Int64Builder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use sonde_model::EncodedEvents;
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

    /// An empty column of type `ty` with room for as many values (and string bytes) as
    /// `like` holds: the next chunk of a column sized as the last one was.
    fn sized_like(ty: ColumnType, like: &ArrayRef) -> Values {
        let n = like.len();
        match ty {
            ColumnType::Bool => Values::Bool(BooleanBuilder::with_capacity(n)),
            ColumnType::Int => Values::Int(Int64Builder::with_capacity(n)),
            ColumnType::Float => Values::Float(Float64Builder::with_capacity(n)),
            ColumnType::String => {
                let bytes = like
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .map_or(0, |a| a.value_data().len());
                Values::Str(StringBuilder::with_capacity(n, bytes))
            }
        }
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

    /// Appends `v` if the column holds values of its type or wider (a narrower value is cast
    /// as [`FieldValue::cast`] would); returns the bytes it took, or `None` (nothing appended)
    /// when `v` is wider than the column.
    fn try_push(&mut self, v: ValueRef<'_>) -> Option<usize> {
        match (self, v) {
            (Values::Bool(b), ValueRef::Bool(x)) => b.append_value(x),
            (Values::Int(b), ValueRef::Int(x)) => b.append_value(x),
            (Values::Int(b), ValueRef::Bool(x)) => b.append_value(x as i64),
            (Values::Float(b), ValueRef::Float(x)) => b.append_value(x),
            (Values::Float(b), ValueRef::Int(x)) => b.append_value(x as f64),
            (Values::Float(b), ValueRef::Bool(x)) => b.append_value(x as i64 as f64),
            (Values::Str(b), ValueRef::Str(x)) => {
                b.append_value(x);
                return Some(4 + x.len());
            }
            (Values::Str(b), v) => {
                let text = v.to_owned_value().to_text();
                b.append_value(&text);
                return Some(4 + text.len());
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

/// Past this many bytes a buffer is frozen at once, whatever the flush settings, so that one
/// flush stays a bounded piece of work when the flusher is behind.
pub(crate) const MAX_BUFFER_BYTES: usize = 1 << 30;

/// Rows per sealed chunk: DataFusion's batch size, small enough that rebuilding the open chunk
/// for a query is cheap and that a chunk's buffers (≤ 512 KiB for strings of up to 64 bytes)
/// come from the allocator's reusable pages rather than fresh, zeroed memory from the kernel
/// (measured: 64k-row chunks spent 14% of ingest CPU clearing new pages).
pub(crate) const CHUNK_ROWS: usize = 8 * 1024;

/// An open chunk is sealed early past this many bytes (events with large values), so that no
/// chunk's string column nears Arrow's 2 GiB.
const CHUNK_BYTES: usize = 64 << 20;

/// One dataset's buffered events: sealed Arrow chunks, then the open chunk being filled.
#[derive(Debug, Default)]
pub(crate) struct WriteBuffer {
    /// Sealed chunks in arrival order, each with the schema the buffer had when it was sealed
    /// (columns that appeared later are absent; a column widened later keeps its older type).
    sealed: Vec<RecordBatch>,
    sealed_rows: usize,
    /// Bytes the sealed chunks' Arrow buffers hold (measured, not estimated).
    sealed_bytes: usize,
    /// The open chunk: its timestamps, sample rates and columns (every column of the buffer;
    /// values hold the open chunk's rows only).
    timestamps: Vec<i64>,
    sample_rates: Vec<i64>,
    columns: Vec<Column>,
    index: HashMap<String, usize, ahash::RandomState>,
    /// The column that followed each column in the last event that had it (`after[0]`: the
    /// first field's; `after[ci + 1]`: the one after column `ci`; `usize::MAX`: none yet). A
    /// service sends its fields in the same order every time, so a field's column is usually
    /// found by comparing one name rather than hashing it (the lookups were 6% of ingest); a
    /// field present in some events only costs one lookup where it appears or is missing,
    /// not one for every field after it.
    after: Vec<usize>,
    /// Estimated bytes of the open chunk's values.
    open_bytes: usize,
    /// The open chunk as a batch for queries, kept until the next append.
    open_view: Option<RecordBatch>,
    min_lsn: Option<Lsn>,
    max_lsn: Lsn,
    min_ts: i64,
    max_ts: i64,
    /// Arrival time (µs) of the oldest buffered event, for flushing by age.
    oldest_arrival_us: Option<i64>,
}

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

    /// Appends the events of one WAL record straight from their encoding, without making an
    /// [`Event`] of each.
    pub(crate) fn append_encoded(&mut self, lsn: Lsn, events: &EncodedEvents, known: KnownTypes<'_>, now_us: i64) {
        if events.is_empty() {
            return;
        }
        self.start_record(lsn, now_us);
        let mut reader = events.reader();
        while let Some((ts, rate, nf)) = reader.next_event() {
            let fields = (0..nf).map(|_| reader.next_field().expect("encoded events read back whole"));
            self.push_event(ts, rate, fields, known);
        }
    }

    fn start_record(&mut self, lsn: Lsn, now_us: i64) {
        self.min_lsn.get_or_insert(lsn);
        self.max_lsn = self.max_lsn.max(lsn);
        self.oldest_arrival_us.get_or_insert(now_us);
        self.open_view = None;
    }

    fn push_event<'v>(
        &mut self,
        ts: i64,
        rate: i64,
        fields: impl Iterator<Item = (&'v str, ValueRef<'v>)>,
        known: KnownTypes<'_>,
    ) {
        if self.rows() == 0 {
            self.min_ts = ts;
            self.max_ts = ts;
        }
        let row = self.timestamps.len();
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        self.timestamps.push(ts);
        self.sample_rates.push(rate);
        self.open_bytes += 16;
        let mut slot = 0;
        for (name, v) in fields {
            if let Some(&ci) = self.after.get(slot)
                && ci != usize::MAX
                && self.columns[ci].name == name
            {
                self.open_bytes += self.columns[ci].push(row, v);
                slot = ci + 1;
                continue;
            }
            let ci = match self.index.get(name) {
                Some(&ci) => ci,
                None => {
                    let own = v.column_type();
                    let ty = known(name).map_or(own, |k| k.widen(own));
                    self.columns.push(Column {
                        name: name.to_string(),
                        ty,
                        values: Values::new(ty, row),
                    });
                    self.index.insert(name.to_string(), self.columns.len() - 1);
                    self.open_bytes += 64 + name.len() + row;
                    self.columns.len() - 1
                }
            };
            if self.after.len() <= self.columns.len() {
                self.after.resize(self.columns.len() + 1, usize::MAX);
            }
            self.after[slot] = ci;
            slot = ci + 1;
            self.open_bytes += self.columns[ci].push(row, v);
        }
        if self.timestamps.len() >= CHUNK_ROWS || self.open_bytes >= CHUNK_BYTES {
            self.seal();
        }
    }

    /// Seals the open chunk: its builders' buffers become a batch without a copy, and the next
    /// chunk's builders start at the sizes this one reached, so that filling them never
    /// reallocates (and, chunk after chunk, reuses the same sizes of memory).
    fn seal(&mut self) {
        let n = self.timestamps.len();
        if n == 0 {
            return;
        }
        let schema = self.schema();
        let timestamps = std::mem::replace(&mut self.timestamps, Vec::with_capacity(n));
        let rates = std::mem::replace(&mut self.sample_rates, Vec::with_capacity(n));
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(timestamps).with_timezone("UTC")),
            Arc::new(Int64Array::from(rates)),
        ];
        for c in &mut self.columns {
            c.values.push_nulls(n - c.values.len());
            let array = c.values.finish(c.ty);
            c.values = Values::sized_like(c.ty, &array);
            arrays.push(array);
        }
        let batch = RecordBatch::try_new(schema, arrays).expect("buffer columns have equal lengths");
        self.sealed_bytes += batch.get_array_memory_size();
        self.sealed_rows += n;
        self.sealed.push(batch);
        self.open_bytes = 0;
        self.open_view = None;
    }

    /// Number of buffered events.
    pub(crate) fn rows(&self) -> usize {
        self.sealed_rows + self.timestamps.len()
    }

    /// Bytes of memory the buffer holds, for flushing by size and for backpressure: the sealed
    /// chunks' Arrow buffers as measured, plus an estimate of the open chunk's values (at most
    /// [`CHUNK_ROWS`] rows).
    pub(crate) fn approx_bytes(&self) -> usize {
        self.sealed_bytes + self.open_bytes
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

    /// The Arrow schema of the whole buffer: every column at its widest type so far.
    pub(crate) fn schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new(TIMESTAMP_COLUMN, timestamp_type(), false),
            Field::new(SAMPLE_RATE_COLUMN, DataType::Int64, false),
        ];
        fields.extend(self.columns.iter().map(|c| Field::new(&c.name, arrow_type(c.ty), true)));
        Arc::new(Schema::new(fields))
    }

    /// The buffer as batches in arrival order: the sealed chunks as they are (shared, not
    /// copied) and the open chunk copied once per append. Each batch has its own schema (see
    /// `sealed`); readers bring them to one with [`crate::segment::adapt_to_schema`].
    pub(crate) fn query_batches(&mut self) -> Vec<RecordBatch> {
        let mut out = self.sealed.clone();
        if !self.timestamps.is_empty() {
            let open = match &self.open_view {
                Some(b) => b.clone(),
                None => {
                    let b = self.build_open();
                    self.open_view = Some(b.clone());
                    b
                }
            };
            out.push(open);
        }
        out
    }

    /// The open chunk as a batch of its own (values copied out of the builders).
    fn build_open(&mut self) -> RecordBatch {
        let n = self.timestamps.len();
        let schema = self.schema();
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(self.timestamps.clone()).with_timezone("UTC")),
            Arc::new(Int64Array::from(self.sample_rates.clone())),
        ];
        for c in &mut self.columns {
            // Columns the latest events did not mention are null for them.
            c.values.push_nulls(n - c.values.len());
            arrays.push(c.values.to_array(c.ty));
        }
        RecordBatch::try_new(schema, arrays).expect("buffer columns have equal lengths")
    }

    /// The buffer as sealed chunks and the schema they make up together, for a buffer being
    /// frozen: the open chunk is sealed (no copy).
    pub(crate) fn into_batches(mut self) -> (SchemaRef, Vec<RecordBatch>) {
        self.seal();
        (self.schema(), self.sealed)
    }

    /// The buffer as one Arrow batch of its schema, for tests.
    #[cfg(test)]
    pub(crate) fn whole_batch(&mut self) -> RecordBatch {
        let schema = self.schema();
        let adapted: Vec<RecordBatch> = self
            .query_batches()
            .iter()
            .map(|b| crate::segment::adapt_to_schema(b, &schema).expect("widening casts"))
            .collect();
        arrow::compute::concat_batches(&schema, &adapted).expect("one schema")
    }

    /// The type of one buffered column, for tests.
    #[cfg(test)]
    pub(crate) fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.index.get(name).map(|&i| self.columns[i].ty)
    }

    /// Reconstructs event `i` (fields in column order), for tests.
    #[cfg(test)]
    pub(crate) fn event(&mut self, i: usize) -> Event {
        let batch = self.whole_batch();
        let ts = batch
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        let rates = batch.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        Event {
            timestamp_us: ts.value(i),
            sample_rate: rates.value(i),
            fields: batch
                .schema()
                .fields()
                .iter()
                .zip(batch.columns())
                .skip(2)
                .filter_map(|(f, a)| value_at(a, i).map(|v| (f.name().clone(), v)))
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
    fn chunks_hold_every_event_whatever_the_appends_between_queries() {
        let mut b = WriteBuffer::default();
        let none = |_: &str| None;
        let mut lsn = 0;
        let mut row = 0i64;
        let mut all: Vec<Event> = Vec::new();
        // Appends of varying sizes with queries between them; a new column, nulls, a string
        // column, and late in the run a widening (int → float) after chunks were sealed.
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
            all.extend(events);
            let chunks = b.query_batches();
            assert!(chunks.iter().all(|c| c.num_rows() <= CHUNK_ROWS));
            assert_eq!(chunks.iter().map(|c| c.num_rows()).sum::<usize>(), all.len());
            assert_eq!(b.rows(), all.len());
            // Against the events themselves, each value cast to its column's final type.
            let whole = b.whole_batch();
            for (ci, field) in whole.schema().fields().iter().enumerate().skip(2) {
                let ty = b.column_type(field.name()).unwrap();
                let array = whole.column(ci);
                for (i, e) in all.iter().enumerate() {
                    let want = e
                        .fields
                        .iter()
                        .find(|(n, _)| n == field.name())
                        .map(|(_, v)| v.cast(ty));
                    assert_eq!(
                        value_at(array, i),
                        want,
                        "round {round} row {i} column {}",
                        field.name()
                    );
                }
            }
        }
        assert_eq!(b.column_type("k"), Some(ColumnType::Float));
        assert!(b.sealed.len() >= 3, "sealed chunks: {}", b.sealed.len());
        let sealed_types: Vec<_> = b
            .sealed
            .iter()
            .map(|c| c.schema().field_with_name("k").unwrap().data_type().clone())
            .collect();
        assert_eq!(
            sealed_types.first(),
            Some(&DataType::Int64),
            "sealed before the widening: kept as int"
        );
        assert_eq!(sealed_types.last(), Some(&DataType::Float64));
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
        let mut from_payload = WriteBuffer::default();
        from_payload.append_encoded(Lsn(9), &EncodedEvents::from_events(&events), &none, 0);
        assert_eq!(from_events.whole_batch(), from_payload.whole_batch());
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
        let (schema, chunks) = from_payload.into_batches();
        let frozen = arrow::compute::concat_batches(&schema, &chunks).unwrap();
        assert_eq!(frozen, from_events.whole_batch());
    }
}

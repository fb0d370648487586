//! Events encoded one after another in one buffer: the form a request's accepted events take
//! from the decoder, through the WAL, into the write buffer, with no allocation per field (a
//! `String` per name and per string value, made and freed for every event, was a tenth of
//! ingest's CPU).
//!
//! Layout, little-endian, per event: `timestamp_us: i64`, `sample_rate: i64`, `fields: u32`,
//! then per field `name_len: u16`, the name, a tag and the value: `0` bool (`u8`), `1` int
//! (`i64`), `2` float (`f64` bits), `3` string (`len: u32`, the bytes). The WAL stores exactly
//! these bytes after a record's dataset name and event count, so the same reader serves the
//! live path and replay.

use crate::{Event, FieldValue, ValueRef};

/// Bytes of an event's header: timestamp, sample rate, field count.
const EVENT_HEADER: usize = 8 + 8 + 4;

/// Events in the layout of the module docs. Only this module writes the bytes, each name and
/// string from a `&str`, which is what lets [`EncodedEvents::reader`] skip UTF-8 validation.
#[derive(Debug, Default, Clone)]
pub struct EncodedEvents {
    bytes: Vec<u8>,
    count: usize,
    /// Offset of each field of the event being written (reused from event to event).
    starts: Vec<usize>,
    /// Offset of each field of the last event, when its writer vouched that its names are
    /// distinct ([`EventWriter::finish_distinct`]); empty otherwise.
    previous: Vec<usize>,
}

impl EncodedEvents {
    /// No events, with room for `bytes` bytes of them.
    pub fn with_capacity(bytes: usize) -> Self {
        EncodedEvents {
            bytes: Vec::with_capacity(bytes),
            count: 0,
            starts: Vec::new(),
            previous: Vec::new(),
        }
    }

    /// The events of `events`, encoded.
    pub fn from_events(events: &[Event]) -> Self {
        let size = events.iter().map(encoded_size).sum();
        let mut out = Self::with_capacity(size);
        for e in events {
            out.push(e);
        }
        out
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when there are no events.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Appends one event.
    pub fn push(&mut self, e: &Event) {
        let mut w = self.start();
        for (name, v) in &e.fields {
            w.field(name, v.as_value_ref());
        }
        w.finish(e.timestamp_us, e.sample_rate);
    }

    /// Starts an event; its fields are added one by one and it is kept by
    /// [`EventWriter::finish`] (dropped unfinished, it leaves no trace).
    pub fn start(&mut self) -> EventWriter<'_> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[0; EVENT_HEADER]);
        self.starts.clear();
        EventWriter {
            out: self,
            start,
            finished: false,
        }
    }

    /// Where the events end now, to [`EncodedEvents::truncate`] back to.
    pub fn mark(&self) -> EncodedMark {
        EncodedMark {
            bytes: self.bytes.len(),
            count: self.count,
        }
    }

    /// Drops the events added since `mark` was taken.
    pub fn truncate(&mut self, mark: EncodedMark) {
        assert!(
            mark.count <= self.count && mark.bytes <= self.bytes.len(),
            "a mark of these events"
        );
        self.bytes.truncate(mark.bytes);
        self.count = mark.count;
        self.previous.clear();
    }

    /// Reads the events back, without validating what this module wrote.
    pub fn reader(&self) -> EventsReader<'_> {
        EventsReader {
            buf: &self.bytes,
            pos: 0,
            events_left: self.count,
            fields_left: 0,
            trusted: true,
        }
    }

    /// The events as [`Event`]s (for tests and callers that need owned events).
    pub fn to_events(&self) -> Vec<Event> {
        self.reader()
            .into_events()
            .expect("this module wrote every event whole")
    }
}

/// The exact number of bytes `e` encodes to.
pub fn encoded_size(e: &Event) -> usize {
    EVENT_HEADER
        + e.fields
            .iter()
            .map(|(n, v)| {
                3 + n.len()
                    + match v {
                        FieldValue::Bool(_) => 1,
                        FieldValue::Int(_) | FieldValue::Float(_) => 8,
                        FieldValue::Str(s) => 4 + s.len(),
                    }
            })
            .sum::<usize>()
}

/// The name of the field written at `at`.
fn name_at(b: &[u8], at: usize) -> &[u8] {
    let len = u16::from_le_bytes([b[at], b[at + 1]]) as usize;
    &b[at + 2..at + 2 + len]
}

/// A point in an [`EncodedEvents`] ([`EncodedEvents::mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedMark {
    bytes: usize,
    count: usize,
}

/// One event being written into an [`EncodedEvents`].
pub struct EventWriter<'a> {
    out: &'a mut EncodedEvents,
    start: usize,
    finished: bool,
}

impl EventWriter<'_> {
    /// Adds a field. Names are bounded by the model's limits, far below `u16::MAX` bytes.
    pub fn field(&mut self, name: &str, v: ValueRef<'_>) {
        let b = &mut self.out.bytes;
        self.out.starts.push(b.len());
        let len = u16::try_from(name.len()).expect("field name longer than 65535 bytes");
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        match v {
            ValueRef::Bool(x) => b.extend_from_slice(&[0, x as u8]),
            ValueRef::Int(i) => {
                b.push(1);
                b.extend_from_slice(&i.to_le_bytes());
            }
            ValueRef::Float(f) => {
                b.push(2);
                b.extend_from_slice(&f.to_le_bytes());
            }
            ValueRef::Str(s) => {
                b.push(3);
                let len = u32::try_from(s.len()).expect("string longer than 4 GiB");
                b.extend_from_slice(&len.to_le_bytes());
                b.extend_from_slice(s.as_bytes());
            }
        }
    }

    /// Fields added so far.
    pub fn fields(&self) -> usize {
        self.out.starts.len()
    }

    /// The name of field `i` (in the order added), as bytes.
    pub fn name_bytes(&self, i: usize) -> &[u8] {
        name_at(&self.out.bytes, self.out.starts[i])
    }

    /// Whether the last event kept by [`EventWriter::finish_distinct`] (just before this one)
    /// has a field `i` named `name`.
    pub fn previous_name_is(&self, i: usize, name: &str) -> bool {
        self.out
            .previous
            .get(i)
            .is_some_and(|&at| name_at(&self.out.bytes, at) == name.as_bytes())
    }

    /// [`EventWriter::finish`] for an event whose names the caller checked are pairwise
    /// distinct: the next event may then compare its names with this one's
    /// ([`EventWriter::previous_name_is`]).
    pub fn finish_distinct(mut self, timestamp_us: i64, sample_rate: i64) {
        self.write_header(timestamp_us, sample_rate);
        // This event's offsets become the previous ones; the old ones are cleared on drop.
        std::mem::swap(&mut self.out.starts, &mut self.out.previous);
    }

    /// Keeps the event, with its time and sample rate.
    pub fn finish(mut self, timestamp_us: i64, sample_rate: i64) {
        self.write_header(timestamp_us, sample_rate);
        self.out.previous.clear();
    }

    fn write_header(&mut self, timestamp_us: i64, sample_rate: i64) {
        let n = u32::try_from(self.out.starts.len()).expect("more than u32::MAX fields");
        let h = &mut self.out.bytes[self.start..self.start + EVENT_HEADER];
        h[..8].copy_from_slice(&timestamp_us.to_le_bytes());
        h[8..16].copy_from_slice(&sample_rate.to_le_bytes());
        h[16..].copy_from_slice(&n.to_le_bytes());
        self.out.count += 1;
        self.finished = true;
    }
}

impl Drop for EventWriter<'_> {
    /// An unfinished event (a refused one) is cut off again.
    fn drop(&mut self) {
        if !self.finished {
            self.out.bytes.truncate(self.start);
        }
        self.out.starts.clear();
    }
}

/// Reads encoded events in place: from an [`EncodedEvents`] ([`EncodedEvents::reader`]) or
/// from bytes read back from disk ([`EventsReader::checked`], which validates every string).
#[derive(Debug)]
pub struct EventsReader<'a> {
    buf: &'a [u8],
    pos: usize,
    events_left: usize,
    fields_left: usize,
    /// Reading an `EncodedEvents`: every string is known to be UTF-8.
    trusted: bool,
}

impl<'a> EventsReader<'a> {
    /// A reader of `count` events in `bytes` from outside this process (validated as read).
    pub fn checked(bytes: &'a [u8], count: usize) -> Self {
        EventsReader {
            buf: bytes,
            pos: 0,
            events_left: count,
            fields_left: 0,
            trusted: false,
        }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn str(&mut self, n: usize) -> Option<&'a str> {
        let bytes = self.take(n)?;
        if self.trusted {
            debug_assert!(std::str::from_utf8(bytes).is_ok(), "encoded strings are UTF-8");
            // SAFETY: a trusted reader reads an `EncodedEvents`, whose bytes only this module
            // writes, each name and string from a `&str`, in the layout this reader follows
            // (so each range asked for is one of those strings, whole; `take` refuses a range
            // past the end).
            Some(unsafe { std::str::from_utf8_unchecked(bytes) })
        } else {
            std::str::from_utf8(bytes).ok()
        }
    }

    /// Reads every event left as an owned [`Event`]; `None` on damage or bytes left over.
    /// Capacities are bounded, so a damaged count cannot ask for a huge allocation.
    pub fn into_events(mut self) -> Option<Vec<Event>> {
        let mut events = Vec::with_capacity(self.events_left.min(1 << 16));
        while let Some((timestamp_us, sample_rate, n)) = self.next_event() {
            let mut fields = Vec::with_capacity(n.min(4096));
            for _ in 0..n {
                let (name, v) = self.next_field()?;
                fields.push((name.to_string(), v.to_owned_value()));
            }
            events.push(Event {
                timestamp_us,
                sample_rate,
                fields,
            });
        }
        self.at_end().then_some(events)
    }

    /// Starts the next event: its timestamp (µs), sample rate and number of fields. `None`
    /// after the last event, or if the previous event's fields were not all read, or on damage.
    pub fn next_event(&mut self) -> Option<(i64, i64, usize)> {
        if self.events_left == 0 || self.fields_left != 0 {
            return None;
        }
        let ts = self.i64()?;
        let rate = self.i64()?;
        let n = self.u32()? as usize;
        self.events_left -= 1;
        self.fields_left = n;
        Some((ts, rate, n))
    }

    /// The current event's next field; `None` after its last field or on damage.
    pub fn next_field(&mut self) -> Option<(&'a str, ValueRef<'a>)> {
        if self.fields_left == 0 {
            return None;
        }
        let n = self.u16()? as usize;
        let name = self.str(n)?;
        let v = match self.u8()? {
            0 => ValueRef::Bool(self.u8()? != 0),
            1 => ValueRef::Int(self.i64()?),
            2 => ValueRef::Float(f64::from_bits(self.i64()? as u64)),
            3 => {
                let n = self.u32()? as usize;
                ValueRef::Str(self.str(n)?)
            }
            _ => return None,
        };
        self.fields_left -= 1;
        Some((name, v))
    }

    /// True once every event and field has been read and no bytes are left over.
    pub fn at_end(&self) -> bool {
        self.events_left == 0 && self.fields_left == 0 && self.pos == self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            any::<i64>().prop_map(FieldValue::Int),
            any::<f64>().prop_map(FieldValue::Float),
            "[a-zé\"\\\\]{0,8}".prop_map(FieldValue::Str),
        ]
    }

    fn any_event() -> impl Strategy<Value = Event> {
        (
            any::<i64>(),
            1i64..100,
            prop::collection::vec(("[a-z.é]{1,6}", any_value()), 0..6),
        )
            .prop_map(|(timestamp_us, sample_rate, fields)| Event {
                timestamp_us,
                sample_rate,
                fields,
            })
    }

    proptest! {
        /// Events read back as they went in, through both readers, at the size computed.
        #[test]
        fn round_trip(events in prop::collection::vec(any_event(), 0..5)) {
            let enc = EncodedEvents::from_events(&events);
            prop_assert_eq!(enc.as_bytes().len(), events.iter().map(encoded_size).sum::<usize>());
            let back = enc.to_events();
            // NaN != NaN: compare the bits.
            let bits = |es: &[Event]| format!("{:?}", es.iter().map(|e| e.fields.iter().map(|(n, v)| (n.clone(), match v {
                FieldValue::Float(f) => FieldValue::Int(f.to_bits() as i64), v => v.clone() })).collect::<Vec<_>>()).collect::<Vec<_>>());
            prop_assert_eq!(bits(&back), bits(&events));
            let mut r = EventsReader::checked(enc.as_bytes(), events.len());
            while let Some((_, _, n)) = r.next_event() {
                for _ in 0..n {
                    prop_assert!(r.next_field().is_some());
                }
            }
            prop_assert!(r.at_end());
        }
    }

    #[test]
    fn an_unfinished_event_leaves_no_trace() {
        let mut enc = EncodedEvents::default();
        let mut w = enc.start();
        w.field("a", ValueRef::Int(1));
        w.finish(5, 1);
        let kept = enc.as_bytes().to_vec();
        let mut w = enc.start();
        w.field("b", ValueRef::Str("x"));
        w.field("c", ValueRef::Bool(true));
        assert_eq!(w.fields(), 2);
        assert_eq!(w.name_bytes(1), b"c");
        drop(w);
        assert_eq!(enc.as_bytes(), kept.as_slice());
        assert_eq!(enc.len(), 1);
    }

    #[test]
    fn damaged_bytes_are_refused_not_read_past() {
        let e = Event {
            timestamp_us: 1,
            sample_rate: 1,
            fields: vec![("a".into(), FieldValue::Str("é".into()))],
        };
        let enc = EncodedEvents::from_events(&[e]);
        let bytes = enc.as_bytes();
        // Cut anywhere, or a broken UTF-8 byte: the checked reader says no.
        for cut in 0..bytes.len() {
            let mut r = EventsReader::checked(&bytes[..cut], 1);
            let whole = r.next_event().is_some() && r.next_field().is_some() && r.at_end();
            assert!(!whole, "cut at {cut}");
        }
        let mut bad = bytes.to_vec();
        *bad.last_mut().unwrap() = 0xff;
        let mut r = EventsReader::checked(&bad, 1);
        assert!(r.next_event().is_some());
        assert!(r.next_field().is_none());
    }
}

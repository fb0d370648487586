//! Parsing and flattening in one pass: JSON text straight to dotted fields, with no
//! `serde_json::Value` tree in between (the tree, its maps and their keys were a third of
//! ingest's CPU time).
//!
//! The result is the one [`sonde_model::flatten_event`] gives for the parsed object, except for the
//! order of the fields: here they keep the order they were sent in (the tree sorts each
//! object's keys), and when two spellings reach the same name (`"a.b"` and `{"a":{"b":…}}`)
//! the later one in the text wins. Inputs this pass does not take (a top level that is not an
//! object, a key given twice in one object) are handed back as [`Parsed::Tree`]. An error is
//! the first problem met; the tree path is the reference for refusals (a later duplicate key
//! could have replaced the part that had the problem), so callers ask it for the verdict.

use crate::envelope::{envelope_time, parse_sample_rate};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use sonde_model::encoded::{EncodedEvents, EventWriter};
use sonde_model::flatten::Limits;
use sonde_model::{EventError, FieldValue, SAMPLE_RATE_COLUMN, TIMESTAMP_COLUMN, ValueRef};
use std::collections::HashMap;
use std::fmt;

/// Which object is the event's data, and where its envelope (time, sample rate) comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A Honeycomb batch item: `{"data": {…}, "time": …, "samplerate": N}`.
    BatchItem,
    /// An NDJSON line: the object is the data; its top-level `timestamp` (or `time`) and
    /// `samplerate` keys are the envelope and are taken out of it.
    Line,
}

/// An event's text: bytes, or a `str` whose UTF-8 was checked once for a whole body, which
/// spares the parser checking every string again (that was 5% of ingest's CPU).
#[derive(Debug, Clone, Copy)]
pub enum Text<'a> {
    /// Bytes, checked as they are parsed.
    Bytes(&'a [u8]),
    /// Text known to be UTF-8.
    Str(&'a str),
}

impl<'a> Text<'a> {
    /// The text's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        match self {
            Text::Bytes(b) => b,
            Text::Str(s) => s.as_bytes(),
        }
    }

    /// `body[range]` as a `str` when the whole body's UTF-8 was checked (`utf8`), else as bytes.
    /// The range must start and end beside ASCII (a delimiter or whitespace), so on character
    /// boundaries; when it does not, the bytes are taken, checked as they are parsed.
    pub fn of(body: &'a [u8], utf8: Option<&'a str>, range: std::ops::Range<usize>) -> Text<'a> {
        match utf8.and_then(|s| s.get(range.clone())) {
            Some(s) => Text::Str(s),
            None => Text::Bytes(&body[range]),
        }
    }
}

/// What one pass over an event's text found.
#[derive(Debug)]
pub enum Parsed {
    /// The flattened fields and the envelope's raw values (absent keys are `None`).
    Flat {
        /// The data's fields, in the order they were sent.
        fields: Vec<(String, FieldValue)>,
        /// The envelope's time value (`time`, or for lines `timestamp` before `time`).
        time: Option<Value>,
        /// The envelope's sample rate value.
        samplerate: Option<Value>,
    },
    /// Not an input this pass takes: parse it as a tree instead.
    Tree,
}

/// Parses and flattens one event (see the module docs). Errors name the limit or the problem.
pub fn parse_flat(bytes: &[u8], shape: Shape, limits: &Limits) -> Result<Parsed, EventError> {
    limits.check_event_bytes(bytes.len())?;
    if !is_object_text(bytes) {
        return Ok(Parsed::Tree);
    }
    let mut f = Flattener::new(VecFields(Vec::with_capacity(32)), limits, Scratch::default());
    let Some(env) = f.run(bytes, shape)? else {
        return Ok(Parsed::Tree);
    };
    let mut fields = f.fields.0;
    let time = match (env.timestamp, env.time) {
        (Some(ts), time) => {
            // A line with both keys: `timestamp` is the time and `time` stays a field, as the
            // tree path does. Rare enough to flatten through a tree.
            if let Some(t) = time {
                let obj = Value::Object([("time".to_string(), t)].into_iter().collect());
                for (n, v) in sonde_model::flatten_event(&obj, limits)? {
                    match fields.iter_mut().find(|(m, _)| *m == n) {
                        Some(slot) => slot.1 = v,
                        None => fields.push((n, v)),
                    }
                }
            }
            Some(ts)
        }
        (None, time) => time,
    };
    Ok(Parsed::Flat {
        fields,
        time,
        samplerate: env.samplerate,
    })
}

/// Parses, flattens and encodes one event straight into `out`, its time and sample rate read by
/// the envelope rule ([`crate::envelope`]), with nothing allocated per field. False (with `out`
/// as it was) when the text is not one this pass takes, breaks a limit or repeats a name: the
/// caller then takes the owned path ([`parse_flat`], then the tree), which gives the verdict
/// and its message, as for any refusal.
pub fn encode_flat(text: Text<'_>, shape: Shape, limits: &Limits, now_us: i64, out: &mut EncodedEvents) -> bool {
    let bytes = text.bytes();
    if limits.check_event_bytes(bytes.len()).is_err() || !is_object_text(bytes) {
        return false;
    }
    encode_value(text, shape, limits, now_us, out, true).is_some()
}

/// [`encode_flat`] over the object that starts `text` (an item of a batch array, read where
/// it lies, with no split beforehand): where the text after it starts (past whitespace), or
/// `None` (with `out` as it was) when the owned path must take the item, or when nothing follows
/// it. What follows is the caller's to check.
pub fn encode_flat_prefix(
    text: Text<'_>,
    shape: Shape,
    limits: &Limits,
    now_us: i64,
    out: &mut EncodedEvents,
) -> Option<usize> {
    let bytes = text.bytes();
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let mark = out.mark();
    let used = encode_value(text, shape, limits, now_us, out, false)?;
    // The item's own text, without the whitespace before what follows it.
    let text = bytes[..used]
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .map_or(0, |p| p + 1);
    if limits.check_event_bytes(text).is_err() {
        out.truncate(mark);
        return None;
    }
    Some(used)
}

fn encode_value(
    text: Text<'_>,
    shape: Shape,
    limits: &Limits,
    now_us: i64,
    out: &mut EncodedEvents,
    whole: bool,
) -> Option<usize> {
    let mut f = Flattener::new(Encoding(out.start()), limits, SCRATCH.take());
    let run = f.run_value(text, shape, whole);
    let (fields, mut scratch) = f.finish();
    let encoded = match run {
        Ok(Some((env, used))) if env.timestamp.is_none() || env.time.is_none() => {
            let time = env.timestamp.or(env.time);
            let blank_time_is_now = shape == Shape::BatchItem;
            let rate = env.samplerate.unwrap_or(Value::Null);
            let verdict = (
                envelope_time(time.as_ref(), now_us, blank_time_is_now),
                parse_sample_rate(&rate),
            );
            if let Some(Value::String(text)) = time {
                scratch.time_text = text;
            }
            match verdict {
                (Ok(ts), Ok(rate)) => {
                    // Names reached twice were turned away above: they are distinct.
                    fields.0.finish_distinct(ts, rate);
                    Some(used)
                }
                _ => None,
            }
        }
        // A line with both `timestamp` and `time` (`time` stays a field, added after the
        // others: the owned path), or an event the owned path must take.
        _ => None,
    };
    SCRATCH.set(scratch);
    encoded
}

thread_local! {
    /// The flattener's buffers and the last time text, kept from one event to the next on each
    /// decoding thread, so that an event allocates none of them (they were about 2% of ingest's
    /// CPU). Taken for an event's parse and put back after it.
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

/// Buffers a [`Flattener`] needs, emptied between events but kept allocated.
#[derive(Default)]
struct Scratch {
    hashes: Vec<u64>,
    by_hash: HashMap<u64, usize>,
    keys: Vec<u64>,
    name: String,
    /// The allocation of the last envelope time given as text, for the next one.
    time_text: String,
}

/// Where the text after a value starts, from the parser's "trailing characters" error: the
/// error's line and column (1-based, in bytes) are the position of that text's first byte. The
/// parser has no other public way to say where a value ended.
fn trailing_at(bytes: &[u8], e: &serde_json::Error) -> Option<usize> {
    if e.classify() != serde_json::error::Category::Syntax || e.column() == 0 {
        return None;
    }
    let line_start = match e.line() {
        0 => return None,
        1 => 0,
        n => bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(n - 2)?.0 + 1,
    };
    let at = line_start + e.column() - 1;
    (at < bytes.len()).then_some(at)
}

/// Whether the text starts (after whitespace) as an object, the only top level this pass takes.
fn is_object_text(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

#[derive(Default)]
struct Envelope {
    time: Option<Value>,
    timestamp: Option<Value>,
    samplerate: Option<Value>,
    data_seen: bool,
    /// Seen something only the tree path handles.
    tree: bool,
}

/// Where a flattened event's fields go: a vector of owned fields ([`parse_flat`]) or straight
/// into an [`EncodedEvents`] ([`encode_flat`]).
trait Fields {
    /// Fields so far.
    fn len(&self) -> usize;
    /// The name of field `i`.
    fn name(&self, i: usize) -> &[u8];
    /// Whether the event before this one (known to have distinct names) has a field `i` named
    /// `name`; false where there is no such event to compare with.
    fn previous_name_is(&self, i: usize, name: &str) -> bool;
    /// Adds a field.
    fn add(&mut self, name: &str, v: ValueRef<'_>);
    /// Gives field `i` a new value; false when these fields cannot take a value back.
    fn replace(&mut self, i: usize, v: ValueRef<'_>) -> bool;
}

/// Owned fields, in the order sent.
struct VecFields(Vec<(String, FieldValue)>);

impl Fields for VecFields {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn name(&self, i: usize) -> &[u8] {
        self.0[i].0.as_bytes()
    }
    fn previous_name_is(&self, _: usize, _: &str) -> bool {
        false
    }
    fn add(&mut self, name: &str, v: ValueRef<'_>) {
        self.0.push((name.to_string(), v.to_owned_value()));
    }
    fn replace(&mut self, i: usize, v: ValueRef<'_>) -> bool {
        self.0[i].1 = v.to_owned_value();
        true
    }
}

/// The event being written into an [`EncodedEvents`]: nothing is allocated per field, and a
/// name reached twice (whose earlier value cannot be taken back) hands the event to the
/// owned path.
struct Encoding<'a>(EventWriter<'a>);

impl Fields for Encoding<'_> {
    fn len(&self) -> usize {
        self.0.fields()
    }
    fn name(&self, i: usize) -> &[u8] {
        self.0.name_bytes(i)
    }
    fn previous_name_is(&self, i: usize, name: &str) -> bool {
        self.0.previous_name_is(i, name)
    }
    fn add(&mut self, name: &str, v: ValueRef<'_>) {
        self.0.field(name, v);
    }
    fn replace(&mut self, _: usize, _: ValueRef<'_>) -> bool {
        false
    }
}

struct Flattener<'l, F> {
    fields: F,
    /// While true, every name so far is the previous event's name at the same place, so no
    /// two of them are equal and none was hashed (events of one kind repeat their names).
    follows_previous: bool,
    /// [`key_print`] of each field's name, to find a name reached twice without a map per event
    /// (filled once the names stop following the previous event's).
    hashes: Vec<u64>,
    /// Hash → first field with it, used once an event has many fields.
    by_hash: HashMap<u64, usize>,
    /// [`key_print`]s of the keys of the objects being read, innermost last, to notice a key given
    /// twice in one object.
    keys: Vec<u64>,
    /// The dotted name being built: the prefix of the object being read, then the key.
    name: String,
    limits: &'l Limits,
    /// A limit or rule broken (serde's error then only stops the parse).
    error: Option<EventError>,
    envelope: Envelope,
    /// An allocation for the next envelope value given as text (see [`Scratch`]).
    time_text: String,
}

/// Past this many fields, names reached twice are found by a map rather than a scan.
const SCAN_FIELDS: usize = 48;

impl<'l, F: Fields> Flattener<'l, F> {
    fn new(fields: F, limits: &'l Limits, scratch: Scratch) -> Self {
        let Scratch {
            mut hashes,
            mut by_hash,
            mut keys,
            mut name,
            time_text,
        } = scratch;
        hashes.clear();
        by_hash.clear();
        keys.clear();
        name.clear();
        Flattener {
            fields,
            follows_previous: true,
            hashes,
            by_hash,
            keys,
            name,
            limits,
            error: None,
            envelope: Envelope::default(),
            time_text,
        }
    }

    /// The fields, and the buffers for the next event's flattener.
    fn finish(self) -> (F, Scratch) {
        let scratch = Scratch {
            hashes: self.hashes,
            by_hash: self.by_hash,
            keys: self.keys,
            name: self.name,
            time_text: self.time_text,
        };
        (self.fields, scratch)
    }

    /// The value of an envelope key (a time, a sample rate), a string among them read into
    /// the allocation of the last one.
    fn envelope_value<'de, A: MapAccess<'de>>(&mut self, map: &mut A) -> Result<Value, A::Error> {
        map.next_value_seed(ReusedText(std::mem::take(&mut self.time_text)))
    }

    /// Parses `bytes` into the fields; the envelope, or `None` when the tree path must take
    /// the text (see [`Parsed::Tree`]).
    fn run(&mut self, bytes: &[u8], shape: Shape) -> Result<Option<Envelope>, EventError> {
        self.run_value(Text::Bytes(bytes), shape, true)
            .map(|r| r.map(|(env, _)| env))
    }

    /// [`Flattener::run`] over the value at the start of `text`: with `whole`, nothing but
    /// whitespace may follow it; without, the answer says how many bytes it took.
    fn run_value(
        &mut self,
        text: Text<'_>,
        shape: Shape,
        whole: bool,
    ) -> Result<Option<(Envelope, usize)>, EventError> {
        match text {
            Text::Bytes(b) => self.run_with(serde_json::Deserializer::from_slice(b), b, shape, whole),
            Text::Str(s) => self.run_with(serde_json::Deserializer::from_str(s), s.as_bytes(), shape, whole),
        }
    }

    fn run_with<'de, R: serde_json::de::Read<'de>>(
        &mut self,
        mut de: serde_json::Deserializer<R>,
        bytes: &[u8],
        shape: Shape,
        whole: bool,
    ) -> Result<Option<(Envelope, usize)>, EventError> {
        let mut outcome = Top { f: self, shape }.deserialize(&mut de);
        let mut used = bytes.len();
        if outcome.is_ok() {
            match de.end() {
                Ok(()) => {}
                Err(e) if !whole => match trailing_at(bytes, &e) {
                    Some(at) => used = at,
                    None => outcome = Err(e),
                },
                Err(e) => outcome = Err(e),
            }
        }
        if self.envelope.tree {
            return Ok(None);
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if let Err(e) = outcome {
            return Err(if e.to_string().contains("recursion limit") {
                self.limits.depth_error()
            } else if std::str::from_utf8(bytes).is_err() {
                EventError::Json(format!("invalid UTF-8 ({e})"))
            } else {
                EventError::Json(e.to_string())
            });
        }
        let env = std::mem::take(&mut self.envelope);
        if shape == Shape::BatchItem && !env.data_seen {
            return Err(EventError::Json("batch item needs a \"data\" object, got null".into()));
        }
        Ok(Some((env, used)))
    }

    fn fail<E: de::Error>(&mut self, e: EventError) -> E {
        let msg = e.to_string();
        self.error.get_or_insert(e);
        E::custom(msg)
    }

    /// Turns a broken limit (or rule) into the error that stops the parse.
    fn check<E: de::Error>(&mut self, r: Result<(), EventError>) -> Result<(), E> {
        r.map_err(|e| self.fail(e))
    }

    fn too_deep<E: de::Error>(&mut self, depth: usize) -> Result<(), E> {
        let r = self.limits.check_depth(depth);
        self.check(r)
    }

    /// Adds the value of the field named `self.name`; a name seen before gets the new value.
    fn push<E: de::Error>(&mut self, v: ValueRef<'_>) -> Result<(), E> {
        if let ValueRef::Str(s) = v {
            let r = self.limits.check_string(&self.name, s.len());
            self.check(r)?;
        }
        let r = self.limits.check_field_name(&self.name);
        self.check(r)?;
        let i = self.fields.len();
        if self.follows_previous {
            if self.fields.previous_name_is(i, &self.name) {
                // The previous event's names are distinct, and so are these, equal to its own
                // so far: the new one is not among them.
                let r = self.limits.check_room_for_field(i);
                self.check(r)?;
                self.fields.add(&self.name, v);
                return Ok(());
            }
            self.follows_previous = false;
            for j in 0..i {
                let h = key_print(self.fields.name(j));
                self.hashes.push(h);
            }
        }
        let h = key_print(self.name.as_bytes());
        let earlier = if self.fields.len() <= SCAN_FIELDS {
            self.hashes
                .iter()
                .enumerate()
                .position(|(i, &eh)| eh == h && self.fields.name(i) == self.name.as_bytes())
        } else {
            if self.by_hash.is_empty() {
                for (i, &eh) in self.hashes.iter().enumerate() {
                    self.by_hash.entry(eh).or_insert(i);
                }
            }
            match self.by_hash.get(&h) {
                Some(&i) if self.fields.name(i) == self.name.as_bytes() => Some(i),
                // Two names with one hash: look at every field.
                Some(_) => (0..self.fields.len()).position(|i| self.fields.name(i) == self.name.as_bytes()),
                None => None,
            }
        };
        if let Some(i) = earlier {
            if self.fields.replace(i, v) {
                return Ok(());
            }
            self.envelope.tree = true;
            return Err(de::Error::custom("a name reached twice"));
        }
        let r = self.limits.check_room_for_field(self.fields.len());
        self.check(r)?;
        // Once the map exists (built from every hash when first needed), it keeps up.
        if !self.by_hash.is_empty() {
            self.by_hash.entry(h).or_insert(self.fields.len());
        }
        self.hashes.push(h);
        self.fields.add(&self.name, v);
        Ok(())
    }
}

/// A key's fingerprint for the check that an object gives no key twice: its length and every
/// byte folded into a word. Cheaper than a keyed hash (this runs for every key of every event),
/// and a collision only sends the event to the owned path, which gives the same answer.
fn key_print(key: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = key.len() as u64;
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let word = u64::from_le_bytes(c.try_into().expect("eight bytes"));
        h = (h ^ word).wrapping_mul(K).rotate_left(23);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // Folded byte by byte: a copy into a word of a length known only here was a call to
        // memcpy for every key of every event.
        let word = rest.iter().rev().fold(0u64, |w, &b| (w << 8) | u64::from(b));
        h = (h ^ word).wrapping_mul(K).rotate_left(23);
    }
    h
}

/// The whole text: an envelope around the data (batch item) or the data itself (line).
struct Top<'f, 'l, F> {
    f: &'f mut Flattener<'l, F>,
    shape: Shape,
}

impl<'de, F: Fields> DeserializeSeed<'de> for Top<'_, '_, F> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: Fields> Visitor<'de> for Top<'_, '_, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        match self.shape {
            Shape::Line => Object { f: self.f, level: 1 }.entries(&mut map, true).map(|_| ()),
            Shape::BatchItem => {
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    match key.as_str() {
                        "data" if self.f.envelope.data_seen => {
                            // The tree keeps the last of two `data` objects; so does the tree path.
                            self.f.envelope.tree = true;
                            map.next_value::<IgnoredAny>()?;
                        }
                        "data" => {
                            self.f.envelope.data_seen = true;
                            map.next_value_seed(Data { f: self.f })?;
                        }
                        "time" => self.f.envelope.time = Some(self.f.envelope_value(&mut map)?),
                        "samplerate" => self.f.envelope.samplerate = Some(map.next_value()?),
                        _ => {
                            // Parsed, not skipped: the tree path refuses an item whose unused
                            // keys hold invalid UTF-8, and so must this (found by fuzzing).
                            map.next_value::<Value>()?;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// An envelope value as a [`Value`], a string read into the given allocation rather than a
/// new one.
struct ReusedText(String);

impl<'de> DeserializeSeed<'de> for ReusedText {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ReusedText {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        let mut text = self.0;
        text.clear();
        text.push_str(s);
        Ok(Value::String(text))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        Ok(Value::from(i))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        Ok(Value::from(u))
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Value, E> {
        Ok(Value::from(x))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        Value::deserialize(de::value::SeqAccessDeserializer::new(seq))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        Value::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

/// A map key, borrowed from the text when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl Key<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(s.into()))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(s.to_string().into()))
            }
        }
        d.deserialize_str(V)
    }
}

/// A batch item's `data`: must be an object.
struct Data<'f, 'l, F> {
    f: &'f mut Flattener<'l, F>,
}

impl<'de, F: Fields> DeserializeSeed<'de> for Data<'_, '_, F> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<F: Fields> Data<'_, '_, F> {
    fn not_an_object<E: de::Error>(self, kind: &str) -> Result<(), E> {
        Err(self.f.fail(EventError::Json(format!(
            "batch item needs a \"data\" object, got {kind}"
        ))))
    }
}

impl<'de, F: Fields> Visitor<'de> for Data<'_, '_, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        Object { f: self.f, level: 1 }.entries(&mut map, false).map(|_| ())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_an_object("null")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_an_object("a boolean")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_an_object("a number")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_an_object("a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_an_object("a number")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_an_object("a string")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.not_an_object("an array")
    }
}

/// An object of the data at nesting `level` (the data itself is level 1); its prefix is in
/// `f.name`.
struct Object<'f, 'l, F> {
    f: &'f mut Flattener<'l, F>,
    level: usize,
}

impl<F: Fields> Object<'_, '_, F> {
    /// Reads the entries; returns how many there were. `line_top`: the top of an NDJSON line,
    /// whose envelope keys are taken out.
    fn entries<'de, A: MapAccess<'de>>(self, map: &mut A, line_top: bool) -> Result<usize, A::Error> {
        let f = self.f;
        f.too_deep(self.level)?;
        let prefix = f.name.len();
        let first_key = f.keys.len();
        let mut n = 0;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            n += 1;
            let key = key.as_str();
            let h = key_print(key.as_bytes());
            if f.keys[first_key..].contains(&h) {
                // A key given twice in one object: the later value replaces the whole earlier
                // one, fields and all, which this pass cannot take back (found by fuzzing).
                // (Equal hashes of different keys land here too, harmlessly.)
                f.envelope.tree = true;
                return Err(de::Error::custom("a key given twice"));
            }
            f.keys.push(h);
            if key.is_empty() {
                // A column without a name cannot be asked for (found by fuzzing: `{"": 1}`).
                let name = if prefix == 0 {
                    String::new()
                } else {
                    format!("{}.", &f.name[..prefix])
                };
                return Err(f.fail(EventError::BadField {
                    name,
                    reason: "field names must not be empty",
                }));
            }
            if line_top {
                let slot = match key {
                    "timestamp" => Some(&mut f.envelope.timestamp),
                    "time" => Some(&mut f.envelope.time),
                    "samplerate" => Some(&mut f.envelope.samplerate),
                    _ => None,
                };
                if slot.is_some() {
                    let v = f.envelope_value(map)?;
                    let slot = match key {
                        "timestamp" => &mut f.envelope.timestamp,
                        "time" => &mut f.envelope.time,
                        _ => &mut f.envelope.samplerate,
                    };
                    *slot = Some(v);
                    continue;
                }
            }
            if prefix == 0 {
                if key == TIMESTAMP_COLUMN || key == SAMPLE_RATE_COLUMN {
                    // The reserved columns come from the event's envelope; a data field of the
                    // same name is kept beside them rather than overwriting them.
                    f.name.push_str("data.");
                }
            } else {
                f.name.push('.');
            }
            f.name.push_str(key);
            let r = map.next_value_seed(Field { f, level: self.level });
            f.name.truncate(prefix);
            r?;
        }
        f.keys.truncate(first_key);
        Ok(n)
    }
}

/// The value of the field named `f.name`, inside an object at `level`.
struct Field<'f, 'l, F> {
    f: &'f mut Flattener<'l, F>,
    level: usize,
}

impl<'de, F: Fields> DeserializeSeed<'de> for Field<'_, '_, F> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: Fields> Visitor<'de> for Field<'_, '_, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        // Absence is null: a null field is dropped.
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.f.push(ValueRef::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<(), E> {
        self.f.push(ValueRef::Int(i))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<(), E> {
        self.f.push(match i64::try_from(u) {
            Ok(i) => ValueRef::Int(i),
            Err(_) => ValueRef::Float(u as f64),
        })
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<(), E> {
        self.f.push(ValueRef::Float(x))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.f.push(ValueRef::Str(s))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<(), E> {
        self.f.push(ValueRef::Str(&s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        // Arrays are kept whole, as JSON text.
        let v = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        self.text(v)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let child = self.level + 1;
        if child > self.f.limits.flatten_depth {
            // Below the flattening depth objects are kept whole, as JSON text.
            let v = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
            return self.text(v);
        }
        let f = self.f;
        let entries = Object { f, level: child }.entries(&mut map, false)?;
        if entries == 0 {
            // An empty object has no fields to become: it is kept as its text, `{}`.
            f.push(ValueRef::Str("{}"))?;
        }
        Ok(())
    }
}

impl<F: Fields> Field<'_, '_, F> {
    fn text<E: de::Error>(self, v: Value) -> Result<(), E> {
        self.f.too_deep(self.level + sonde_model::flatten::value_depth(&v))?;
        self.f.push(ValueRef::Str(&v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use sonde_model::flatten_event;

    fn sorted(mut f: Vec<(String, FieldValue)>) -> Vec<(String, FieldValue)> {
        f.sort_by(|a, b| a.0.cmp(&b.0));
        f
    }

    /// Fields, time and sample rate of a one-pass parse.
    type Flat = (Vec<(String, FieldValue)>, Option<Value>, Option<Value>);

    fn flat(text: &str, shape: Shape, limits: &Limits) -> Result<Flat, EventError> {
        match parse_flat(text.as_bytes(), shape, limits)? {
            Parsed::Flat {
                fields,
                time,
                samplerate,
            } => Ok((fields, time, samplerate)),
            Parsed::Tree => panic!("{text}: handed to the tree path"),
        }
    }

    /// JSON values whose keys have no dots (with dots, the two paths legitimately differ on
    /// which of two spellings of one name wins: text order here, sorted order in the tree).
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "[a-z é\"\\\\]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]{1,2}|timestamp|samplerate", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The one-pass parse finds the fields the tree path finds, for any object (the order
        /// aside), with the same outcome under tight limits.
        #[test]
        fn same_fields_as_the_tree(data in prop::collection::btree_map("[a-d]{1,2}|timestamp|samplerate", any_json(), 0..6),
                                   flatten_depth in 1usize..4, max_depth in 1usize..6, max_fields in 1usize..12) {
            let data = Value::Object(data.into_iter().collect());
            let limits = Limits { flatten_depth, max_depth, max_fields_per_event: max_fields, ..Limits::default() };
            let item = json!({"time": 5, "data": data.clone(), "samplerate": 3}).to_string();
            let tree = flatten_event(&data, &limits);
            match (flat(&item, Shape::BatchItem, &limits), tree) {
                (Ok((fields, time, rate)), Ok(expected)) => {
                    prop_assert_eq!(sorted(fields), sorted(expected));
                    prop_assert_eq!(time, Some(json!(5)));
                    prop_assert_eq!(rate, Some(json!(3)));
                }
                (Err(a), Err(b)) => prop_assert_eq!(
                    std::mem::discriminant(&a), std::mem::discriminant(&b), "{} vs {}", a, b),
                (a, b) => prop_assert!(false, "one pass {:?}, tree {:?}", a, b),
            }
        }
    }

    proptest! {
        /// Encoding straight into an `EncodedEvents` gives the event of the owned pass (fields,
        /// order, time, sample rate), takes every text the owned pass takes, and leaves nothing
        /// behind when it does not.
        #[test]
        fn encoding_gives_the_owned_event(data in prop::collection::btree_map("[a-d]{1,2}|timestamp|samplerate", any_json(), 0..6),
                                          line in any::<bool>(), max_fields in 1usize..12) {
            let data = Value::Object(data.into_iter().collect());
            let limits = Limits { max_fields_per_event: max_fields, ..Limits::default() };
            let (text, shape) = if line {
                (data.to_string(), Shape::Line)
            } else {
                (json!({"time": 5, "data": data, "samplerate": 3}).to_string(), Shape::BatchItem)
            };
            let mut enc = EncodedEvents::default();
            enc.push(&sonde_model::Event { timestamp_us: 1, sample_rate: 1, fields: vec![] });
            let before = enc.as_bytes().to_vec();
            let stored = encode_flat(Text::Bytes(text.as_bytes()), shape, &limits, 7, &mut enc);
            let owned = match parse_flat(text.as_bytes(), shape, &limits) {
                Ok(Parsed::Flat { fields, time, samplerate }) =>
                    crate::envelope::flat_event(fields, time, samplerate, 7, !line).ok(),
                _ => None,
            };
            prop_assert_eq!(stored, owned.is_some());
            match owned {
                Some(e) => prop_assert_eq!(&enc.to_events()[1..], &[e][..]),
                None => prop_assert_eq!(enc.as_bytes(), &before[..]),
            }
        }
    }

    proptest! {
        /// Events encoded one after another into one buffer, each comparing its names with the
        /// previous event's (the shortcut for events that repeat their names), come out as the
        /// owned pass gives them one by one, names reached twice included: the events share
        /// leading names, then differ, nest and repeat (`"b.c"` and `{"b": {"c": …}}`; names
        /// of one length, so that a shortcut comparing less than the whole name would show).
        #[test]
        fn events_in_a_row_encode_as_each_alone(events in prop::collection::vec(
            prop::collection::vec(("a|b|e|b\\.c|e\\.f|d\\.g", prop_oneof![
                any::<i64>().prop_map(Value::from),
                Just(json!({"c": 1})),
                Just(json!({"f": 2})),
                Just(json!("s")),
            ]), 0..6), 1..12)) {
            let limits = Limits::default();
            let mut enc = EncodedEvents::default();
            let mut expected = Vec::new();
            for pairs in &events {
                // Keys in the order drawn (a key twice in one object goes to the tree path).
                let body = pairs.iter().map(|(k, v)| format!("{}:{v}", json!(k))).collect::<Vec<_>>().join(",");
                let text = format!("{{{body}}}");
                let stored = encode_flat(Text::Str(&text), Shape::Line, &limits, 7, &mut enc);
                let owned = match parse_flat(text.as_bytes(), Shape::Line, &limits) {
                    Ok(Parsed::Flat { fields, time, samplerate }) =>
                        crate::envelope::flat_event(fields, time, samplerate, 7, false).ok(),
                    _ => None,
                };
                // Stored only as the owned pass gives it (a name reached twice, whose later value
                // wins there, is left to that pass); nothing left behind otherwise.
                if stored {
                    expected.push(owned.expect("stored, so the owned pass takes it too"));
                }
            }
            prop_assert_eq!(enc.to_events(), expected);
        }
    }

    #[test]
    fn text_times_in_a_row_each_give_their_own_time() {
        // Each time string is read into the allocation of the one before (the thread's
        // scratch); a refused event between them, stopped deep inside its data, leaves nothing
        // behind for the next.
        let limits = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        let times = [
            "2026-12-07T06:28:25.123456Z",
            "2026-12-07T06:28:25Z",
            "",
            "2026-01-01T00:00:00.5+01:00",
        ];
        let mut enc = EncodedEvents::default();
        for (i, t) in times.iter().enumerate() {
            let refused = json!({"time": "2030-01-01T00:00:00Z", "data": {"x": {"y": {"z": {"w": 1}}}}}).to_string();
            assert!(!encode_flat(
                Text::Str(&refused),
                Shape::BatchItem,
                &limits,
                7,
                &mut enc
            ));
            let text = json!({"time": t, "data": {"i": i, "n": {"m": "v"}}}).to_string();
            assert!(
                encode_flat(Text::Str(&text), Shape::BatchItem, &limits, 7, &mut enc),
                "{text}"
            );
        }
        let events = enc.to_events();
        let got: Vec<i64> = events.iter().map(|e| e.timestamp_us).collect();
        let want: Vec<i64> = times
            .iter()
            .map(|t| {
                if t.is_empty() {
                    7
                } else {
                    sonde_model::time::parse_time_str(t).unwrap()
                }
            })
            .collect();
        assert_eq!(got, want);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.fields,
                vec![
                    ("i".to_string(), FieldValue::Int(i as i64)),
                    ("n.m".to_string(), FieldValue::Str("v".into()))
                ]
            );
        }
    }

    #[test]
    fn a_name_reached_twice_is_one_field_in_wide_events_too() {
        // Past SCAN_FIELDS fields names are found through a map; the repeat comes after.
        let limits = Limits::default();
        let mut text = String::from(r#"{"data":{"a.b":1,"g.x":1"#);
        for i in 0..2 * SCAN_FIELDS {
            text.push_str(&format!(r#","f{i}":{i}"#));
        }
        text.push_str(r#","a":{"b":2},"g":{"x":2}}}"#);
        let (fields, ..) = flat(&text, Shape::BatchItem, &limits).unwrap();
        assert_eq!(fields.len(), 2 + 2 * SCAN_FIELDS);
        assert_eq!(fields[0], ("a.b".into(), FieldValue::Int(2)));
        assert_eq!(fields[1], ("g.x".into(), FieldValue::Int(2)));
        // The tree finds the same names (its spelling rule differs: sorted order, not text order).
        let tree: Value = serde_json::from_str(&text).unwrap();
        let names = |f: Vec<(String, FieldValue)>| sorted(f).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(names(fields), names(flatten_event(&tree["data"], &limits).unwrap()));
    }

    #[test]
    fn lines_take_their_envelope_out() {
        let limits = Limits::default();
        let (fields, time, rate) = flat(
            r#"{"a":{"b":1,"c":{}},"timestamp":"2026-01-01T00:00:00Z","time":7,"samplerate":4,"s":"x"}"#,
            Shape::Line,
            &limits,
        )
        .unwrap();
        assert_eq!(time, Some(json!("2026-01-01T00:00:00Z")), "timestamp before time");
        assert_eq!(rate, Some(json!(4)));
        assert_eq!(
            fields,
            vec![
                ("a.b".into(), FieldValue::Int(1)),
                ("a.c".into(), FieldValue::Str("{}".into())),
                ("s".into(), FieldValue::Str("x".into())),
                ("time".into(), FieldValue::Int(7)),
            ],
            "in the order sent; `time` stays a field beside `timestamp`"
        );
    }

    #[test]
    fn later_spelling_of_a_name_wins_and_reserved_names_move() {
        let limits = Limits::default();
        let (fields, ..) = flat(
            r#"{"data":{"a.b":1,"a":{"b":2},"timestamp":3,"x":2}}"#,
            Shape::BatchItem,
            &limits,
        )
        .unwrap();
        assert_eq!(
            fields,
            vec![
                ("a.b".into(), FieldValue::Int(2)),
                ("data.timestamp".into(), FieldValue::Int(3)),
                ("x".into(), FieldValue::Int(2)),
            ]
        );
    }

    #[test]
    fn what_it_does_not_take_goes_to_the_tree() {
        let limits = Limits::default();
        for text in [
            "[1]",
            "3",
            r#"{"data":{"a":1},"data":{"b":2}}"#,
            r#"{"data":{"z":{"a":1},"z":{"b":2}}}"#,
            r#"{"data":{"a":1,"a":2}}"#,
        ] {
            assert!(
                matches!(parse_flat(text.as_bytes(), Shape::BatchItem, &limits), Ok(Parsed::Tree)),
                "{text}"
            );
        }
        for (text, msg) in [
            (r#"{"data":[1]}"#, "got an array"),
            (r#"{"time":1}"#, "got null"),
            (r#"{"data":{"":1}}"#, "must not be empty"),
            (r#"{"data":{"a":1}"#, "EOF"),
            (r#"{"data":{"a":1}} x"#, "trailing"),
        ] {
            let e = parse_flat(text.as_bytes(), Shape::BatchItem, &limits)
                .unwrap_err()
                .to_string();
            assert!(e.contains(msg), "{text}: {e}");
        }
        // Regression from `make fuzz` (events_json): invalid UTF-8 under a key the item does not
        // use was skipped unchecked, while the tree path refused the item.
        let e = parse_flat(b"{\"data\":{\"a\":1},\"x\":{\"\xe5\":1}}", Shape::BatchItem, &limits).unwrap_err();
        assert!(e.to_string().contains("invalid UTF-8"), "{e}");
    }
}

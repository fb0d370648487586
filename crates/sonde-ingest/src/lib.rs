//! Request bytes → events: every way an event reaches Sonde, decoded with no I/O.
//!
//! ```text
//! body ──decompress──▶ plain bytes ──┬─ json     Honeycomb batch (split, then one pass per item)
//!                                    ├─ msgpack  Honeycomb batch / single event in msgpack
//!                                    ├─ ndjson   one object per line
//!                                    └─ otlp     OTLP traces and logs (protobuf or JSON messages)
//!                                              ▼
//!                     envelope: the one rule for time and sample rate
//!                                              ▼
//!                     sonde_model::flatten_event under the Limits → Event
//! ```
//!
//! JSON batches and NDJSON lines take a shorter road: flattened in one pass straight into
//! [`EncodedEvents`] ([`onepass::encode_flat`], collected in an [`EncodedBatch`]), with the
//! `Event` path above as the fallback that also words every refusal.
//!
//! Each decoder isolates events: one bad event gets its own [`EventError`] and the others are
//! kept; only a body that cannot be read as a whole (not an array, bad compression, over the
//! body limit) is a [`BodyError`]. Nothing here knows HTTP, storage or DataFusion, so the
//! fuzz targets build against this crate and `sonde-model` alone.

pub mod decompress;
pub mod envelope;
pub mod json;
pub mod msgpack;
pub mod ndjson;
pub mod onepass;
pub mod otlp;

pub use decompress::decompress;
pub use sonde_model::{EncodedEvents, Event, EventError, Limits};

/// The outcome of decoding a multi-event body: one entry per input event, in input order.
pub type Decoded = Vec<Result<Event, EventError>>;

/// A decoded multi-event body with its good events encoded (no allocation per field).
#[derive(Debug, Default)]
pub struct EncodedBatch {
    /// The events kept, in input order.
    pub events: EncodedEvents,
    /// One entry per input event, in input order: why it was refused, or `None` (kept).
    pub refusals: Vec<Option<EventError>>,
}

impl EncodedBatch {
    /// Adds the next input's outcome: its event encoded, or its refusal.
    pub fn push(&mut self, outcome: Result<Event, EventError>) {
        match outcome {
            Ok(e) => {
                self.events.push(&e);
                self.refusals.push(None);
            }
            Err(e) => self.refusals.push(Some(e)),
        }
    }

    /// Decodes the next input with [`onepass::encode_flat`] where it can, else by `owned`
    /// (the path that takes every input and gives refusals their message).
    pub fn decode(
        &mut self,
        raw: onepass::Text<'_>,
        shape: onepass::Shape,
        limits: &Limits,
        now_us: i64,
        owned: impl FnOnce() -> Result<Event, EventError>,
    ) {
        if onepass::encode_flat(raw, shape, limits, now_us, &mut self.events) {
            self.refusals.push(None);
        } else {
            self.push(owned());
        }
    }

    /// The same outcomes with owned events.
    pub fn into_decoded(self) -> Decoded {
        let mut events = self.events.to_events().into_iter();
        self.refusals
            .into_iter()
            .map(|r| match r {
                None => Ok(events.next().expect("one event per kept input")),
                Some(e) => Err(e),
            })
            .collect()
    }
}

impl From<Decoded> for EncodedBatch {
    fn from(decoded: Decoded) -> Self {
        let mut out = EncodedBatch::default();
        for r in decoded {
            out.push(r);
        }
        out
    }
}

/// Why a whole request body could not be decoded (as opposed to one event in it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    /// The body, on the wire or once inflated, is larger than the body limit.
    #[error(
        "request body of {size}+ bytes exceeds the limit of {limit} bytes (set with --max-body-bytes / SONDE_MAX_BODY_BYTES)"
    )]
    TooLarge {
        /// Bytes seen before giving up (at least this many).
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A `Content-Encoding` this server does not undo.
    #[error("unsupported Content-Encoding {0:?}: use gzip, zstd or none")]
    UnsupportedEncoding(String),
    /// The body is not of the shape its endpoint takes (with why).
    #[error("{0}")]
    Malformed(String),
}

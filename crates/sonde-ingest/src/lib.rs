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
pub use sonde_model::{Event, EventError, Limits};

/// The outcome of decoding a multi-event body: one entry per input event, in input order.
pub type Decoded = Vec<Result<Event, EventError>>;

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

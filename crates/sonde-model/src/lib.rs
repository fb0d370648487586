//! Sonde's event model: what an event is once it has been accepted, before any I/O.
//!
//! Data flows through this crate like this: a decoder (JSON, msgpack, NDJSON, OTLP — in the
//! `sonde-ingest` crate) produces a `serde_json::Value` per event plus its time and sample rate;
//! [`flatten::flatten_event`] checks it against the [`Limits`] and turns nested objects into
//! dotted field names with one [`FieldValue`] each; the storage crate then appends the
//! resulting [`Event`] to a dataset whose columns each have one [`ColumnType`] on the widening
//! lattice `bool < int < float < string`. On the hot path (JSON batches and NDJSON) no `Event`
//! is made: the decoder flattens straight into [`EncodedEvents`], the layout the WAL stores and
//! the write buffer reads in place.
//!
//! [`spec`] is Honeycomb's query specification and its validation into a plan: the contract
//! the UI, the API, the engine (and later triggers and SLOs) share, with no engine in it.
//!
//! Nothing here touches the disk or the network, so all of it is property-tested.

pub mod dataset;
pub mod definitions;
pub mod derived;
pub mod encoded;
pub mod flatten;
pub mod spec;
pub mod time;
pub mod trace;
pub mod value;

pub use dataset::DatasetName;
pub use encoded::EncodedEvents;
pub use flatten::{Limits, flatten_event};
pub use value::{ColumnType, FieldValue, ValueRef};

/// The reserved column holding each event's time, in microseconds since the Unix epoch (UTC).
pub const TIMESTAMP_COLUMN: &str = "timestamp";
/// The reserved column holding each event's sample rate (1 = unsampled).
pub const SAMPLE_RATE_COLUMN: &str = "samplerate";

/// Whether `name` is one of the reserved columns (`timestamp`, `samplerate`).
pub fn is_reserved_name(name: &str) -> bool {
    name == TIMESTAMP_COLUMN || name == SAMPLE_RATE_COLUMN
}

/// FNV-1a of `bytes`: fixed across builds, platforms and runs (std's hasher promises none of
/// these), for hashes that are stored or compared between nodes.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Rendezvous (highest-random-weight) hashing: the weight of `node` for `key`. The node with
/// the highest weight takes the key (a cluster's new dataset, a scan's task), and adding or
/// removing a node moves only the keys it wins or held. FNV-1a and a final mix: fixed across
/// builds, so every node of a cluster, even mid-upgrade, ranks alike.
pub fn rendezvous_weight(node: &str, key: &str) -> u64 {
    let h = fnv1a(node.bytes().chain([0]).chain(key.bytes()));
    // A final mix, so that names differing in one byte do not weigh alike.
    let h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// One accepted event: its time, its sample rate and its flattened fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event time in microseconds since the Unix epoch (UTC).
    pub timestamp_us: i64,
    /// How many events this one stands for (Honeycomb's sample rate); at least 1.
    pub sample_rate: i64,
    /// Flattened fields, in first-seen order, names unique.
    pub fields: Vec<(String, FieldValue)>,
}

/// Why an event (or a whole request) was refused. Every variant names the limit or the field
/// so that the client can act on it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    /// The event is not a JSON object.
    #[error("event must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// A limit from [`Limits`] was exceeded.
    #[error("{what}: over the limit of {limit} (set with {name})")]
    Limit {
        /// What exceeded the limit, with its value ("event has more than 2000 fields").
        what: String,
        /// The limit's value.
        limit: usize,
        /// The flag and environment variable that set the limit (`--max-fields /
        /// SONDE_MAX_FIELDS`), so the message says what to change.
        name: &'static str,
    },
    /// A time value could not be understood.
    #[error("invalid time {0:?}: expected RFC3339 or epoch seconds/ms/µs/ns")]
    BadTime(String),
    /// A sample rate could not be understood.
    #[error("invalid samplerate {0:?}: expected a positive integer")]
    BadSampleRate(String),
    /// The dataset name is not acceptable.
    #[error("invalid dataset name {name:?}: {reason}")]
    BadDataset {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The JSON text of the event could not be parsed.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// A field name is not acceptable.
    #[error("invalid field name {name:?}: {reason}")]
    BadField {
        /// The name (with its parent's path).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

//! End-to-end tests against the real `sonde` binary over HTTP on a loopback port.
//!
//! One test binary for the whole workspace (every test binary links DataFusion): each module
//! is one area of behaviour.

mod fixtures;
mod harness;

mod auth;
mod bad_input;
mod bubbleup_traces;
mod crash;
mod derived_api;
mod derived_diff;
mod faults;
mod ingest_e2e;
mod lifecycle;
mod load;
mod memory_bound;
mod object_store;
mod otlp_http;
mod precomputed;
mod query_api;
mod query_diff;
mod relational;
mod saved_objects;
mod slos;
mod trace_shapes;
mod triggers;
mod type_conflict;

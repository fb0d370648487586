//! OTLP traces and logs, protobuf and JSON, through Honeycomb's mapping to events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sonde_ingest::otlp::{Mapped, map_logs, map_traces};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let limits = common::limits();
    let check = |m: Mapped| {
        for events in m.datasets.values() {
            for e in events {
                common::check_event(e, &limits);
            }
        }
    };
    if let Ok(req) = ExportTraceServiceRequest::decode(data) {
        check(map_traces(&req, None, &limits));
    }
    if let Ok(req) = ExportLogsServiceRequest::decode(data) {
        check(map_logs(&req, None, &limits, 0));
    }
    if let Ok(req) = serde_json::from_slice::<ExportTraceServiceRequest>(data) {
        check(map_traces(&req, None, &limits));
    }
    if let Ok(req) = serde_json::from_slice::<ExportLogsServiceRequest>(data) {
        check(map_logs(&req, None, &limits, 0));
    }
});

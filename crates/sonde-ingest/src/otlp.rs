//! OpenTelemetry requests (traces and logs) mapped to events the way Honeycomb maps them.
//!
//! One event per span (`trace.trace_id`, `trace.span_id`, `trace.parent_id`, `name`,
//! `span.kind`, `duration_ms`, `status_code`, `error`, `status_message`, `span.num_events`,
//! `span.num_links`, `meta.signal_type`, then resource attributes, `library.name` /
//! `library.version`, span attributes), one per span event (`meta.annotation_type =
//! span_event`) and per link (`link`), one per log record. The dataset is the resource's
//! `service.name` (`unknown_service` when absent or `unknown_service:*`) unless the
//! `x-honeycomb-dataset` header names one. A `SampleRate` / `sampleRate` attribute becomes the
//! event's sample rate. Each event is flattened and checked against the limits on its own; the
//! rejected ones are counted in OTLP's `partial_success`, the others kept.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode as SpanStatus};
use serde_json::{Map, Value, json};
use sonde_model::{DatasetName, Event, EventError, Limits, flatten_event};
use std::collections::BTreeMap;

/// Events mapped from one OTLP request, by dataset, with the records that were refused.
#[derive(Debug, Default)]
pub struct Mapped {
    /// Accepted events per dataset, in request order.
    pub datasets: BTreeMap<DatasetName, Vec<Event>>,
    /// Records refused (bad data or over a limit).
    pub rejected: i64,
    /// The first few reasons, for `partial_success.error_message`.
    pub errors: Vec<String>,
}

impl Mapped {
    fn push(&mut self, dataset: &DatasetName, data: Map<String, Value>, time_us: i64, rate: i64, limits: &Limits) {
        let event = flatten_event(&Value::Object(data), limits).and_then(|fields| {
            let event = Event {
                timestamp_us: time_us,
                sample_rate: rate,
                fields,
            };
            // The limit every other ingest path applies (and a span passed on to another node
            // of a cluster meets there).
            limits.check_event_bytes(sonde_model::encoded::encoded_size(&event))?;
            Ok(event)
        });
        match event {
            Ok(event) => self.datasets.entry(dataset.clone()).or_default().push(event),
            Err(e) => self.reject(e),
        }
    }

    fn reject(&mut self, e: EventError) {
        self.rejected += 1;
        if self.errors.len() < 5 {
            self.errors.push(e.to_string());
        }
    }
}

/// Lowercase hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An attribute value as JSON: key-value lists become objects (flattened to dotted names),
/// arrays stay arrays (kept as JSON text), bytes become hex.
pub fn any_value(v: &AnyValue) -> Value {
    match &v.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(f)) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(any_value).collect()),
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(attributes(&kv.values)),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex(b)),
        // A string-table index only means something inside a profiles payload.
        Some(any_value::Value::StringValueStrindex(i)) => Value::from(*i),
    }
}

fn attributes(kvs: &[KeyValue]) -> Map<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, any_value)))
        .collect()
}

/// The dataset for a resource: the override, else its `service.name` made into a valid dataset
/// name, else `unknown_service`.
pub fn dataset_for(resource: &Map<String, Value>, dataset_override: Option<&DatasetName>) -> DatasetName {
    if let Some(d) = dataset_override {
        return d.clone();
    }
    let unknown = || DatasetName::new("unknown_service").expect("valid");
    let Some(name) = resource.get("service.name").and_then(|v| v.as_str()) else {
        return unknown();
    };
    if name.is_empty() || name.starts_with("unknown_service") {
        return unknown();
    }
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .chars()
        .take(sonde_model::dataset::MAX_DATASET_NAME_LEN)
        .collect();
    DatasetName::new(&cleaned).unwrap_or_else(|_| unknown())
}

/// Takes the `SampleRate` / `sampleRate` attribute out of the data as the event's sample rate.
fn take_sample_rate(data: &mut Map<String, Value>) -> i64 {
    let mut rate = 1;
    for key in ["SampleRate", "sampleRate"] {
        if let Some(v) = data.remove(key) {
            rate = crate::envelope::parse_sample_rate(&v).unwrap_or(1);
        }
    }
    rate
}

fn scope_fields(data: &mut Map<String, Value>, scope: Option<&InstrumentationScope>) {
    if let Some(s) = scope {
        if !s.name.is_empty() {
            data.insert("library.name".into(), json!(s.name));
        }
        if !s.version.is_empty() {
            data.insert("library.version".into(), json!(s.version));
        }
    }
}

fn span_kind(k: i32) -> &'static str {
    match SpanKind::try_from(k).unwrap_or(SpanKind::Unspecified) {
        SpanKind::Unspecified => "unspecified",
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

fn ns_to_us(ns: u64) -> i64 {
    (ns / 1000) as i64
}

fn map_span(
    out: &mut Mapped,
    ds: &DatasetName,
    resource: &Map<String, Value>,
    scope: Option<&InstrumentationScope>,
    span: &Span,
    limits: &Limits,
) {
    let mut data = resource.clone();
    scope_fields(&mut data, scope);
    data.extend(attributes(&span.attributes));
    let rate = take_sample_rate(&mut data);
    let trace_id = hex(&span.trace_id);
    let span_id = hex(&span.span_id);
    data.insert("trace.trace_id".into(), json!(trace_id));
    data.insert("trace.span_id".into(), json!(span_id));
    if !span.parent_span_id.is_empty() {
        data.insert("trace.parent_id".into(), json!(hex(&span.parent_span_id)));
    }
    data.insert("name".into(), json!(span.name));
    data.insert("span.kind".into(), json!(span_kind(span.kind)));
    let duration_ns = span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano);
    data.insert("duration_ms".into(), json!(duration_ns as f64 / 1e6));
    let (code, message) = span.status.as_ref().map_or((0, ""), |s| (s.code, s.message.as_str()));
    data.insert("status_code".into(), json!(code));
    data.insert("error".into(), json!(code == SpanStatus::Error as i32));
    if !message.is_empty() {
        data.insert("status_message".into(), json!(message));
    }
    data.insert("span.num_events".into(), json!(span.events.len()));
    data.insert("span.num_links".into(), json!(span.links.len()));
    data.insert("meta.signal_type".into(), json!("trace"));
    out.push(ds, data, ns_to_us(span.start_time_unix_nano), rate, limits);

    for ev in &span.events {
        let mut data = resource.clone();
        scope_fields(&mut data, scope);
        data.extend(attributes(&ev.attributes));
        data.insert("trace.trace_id".into(), json!(trace_id));
        data.insert("trace.parent_id".into(), json!(span_id));
        data.insert("name".into(), json!(ev.name));
        data.insert("parent_name".into(), json!(span.name));
        data.insert("meta.annotation_type".into(), json!("span_event"));
        data.insert("meta.signal_type".into(), json!("trace"));
        data.insert("duration_ms".into(), json!(0.0));
        out.push(ds, data, ns_to_us(ev.time_unix_nano), rate, limits);
    }
    for link in &span.links {
        let mut data = resource.clone();
        scope_fields(&mut data, scope);
        data.extend(attributes(&link.attributes));
        data.insert("trace.trace_id".into(), json!(trace_id));
        data.insert("trace.parent_id".into(), json!(span_id));
        data.insert("trace.link.trace_id".into(), json!(hex(&link.trace_id)));
        data.insert("trace.link.span_id".into(), json!(hex(&link.span_id)));
        data.insert("parent_name".into(), json!(span.name));
        data.insert("meta.annotation_type".into(), json!("link"));
        data.insert("meta.signal_type".into(), json!("trace"));
        out.push(ds, data, ns_to_us(span.start_time_unix_nano), rate, limits);
    }
}

/// Maps an OTLP traces request to events.
pub fn map_traces(req: &ExportTraceServiceRequest, dataset_override: Option<&DatasetName>, limits: &Limits) -> Mapped {
    let mut out = Mapped::default();
    for rs in &req.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let ds = dataset_for(&resource, dataset_override);
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                map_span(&mut out, &ds, &resource, ss.scope.as_ref(), span, limits);
            }
        }
    }
    out
}

/// The severity name of an OTLP severity number.
fn severity_name(n: i32) -> &'static str {
    match n {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => "unspecified",
    }
}

/// Maps an OTLP logs request to events.
pub fn map_logs(
    req: &ExportLogsServiceRequest,
    dataset_override: Option<&DatasetName>,
    limits: &Limits,
    now_us: i64,
) -> Mapped {
    let mut out = Mapped::default();
    for rl in &req.resource_logs {
        let resource = rl
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let ds = dataset_for(&resource, dataset_override);
        for sl in &rl.scope_logs {
            for log in &sl.log_records {
                let mut data = resource.clone();
                scope_fields(&mut data, sl.scope.as_ref());
                data.extend(attributes(&log.attributes));
                let rate = take_sample_rate(&mut data);
                let severity = if log.severity_text.is_empty() {
                    severity_name(log.severity_number).to_string()
                } else {
                    log.severity_text.to_ascii_lowercase()
                };
                data.insert("severity".into(), json!(severity));
                if !log.severity_text.is_empty() {
                    data.insert("severity_text".into(), json!(log.severity_text));
                }
                data.insert("severity_code".into(), json!(log.severity_number));
                if let Some(body) = &log.body {
                    data.insert("body".into(), any_value(body));
                }
                if !log.trace_id.is_empty() {
                    data.insert("trace.trace_id".into(), json!(hex(&log.trace_id)));
                }
                if !log.span_id.is_empty() {
                    data.insert("trace.parent_id".into(), json!(hex(&log.span_id)));
                }
                if !log.event_name.is_empty() {
                    data.insert("name".into(), json!(log.event_name));
                }
                data.insert("meta.signal_type".into(), json!("log"));
                let t = if log.time_unix_nano > 0 {
                    log.time_unix_nano
                } else {
                    log.observed_time_unix_nano
                };
                let time_us = if t > 0 { ns_to_us(t) } else { now_us };
                out.push(&ds, data, time_us, rate, limits);
            }
        }
    }
    out
}

/// An OTLP signal Sonde stores (traces, logs): its export request and response messages and
/// its mapping, so the transports (OTLP/HTTP in protobuf or JSON, OTLP/gRPC) are written once.
pub trait Signal: Send + Sync + 'static {
    /// The export request (`ExportTraceServiceRequest`, …).
    type Request: prost::Message + Default + serde::de::DeserializeOwned + Send + 'static;
    /// The export response.
    type Response: prost::Message + Default + Send + 'static;
    /// Maps a request to events (`now_us` stands in for records without a time).
    fn map(req: &Self::Request, dataset_override: Option<&DatasetName>, limits: &Limits, now_us: i64) -> Mapped;
    /// The response to a request some of whose records were refused (`None`: none were), and
    /// the same in OTLP/JSON (whose 64-bit counts are strings).
    fn respond(refused: Option<(i64, String)>) -> (Self::Response, Value);
}

/// OTLP traces: one event per span, span event and link.
#[derive(Debug)]
pub struct Traces;

/// OTLP logs: one event per log record.
#[derive(Debug)]
pub struct Logs;

impl Signal for Traces {
    type Request = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;
    fn map(req: &Self::Request, dataset_override: Option<&DatasetName>, limits: &Limits, _now_us: i64) -> Mapped {
        map_traces(req, dataset_override, limits)
    }
    fn respond(refused: Option<(i64, String)>) -> (Self::Response, Value) {
        let json = refused.as_ref().map_or(
            json!({}),
            |(n, msg)| json!({"partialSuccess": {"rejectedSpans": n.to_string(), "errorMessage": msg}}),
        );
        let partial_success = refused.map(|(rejected_spans, error_message)| ExportTracePartialSuccess {
            rejected_spans,
            error_message,
        });
        (ExportTraceServiceResponse { partial_success }, json)
    }
}

impl Signal for Logs {
    type Request = ExportLogsServiceRequest;
    type Response = ExportLogsServiceResponse;
    fn map(req: &Self::Request, dataset_override: Option<&DatasetName>, limits: &Limits, now_us: i64) -> Mapped {
        map_logs(req, dataset_override, limits, now_us)
    }
    fn respond(refused: Option<(i64, String)>) -> (Self::Response, Value) {
        let json = refused.as_ref().map_or(
            json!({}),
            |(n, msg)| json!({"partialSuccess": {"rejectedLogRecords": n.to_string(), "errorMessage": msg}}),
        );
        let partial_success = refused.map(|(rejected_log_records, error_message)| ExportLogsPartialSuccess {
            rejected_log_records,
            error_message,
        });
        (ExportLogsServiceResponse { partial_success }, json)
    }
}

impl Mapped {
    /// The refused records' count and first reasons, if any were refused.
    pub fn refused(&self) -> Option<(i64, String)> {
        (self.rejected > 0).then(|| (self.rejected, self.errors.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn testdata(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/otlp")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Mapped events as JSON, in the shape of `testdata/otlp/expected_*.json`.
    fn as_json(m: &Mapped) -> Value {
        let mut out = Vec::new();
        for (ds, events) in &m.datasets {
            for e in events {
                let fields: Map<String, Value> = e.fields.iter().map(|(n, v)| (n.clone(), v.to_json())).collect();
                out.push(json!({"dataset": ds.as_str(), "timestamp_us": e.timestamp_us, "sample_rate": e.sample_rate, "fields": fields}));
            }
        }
        Value::Array(out)
    }

    #[test]
    fn golden_traces_protobuf_and_json_map_to_the_expected_events() {
        let want: Value = serde_json::from_slice(&testdata("expected_traces.json")).unwrap();
        let pb = ExportTraceServiceRequest::decode(testdata("traces.pb").as_slice()).unwrap();
        let js: ExportTraceServiceRequest = serde_json::from_slice(&testdata("traces.json")).unwrap();
        for req in [pb, js] {
            let m = map_traces(&req, None, &Limits::default());
            assert_eq!(m.rejected, 0);
            assert_eq!(as_json(&m), want);
        }
    }

    #[test]
    fn golden_logs_protobuf_and_json_map_to_the_expected_events() {
        let want: Value = serde_json::from_slice(&testdata("expected_logs.json")).unwrap();
        let pb = ExportLogsServiceRequest::decode(testdata("logs.pb").as_slice()).unwrap();
        let js: ExportLogsServiceRequest = serde_json::from_slice(&testdata("logs.json")).unwrap();
        for req in [pb, js] {
            let m = map_logs(&req, None, &Limits::default(), 0);
            assert_eq!(m.rejected, 0);
            assert_eq!(as_json(&m), want);
        }
    }

    #[test]
    fn bad_spans_are_rejected_alone_and_datasets_follow_the_header() {
        let mut req: ExportTraceServiceRequest = serde_json::from_slice(&testdata("traces.json")).unwrap();
        let span = &mut req.resource_spans[0].scope_spans[0].spans[0];
        span.attributes.push(KeyValue {
            key: "huge".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("x".repeat(100_000))),
            }),
            ..Default::default()
        });
        let ds = DatasetName::new("Override").unwrap();
        let m = map_traces(&req, Some(&ds), &Limits::default());
        assert_eq!(m.rejected, 1);
        assert!(m.errors[0].contains("--max-string-len"), "{:?}", m.errors);
        assert_eq!(
            m.datasets.keys().map(|d| d.as_str()).collect::<Vec<_>>(),
            vec!["override"]
        );
        assert_eq!(m.datasets[&ds].len(), 3);
    }

    /// A span whose fields are each within their limits but whose whole is over
    /// `max_event_bytes` is refused, as every other ingest path refuses it.
    #[test]
    fn a_span_over_the_event_size_limit_is_refused_alone() {
        let mut req: ExportTraceServiceRequest = serde_json::from_slice(&testdata("traces.json")).unwrap();
        let span = &mut req.resource_spans[0].scope_spans[0].spans[0];
        for i in 0..4 {
            span.attributes.push(KeyValue {
                key: format!("pad{i}"),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("x".repeat(5_000))),
                }),
                ..Default::default()
            });
        }
        let all = map_traces(&req, None, &Limits::default());
        let limits = Limits {
            max_event_bytes: 16_000,
            ..Limits::default()
        };
        let m = map_traces(&req, None, &limits);
        assert_eq!((all.rejected, m.rejected), (0, 1));
        assert!(m.errors[0].contains("--max-event-bytes"), "{:?}", m.errors);
        let count = |m: &Mapped| m.datasets.values().map(Vec::len).sum::<usize>();
        assert_eq!(count(&m), count(&all) - 1);
    }

    #[test]
    fn service_names_become_valid_datasets() {
        let ds = |s: &str| dataset_for(&serde_json::from_value(json!({"service.name": s})).unwrap(), None).to_string();
        assert_eq!(ds("Checkout API/v2"), "checkout_api_v2");
        assert_eq!(ds("unknown_service:java"), "unknown_service");
        assert_eq!(ds(""), "unknown_service");
        assert_eq!(dataset_for(&Map::new(), None).as_str(), "unknown_service");
    }
}

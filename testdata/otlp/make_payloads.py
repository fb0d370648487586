"""Writes the golden OTLP payloads (protobuf and JSON) from one description, with the official
protobuf classes of the `opentelemetry-proto` package. Run with the clients' virtualenv:
    ~/.cache/sonde-clients-venv/bin/python testdata/otlp/make_payloads.py
The expected events (expected_*.json) are written by hand, not by this script."""

import json
import os

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

HERE = os.path.dirname(os.path.abspath(__file__))
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
ROOT = bytes.fromhex("b7ad6b7169203331")
CHILD = bytes.fromhex("00f067aa0ba902b7")
OTHER_TRACE = bytes.fromhex("11111111111111112222222222222222")
OTHER_SPAN = bytes.fromhex("3333333333333333")
T = 1_764_064_800_000_000_000  # 2025-11-25T10:00:00Z in ns


def kv(key, value):
    if isinstance(value, bool):
        v = AnyValue(bool_value=value)
    elif isinstance(value, int):
        v = AnyValue(int_value=value)
    elif isinstance(value, float):
        v = AnyValue(double_value=value)
    elif isinstance(value, str):
        v = AnyValue(string_value=value)
    elif isinstance(value, list):
        v = AnyValue(array_value=ArrayValue(values=[kv("x", x).value for x in value]))
    elif isinstance(value, dict):
        v = AnyValue(kvlist_value=KeyValueList(values=[kv(k, x) for k, x in value.items()]))
    return KeyValue(key=key, value=v)


def any_json(v):
    if v.HasField("string_value"):
        return {"stringValue": v.string_value}
    if v.HasField("bool_value"):
        return {"boolValue": v.bool_value}
    if v.HasField("int_value"):
        return {"intValue": str(v.int_value)}
    if v.HasField("double_value"):
        return {"doubleValue": v.double_value}
    if v.HasField("array_value"):
        return {"arrayValue": {"values": [any_json(x) for x in v.array_value.values]}}
    if v.HasField("kvlist_value"):
        return {"kvlistValue": {"values": [kv_json(x) for x in v.kvlist_value.values]}}
    raise ValueError(v)


def kv_json(k):
    return {"key": k.key, "value": any_json(k.value)}


resource = Resource(attributes=[kv("service.name", "golden-svc"), kv("k8s.pod.name", "golden-7f9c")])
scope = InstrumentationScope(name="golden.lib", version="1.0.0")
root = Span(
    trace_id=TRACE, span_id=ROOT, name="GET /orders", kind=Span.SPAN_KIND_SERVER,
    start_time_unix_nano=T, end_time_unix_nano=T + 12_500_000,
    attributes=[kv("http.method", "GET"), kv("http.status_code", 200), kv("SampleRate", 3), kv("tags", ["a", "b"]),
                kv("request", {"size": 512, "user": {"id": "u1"}})],
    status=Status(code=Status.STATUS_CODE_OK),
)
child = Span(
    trace_id=TRACE, span_id=CHILD, parent_span_id=ROOT, name="SELECT orders", kind=Span.SPAN_KIND_CLIENT,
    start_time_unix_nano=T + 1_000_000, end_time_unix_nano=T + 9_250_000,
    attributes=[kv("db.system", "postgresql"), kv("db.rows", 42), kv("ratio", 0.25)],
    status=Status(code=Status.STATUS_CODE_ERROR, message="deadlock detected"),
    events=[Span.Event(time_unix_nano=T + 5_000_000, name="exception", attributes=[kv("exception.type", "Deadlock")])],
    links=[Span.Link(trace_id=OTHER_TRACE, span_id=OTHER_SPAN, attributes=[kv("link.reason", "retry-of")])],
)
traces = ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(scope=scope, spans=[root, child])])])

logs = ExportLogsServiceRequest(resource_logs=[ResourceLogs(
    resource=Resource(attributes=[kv("service.name", "unknown_service:python")]),
    scope_logs=[ScopeLogs(scope=scope, log_records=[
        LogRecord(time_unix_nano=T + 2_000_000, severity_number=17, severity_text="ERROR", body=AnyValue(string_value="payment failed"),
                  attributes=[kv("order.id", "o-9")], trace_id=TRACE, span_id=CHILD),
        LogRecord(observed_time_unix_nano=T + 3_000_000, severity_number=9,
                  body=AnyValue(kvlist_value=KeyValueList(values=[kv("event", "checkout"), kv("items", 2)]))),
    ])],
)])


def span_json(s):
    out = {
        "traceId": s.trace_id.hex(), "spanId": s.span_id.hex(), "name": s.name, "kind": s.kind,
        "startTimeUnixNano": str(s.start_time_unix_nano), "endTimeUnixNano": str(s.end_time_unix_nano),
        "attributes": [kv_json(a) for a in s.attributes], "status": {"code": s.status.code},
    }
    if s.parent_span_id:
        out["parentSpanId"] = s.parent_span_id.hex()
    if s.status.message:
        out["status"]["message"] = s.status.message
    if s.events:
        out["events"] = [{"timeUnixNano": str(e.time_unix_nano), "name": e.name, "attributes": [kv_json(a) for a in e.attributes]} for e in s.events]
    if s.links:
        out["links"] = [{"traceId": l.trace_id.hex(), "spanId": l.span_id.hex(), "attributes": [kv_json(a) for a in l.attributes]} for l in s.links]
    return out


traces_json = {"resourceSpans": [{
    "resource": {"attributes": [kv_json(a) for a in resource.attributes]},
    "scopeSpans": [{"scope": {"name": scope.name, "version": scope.version}, "spans": [span_json(root), span_json(child)]}],
}]}


def log_json(r):
    out = {"severityNumber": r.severity_number, "body": any_json(r.body), "attributes": [kv_json(a) for a in r.attributes]}
    if r.time_unix_nano:
        out["timeUnixNano"] = str(r.time_unix_nano)
    if r.observed_time_unix_nano:
        out["observedTimeUnixNano"] = str(r.observed_time_unix_nano)
    if r.severity_text:
        out["severityText"] = r.severity_text
    if r.trace_id:
        out["traceId"] = r.trace_id.hex()
        out["spanId"] = r.span_id.hex()
    return out


rl = logs.resource_logs[0]
logs_json = {"resourceLogs": [{
    "resource": {"attributes": [kv_json(a) for a in rl.resource.attributes]},
    "scopeLogs": [{"scope": {"name": scope.name, "version": scope.version}, "logRecords": [log_json(r) for r in rl.scope_logs[0].log_records]}],
}]}

for name, msg, js in [("traces", traces, traces_json), ("logs", logs, logs_json)]:
    with open(os.path.join(HERE, f"{name}.pb"), "wb") as f:
        f.write(msg.SerializeToString())
    with open(os.path.join(HERE, f"{name}.json"), "w") as f:
        json.dump(js, f, indent=1)
        f.write("\n")

"""The OpenTelemetry Python SDK, unmodified, exporting to Sonde over OTLP/HTTP and OTLP/gRPC."""

import logging
import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

from conftest import eventually


def emit_trace(exporter, service):
    """Nested spans with attributes, an event, a link and an error; returns what the SDK recorded."""
    provider = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "test"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("sonde.tests", "1.2.3")
    with tracer.start_as_current_span("warmup") as other:
        pass
    attrs = {"http.method": "POST", "http.status_code": 200, "cart.items": 3, "SampleRate": 5, "tags": ["a", "b"]}
    with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER, attributes=attrs) as root:
        time.sleep(0.01)
        with tracer.start_as_current_span("charge card", kind=SpanKind.CLIENT, links=[Link(other.get_span_context(), {"why": "warmup"})]) as child:
            child.set_attribute("payment.amount", 12.5)
            child.add_event("retry", {"attempt": 2})
            time.sleep(0.005)
            child.set_status(Status(StatusCode.ERROR, "card declined"))
    provider.force_flush()
    provider.shutdown()
    return {s.name: s for s in memory.get_finished_spans()}


def check_trace(sonde, dataset, spans):
    root, child, warmup = spans["POST /checkout"], spans["charge card"], spans["warmup"]
    trace_id = format(root.context.trace_id, "032x")
    events = sonde.events(dataset, [{"column": "trace.trace_id", "op": "=", "value": trace_id}])
    by_name = {e["name"]: e for e in events if "meta.annotation_type" not in e}
    assert set(by_name) == {"POST /checkout", "charge card"}

    r = by_name["POST /checkout"]
    assert r["trace.span_id"] == format(root.context.span_id, "016x")
    assert "trace.parent_id" not in r
    assert r["span.kind"] == "server"
    assert r["duration_ms"] == (root.end_time - root.start_time) / 1e6
    assert r["http.method"] == "POST" and r["http.status_code"] == 200 and r["cart.items"] == 3
    assert r["tags"] == '["a","b"]'
    assert r["samplerate"] == 5 and "SampleRate" not in r
    assert r["service.name"] == dataset and r["deployment.environment"] == "test"
    assert r["library.name"] == "sonde.tests" and r["library.version"] == "1.2.3"
    assert r["error"] is False and r["status_code"] == 0
    assert r["meta.signal_type"] == "trace"
    assert r["span.num_events"] == 0 and r["span.num_links"] == 0

    c = by_name["charge card"]
    assert c["trace.parent_id"] == r["trace.span_id"]
    assert c["span.kind"] == "client"
    assert c["duration_ms"] == (child.end_time - child.start_time) / 1e6
    assert c["error"] is True and c["status_code"] == 2 and c["status_message"] == "card declined"
    assert c["payment.amount"] == 12.5
    assert c["span.num_events"] == 1 and c["span.num_links"] == 1

    annotations = {e["meta.annotation_type"]: e for e in events if "meta.annotation_type" in e}
    ev = annotations["span_event"]
    assert ev["name"] == "retry" and ev["attempt"] == 2
    assert ev["parent_name"] == "charge card" and ev["trace.parent_id"] == c["trace.span_id"]
    link = annotations["link"]
    assert link["trace.link.trace_id"] == format(warmup.context.trace_id, "032x")
    assert link["trace.link.span_id"] == format(warmup.context.span_id, "016x")
    assert link["why"] == "warmup" and link["trace.parent_id"] == c["trace.span_id"]

    # The waterfall API returns the tree (flat, depth-first, parents by index): root → child, and
    # the child's span event and link under it.
    t = sonde.get(f"/api/traces/{dataset}/{trace_id}")
    spans_only = [n for n in t["tree"] if t["spans"][n["index"]].get("meta.annotation_type") is None]
    roots = [n for n in spans_only if n["parent"] is None]
    assert len(roots) == 1 and roots[0]["span_id"] == r["trace.span_id"]
    assert [k["span_id"] for k in spans_only if k["parent"] == roots[0]["index"]] == [c["trace.span_id"]]
    child = next(n for n in t["tree"] if n["span_id"] == c["trace.span_id"])
    assert sorted(t["spans"][n["index"]]["meta.annotation_type"] for n in t["tree"] if n["parent"] == child["index"]) == ["link", "span_event"]

    # Counts are weighted by the SampleRate attribute.
    q = sonde.post(
        f"/api/query/{dataset}",
        {"calculations": [{"op": "COUNT"}], "breakdowns": ["name"], "time_range": 7 * 86400, "end_time": int(time.time()) + 3600,
         "filters": [{"column": "trace.trace_id", "op": "=", "value": trace_id}, {"column": "meta.annotation_type", "op": "does-not-exist"}]},
    )
    counts = {g["data"]["name"]: g["data"]["COUNT"] for g in q["data"]["results"]}
    assert counts == {"POST /checkout": 5, "charge card": 1}


def test_otlp_http_traces(sonde):
    spans = emit_trace(OTLPSpanExporter(endpoint=f"{sonde.url}/v1/traces"), "checkout-http")
    check_trace(sonde, "checkout-http", spans)


def test_otlp_grpc_traces(sonde):
    spans = emit_trace(GrpcSpanExporter(endpoint=sonde.grpc, insecure=True), "checkout-grpc")
    check_trace(sonde, "checkout-grpc", spans)


def test_otlp_grpc_through_a_query_node_of_a_cluster(cluster):
    # The query node passes the spans on to an ingest node (re-encoded as a batch) and answers
    # them from its copy of that node's buffer: every field as one node stores it.
    q = cluster.query
    spans = emit_trace(GrpcSpanExporter(endpoint=q.grpc, insecure=True), "checkout-cluster")
    eventually(lambda: check_trace(q, "checkout-cluster", spans))
    # And over OTLP/HTTP to an ingest node that may not write the dataset.
    spans = emit_trace(OTLPSpanExporter(endpoint=f"{cluster.ingest[1].url}/v1/traces"), "checkout-cluster")
    eventually(lambda: check_trace(q, "checkout-cluster", spans))


def test_otlp_grpc_dataset_header(sonde):
    exporter = GrpcSpanExporter(endpoint=sonde.grpc, insecure=True, headers=(("x-honeycomb-dataset", "grpc-override"),))
    spans = emit_trace(exporter, "ignored-service")
    check_trace_in = sonde.events("grpc-override")
    assert {e.get("name") for e in check_trace_in} >= {"POST /checkout", "charge card", "warmup"}
    assert all(e["service.name"] == "ignored-service" for e in check_trace_in)
    assert spans


def test_otlp_http_logs(sonde):
    provider = LoggerProvider(resource=Resource.create({"service.name": "billing-logs"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{sonde.url}/v1/logs")))
    logger = logging.getLogger("sonde.clients.test")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger.addHandler(handler)
    tracer_provider = TracerProvider()
    tracer = tracer_provider.get_tracer("logs-test")
    with tracer.start_as_current_span("invoice run") as span:
        logger.warning("invoice %s overdue", "INV-7", extra={"invoice.id": "INV-7", "amount": 99})
    logger.info("plain info line")
    provider.force_flush()
    provider.shutdown()
    logger.removeHandler(handler)

    events = {e["body"]: e for e in sonde.events("billing-logs")}
    w = events["invoice INV-7 overdue"]
    assert w["severity"] == "warn" and w["severity_text"] == "WARN" and w["severity_code"] == 13
    assert w["invoice.id"] == "INV-7" and w["amount"] == 99
    assert w["trace.trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert w["trace.parent_id"] == format(span.get_span_context().span_id, "016x")
    assert w["meta.signal_type"] == "log"
    i = events["plain info line"]
    assert i["severity"] == "info" and "trace.trace_id" not in i

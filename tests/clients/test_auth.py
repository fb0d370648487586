"""The real clients against a server with API keys: the key in the header each client already
sends (libhoney's write key as X-Honeycomb-Team, OTLP headers over HTTP and gRPC) lets events in;
a missing or wrong key keeps them out."""

import datetime
import time

import libhoney
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def export_one(exporter, service):
    """Exports one finished span straight through the exporter; returns the export result."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("auth.test").start_as_current_span("op"):
        pass
    finished = memory.get_finished_spans()
    result = exporter.export(finished)
    exporter.shutdown()
    return result


def names(sonde, dataset):
    try:
        return {e.get("name") for e in sonde.events(dataset)}
    except Exception:
        return set()


def test_libhoney_write_key(locked_sonde):
    s = locked_sonde
    for key, dataset, want in [(s.ingest_key, "hny-auth", 202), ("sonde_wrong", "hny-denied", 401)]:
        client = libhoney.Client(writekey=key, dataset=dataset, api_host=s.url, block_on_response=True)
        ev = client.new_event()
        ev.add({"name": "evt", "i": 1})
        # Recent, so the default seven-day window of events() finds it whatever today is.
        ev.created_at = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        ev.send()
        client.flush()
        r = client.responses().get(timeout=30)
        client.close()
        assert r["status_code"] == want, r
    assert names(s, "hny-auth") == {"evt"}
    assert "hny-denied" not in {d["name"] for d in s.get("/api/datasets")["datasets"]}


def test_otlp_http_and_grpc_headers(locked_sonde):
    s = locked_sonde
    good = {"x-honeycomb-team": s.ingest_key}
    assert export_one(OTLPSpanExporter(endpoint=f"{s.url}/v1/traces", headers=good), "auth-http") == SpanExportResult.SUCCESS
    assert export_one(GrpcSpanExporter(endpoint=s.grpc, insecure=True, headers=tuple(good.items())), "auth-grpc") == SpanExportResult.SUCCESS
    # Without a key, or with the query key (wrong scope), the exporters report failure.
    assert export_one(OTLPSpanExporter(endpoint=f"{s.url}/v1/traces"), "auth-http-denied") == SpanExportResult.FAILURE
    bad = (("x-honeycomb-team", s.key),)
    assert export_one(GrpcSpanExporter(endpoint=s.grpc, insecure=True, headers=bad, timeout=5), "auth-grpc-denied") == SpanExportResult.FAILURE
    time.sleep(0.2)
    datasets = {d["name"] for d in s.get("/api/datasets")["datasets"]}
    assert {"auth-http", "auth-grpc"} <= datasets
    assert not datasets & {"auth-http-denied", "auth-grpc-denied"}
    assert names(s, "auth-grpc") == {"op"}

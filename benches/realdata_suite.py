#!/usr/bin/env python3
"""The query suite over real traces, side by side with DuckDB, every answer checked equal first.

The Online Boutique spans of the Nezha dataset (../shared/realdata/nezha-onlineboutique: 2.0 M
OpenTelemetry spans over 2022-08-22 and 2022-08-23, from github.com/IntelligentDDS/Nezha at
d8140101, MIT licence, the FSE 2023 paper "Nezha"; see that folder's README) are converted by its
own tools/convert.py (`nezha-spans`) and posted as NDJSON to a Sonde server (dataset `boutique`,
bodies of at most 4 MB). The server is stopped (SIGTERM flushes), restarted with a 1 s
maintenance interval until no compaction is pending, and then asked the questions below over
HTTP, while DuckDB (in this process) reads exactly the live segment files the catalog names.

Every question is a Sonde request; DuckDB's SQL is derived from it by benches/suite.py's
translator (SpecSQL: Sonde's semantics, series and weighted percentiles included). The time
ranges are absolute and computed from the data: its whole span (whole hours) or its busiest
hour. Real spans have no sample rate (every event weighs 1), so every percentile question is
answered by DuckDB two ways, both checked against Sonde: the weighted nearest-rank window
function and DuckDB's built-in `quantile_disc`; the ratio uses the fastest form whose answer
matches Sonde's.

Timing: the first run of each side is the answer check (and the warm-up); then --repeats
interleaved hot runs per side; medians. Sonde: client wall time to the last byte of the HTTP
answer (keep-alive connection). DuckDB: in-process, all statements of the question and fetching
the rows. Ratio = Sonde / DuckDB (below 1: Sonde is faster); the geometric mean is over the
questions whose answers matched.

    python3 benches/realdata_suite.py                  # all 2.0 M spans
    python3 benches/realdata_suite.py --limit 200000   # the first 100,000 spans of each day

Makes (or reuses) the bench virtualenv (~/.cache/sonde-bench-venv, DuckDB pinned in
benches/requirements.txt) and re-executes itself inside it. Writes
benches/results/realdata_suite.json; exits 1 when an answer differs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = Path(os.environ.get("SONDE_BENCH_VENV", Path.home() / ".cache" / "sonde-bench-venv"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "sonde-target"))
DATASET = "boutique"

sys.path.insert(0, str(HERE))
import run  # noqa: E402 - the harness's helpers (importing it runs nothing)
from run import geomean, log, machine  # noqa: E402,F401


def live_segments(data_dir: Path) -> list[Path]:
    """The segment files the catalog names for the real-trace dataset."""
    return run.live_segments(data_dir, DATASET)
DAYS = ("2022-08-22", "2022-08-23")
MAX_BODY = 4 << 20  # bytes of NDJSON per ingest request
SOURCE = ("nezha-onlineboutique (github.com/IntelligentDDS/Nezha at d8140101fdb4e7dfb60d3ef9f64706f382b68470, "
          "rca_data/2022-08-2{2,3}/trace, MIT licence; FSE 2023 paper \"Nezha\"): Google's Online Boutique "
          "under load with injected faults, OpenTelemetry spans")


def ensure_venv() -> None:
    """Re-executes this script inside the bench virtualenv (created and filled from PyPI when
    missing), as run.py does for itself."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    reqs = HERE / "requirements.txt"
    stamp = VENV / ".requirements"
    if not stamp.exists() or stamp.read_text() != reqs.read_text():
        subprocess.check_call([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(reqs)])
        stamp.write_text(reqs.read_text())
    os.execv(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]])



# --- the server ----------------------------------------------------------------------------

class Server:
    """One `sonde serve` on a loopback port the kernel picks (the port is read from its first
    line of output); stopped with SIGTERM, which flushes every buffer into segments."""

    def __init__(self, binary: Path, data_dir: Path, log_path: Path, *extra: str):
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--grpc-listen", "off", *extra],
            stdout=subprocess.PIPE, stderr=self.log)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("sonde listening on http://"):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"server did not start (first line {line!r}); see {log_path}")
        self.host, port = line.strip().split("http://", 1)[1].rsplit(":", 1)
        self.port = int(port)
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)

    def request(self, method: str, path: str, body: bytes | None = None,
                ctype: str = "application/json") -> tuple[int, bytes, float]:
        """One request on the keep-alive connection; the time is client wall time to the last
        byte of the answer."""
        t = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers={"Content-Type": ctype})
            r = self.conn.getresponse()
            data = r.read()
        except (http.client.HTTPException, ConnectionError):
            self.conn.close()  # reconnect once (the server may have closed an idle connection)
            t = time.perf_counter()
            self.conn.request(method, path, body=body, headers={"Content-Type": ctype})
            r = self.conn.getresponse()
            data = r.read()
        return r.status, data, time.perf_counter() - t

    def json(self, method: str, path: str, doc=None):
        status, data, _ = self.request(method, path, None if doc is None else json.dumps(doc).encode())
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {data[:500]!r}")
        return json.loads(data)

    def peak_rss(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def stop(self) -> int:
        self.conn.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=600)
        finally:
            self.log.close()
        return self.proc.returncode


# --- 1. ingest and compaction --------------------------------------------------------------

def ingest(srv: Server, realdata: Path, limit: int | None) -> dict:
    """Converts each day's CSV with the data's own converter and posts its NDJSON lines in
    bodies of at most 4 MB (the converter runs in a subprocess, so conversion and posting
    overlap). With `limit`, the first limit/2 spans of each day."""
    convert = realdata / "tools" / "convert.py"
    per_day = None if not limit else -(-limit // len(DAYS))
    posted = nbytes = bodies = retries = 0
    t0 = time.perf_counter()

    def post(lines: list[bytes]) -> None:
        nonlocal posted, nbytes, bodies, retries
        body = b"".join(lines)
        t_first = time.perf_counter()
        while True:
            status, data, _ = srv.request("POST", f"/api/ingest/{DATASET}", body, "application/x-ndjson")
            if status != 503 or time.perf_counter() - t_first > 120:
                break
            retries += 1
            time.sleep(0.2)
        ans = json.loads(data) if data.startswith(b"{") else {}
        if status != 200 or ans.get("accepted") != len(lines) or ans.get("rejected"):
            raise RuntimeError(f"ingest: HTTP {status}: {data[:500]!r}")
        posted, nbytes, bodies = posted + len(lines), nbytes + len(body), bodies + 1

    for day in DAYS:
        path = realdata / "nezha-onlineboutique" / f"traces_{day}.csv.gz"
        conv = subprocess.Popen([sys.executable, str(convert), "nezha-spans", str(path)],
                                stdout=subprocess.PIPE, bufsize=1 << 20)
        buf, size, n = [], 0, 0
        for line in conv.stdout:
            if per_day is not None and n >= per_day:
                break
            if size + len(line) > MAX_BODY and buf:
                post(buf)
                buf, size = [], 0
            buf.append(line)
            size += len(line)
            n += 1
        if buf:
            post(buf)
        if per_day is not None and n >= per_day:
            conv.kill()
        conv.stdout.close()
        rc = conv.wait()
        if rc not in (0, -signal.SIGKILL) or (rc != 0 and (per_day is None or n < per_day)):
            raise RuntimeError(f"convert.py exited with {rc} on {path}")
        log(f"ingest: {day}: {n:,} spans posted")
    wall = time.perf_counter() - t0
    return {"spans": posted, "ndjson_bytes": nbytes, "bodies": bodies, "retries_503": retries, "wall_s": wall,
            "spans_per_s": posted / wall, "note": "conversion (Python) and posting overlap: not an ingest benchmark"}


def wait_compacted(srv: Server, timeout_s: float = 1800) -> dict:
    """Polls the dataset's stats until no compaction has been pending three polls in a row."""
    t0, stable = time.perf_counter(), 0
    while True:
        st = srv.json("GET", f"/api/datasets/{DATASET}/stats")
        stable = stable + 1 if st.get("segments_pending_compaction") == 0 else 0
        if stable >= 3:
            break
        if time.perf_counter() - t0 > timeout_s:
            raise RuntimeError(f"compaction still pending after {timeout_s:.0f} s: {st}")
        time.sleep(1)
    st["compaction_wait_s"] = time.perf_counter() - t0
    return st



def catalog_rows(data_dir: Path) -> int:
    cat = json.loads((data_dir / "catalog.json").read_text())
    return sum(s.get("rows", 0) for s in cat["datasets"][DATASET]["segments"])


# --- 2. DuckDB -----------------------------------------------------------------------------

def duck_connect(segments: list[Path], threads: int, tmp: Path):
    import duckdb
    con = duckdb.connect()
    files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in segments)
    con.execute(f"CREATE VIEW src AS SELECT * FROM read_parquet([{files}], union_by_name = true)")
    con.execute(f"SET threads = {threads}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET temp_directory = '{tmp}'")
    return con


def duck_columns(con) -> list[tuple[str, str]]:
    """(name, kind) of every column but the timestamp and the sample rate, for BubbleUp."""
    kinds = []
    for name, ty, *_ in con.execute("DESCRIBE src").fetchall():
        if name in ("timestamp", "samplerate"):
            continue
        kinds.append((name, "bool" if ty == "BOOLEAN" else
                      "num" if ty in ("BIGINT", "DOUBLE", "INTEGER", "FLOAT", "SMALLINT", "HUGEINT") else "str"))
    return kinds


# --- 3. the questions ----------------------------------------------------------------------

def iso(us: int) -> str:
    return datetime.fromtimestamp(us // 1_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def round_sig(x: float, digits: int = 2) -> float:
    """x rounded to `digits` significant figures (a threshold a person would type)."""
    if x <= 0:
        return 0.0
    e = math.floor(math.log10(x)) - digits + 1
    return round(x / 10 ** e) * 10 ** e if e > 0 else round(x, -e)


def granularity_for(span_s: int, points: int) -> int:
    """The smallest of the usual steps (each divides an hour) giving at most `points` buckets."""
    for g in (60, 120, 300, 600, 900, 1800, 3600):
        if span_s / g <= points:
            return g
    return 3600 * max(1, -(-span_s // (3600 * points)))


def parameters(con) -> dict:
    """The questions' parameters, from the data as stored (the same rows both sides read)."""
    t_min, t_max, n = con.execute("SELECT epoch_us(min(timestamp)), epoch_us(max(timestamp)), count(*) FROM src").fetchone()
    hour_us = 3_600_000_000
    start = t_min // hour_us * hour_us
    end = (t_max // hour_us + 1) * hour_us  # exclusive: past the last span
    busy, busy_n = con.execute(
        f"SELECT epoch_us(timestamp) // {hour_us} * {hour_us} AS h, count(*) AS n FROM src "
        f"GROUP BY 1 ORDER BY n DESC, h LIMIT 1").fetchone()
    # HAVING: the median of the span names' average durations, rounded (about half the names).
    avgs = sorted(r[0] for r in con.execute(
        'SELECT avg(duration_ms) FROM src WHERE name IS NOT NULL GROUP BY name').fetchall())
    having = round_sig(avgs[len(avgs) // 2])
    if any(math.isclose(a, having, rel_tol=1e-6) for a in avgs):
        having = round_sig(having * 1.01, 3)
    # The trace: the one with the most spans among those starting in the busiest hour.
    trace_id, trace_spans = con.execute(
        f'SELECT "trace.trace_id", count(*) AS n FROM src GROUP BY 1 '
        f'HAVING epoch_us(min(timestamp)) >= {busy} AND epoch_us(min(timestamp)) < {busy + hour_us} '
        f'ORDER BY n DESC, 1 LIMIT 1').fetchone()
    # Raw events: the service with the most spans, slower than its own P90 (rounded).
    service, = con.execute('SELECT "service.name" FROM src GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1').fetchone()
    svc_p90, = con.execute(f'SELECT quantile_disc(duration_ms, 0.9) FROM src WHERE "service.name" = ?', [service]).fetchone()
    # BubbleUp: the busiest hour's slowest 1% (duration at least its P99, rounded down).
    h_p99, h_max = con.execute(
        f"SELECT quantile_disc(duration_ms, 0.99), max(duration_ms) FROM src "
        f"WHERE epoch_us(timestamp) >= {busy} AND epoch_us(timestamp) < {busy + hour_us}").fetchone()
    slow = round_sig(h_p99 * 0.995, 2)
    return {"spans": n, "first_span": iso(t_min), "last_span": iso(t_max), "start_s": start // 1_000_000,
            "end_s": end // 1_000_000, "busiest_hour_s": busy // 1_000_000, "busiest_hour_spans": busy_n,
            "having_avg_ms": having, "trace_id": trace_id, "trace_spans": trace_spans,
            "events_service": service, "events_min_duration_ms": round_sig(svc_p90, 2),
            "bubbleup_min_ms": slow, "bubbleup_max_ms": float(math.ceil(h_max) + 1)}


def questions(p: dict) -> list[dict]:
    """The suite over the boutique spans. Whole-span questions run over [first hour, last hour
    + 1); the busiest hour's over that hour. `of` names the question a results-only variant
    comes from."""
    full = {"start_time": p["start_s"], "end_time": p["end_s"]}
    span_s = p["end_s"] - p["start_s"]
    hour = {"start_time": p["busiest_hour_s"], "end_time": p["busiest_hour_s"] + 3600}
    g_fine = granularity_for(span_s, 600)   # a graph of the whole span: up to 600 points
    g_coarse = granularity_for(span_s, 100)  # per-bucket percentiles and distinct counts: up to 100
    spec = lambda **kw: {"kind": "query", "spec": kw}  # noqa: E731
    qs = [
        dict(name="count_by_service_over_time", **spec(
            calculations=[{"op": "COUNT"}], breakdowns=["service.name"], granularity=g_fine, **full)),
        dict(name="p99_by_name", **spec(
            calculations=[{"op": "P99", "column": "duration_ms"}], breakdowns=["name"],
            granularity=g_coarse, **full)),
        dict(name="percentiles_by_service_busiest_hour", **spec(
            calculations=[{"op": "P50", "column": "duration_ms"}, {"op": "P90", "column": "duration_ms"},
                          {"op": "P99", "column": "duration_ms"}],
            breakdowns=["service.name"], granularity=60, **hour)),
        dict(name="heatmap_duration", **spec(
            calculations=[{"op": "COUNT"}, {"op": "HEATMAP", "column": "duration_ms"}],
            granularity=g_fine, **full)),
        dict(name="roots_by_service", **spec(
            calculations=[{"op": "COUNT"}], filters=[{"column": "is_root", "op": "=", "value": True}],
            breakdowns=["service.name"], granularity=g_fine, **full)),
        dict(name="avg_max_by_name_having", **spec(
            calculations=[{"op": "AVG", "column": "duration_ms"}, {"op": "MAX", "column": "duration_ms"}],
            breakdowns=["name"],
            havings=[{"calculate_op": "AVG", "column": "duration_ms", "op": ">", "value": p["having_avg_ms"]}],
            orders=[{"op": "AVG", "column": "duration_ms", "order": "descending"}],
            granularity=g_coarse, **full)),
        dict(name="count_distinct_traces_by_service", **spec(
            calculations=[{"op": "COUNT_DISTINCT", "column": "trace.trace_id"}], breakdowns=["service.name"],
            granularity=g_coarse, **full)),
        # Span names per service: not an id, so answered from precomputed sets of distinct values.
        dict(name="count_distinct_names_by_service", **spec(
            calculations=[{"op": "COUNT_DISTINCT", "column": "name"}], breakdowns=["service.name"],
            granularity=g_coarse, **full)),
        dict(name="trace_lookup", kind="trace", trace_id=p["trace_id"]),
        dict(name="raw_events_filtered", kind="events", request={
            "filters": [{"column": "service.name", "op": "=", "value": p["events_service"]},
                        {"column": "duration_ms", "op": ">=", "value": p["events_min_duration_ms"]}],
            "limit": 50, **full}),
        dict(name="bubbleup_slowest_busiest_hour", kind="bubbleup", request={
            **hour, "filters": [], "exact": True,
            "selection": {"heatmap": {"column": "duration_ms", **hour,
                                      "min": p["bubbleup_min_ms"], "max": p["bubbleup_max_ms"]}}}),
    ]
    by_name = {q["name"]: q for q in qs}
    qs += [dict(name=f"{n}.results_only", of=n, kind="query", spec={**by_name[n]["spec"], "disable_series": True})
           for n in ("p99_by_name", "count_distinct_traces_by_service", "count_distinct_names_by_service")]
    return qs


# --- asking and checking -------------------------------------------------------------------

def sonde_ask(srv: Server, q: dict) -> tuple[bytes, float]:
    if q["kind"] == "query":
        method, path, doc = "POST", f"/api/query/{DATASET}", q["spec"]
    elif q["kind"] == "events":
        method, path, doc = "POST", f"/api/events/{DATASET}", q["request"]
    elif q["kind"] == "bubbleup":
        method, path, doc = "POST", f"/api/bubbleup/{DATASET}", q["request"]
    else:
        method, path, doc = "GET", f"/api/traces/{DATASET}/{q['trace_id']}", None
    status, data, dt = srv.request(method, path, None if doc is None else json.dumps(doc).encode())
    if status != 200:
        raise SondeError(status, data)
    return data, dt


class SondeError(RuntimeError):
    def __init__(self, status: int, data: bytes):
        super().__init__(f"HTTP {status}: {data[:500]!r}")
        self.status = status


def event_key(e: dict) -> tuple:
    return (e["timestamp"], e.get("trace.trace_id"), e.get("trace.span_id"))


def sonde_events_shape(doc: dict) -> list[dict]:
    """Sonde's events with the timestamp as epoch µs (absent fields are left out)."""
    import suite
    return [{**e, "timestamp": suite.to_us(e["timestamp"])} for e in doc["events"]]


def duck_events(con, req: dict) -> list[dict]:
    """The newest `limit` matching events, every column, as Sonde answers them (nulls dropped)."""
    import suite
    con.execute(f"SELECT * REPLACE (epoch_us(timestamp) AS timestamp) FROM src WHERE {suite.where_sql(req)} "
                f"ORDER BY src.timestamp DESC LIMIT {req.get('limit', 100)}")
    names = [d[0] for d in con.description]
    return [{k: v for k, v in zip(names, r) if v is not None} for r in con.fetchall()]


def events_check(con, req: dict, sonde: list[dict], duck: list[dict]) -> list[str]:
    """Same number of events, the same timestamps in the same (newest first) order, and each of
    Sonde's events equal to a distinct matching row. Events sharing the oldest timestamp of the
    page may be any of those tied there, so they are looked up among all the matching rows from
    that timestamp on (an untimed statement), not only among DuckDB's page."""
    import suite
    diffs = []
    if len(sonde) != len(duck):
        diffs.append(f"{len(sonde)} events in sonde vs {len(duck)} in duckdb")
    ts_s, ts_d = [e["timestamp"] for e in sonde], [e["timestamp"] for e in duck]
    if ts_s != ts_d:
        i = next((i for i, (a, b) in enumerate(zip(ts_s, ts_d)) if a != b), min(len(ts_s), len(ts_d)))
        diffs.append(f"timestamps differ from event {i}: sonde {ts_s[i:i + 3]} vs duckdb {ts_d[i:i + 3]}")
    if not duck:
        return diffs
    cutoff = duck[-1]["timestamp"]
    con.execute(f"SELECT * REPLACE (epoch_us(timestamp) AS timestamp) FROM src WHERE {suite.where_sql(req)} "
                f"AND epoch_us(timestamp) >= {cutoff}")
    names = [d[0] for d in con.description]
    cand = {}
    for r in con.fetchall():
        e = {k: v for k, v in zip(names, r) if v is not None}
        cand.setdefault(event_key(e), []).append(e)
    for i, e in enumerate(sonde):
        rows = cand.get(event_key(e))
        if not rows:
            diffs.append(f"event {i} {event_key(e)}: no such matching row in duckdb")
            continue
        # Every field of the event, both ways (absent fields are absent on both sides).
        cmp = [suite.compare(e, r) for r in rows]
        best = min(range(len(rows)), key=lambda j: len(cmp[j]))
        if cmp[best]:
            diffs.append(f"event {i}: " + "; ".join(cmp[best][:3]))
        rows.pop(best)
        if len(diffs) >= 8:
            break
    return diffs


def sonde_shape(q: dict, data: bytes):
    import suite
    doc = json.loads(data)
    if q["kind"] == "query":
        return suite.sonde_query_shape(doc, q["spec"])
    if q["kind"] == "events":
        return sonde_events_shape(doc)
    if q["kind"] == "trace":
        return suite.sonde_trace_shape(doc)
    return suite.sonde_bubbleup_shape(doc)


def duck_ask(con, q: dict, form: str, columns) -> tuple[object, float]:
    """Runs every statement the question needs; the time covers them all and the fetching.
    `form` is "quantile_disc" for DuckDB's built-in percentile, else the translator's default."""
    import suite
    t = time.perf_counter()
    if q["kind"] == "query":
        out = suite.SpecSQL(q["spec"], form == "quantile_disc").run(con)
    elif q["kind"] == "events":
        out = duck_events(con, q["request"])
    elif q["kind"] == "trace":
        out = suite.trace_run(con, q["trace_id"])
    else:
        out = suite.bubbleup_run(con, q["request"], columns)
    return out, time.perf_counter() - t


def check(con, q: dict, sonde, duck) -> list[str]:
    import suite
    if q["kind"] == "query":
        diffs = suite.compare_query(sonde, duck)
        if q["spec"].get("disable_series") and sonde["series"]:
            diffs.append(f"disable_series: Sonde answered {len(sonde['series'])} series points")
        return diffs
    if q["kind"] == "events":
        return events_check(con, q["request"], sonde, duck)
    if q["kind"] == "bubbleup":
        return suite.bubbleup_compare(sonde, duck)
    return suite.compare(sonde, duck)


def duck_forms(q: dict) -> list[str]:
    """DuckDB's ways to answer a question: a percentile question twice (the weighted
    nearest-rank window function, and the built-in quantile_disc); anything else once."""
    import suite
    if q["kind"] == "query" and suite.has_percentile(q["spec"]):
        return ["window", "quantile_disc"]
    return ["sql"]


def run_question(srv: Server, con, q: dict, repeats: int, columns) -> dict:
    forms = duck_forms(q)
    rec = {"name": q["name"], "kind": q["kind"], "results_only": "of" in q,
           "request": q.get("spec") or q.get("request") or {"trace_id": q.get("trace_id")},
           "duckdb_forms": forms, "mismatch": {}, "matched_forms": []}
    # The check, which is also the warm-up.
    data, first = sonde_ask(srv, q)
    s_ans = sonde_shape(q, data)
    meta = json.loads(data).get("meta")
    rec["sonde_meta"] = meta
    rec["sonde_answer_bytes"] = len(data)
    rec["first_ms"] = {"sonde": first * 1e3}
    for f in forms:
        d_ans, dt = duck_ask(con, q, f, columns)
        rec["first_ms"][f] = dt * 1e3
        diffs = check(con, q, s_ans, d_ans)
        if diffs:
            rec["mismatch"][f] = diffs
            log(f"MISMATCH {q['name']} vs DuckDB ({f}):\n  " + "\n  ".join(diffs))
        else:
            rec["matched_forms"].append(f)
    rec["answer_size"] = answer_size(q, s_ans)
    # Hot: the sides interleaved, so background noise hits them alike.
    times = {"sonde": [], **{f: [] for f in forms}}
    server_ms = []
    for _ in range(repeats):
        data, dt = sonde_ask(srv, q)
        times["sonde"].append(dt)
        server_ms.append((json.loads(data).get("meta") or {}).get("elapsed_ms"))
        for f in forms:
            times[f].append(duck_ask(con, q, f, columns)[1])
    rec["hot_ms"] = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    rec["hot_all_ms"] = {k: [round(x * 1e3, 3) for x in v] for k, v in times.items()}
    ms = [x for x in server_ms if x is not None]
    rec["sonde_server_elapsed_ms"] = statistics.median(ms) if ms else None
    if rec["matched_forms"]:
        best = min(rec["matched_forms"], key=lambda f: rec["hot_ms"][f])
        rec["duckdb_form"], rec["duckdb_ms"] = best, rec["hot_ms"][best]
        rec["ratio"] = rec["hot_ms"]["sonde"] / rec["duckdb_ms"]
    else:
        rec["duckdb_form"] = rec["duckdb_ms"] = rec["ratio"] = None
    log(f"  {q['name']:<44} sonde {rec['hot_ms']['sonde']:9.1f} ms   "
        + "   ".join(f"{f} {rec['hot_ms'][f]:9.1f} ms" for f in forms)
        + (f"   ratio {rec['ratio']:.2f}" if rec["ratio"] else "   MISMATCH"))
    return rec


def answer_size(q: dict, ans) -> dict:
    if q["kind"] == "query":
        return {"results": len(ans["results"]), "series_points": len(ans["series"])}
    if q["kind"] == "events":
        return {"events": len(ans)}
    if q["kind"] == "trace":
        return {"spans": len(ans["span_ids"])}
    return {"selection": ans["selection"], "baseline": ans["baseline"], "columns": len(ans["columns"])}


# --- output --------------------------------------------------------------------------------


def fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"


def table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w[i]) if i in (0, len(header) - 1) else c.rjust(w[i])  # noqa: E731
                               for i, c in enumerate(r)).rstrip()
    return "\n".join([line(header), "  ".join("-" * x for x in w)] + [line(r) for r in cells[1:]])


def summary(res: dict) -> str:
    p, m = res["parameters"], res["machine"]
    out = [f"Sonde vs DuckDB over real traces: {res['spans']:,} Online Boutique spans (Nezha, MIT), "
           f"{p['first_span']} .. {p['last_span']}, {res['storage']['segments']} segments; busiest hour "
           f"{iso(p['busiest_hour_s'] * 1_000_000)} ({p['busiest_hour_spans']:,} spans)",
           f"{res['date']}, {m['cpu']} x{m['cores']}, {res['versions']['sonde']} ({res['versions']['git']}), "
           f"DuckDB {res['versions']['duckdb']} ({res['config']['duckdb_threads']} threads); median of "
           f"{res['config']['repeats']} hot runs, ms; load average {res['loadavg_start'][0]:.2f} -> {res['loadavg_end'][0]:.2f}",
           ""]
    rows = []
    for q in res["queries"]:
        t = q["hot_ms"]
        duck = {f: fmt(t.get(f)) for f in q["duckdb_forms"]}
        if "window" in duck:
            dcol = f"{duck['window']} / {duck['quantile_disc']}"
        else:
            dcol = duck["sql"]
        status = "ok" if not q["mismatch"] else (
            "MISMATCH" if not q["matched_forms"] else "ok (" + ", ".join(q["matched_forms"]) + "; "
            + ", ".join(q["mismatch"]) + " differs)")
        rows.append([q["name"], fmt(t["sonde"]), fmt(q["sonde_server_elapsed_ms"]), dcol, q["duckdb_form"] or "-",
                     f"{q['ratio']:.2f}x" if q["ratio"] else "-", status])
    for key, what in (("geomean", "geometric mean"), ("geomean_results_only", "geometric mean, results only")):
        g = res.get(key)
        if g:
            rows.append([f"{what} ({g['queries']} matched)", fmt(g["sonde_ms"]), "", fmt(g["duckdb_ms"]), "",
                         f"{g['ratio']:.2f}x", ""])
    out.append(table(["question", "Sonde", "(server)", "DuckDB (window / quantile_disc)", "form used", "ratio", "answers"], rows))
    out.append("Sonde: client wall time over HTTP; (server): its own meta.elapsed_ms. DuckDB: percentile questions "
               "by the weighted window function / quantile_disc, each checked; the ratio uses the fastest matching form.")
    for s in res.get("skipped", []):
        out.append(f"skipped: {s}")
    pf = res.get("percentile_forms")
    if pf:
        out.append("percentile forms matching Sonde's: " + "; ".join(f"{k}: {v}" for k, v in pf.items()))
    return "\n".join(out) + "\n"



# --- main ----------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=TARGET / "release" / "sonde")
    ap.add_argument("--realdata", type=Path, default=Path(os.environ.get("SONDE_REALDATA", REPO.parent / "shared" / "realdata")))
    ap.add_argument("--limit", type=int, help="spans to load in all (half from each day); default: every span")
    ap.add_argument("--repeats", type=int, default=5, help="hot runs per side and question (median)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="DuckDB threads")
    ap.add_argument("--data-dir", type=Path, help="Sonde's data directory: reused when it already holds the "
                    "ingested spans (a finished earlier run with --keep), else made there; default a temp directory")
    ap.add_argument("--keep", action="store_true", help="keep the data directory (to re-time with --data-dir)")
    ap.add_argument("--only", help="comma-separated question names (a name also picks its .results_only variant)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "realdata_suite.json")
    a = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import duckdb
    import suite  # noqa: F401  (the translator; imported here so a broken one fails early)

    if not a.bin.exists():
        sys.exit(f"no sonde binary at {a.bin}: build it (make release) or pass --bin")
    binary = a.bin.resolve()
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "crates", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip() != ""
    res = {"source": SOURCE, "limit": a.limit,
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine(),
           "versions": {"sonde": version, "git": rev + (" (work tree modified)" if dirty else ""),
                        "binary": str(binary),
                        "binary_built": datetime.fromtimestamp(binary.stat().st_mtime, timezone.utc).isoformat(),
                        "duckdb": duckdb.__version__},
           "config": {"repeats": a.repeats, "duckdb_threads": a.threads, "dataset": DATASET,
                      "ingest": "NDJSON from tools/convert.py nezha-spans, POST /api/ingest/boutique, bodies <= 4 MB",
                      "server_flags": "defaults, then --maintenance-interval 1s (compaction) for the queries",
                      "sonde_time": "client wall time to the last byte over HTTP (keep-alive)",
                      "duckdb_time": "in-process, every statement of the question and fetching its rows",
                      "duckdb_source": "read_parquet(live segments from Sonde's catalog, union_by_name = true)"},
           "loadavg_start": os.getloadavg(), "skipped": []}
    if res["loadavg_start"][0] > 0.5:
        log(f"WARNING: the machine is busy (load average {res['loadavg_start'][0]:.2f}): timings will be noisy")

    temp = a.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="sonde-realdata-suite-")) if temp else a.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir.parent / (data_dir.name + "-logs")
    logs.mkdir(exist_ok=True)
    marker = data_dir / ".realdata-suite"
    want_marker = json.dumps({"limit": a.limit})
    srv = None
    try:
        # 1. Ingest (unless this data directory already holds the same spans), flush, compact.
        if marker.exists() and marker.read_text() == want_marker:
            log(f"reusing the spans already in {data_dir}")
            res["ingest"] = json.loads((data_dir / ".realdata-suite-ingest").read_text())
        else:
            if any(data_dir.iterdir()):
                sys.exit(f"{data_dir} is not empty and holds no finished run with --limit {a.limit}: "
                         f"remove it or pick another --data-dir")
            log(f"ingesting into {data_dir} ...")
            srv = Server(binary, data_dir, logs / "ingest.log")
            res["ingest"] = ingest(srv, a.realdata, a.limit)
            srv.stop()
            srv = None
            log(f"ingest: {res['ingest']['spans']:,} spans in {res['ingest']['wall_s']:.1f} s; flushed (SIGTERM)")
            (data_dir / ".realdata-suite-ingest").write_text(json.dumps(res["ingest"]))
        srv = Server(binary, data_dir, logs / "query.log", "--maintenance-interval", "1s")
        st = wait_compacted(srv)
        if not marker.exists():
            marker.write_text(want_marker)
        segs = live_segments(data_dir)
        rows = catalog_rows(data_dir)
        res["storage"] = {"segments": len(segs), "segment_rows": rows, "segment_bytes": sum(s.stat().st_size for s in segs),
                          "stats": st}
        res["spans"] = res["ingest"]["spans"]
        log(f"compacted: {len(segs)} live segments, {rows:,} rows, {res['storage']['segment_bytes'] / 1e6:.1f} MB "
            f"(waited {st['compaction_wait_s']:.0f} s)")
        if rows != res["spans"]:
            raise RuntimeError(f"the segments hold {rows:,} rows, {res['spans']:,} spans were posted")

        # 2. DuckDB over exactly those files.
        tmp = Path(tempfile.mkdtemp(prefix="duckdb-tmp-", dir=data_dir.parent))
        con = duck_connect(segs, a.threads, tmp)
        n, max_rate = con.execute("SELECT count(*), max(coalesce(samplerate, 1)) FROM src").fetchone()
        if n != rows:
            raise RuntimeError(f"DuckDB reads {n:,} rows from the segments, the catalog says {rows:,}")
        res["config"]["max_samplerate"] = max_rate
        columns = duck_columns(con)
        res["columns"] = [{"name": c, "kind": k} for c, k in columns]

        # 3. The questions.
        p = parameters(con)
        res["parameters"] = p
        log(f"data {p['first_span']} .. {p['last_span']}, busiest hour {iso(p['busiest_hour_s'] * 1_000_000)} "
            f"({p['busiest_hour_spans']:,} spans), trace {p['trace_id']} ({p['trace_spans']} spans)")
        qs = questions(p)
        if a.only:
            names = a.only.split(",")
            qs = [q for q in qs if q["name"] in names or q.get("of") in names]
        # Does this binary know `disable_series`? (Older builds reject the unknown field: 400.)
        ro = [q for q in qs if "of" in q]
        if ro:
            status, body, _ = srv.request("POST", f"/api/query/{DATASET}", json.dumps(
                {"start_time": p["start_s"], "end_time": p["end_s"], "disable_series": True}).encode())
            if status == 400:
                qs = [q for q in qs if "of" not in q]
                msg = (f"results-only questions ({', '.join(q['name'] for q in ro)}): this binary answers 400 to "
                       f"`disable_series` ({body[:160].decode(errors='replace')}); rebuild it to time them")
                res["skipped"].append(msg)
                log("SKIPPED " + msg)
        res["queries"] = []
        for q in qs:
            try:
                res["queries"].append(run_question(srv, con, q, a.repeats, columns))
            except SondeError as e:
                res["skipped"].append(f"{q['name']}: Sonde answered {e}")
                log(f"SKIPPED {q['name']}: Sonde answered {e}")
        res["server_peak_rss_bytes"] = srv.peak_rss()
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if srv is not None:
            srv.stop()
        if temp and not a.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
            shutil.rmtree(logs, ignore_errors=True)
        elif a.keep or not temp:
            log(f"data directory kept: {data_dir} (re-time with --data-dir {data_dir}{' --limit ' + str(a.limit) if a.limit else ''})")

    # Geometric means over the matched questions (full answers, and results only apart).
    for key, group in (("geomean", [q for q in res["queries"] if not q["results_only"]]),
                       ("geomean_results_only", [q for q in res["queries"] if q["results_only"]])):
        ok = [q for q in group if q["ratio"]]
        if ok:
            s, d = geomean([q["hot_ms"]["sonde"] for q in ok]), geomean([q["duckdb_ms"] for q in ok])
            res[key] = {"queries": len(ok), "sonde_ms": s, "duckdb_ms": d, "ratio": s / d,
                        "ratio_geomean": geomean([q["ratio"] for q in ok])}
    pq = [q for q in res["queries"] if "window" in q["duckdb_forms"]]
    if pq:
        res["percentile_forms"] = {
            f: f"matches Sonde on {sum(f in q['matched_forms'] for q in pq)} of {len(pq)} percentile questions"
            for f in ("window", "quantile_disc")}
    res["mismatches"] = {q["name"]: q["mismatch"] for q in res["queries"] if q["mismatch"]}
    res["unmatched"] = [q["name"] for q in res["queries"] if not q["matched_forms"]]
    res["loadavg_end"] = os.getloadavg()
    text = summary(res)
    print(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    log(f"results: {a.out}")
    sys.exit(1 if res["unmatched"] else 0)


if __name__ == "__main__":
    ensure_venv()
    main()

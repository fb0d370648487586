#!/usr/bin/env python3
"""Sonde's benchmark harness: ingest, freshness, storage and a query suite, side by side with
DuckDB on the same machine, in the same run, over the same events; then Sonde alone with and
without its footer and chunk caches. See benches/README.md.

    python3 benches/run.py --size quick      # 1M events (make bench)
    python3 benches/run.py --size full       # 10M events (make bench-full)
    python3 benches/run.py --sections caches # one section alone

It makes its own virtualenv (~/.cache/sonde-bench-venv, DuckDB from PyPI, pinned in
requirements.txt) and re-executes itself inside it, so the only prerequisites are Python 3 and
the release binary ($CARGO_TARGET_DIR/release/sonde).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import mmap
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = Path(os.environ.get("SONDE_BENCH_VENV", Path.home() / ".cache" / "sonde-bench-venv"))
WORK = Path(os.environ.get("SONDE_BENCH_DIR", Path.home() / ".cache" / "sonde-bench"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "sonde-target"))

SIZES = {"dev": 200_000, "quick": 1_000_000, "full": 10_000_000}
# The generated events: one hour from a fixed start, so every time range in the suite is absolute
# and the same on both sides, and the data is identical from run to run.
GEN_START = "2026-01-01T00:00:00Z"
GEN_T0 = 1767225600
GEN_SPAN_S = 3600
DATASET = "bench"
SECTIONS = ("ingest", "freshness", "storage", "queries", "caches")


def ensure_venv() -> None:
    """Re-executes inside the bench virtualenv (created and filled from PyPI when missing)."""
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


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# --- data ----------------------------------------------------------------------------------

def generate(binary: Path, events: int, seed: int, work: Path) -> Path:
    """The generator's NDJSON (reused when present: it is deterministic for the same flags)."""
    path = work / "events.ndjson"
    done = work / "events.ndjson.done"
    if path.exists() and done.exists():
        return path
    log(f"generating {events:,} events -> {path}")
    with open(path, "wb") as out:
        subprocess.check_call([str(binary), "gen", str(events), "--seed", str(seed), "--start", GEN_START,
                               "--span", f"{GEN_SPAN_S}s"], stdout=out)
    done.write_text("ok")
    return path


def batch_file(ndjson: Path, batch: int, work: Path) -> tuple[Path, list]:
    """Pre-encoded Honeycomb batch bodies (`[{"data":…,"time":…,"samplerate":…}]`), one after the
    other in one file, with an index of (offset, length, events). Encoding them up front keeps
    the JSON work out of the timed ingest, so the clients only copy bytes to a socket."""
    path = work / f"batches-{batch}.bin"
    idx_path = work / f"batches-{batch}.idx.json"
    if path.exists() and idx_path.exists():
        return path, json.loads(idx_path.read_text())
    log(f"encoding batches of {batch} -> {path}")
    idx, off = [], 0
    with open(ndjson, "rb") as f, open(path, "wb") as out:
        while True:
            lines = list(itertools.islice(f, batch))
            if not lines:
                break
            items = []
            for line in lines:
                obj = json.loads(line)
                ts = obj.pop("timestamp")
                sr = obj.pop("samplerate", 1)
                items.append({"data": obj, "time": ts, "samplerate": sr})
            body = json.dumps(items, separators=(",", ":")).encode()
            out.write(body)
            idx.append((off, len(body), len(items)))
            off += len(body)
    idx_path.write_text(json.dumps(idx))
    return path, idx


# --- the server ----------------------------------------------------------------------------

class Server:
    """One `sonde serve` on a loopback port the kernel picks; stopped with SIGTERM (which
    flushes), reaped with wait4 so its total CPU time and peak RSS come from the kernel."""

    def __init__(self, binary: Path, data_dir: Path, log_path: Path, *extra: str):
        data_dir.mkdir(parents=True, exist_ok=True)
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
        # Keep draining stdout so the server never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        self.conn = self.connect()

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=600)

    def cpu_seconds(self) -> float:
        """utime + stime so far, from /proc/<pid>/stat."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss(self) -> int:
        """VmHWM (peak resident set) in bytes."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def request(self, method: str, path: str, body: bytes | None = None, conn=None) -> tuple[int, bytes, float]:
        """One request; the time is client-side wall time to the last byte of the answer."""
        conn = conn or self.conn
        t = time.perf_counter()
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        return r.status, data, time.perf_counter() - t

    def json(self, method: str, path: str, doc=None):
        status, data, _ = self.request(method, path, None if doc is None else json.dumps(doc).encode())
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {data[:500]!r}")
        return json.loads(data)

    def stop(self) -> dict:
        """SIGTERM (flushes every buffer), then the kernel's account of the whole process life."""
        self.conn.close()
        t = time.perf_counter()
        os.kill(self.proc.pid, signal.SIGTERM)
        _, status, ru = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.log.close()
        return {"cpu_s": ru.ru_utime + ru.ru_stime, "max_rss_bytes": ru.ru_maxrss * 1024,
                "shutdown_s": time.perf_counter() - t, "exit": self.proc.returncode}


def machine_cpu_seconds() -> float:
    """CPU time every process on the machine has used so far (non-idle jiffies of /proc/stat),
    to tell how much of the machine other processes took during a measurement."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def drop_caches() -> bool:
    """Drops the OS page cache (needs root and a writable /proc/sys; False when not permitted)."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


# --- 1. ingest -----------------------------------------------------------------------------

def ingest(server: Server, bodies: Path, idx: list, clients: int) -> dict:
    """Posts every batch once, `clients` threads each with its own keep-alive connection, taking
    the next batch from a shared counter (so batches go out roughly in time order)."""
    counter = itertools.count()
    errors: list[str] = []
    with open(bodies, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def worker():
        conn = server.connect()
        while True:
            i = next(counter)  # atomic under the GIL
            if i >= len(idx):
                break
            off, ln, n = idx[i]
            status, data, _ = server.request("POST", f"/1/batch/{DATASET}", mm[off:off + ln], conn)
            if status >= 300 or data.count(b'"status":202') != n:
                errors.append(f"batch {i}: HTTP {status} {data[:200]!r}")
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    all0 = machine_cpu_seconds()
    cpu0, self0, t0 = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu1, self1 = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)
    all1 = machine_cpu_seconds()
    mm.close()
    events = sum(n for _, _, n in idx)
    nbytes = sum(ln for _, ln, _ in idx)
    client_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    return {
        "clients": clients, "events": events, "bytes": nbytes, "wall_s": wall,
        "events_per_s": events / wall, "mb_per_s": nbytes / wall / 1e6,
        "server_cpu_s": cpu1 - cpu0, "server_cpu_s_per_m_events": (cpu1 - cpu0) / events * 1e6,
        "server_peak_rss_bytes": server.peak_rss(),
        # The harness shares the 2 cores with the server: this says how much it took.
        "client_cpu_s": client_cpu, "client_cpu_share_of_wall": client_cpu / wall,
        # Other processes on the machine (a build, say) in the same window, in cores: if this
        # is not near 0 the figures are not clean.
        "other_processes_cores": max(0.0, (all1 - all0) - (cpu1 - cpu0) - client_cpu) / wall,
        "errors": errors[:5], "error_count": len(errors),
    }


# --- 2. freshness --------------------------------------------------------------------------

def freshness(server: Server, samples: int, load: tuple[Path, list] | None) -> dict:
    """Ack-to-visible: post a batch of 10 events with a unique marker, then query COUNT with a
    filter on the marker until all 10 answer. The figure is from the ack to the answer that
    first shows them (so it includes one query's latency). With `load`, one client keeps posting
    the bench batches to another dataset meanwhile."""
    stop = threading.Event()
    loader = None
    if load:
        bodies, idx = load
        def run_load():
            with open(bodies, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            conn = server.connect()
            for off, ln, _ in itertools.cycle(idx):
                if stop.is_set():
                    break
                server.request("POST", "/1/batch/background", mm[off:off + ln], conn)
            conn.close()
        loader = threading.Thread(target=run_load)
        loader.start()
    ds = "fresh"
    # The first event creates the dataset and its marker column.
    server.json("POST", f"/1/batch/{ds}", [{"data": {"bench.marker": "warmup"}}])
    lat, polls = [], []
    try:
        for i in range(samples):
            marker = f"m{i}-{time.time_ns()}"
            now = datetime.now(timezone.utc)
            batch = [{"data": {"bench.marker": marker, "duration_ms": 1.5, "seq": j}, "time": now.isoformat()}
                     for j in range(10)]
            status, data, _ = server.request("POST", f"/1/batch/{ds}", json.dumps(batch).encode())
            acked = time.perf_counter()
            assert status < 300 and data.count(b'"status":202') == 10, data
            spec = json.dumps({"calculations": [{"op": "COUNT"}],
                               "filters": [{"column": "bench.marker", "op": "=", "value": marker}],
                               "start_time": int(now.timestamp()) - 300, "end_time": int(now.timestamp()) + 300}).encode()
            n = 0
            while True:
                n += 1
                status, data, _ = server.request("POST", f"/api/query/{ds}", spec)
                res = json.loads(data)["data"]["results"] if status == 200 else []
                if res and res[0]["data"]["COUNT"] == 10:
                    break
                if time.perf_counter() - acked > 10:
                    raise RuntimeError(f"events of batch {i} not visible after 10 s")
            lat.append(time.perf_counter() - acked)
            polls.append(n)
    finally:
        stop.set()
        if loader:
            loader.join()
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]  # noqa: E731 - nearest rank
    return {"samples": samples, "under_load": bool(load), "p50_ms": q(0.50) * 1e3, "p99_ms": q(0.99) * 1e3,
            "max_ms": lat[-1] * 1e3, "visible_on_first_query": sum(1 for p in polls if p == 1) / len(polls)}


# --- 3. storage ----------------------------------------------------------------------------

def live_segments(data_dir: Path) -> list[Path]:
    """The segment files the catalog names (never stray files a crash or a merge left)."""
    cat = json.loads((data_dir / "catalog.json").read_text())
    return [data_dir / s["path"] for s in cat["datasets"][DATASET]["segments"]]


def compact(binary: Path, data_dir: Path, logs: Path) -> dict:
    """Restarts the server with a 1 s maintenance interval until no compaction is pending."""
    srv = Server(binary, data_dir, logs / "compact.log", "--maintenance-interval", "1s")
    t0, stable = time.perf_counter(), 0
    try:
        while time.perf_counter() - t0 < 900:
            st = srv.json("GET", f"/api/datasets/{DATASET}/stats")
            stable = stable + 1 if st["segments_pending_compaction"] == 0 else 0
            if stable >= 3:
                break
            time.sleep(1)
    finally:
        srv.stop()
    st["compaction_wait_s"] = time.perf_counter() - t0
    return st


# --- 4. queries ----------------------------------------------------------------------------

def duck_connect(source: str, work: Path, segments: list[Path], threads: int):
    """A fresh DuckDB connection whose relation `src` has Sonde's column names: a view over the
    live Parquet segments, or (in the database file made by duck_load) over the native table."""
    import duckdb
    if source == "parquet":
        con = duckdb.connect()
        files = ", ".join("'" + str(p) + "'" for p in segments)
        con.execute(f"CREATE VIEW src AS SELECT * FROM read_parquet([{files}], union_by_name = true)")
    else:
        con = duckdb.connect(str(work / "native.duckdb"), read_only=True)
    con.execute(f"SET threads = {threads}")
    con.execute("SET TimeZone = 'UTC'")
    return con


def flatten_view_sql(con) -> str:
    """`src` over the NDJSON-loaded table: nested objects flattened to dotted names and arrays as
    JSON text, as Sonde stores them; a missing sample rate is 1."""
    cols = []

    def walk(expr: str, name: str, ty) -> None:
        if ty.id == "struct":
            for child, cty in ty.children:
                walk(f"{expr}.\"{child}\"", f"{name}.{child}", cty)
        elif ty.id == "list":
            cols.append(f"to_json({expr})::VARCHAR AS \"{name}\"")
        elif name == "samplerate":
            cols.append("coalesce(samplerate, 1) AS samplerate")
        else:
            cols.append(f"{expr} AS \"{name}\"")

    rel = con.table("events")
    for name, ty in zip(rel.columns, rel.dtypes):
        walk(f"\"{name}\"", name, ty)
    return "CREATE VIEW src AS SELECT " + ", ".join(cols) + " FROM events"


def duck_load(ndjson: Path, work: Path, threads: int) -> dict:
    """DuckDB's NDJSON load (into a database file, checkpointed), and its Parquet of the same
    events (zstd) for the storage comparison."""
    import duckdb
    db = work / "native.duckdb"
    for p in (db, work / "native.duckdb.wal"):
        p.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    con.execute(f"SET threads = {threads}")
    t = time.perf_counter()
    con.execute(f"CREATE TABLE events AS SELECT * FROM read_ndjson('{ndjson}')")
    con.execute("CHECKPOINT")
    wall = time.perf_counter() - t
    n = con.execute("SELECT count(*) FROM events").fetchone()[0]
    con.execute(flatten_view_sql(con))
    pq = work / "duckdb.parquet"
    t = time.perf_counter()
    con.execute(f"COPY events TO '{pq}' (FORMAT parquet, COMPRESSION zstd)")
    pq_wall = time.perf_counter() - t
    con.close()
    size = ndjson.stat().st_size
    return {"events": n, "load_s": wall, "events_per_s": n / wall, "mb_per_s": size / wall / 1e6,
            "db_file_bytes": db.stat().st_size, "parquet_bytes": pq.stat().st_size,
            "parquet_bytes_per_event": pq.stat().st_size / n, "parquet_write_s": pq_wall}


def sonde_ask(server: Server, q: dict, conn=None) -> tuple[bytes, float]:
    if q["kind"] == "query":
        req = ("POST", f"/api/query/{DATASET}", q["spec"])
    elif q["kind"] == "events":
        req = ("POST", f"/api/events/{DATASET}", q["request"])
    elif q["kind"] == "bubbleup":
        req = ("POST", f"/api/bubbleup/{DATASET}", q["request"])
    else:
        req = ("GET", f"/api/traces/{DATASET}/{q['trace_id']}", None)
    body = None if req[2] is None else json.dumps(req[2]).encode()
    status, data, dt = server.request(req[0], req[1], body, conn)
    if status != 200:
        raise RuntimeError(f"{q['name']}: HTTP {status}: {data[:500]!r}")
    return data, dt


def sonde_shape(q: dict, data: bytes) -> dict:
    import suite
    doc = json.loads(data)
    return {"query": lambda: suite.sonde_query_shape(doc, q["spec"]), "events": lambda: suite.sonde_events_shape(doc),
            "trace": lambda: suite.sonde_trace_shape(doc), "bubbleup": lambda: suite.sonde_bubbleup_shape(doc)}[q["kind"]]()


def duck_columns(con) -> list[tuple[str, str]]:
    kinds = []
    for name, ty, *_ in con.execute("DESCRIBE src").fetchall():
        if name in ("timestamp", "samplerate"):
            continue
        kinds.append((name, "bool" if ty == "BOOLEAN" else "num" if ty in ("BIGINT", "DOUBLE", "INTEGER") else "str"))
    return kinds


def duck_ask(con, q: dict) -> tuple[dict, float]:
    """Runs every statement the question needs; the time covers them all (and fetching)."""
    import suite
    t = time.perf_counter()
    if q["kind"] == "query":
        out = suite.SpecSQL(q["spec"]).run(con)
    elif q["kind"] == "events":
        out = suite.events_run(con, q["request"])
    elif q["kind"] == "trace":
        out = suite.trace_run(con, q["trace_id"])
    else:
        out = suite.bubbleup_run(con, q["request"], duck_columns(con))
    return out, time.perf_counter() - t


def check(q: dict, sonde: dict, duck: dict) -> list[str]:
    import suite
    if q["kind"] == "query":
        return suite.compare_query(sonde, duck)
    if q["kind"] == "bubbleup":
        return suite.bubbleup_compare(sonde, duck)
    return suite.compare(sonde, duck)


def run_queries(binary: Path, data_dir: Path, work: Path, logs: Path, qs: list, repeats: int,
                cold_repeats: int, threads: int) -> tuple[list, bool]:
    segs = live_segments(data_dir)
    out = []
    srv = Server(binary, data_dir, logs / "query.log")
    cons = {s: duck_connect(s, work, segs, threads) for s in ("parquet", "native")}
    try:
        for q in qs:
            # Correctness first (this is also the warm-up): Sonde against both DuckDB sources.
            data, _ = sonde_ask(srv, q)
            s_ans = sonde_shape(q, data)
            rec = {"name": q["name"], "kind": q["kind"], "mismatch": {}}
            for src, con in cons.items():
                d_ans, _ = duck_ask(con, q)
                diffs = check(q, s_ans, d_ans)
                if diffs:
                    rec["mismatch"][src] = diffs
                    log(f"MISMATCH {q['name']} vs duckdb-{src}:\n  " + "\n  ".join(diffs))
            if q["kind"] == "query":
                rec["server_meta"] = json.loads(data).get("meta")
            # Hot: the three sides interleaved, so background noise hits them alike.
            times = {"sonde": [], "parquet": [], "native": []}
            server_ms = []
            for _ in range(repeats):
                data, dt = sonde_ask(srv, q)
                times["sonde"].append(dt)
                server_ms.append(json.loads(data).get("meta", {}).get("elapsed_ms"))
                for src, con in cons.items():
                    times[src].append(duck_ask(con, q)[1])
            rec["hot_ms"] = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            rec["hot_all_ms"] = {k: [x * 1e3 for x in v] for k, v in times.items()}
            ms = [x for x in server_ms if x is not None]
            rec["sonde_server_elapsed_ms"] = statistics.median(ms) if ms else None
            log(f"  {q['name']:<32} hot  sonde {rec['hot_ms']['sonde']:9.1f} ms   duckdb parquet "
                f"{rec['hot_ms']['parquet']:9.1f} ms   native {rec['hot_ms']['native']:9.1f} ms"
                + ("   MISMATCH" if rec["mismatch"] else ""))
            out.append(rec)
    finally:
        srv.stop()
        for con in cons.values():
            con.close()

    # Cold: empty OS page cache, a freshly started server (no footer, index or chunk caches) and
    # a fresh DuckDB connection, one query each. The new server first answers a query over a
    # time range with no data (every segment pruned from the catalog, no file opened), so that
    # the binary's code is paged in before the caches are dropped: DuckDB's library stays
    # mapped in this process all along, and a cold *data* read is what is being measured.
    dropped = cold_repeats > 0 and drop_caches()
    if not dropped:
        log("cold timings skipped: cannot drop the OS page cache here" if cold_repeats else "cold timings skipped")
        return out, False
    for rec, q in zip(out, qs):
        times = {"sonde": [], "parquet": [], "native": []}
        for _ in range(cold_repeats):
            srv = Server(binary, data_dir, logs / "query-cold.log")
            try:
                srv.json("POST", f"/api/query/{DATASET}", {"start_time": 946684800, "end_time": 946688400})
                drop_caches()
                times["sonde"].append(sonde_ask(srv, q)[1])
            finally:
                srv.stop()
            for src in ("parquet", "native"):
                drop_caches()
                con = duck_connect(src, work, segs, threads)
                times[src].append(duck_ask(con, q)[1])
                con.close()
        rec["cold_ms"] = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        log(f"  {q['name']:<32} cold sonde {rec['cold_ms']['sonde']:9.1f} ms   duckdb parquet "
            f"{rec['cold_ms']['parquet']:9.1f} ms   native {rec['cold_ms']['native']:9.1f} ms")
    return out, True


# --- 5. caches -----------------------------------------------------------------------------

# The three server configurations: every footer re-read on every query; footers and page
# indexes kept in memory; footers and column chunks kept in memory (the defaults).
CACHE_CONFIGS = [
    ("off", "both caches off", ["--metadata-cache-bytes", "0", "--chunk-cache-bytes", "0"]),
    ("footers", "footer cache only", ["--chunk-cache-bytes", "0"]),
    ("on", "both caches on (defaults)", []),
]


def cache_questions(qs: list[dict], t0: int, span_s: int) -> list[dict]:
    """Small, selective questions, whose time goes mostly to planning (opening the segments'
    footers) rather than to scanning: three of the suite's and a bare COUNT over the hour."""
    pick = {q["name"]: q for q in qs}
    out = [pick[n] for n in ("errors_by_dns_in_incident", "trace_lookup", "last_15m_service_region") if n in pick]
    out.append(dict(name="count_full_hour", kind="query",
                    spec={"calculations": [{"op": "COUNT"}], "start_time": t0, "end_time": t0 + span_s}))
    return out


def segmented_data(binary: Path, work: Path, logs: Path, bodies: Path, idx: list, segments: int) -> tuple[Path, dict]:
    """A data directory holding the bench events in `segments` segments: the batches ingested
    in order by one client into a server that flushes every events/segments rows and never
    compacts, then SIGTERM (which flushes the rest). One client keeps the segments the same size
    and disjoint in time (with several, ingest runs ahead of the flush and segments grow
    uneven). Reused by later runs with the same parameters."""
    events = sum(n for _, _, n in idx)
    flush_rows = max(1000, events // max(1, segments))
    ddir = work / f"sonde-segments-{flush_rows}"
    done = ddir / ".bench-built"
    if not done.exists():
        shutil.rmtree(ddir, ignore_errors=True)
        log(f"caches: ingesting into {ddir} (flush every {flush_rows:,} rows, no compaction)")
        srv = Server(binary, ddir, logs / "caches-build.log", "--flush-rows", str(flush_rows), "--flush-age", "1h",
                     "--compaction-target-rows", "0")
        try:
            r = ingest(srv, bodies, idx, 1)
        finally:
            srv.stop()
        if r["error_count"]:
            raise RuntimeError(f"caches: ingest errors: {r['errors']}")
        done.write_text("ok")
    segs = live_segments(ddir)
    cat = json.loads((ddir / "catalog.json").read_text())["datasets"][DATASET]["segments"]
    rows = sum(s.get("rows", 0) for s in cat)
    return ddir, {"data_dir": str(ddir), "flush_rows": flush_rows, "segments": len(segs), "segment_rows": rows,
                  "segment_bytes": sum(p.stat().st_size for p in segs)}


def chunk_metrics(srv: Server) -> dict:
    """The chunk cache's counters from /metrics (absent when the cache is off)."""
    _, data, _ = srv.request("GET", "/metrics")
    out = {}
    for line in data.decode().splitlines():
        if line.startswith("sonde_chunk_cache_"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def run_caches(binary: Path, work: Path, logs: Path, bodies: Path, idx: list, qs: list[dict],
               segments: int, repeats: int) -> dict:
    """Per-question time over many small segments with and without the in-memory caches. Each
    configuration gets a fresh server over the same data directory, one warm-up run of every
    question, then rounds of all of them (interleaved). The configurations run in two passes,
    in order and then in reverse (off, footers, on, on, footers, off), half the rounds each, so
    a drift in the machine's load hits them alike. Medians of client wall time and of the
    server's own `meta.elapsed_ms`."""
    ddir, layout = segmented_data(binary, work, logs, bodies, idx, segments)
    log(f"caches: {layout['segments']} segments, {layout['segment_rows']:,} rows")
    events = sum(n for _, _, n in idx)
    if layout["segment_rows"] != events:
        log(f"WARNING: caches: segments hold {layout['segment_rows']:,} rows, expected {events:,}")
    res = {"layout": layout, "repeats": repeats, "configs": {}, "queries": []}
    recs = {q["name"]: {"name": q["name"], "kind": q["kind"], "wall_ms": {}, "server_ms": {}, "first_ms": {},
                        "wall_all_ms": {}, "server_all_ms": {}, "meta": {}, "answers_equal": True} for q in qs}
    wall = {k: {q["name"]: [] for q in qs} for k, _, _ in CACHE_CONFIGS}
    server = {k: {q["name"]: [] for q in qs} for k, _, _ in CACHE_CONFIGS}
    reference = {}
    order = CACHE_CONFIGS + CACHE_CONFIGS[::-1]
    rounds = [(repeats + 1) // 2, repeats // 2]
    for i, (key, label, flags) in enumerate(order):
        n = rounds[i // len(CACHE_CONFIGS)]
        # Compaction stays off, or the maintenance loop would merge the segments under us.
        srv = Server(binary, ddir, logs / "caches.log", "--compaction-target-rows", "0", *flags)
        try:
            for q in qs:  # warm-up: the first run after the start, and the answers to compare
                data, dt = sonde_ask(srv, q)
                r = recs[q["name"]]
                r["first_ms"].setdefault(key, dt * 1e3)
                r["meta"].setdefault(key, json.loads(data).get("meta"))
                shape = sonde_shape(q, data)
                if q["name"] not in reference:
                    reference[q["name"]] = shape
                elif suite_compare(reference[q["name"]], shape):
                    r["answers_equal"] = False
                    log(f"caches: {q['name']}: the answer with '{label}' differs from the first configuration's")
            m0 = chunk_metrics(srv)
            for _ in range(n):
                for q in qs:
                    data, dt = sonde_ask(srv, q)
                    wall[key][q["name"]].append(dt * 1e3)
                    server[key][q["name"]].append(json.loads(data).get("meta", {}).get("elapsed_ms"))
            m1 = chunk_metrics(srv)
            rss = srv.peak_rss()
        finally:
            srv.stop()
        c = res["configs"].setdefault(key, {"label": label, "flags": flags, "server_peak_rss_bytes": 0,
                                            "chunk_cache": None})
        c["server_peak_rss_bytes"] = max(c["server_peak_rss_bytes"], rss)
        if m1:  # hits and misses over the timed rounds of both passes; bytes held at the end
            cc = c["chunk_cache"] or {"hits": 0, "misses": 0}
            for name, k in (("hits", "sonde_chunk_cache_hits_total"), ("misses", "sonde_chunk_cache_misses_total")):
                cc[name] += m1.get(k, 0) - m0.get(k, 0)
            cc["bytes"] = max(cc.get("bytes") or 0, m1.get("sonde_chunk_cache_bytes", 0))
            cc["hit_ratio"] = cc["hits"] / (cc["hits"] + cc["misses"]) if cc["hits"] + cc["misses"] else None
            c["chunk_cache"] = cc
        log(f"caches: {label} (pass {i // len(CACHE_CONFIGS) + 1}, {n} rounds): "
            + ", ".join(f"{q['name']} {statistics.median(wall[key][q['name']]):.1f} ms" for q in qs if wall[key][q["name"]]))
    for r in recs.values():
        for key, _, _ in CACHE_CONFIGS:
            r["wall_all_ms"][key] = wall[key][r["name"]]
            r["server_all_ms"][key] = server[key][r["name"]]
            r["wall_ms"][key] = statistics.median(wall[key][r["name"]]) if wall[key][r["name"]] else None
            ms = [x for x in server[key][r["name"]] if x is not None]
            r["server_ms"][key] = statistics.median(ms) if ms else None
        for field, out in (("wall_ms", "ratios"), ("server_ms", "server_ratios")):
            t = r[field]
            if all(t.get(k) for k in ("off", "footers", "on")):
                r[out] = {"off_over_on": t["off"] / t["on"], "off_over_footers": t["off"] / t["footers"],
                          "footers_over_on": t["footers"] / t["on"]}
        res["queries"].append(r)
    for field in ("wall_ms", "server_ms"):
        res[f"geomean_{field}"] = {k: geomean([r[field][k] or 0 for r in res["queries"]]) for k, _, _ in CACHE_CONFIGS}
    return res


def suite_compare(a: dict, b: dict) -> list[str]:
    import suite
    return suite.compare(a, b)


# --- output --------------------------------------------------------------------------------

def geomean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x and x > 0]
    if not xs:
        return None
    import math
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def fmt(v, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        s = f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.2f}" if abs(v) >= 1 else f"{v:.3f}"
    else:
        s = f"{v:,}"
    return s + unit


def ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def table(title: str, header: list[str], rows: list[list]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r))  # noqa: E731
    return "\n".join([f"\n== {title} ==", line(header), "  ".join("-" * x for x in w)] + [line(r) for r in cells[1:]])


def summary(res: dict) -> str:
    out = [f"Sonde benchmark, size {res['size']} ({res['events']:,} events), {res['date']}, "
           f"{res['machine']['cpu']} x{res['machine']['cores']}, {res['versions']['sonde']} ({res['versions']['git']}), "
           f"DuckDB {res['versions']['duckdb']} ({res['config']['duckdb_threads']} threads); load average at start "
           f"{res['loadavg_start'][0]:.2f}, at end {res.get('loadavg_end', [0])[0]:.2f}"]
    ing, dk = res.get("ingest"), res.get("duckdb_load")
    if ing:
        rows = []
        for r in ing:
            rows.append([f"{r['clients']} clients: events/s", fmt(r["events_per_s"]), fmt(dk and dk["events_per_s"]),
                         ratio(r["events_per_s"], dk and dk["events_per_s"])])
            rows.append([f"{r['clients']} clients: MB/s of JSON", fmt(r["mb_per_s"]), fmt(dk and dk["mb_per_s"]),
                         ratio(r["mb_per_s"], dk and dk["mb_per_s"])])
            rows.append([f"{r['clients']} clients: server CPU s / M events", fmt(r["server_cpu_s_per_m_events"]), "-", "-"])
            rows.append([f"{r['clients']} clients: server peak RSS", fmt(r["server_peak_rss_bytes"] / 2**20, " MiB"), "-", "-"])
            rows.append([f"{r['clients']} clients: client CPU (share of wall)", fmt(r["client_cpu_share_of_wall"]), "-", "-"])
            rows.append([f"{r['clients']} clients: other processes' CPU (cores)", fmt(r.get("other_processes_cores")), "-", "-"])
        out.append(table("Ingest (Sonde: HTTP batches, durable acks; DuckDB: read_ndjson into a table)",
                         ["metric", "Sonde", "DuckDB", "ratio"], rows))
    fr = res.get("freshness")
    if fr:
        rows = []
        for f in fr:
            tag = "under load" if f["under_load"] else "idle"
            rows += [[f"ack -> visible p50 ({tag})", fmt(f["p50_ms"], " ms"), "-", "-"],
                     [f"ack -> visible p99 ({tag})", fmt(f["p99_ms"], " ms"), "-", "-"],
                     [f"visible on first query ({tag})", f"{f['visible_on_first_query']:.0%}", "-", "-"]]
        out.append(table("Freshness (DuckDB: not applicable)", ["metric", "Sonde", "DuckDB", "ratio"], rows))
    st = res.get("storage")
    if st:
        rows = [["bytes / event", fmt(st["sonde_bytes_per_event"]), fmt(st["duckdb_parquet_bytes_per_event"]),
                 ratio(st["sonde_bytes_per_event"], st["duckdb_parquet_bytes_per_event"])],
                ["NDJSON / stored size", fmt(st["ndjson_ratio"]), fmt(st["duckdb_ndjson_ratio"]), "-"],
                ["segments (after compaction)", fmt(st["segments"]), "1", "-"],
                ["DuckDB database file bytes / event", "-", fmt(st["duckdb_db_bytes_per_event"]), "-"]]
        out.append(table("Storage (Sonde: Parquet segments after flush + compaction; DuckDB: COPY TO Parquet zstd)",
                         ["metric", "Sonde", "DuckDB", "ratio"], rows))
    qs = res.get("queries")
    if qs:
        for mode in ("hot", "cold"):
            key = f"{mode}_ms"
            if not any(key in q for q in qs):
                continue
            rows = []
            for q in qs:
                t = q.get(key, {})
                flag = " (MISMATCH)" if q["mismatch"] else ""
                rows.append([q["name"] + flag, fmt(t.get("sonde")), fmt(t.get("parquet")), ratio(t.get("sonde"), t.get("parquet")),
                             fmt(t.get("native")), ratio(t.get("sonde"), t.get("native"))])
            g = res["geomean"].get(mode)
            if g:
                rows.append([f"geometric mean ({g['queries']} matching queries)", fmt(g["sonde"]), fmt(g["parquet"]),
                             ratio(g["sonde"], g["parquet"]), fmt(g["native"]), ratio(g["sonde"], g["native"])])
            title = ("Queries, hot: median of repeats, ms" if mode == "hot"
                     else "Queries, cold: OS cache dropped, server restarted / new DuckDB connection, ms")
            out.append(table(title, ["query", "Sonde", "DuckDB parquet", "ratio", "DuckDB native", "ratio"], rows))
    ca = res.get("caches")
    if ca:
        lay = ca["layout"]
        keys = [k for k, _, _ in CACHE_CONFIGS]
        head = ["query", "both off", "footers only", "both on", "off / on", "off / footers", "footers / on"]
        for field, gfield, what in (("wall_ms", "geomean_wall_ms", "client wall time"),
                                    ("server_ms", "geomean_server_ms", "server meta.elapsed_ms")):
            rows = []
            for q in ca["queries"]:
                t = q[field]
                rows.append([q["name"] + ("" if q["answers_equal"] else " (ANSWERS DIFFER)")]
                            + [fmt(t.get(k)) for k in keys]
                            + [ratio(t.get("off"), t.get("on")), ratio(t.get("off"), t.get("footers")),
                               ratio(t.get("footers"), t.get("on"))])
            g = ca[gfield]
            rows.append(["geometric mean"] + [fmt(g.get(k)) for k in keys]
                        + [ratio(g.get("off"), g.get("on")), ratio(g.get("off"), g.get("footers")),
                           ratio(g.get("footers"), g.get("on"))])
            out.append(table(f"Caches: {lay['segments']} segments of ~{lay['flush_rows']:,} rows, median of "
                             f"{ca['repeats']}, {what}, ms", head, rows))
        cc = ca["configs"].get("on", {}).get("chunk_cache")
        if cc:
            out.append(f"chunk cache (both on, timed runs): {cc['hits']:,.0f} hits, {cc['misses']:,.0f} misses, "
                       f"{(cc['bytes'] or 0) / 2**20:.1f} MiB held")
    if res.get("targets"):
        out.append(table("Issue 9 targets", ["target", "measured", "met"],
                         [[t["target"], t["measured"], "yes" if t["met"] else "NO"] for t in res["targets"]]))
    return "\n".join(out) + "\n"


def targets(res: dict) -> list[dict]:
    t = []
    if res.get("ingest"):
        best = max(r["events_per_s"] for r in res["ingest"])
        rss = max(r["server_peak_rss_bytes"] for r in res["ingest"])
        t.append({"target": "ingest >= 200k events/s durable (best concurrency)", "measured": fmt(best), "met": best >= 200_000})
        t.append({"target": "peak RSS < 2 GiB", "measured": fmt(rss / 2**20, " MiB"), "met": rss < 2 * 2**30})
    if res.get("freshness"):
        p99 = max(f["p99_ms"] for f in res["freshness"])
        t.append({"target": "freshness p99 <= 1 s", "measured": fmt(p99, " ms"), "met": p99 <= 1000})
    if res.get("queries"):
        worst = max(q["hot_ms"]["sonde"] for q in res["queries"])
        t.append({"target": f"every query median < 1 s (at 10M; this run: {res['events']:,})", "measured": fmt(worst, " ms (slowest)"),
                  "met": worst < 1000})
        g = res["geomean"].get("hot")
        if g:
            r = g["sonde"] / g["parquet"]
            t.append({"target": "geomean <= 0.5x DuckDB over the same Parquet (hot)", "measured": f"{r:.2f}x", "met": r <= 0.5})
        tr = next((q for q in res["queries"] if q["kind"] == "trace"), None)
        if tr:
            t.append({"target": "trace-id lookup < 20 ms (hot)", "measured": fmt(tr["hot_ms"]["sonde"], " ms"),
                      "met": tr["hot_ms"]["sonde"] < 20})
        bad = [q["name"] for q in res["queries"] if q["mismatch"]]
        t.append({"target": "answers equal to DuckDB's", "measured": "all equal" if not bad else "mismatch: " + ", ".join(bad),
                  "met": not bad})
    if res.get("storage"):
        s = res["storage"]
        t.append({"target": "bytes/event <= DuckDB's Parquet", "measured": f"{s['sonde_bytes_per_event']:.1f} vs {s['duckdb_parquet_bytes_per_event']:.1f}",
                  "met": s["sonde_bytes_per_event"] <= s["duckdb_parquet_bytes_per_event"]})
    return t


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 2**30, 1), "kernel": platform.release(),
            "python": platform.python_version()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="quick", help="quick = 1M events, full = 10M, dev = 200k")
    ap.add_argument("--events", type=int, help="override the number of events")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--clients", default="1,4,16", help="ingest concurrency levels (the last run's data is queried)")
    ap.add_argument("--batch", type=int, default=1000, help="events per ingest batch")
    ap.add_argument("--repeats", type=int, default=5, help="hot repeats per query (median)")
    ap.add_argument("--cold-repeats", type=int, help="cold runs per query (median; 0 skips; default 1 quick, 3 full)")
    ap.add_argument("--freshness-samples", type=int, default=100)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="DuckDB threads (default: the cores Sonde has)")
    ap.add_argument("--only", help="comma-separated query names to run (development)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: " + ",".join(SECTIONS))
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="comma-separated sections to run (default all; e.g. --sections caches runs that one alone)")
    ap.add_argument("--cache-segments", type=int, default=50,
                    help="caches section: how many segments the events are split into")
    ap.add_argument("--cache-repeats", type=int, default=20, help="caches section: timed rounds per configuration (median)")
    ap.add_argument("--bin", type=Path, default=TARGET / "release" / "sonde")
    ap.add_argument("--out", type=Path, help="results JSON (default benches/results/<size>.json)")
    a = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import duckdb
    import suite

    events = a.events or SIZES[a.size]
    cold_repeats = a.cold_repeats if a.cold_repeats is not None else (3 if a.size == "full" else 1)
    skip = set(filter(None, a.skip.split(",")))
    unknown = (skip | set(filter(None, a.sections.split(",")))) - set(SECTIONS)
    if unknown:
        sys.exit(f"unknown sections {sorted(unknown)}; the sections are {','.join(SECTIONS)}")
    skip |= set(SECTIONS) - set(filter(None, a.sections.split(",")))
    # The storage and query sections need the ingested, compacted data (and DuckDB's load);
    # the caches section makes its own data directory from the encoded batches.
    need_data = bool({"storage", "queries"} - skip)
    binary = a.bin
    if not binary.exists():
        sys.exit(f"no sonde binary at {binary}: run `make release` (or pass --bin)")
    work = WORK / f"{events}-seed{a.seed}"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ndjson = generate(binary, events, a.seed, work)
    bodies, idx = batch_file(ndjson, a.batch, work)
    data_dir = work / "sonde-data"

    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    # Uncommitted source changes mean the binary may not be the commit named.
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "crates", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip() != ""
    res = {"size": a.size if not a.events else f"{events}", "events": events,
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine(),
           "versions": {"sonde": version, "git": rev + (" (work tree modified)" if dirty else ""),
                        "binary_built": datetime.fromtimestamp(binary.stat().st_mtime, timezone.utc).isoformat(),
                        "duckdb": duckdb.__version__},
           "config": {"seed": a.seed, "batch_events": a.batch, "repeats": a.repeats, "cold_repeats": cold_repeats,
                      "duckdb_threads": a.threads, "ndjson_bytes": ndjson.stat().st_size, "server_flags": "defaults",
                      "cache_segments": a.cache_segments, "cache_repeats": a.cache_repeats},
           "geomean": {}, "loadavg_start": os.getloadavg()}
    if res["loadavg_start"][0] > 0.5:
        log(f"WARNING: the machine is busy (load average {res['loadavg_start'][0]:.2f}): figures will be noisy")

    # 1. Ingest, one fresh server and data directory per concurrency level; the last one's data
    #    is flushed (SIGTERM), compacted and queried.
    clients = [int(c) for c in a.clients.split(",")]
    if "ingest" not in skip or (need_data and not (data_dir / "catalog.json").exists()):
        res["ingest"] = []
        for c in clients:
            shutil.rmtree(data_dir, ignore_errors=True)
            srv = Server(binary, data_dir, logs / f"ingest-{c}.log")
            try:
                r = ingest(srv, bodies, idx, c)
            finally:
                r_exit = srv.stop()
            r["server_lifetime"] = r_exit
            log(f"ingest {c:>2} clients: {r['events_per_s']:,.0f} events/s, {r['mb_per_s']:.1f} MB/s, "
                f"server CPU {r['server_cpu_s_per_m_events']:.2f} s/M events, peak RSS {r['server_peak_rss_bytes'] / 2**20:.0f} MiB, "
                f"client CPU {r['client_cpu_share_of_wall']:.0%} of wall, errors {r['error_count']}")
            res["ingest"].append(r)
    if need_data and ("storage" not in skip or not (work / "native.duckdb").exists()):
        log("DuckDB NDJSON load ...")
        res["duckdb_load"] = duck_load(ndjson, work, a.threads)
        log(f"duckdb load: {res['duckdb_load']['events_per_s']:,.0f} events/s")

    # 3. Storage, after compaction.
    if need_data:
        st = compact(binary, data_dir, logs)
    if "storage" not in skip:
        segs = live_segments(data_dir)
        seg_bytes = sum(p.stat().st_size for p in segs)
        n_ndjson = res["config"]["ndjson_bytes"]
        dk = res["duckdb_load"]
        res["storage"] = {"segments": len(segs), "segment_rows": st["segment_rows"], "segment_bytes": seg_bytes,
                          "stats": st, "sonde_bytes_per_event": seg_bytes / st["segment_rows"],
                          "ndjson_bytes_per_event": n_ndjson / events, "ndjson_ratio": n_ndjson / seg_bytes,
                          "duckdb_parquet_bytes_per_event": dk["parquet_bytes_per_event"],
                          "duckdb_ndjson_ratio": n_ndjson / dk["parquet_bytes"],
                          "duckdb_db_bytes_per_event": dk["db_file_bytes"] / dk["events"]}
        if st["segment_rows"] != events:
            log(f"WARNING: segments hold {st['segment_rows']:,} rows, expected {events:,}")

    # 2. Freshness, on its own server and data directory (idle, then with one client ingesting).
    if "freshness" not in skip:
        fdir = work / "sonde-fresh"
        res["freshness"] = []
        for load in (None, (bodies, idx)):
            shutil.rmtree(fdir, ignore_errors=True)
            srv = Server(binary, fdir, logs / "freshness.log")
            try:
                res["freshness"].append(freshness(srv, a.freshness_samples, load))
            finally:
                srv.stop()
            log(f"freshness: {res['freshness'][-1]}")
        shutil.rmtree(fdir, ignore_errors=True)

    with open(ndjson, "rb") as f:  # a trace id from two thirds into the data
        f.seek(ndjson.stat().st_size * 2 // 3)
        f.readline()
        trace_id = json.loads(f.readline())["trace"]["trace_id"]
    all_qs = suite.questions(GEN_T0, GEN_SPAN_S, trace_id)

    # 4. Queries.
    if "queries" not in skip:
        qs = all_qs
        if a.only:
            qs = [q for q in qs if q["name"] in a.only.split(",")]
        res["queries"], res["config"]["cold_done"] = run_queries(
            binary, data_dir, work, logs, qs, a.repeats, cold_repeats, a.threads)
        for mode in ("hot", "cold"):
            ok = [q for q in res["queries"] if not q["mismatch"] and f"{mode}_ms" in q]
            if ok:
                res["geomean"][mode] = {k: geomean([q[f"{mode}_ms"][k] for q in ok]) for k in ("sonde", "parquet", "native")}
                res["geomean"][mode]["queries"] = len(ok)

    # 5. Caches: small questions over many segments, with and without the in-memory caches.
    if "caches" not in skip:
        res["caches"] = run_caches(binary, work, logs, bodies, idx, cache_questions(all_qs, GEN_T0, GEN_SPAN_S),
                                   a.cache_segments, a.cache_repeats)

    res["loadavg_end"] = os.getloadavg()
    res["targets"] = targets(res)
    text = summary(res)
    print(text)
    out = a.out or HERE / "results" / f"{res['size']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    (out.with_suffix(".txt")).write_text(text)
    log(f"results: {out}")


if __name__ == "__main__":
    ensure_venv()
    main()

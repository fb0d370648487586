#!/usr/bin/env python3
"""Real traces through a cluster: the Online Boutique spans of ../shared/realdata (Nezha,
converted by its own tools/convert.py `nezha-spans`) sent round-robin through every node of a
2 ingest + 2 query cluster over moto (README "Running a cluster"), and through one single node
beside it; then the same questions asked of both query nodes and of the single node, and every
answer checked against the same figures computed here, in Python, from the events sent.

The questions: distributed SQL (spans, errors-free root spans, SUM/MAX of duration_ms and the
weighted P99 by service; the 5 slowest operations; distinct traces), a query spec (COUNT and
P99 by service), the traces of the first root span and of the trace with the most spans (their
span ids, duplicates included), BubbleUp of the busiest service against the rest (exact: the
counts and each operation's shares), and the 20 newest spans of that service (their times). Each
ingest node's last spans stay in its
write buffer meanwhile, so part of every answer comes from them: q-1 answers them from its
copies of the ingest nodes' buffers, q-2 copies none (`--max-buffer-bytes 0`) and reads them
from the ingest nodes as each question runs.
SQL on a query node is split over both query
nodes' workers (`--distributed-bytes-per-partition 1`), so `meta.distributed` is recorded too,
with the wall time of each question on the cluster and on the single node (debug or release,
whatever --sonde is: a figure of this machine, not a benchmark of the engine).

    python3 benches/realdata_cluster.py --sonde $CARGO_TARGET_DIR/debug/sonde --limit 100000

Needs moto (`make clients-venv`). Writes benches/results/realdata_cluster.json; exits 1 when an
answer differs.
"""
import argparse, calendar, collections, json, math, os, subprocess, sys, time, urllib.error, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from sonde_client import MOTO, Node, call, start_moto  # noqa: E402
DAYS = ("2022-08-22", "2022-08-23")
MAX_BODY = 4 << 20
DATASET = "boutique"


def spans(realdata, limit):
    """The converted spans, the first limit/2 of each day (all with no limit), as NDJSON lines."""
    per_day = None if not limit else -(-limit // len(DAYS))
    out = []
    for day in DAYS:
        conv = subprocess.Popen([sys.executable, f"{realdata}/tools/convert.py", "nezha-spans",
                                 f"{realdata}/nezha-onlineboutique/traces_{day}.csv.gz"], stdout=subprocess.PIPE)
        n = 0
        for line in conv.stdout:
            if per_day is not None and n >= per_day:
                break
            out.append(line)
            n += 1
        conv.kill()
        conv.wait()
    return out


def post_all(nodes, lines):
    """Bodies of at most MAX_BODY, each to the next node in turn (a 503 is asked again)."""
    buf, size, turn = [], 0, 0

    def post(body_lines):
        nonlocal turn
        node = nodes[turn % len(nodes)]
        turn += 1
        deadline = time.monotonic() + 120
        while True:
            try:
                ans = call(f"{node.url}/api/ingest/{DATASET}", b"".join(body_lines))
                break
            except urllib.error.HTTPError as e:
                if e.code != 503 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        if ans.get("accepted") != len(body_lines):
            raise SystemExit(f"ingest through {node.url}: {ans}")

    for line in lines:
        if size + len(line) > MAX_BODY and buf:
            post(buf)
            buf, size = [], 0
        buf.append(line)
        size += len(line)
    if buf:
        post(buf)


def nearest_rank(values, q):
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)]


def expected(events):
    """Every figure the questions ask for, from the events themselves."""
    by = collections.defaultdict(list)
    for e in events:
        by[e["service.name"]].append(e)
    per_service = {
        s: {"n": len(es), "roots": sum(1 for e in es if e.get("is_root")),
            "total": sum(e["duration_ms"] for e in es), "top": max(e["duration_ms"] for e in es),
            "p99": nearest_rank([e["duration_ms"] for e in es], 0.99)}
        for s, es in by.items()}
    ops = collections.defaultdict(float)
    for e in events:
        ops[(e["service.name"], e["name"])] = max(ops[(e["service.name"], e["name"])], e["duration_ms"])
    slowest = sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    spans_of = collections.defaultdict(list)
    for e in events:
        spans_of[e["trace.trace_id"]].append(e["trace.span_id"])
    first_root = next(e["trace.trace_id"] for e in events if e.get("is_root"))
    biggest = max(spans_of, key=lambda t: (len(spans_of[t]), t))
    busiest = max(by, key=lambda s: (len(by[s]), s))
    inside = collections.Counter(e["name"] for e in by[busiest])
    outside = collections.Counter(e["name"] for e in events if e["service.name"] != busiest)
    n_out = len(events) - len(by[busiest])
    newest = sorted((micros(e["time"]) for e in by[busiest]), reverse=True)[:20]
    return {"per_service": per_service, "slowest": [[s, n, d] for (s, n), d in slowest],
            "traces": len({e["trace.trace_id"] for e in events}),
            "trace_spans": {t: sorted(spans_of[t]) for t in (first_root, biggest)},
            "busiest": busiest, "bubbleup_counts": (len(by[busiest]), n_out),
            "name_shares": {n: (inside[n] / len(by[busiest]), outside[n] / max(n_out, 1))
                            for n in set(inside) | set(outside)},
            "newest": newest}


def micros(stamp):
    """An RFC 3339 UTC time (any digits of a second) as whole microseconds since the epoch."""
    whole, _, frac = stamp.rstrip("Z").partition(".")
    secs = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return secs * 1_000_000 + int((frac + "000000")[:6])


SQL_BY_SERVICE = """SELECT "service.name" AS svc, COUNT(*) AS n, SUM(CASE WHEN is_root THEN 1 ELSE 0 END) AS roots,
 SUM(duration_ms) AS total, MAX(duration_ms) AS top, weighted_percentile(duration_ms, samplerate, 0.99) AS p99
 FROM boutique GROUP BY 1 ORDER BY 1"""
SQL_SLOWEST = """SELECT "service.name" AS svc, name, MAX(duration_ms) AS d FROM boutique GROUP BY 1, 2
 ORDER BY d DESC, svc, name LIMIT 5"""
SQL_TRACES = 'SELECT COUNT(DISTINCT "trace.trace_id") AS traces FROM boutique'


def close(a, b):
    return abs(a - b) <= 1e-9 * max(abs(b), 1.0)


def ask_all(node, want, t0, t1):
    """Every question of `node`: (mismatches, timings in ms, the SQL's meta.distributed)."""
    bad, ms, dist = [], {}, {}

    def timed(name, path, body):
        s = time.perf_counter()
        r = call(node.url + path, body)
        ms[name] = round((time.perf_counter() - s) * 1000, 1)
        if "meta" in r and isinstance(r["meta"], dict) and "distributed" in r["meta"]:
            dist[name] = r["meta"]["distributed"]
        return r

    r = timed("sql by service", "/api/sql", {"sql": SQL_BY_SERVICE})
    got = {row["svc"]: row for row in r["rows"]}
    for s, w in want["per_service"].items():
        g = got.get(s)
        if not g or g["n"] != w["n"] or g["roots"] != w["roots"] or not close(g["total"], w["total"]) \
                or g["top"] != w["top"] or g["p99"] != w["p99"]:
            bad.append(f"sql by service {s}: {g} want {w}")
    if set(got) != set(want["per_service"]):
        bad.append(f"services {sorted(got)} want {sorted(want['per_service'])}")
    r = timed("sql slowest operations", "/api/sql", {"sql": SQL_SLOWEST})
    got = [[row["svc"], row["name"], row["d"]] for row in r["rows"]]
    if got != want["slowest"]:
        bad.append(f"slowest {got} want {want['slowest']}")
    r = timed("sql distinct traces", "/api/sql", {"sql": SQL_TRACES})
    if r["rows"][0]["traces"] != want["traces"]:
        bad.append(f"traces {r['rows'][0]['traces']} want {want['traces']}")
    spec = {"calculations": [{"op": "COUNT"}, {"op": "P99", "column": "duration_ms"}], "breakdowns": ["service.name"],
            "start_time": t0, "end_time": t1, "limit": 1000}
    r = timed("spec COUNT, P99 by service", f"/api/query/{DATASET}", spec)
    for row in r["data"]["results"]:
        d = row["data"]
        w = want["per_service"].get(d["service.name"])
        if not w or d["COUNT"] != w["n"] or d["P99(duration_ms)"] != w["p99"]:
            bad.append(f"spec {d} want {w}")
    for trace, want_ids in want["trace_spans"].items():
        r = timed(f"trace of {len(want_ids)} spans", f"/api/traces/{DATASET}/{trace}", None)
        got = sorted(s["trace.span_id"] for s in r["spans"])
        if got != want_ids:
            bad.append(f"trace {trace}: {len(got)} spans {got[:5]}… want {len(want_ids)} {want_ids[:5]}…")
    busiest = want["busiest"]
    # Exact: past --bubbleup-sample-rows (all 2.0M spans are) the default answer is a sample,
    # whose shares are not the computed ones.
    r = timed("bubbleup of the busiest service, exact", f"/api/bubbleup/{DATASET}",
              {"start_time": t0, "end_time": t1, "exact": True, "selection": {"group": {"service.name": busiest}}})
    counts = (r["selection"]["count"], r["baseline"]["count"])
    if counts != tuple(want["bubbleup_counts"]):
        bad.append(f"bubbleup counts {counts} want {want['bubbleup_counts']}")
    names = next((c for c in r["columns"] if c["column"] == "name"), None)
    if names is None:
        bad.append("bubbleup: no column `name`")
    else:
        for v in names["values"]:
            w = want["name_shares"].get(v["value"], (0.0, 0.0))
            if not (close(v["selection"], w[0]) and close(v["baseline"], w[1])):
                bad.append(f"bubbleup name {v} want {w}")
    r = timed("20 newest spans of the busiest service", f"/api/events/{DATASET}",
              {"start_time": t0, "end_time": t1, "limit": 20,
               "filters": [{"column": "service.name", "op": "=", "value": busiest}]})
    got = [micros(e["timestamp"]) for e in r["events"]]
    if got != want["newest"]:
        bad.append(f"newest {got[:3]}… want {want['newest'][:3]}…")
    return bad, ms, dist


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sonde", default=os.environ.get("SONDE_BIN", os.path.expanduser("~/.cache/sonde-target/debug/sonde")))
    ap.add_argument("--realdata", default=os.path.join(HERE, "..", "..", "shared", "realdata"))
    ap.add_argument("--limit", type=int, default=100000, help="spans (half from each day); 0: all 2.0 M")
    ap.add_argument("--moto", default=MOTO)
    args = ap.parse_args()
    lines = spans(args.realdata, args.limit)
    events = [json.loads(l) for l in lines]
    want = expected(events)
    stamps = sorted(e["time"] for e in events)
    # Whole hours around the data, as absolute times (the spans are from 2022).
    t0 = calendar.timegm(time.strptime(stamps[0][:13], "%Y-%m-%dT%H"))
    t1 = calendar.timegm(time.strptime(stamps[-1][:13], "%Y-%m-%dT%H")) + 3600

    moto, env = start_moto("realdata", args.moto)
    # Each ingest node's last spans (under --flush-rows) stay in its write buffer while the
    # questions are asked (--flush-age), so q-1 answers them from its copies, named in the
    # distributed plans by position, and q-2 (which copies none) reads them as it runs.
    tuning = ["--storage", "s3://realdata/cluster", "--catalog-refresh", "500ms", "--flush-rows", "50000",
              "--flush-age", "1h", "--distributed-bytes-per-partition", "1", "--cluster-key", "realdata-cluster"]
    nodes = []
    try:
        nodes = [Node(args.sonde, env, *tuning, "--role", "ingest", "--node-name", "ing-a"),
                 Node(args.sonde, env, *tuning, "--role", "ingest", "--node-name", "ing-b"),
                 Node(args.sonde, env, *tuning, "--role", "query", "--node-name", "q-1"),
                 # q-2 copies no fresh spans (--max-buffer-bytes 0): it reads them from the
                 # ingest nodes as each question runs.
                 Node(args.sonde, env, *tuning, "--role", "query", "--node-name", "q-2",
                      "--max-buffer-bytes", "0")]
        single = Node(args.sonde, {}, "--flush-rows", "50000")
        nodes.append(single)
        s = time.perf_counter()
        post_all(nodes[:4], lines)
        cluster_ingest_s = time.perf_counter() - s
        s = time.perf_counter()
        post_all([single], lines)
        single_ingest_s = time.perf_counter() - s
        print(f"{len(events):,} spans sent through the cluster in {cluster_ingest_s:.1f} s, "
              f"to the single node in {single_ingest_s:.1f} s", file=sys.stderr)
        # Every query node sees every span, and knows both workers.
        deadline = time.monotonic() + 120
        for q in nodes[2:4]:
            while True:
                try:
                    r = call(q.url + "/api/sql", {"sql": "SELECT COUNT(*) AS n FROM boutique"})
                except urllib.error.HTTPError:  # the dataset is not in its catalog yet
                    r = {"rows": [{"n": 0}], "meta": {}}
                if r["rows"][0]["n"] == len(events) and (r["meta"].get("distributed") or {}).get("workers") == 2:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{q.url} counts {r['rows'][0]['n']} of {len(events)}: {r.get('meta')}")
                time.sleep(0.5)
        def buffered(node):  # the ingest node that does not write the dataset does not know it
            try:
                return call(node.url + f"/api/datasets/{DATASET}/stats")["buffered_rows"]
            except urllib.error.HTTPError:
                return 0

        fresh = sum(buffered(n) for n in nodes[:2])

        def metric(node, name):
            with urllib.request.urlopen(node.url + "/metrics") as r:
                for line in r.read().decode().splitlines():
                    if line.startswith(name + " "):
                        return int(float(line.split()[1]))
            return None
        report = {"spans": len(events), "services": len(want["per_service"]), "traces": want["traces"],
                  "fresh_spans_in_ingest_buffers": fresh,
                  "binary": args.sonde, "cluster_ingest_s": round(cluster_ingest_s, 2),
                  "single_ingest_s": round(single_ingest_s, 2), "nodes": {}}
        mismatches = 0
        for name, node in [("q-1", nodes[2]), ("q-2", nodes[3]), ("single", single)]:
            ask_all(node, want, t0, t1)  # warm-up
            bad, ms, dist = ask_all(node, want, t0, t1)
            mismatches += len(bad)
            for b in bad:
                print(f"MISMATCH on {name}: {b}", file=sys.stderr)
            report["nodes"][name] = {"mismatches": len(bad), "elapsed_ms": ms, "distributed": dist}
        # What each query node copied, and read from the ingest nodes as its questions ran.
        report["fresh"] = {name: {"copy_bytes": metric(n, "sonde_fresh_copy_bytes"),
                                  "rows_read_from_ingest_nodes": metric(n, "sonde_fresh_rows_read_total")}
                           for name, n in [("q-1", nodes[2]), ("q-2", nodes[3])]}
        report["mismatches"] = mismatches
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        with open(os.path.join(HERE, "results", "realdata_cluster.json"), "w") as f:
            json.dump(report, f, indent=2)
        print(json.dumps(report, indent=2))
        sys.exit(1 if mismatches else 0)
    finally:
        for n in nodes:
            n.stop()
        moto.terminate()
        moto.wait(timeout=30)


if __name__ == "__main__":
    main()

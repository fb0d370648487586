#!/usr/bin/env python3
"""Distributed SQL and query specs on 1, 2 and 4 query nodes of a cluster, against one query
node alone.

One ingest node over moto takes `--events` generated events (`sonde gen`, an hour) and flushes
them into segments in the bucket. Then, for each cluster size W in --workers, W query nodes are
started over the same bucket (each a datafusion-distributed worker; the first coordinates), and
the SQL questions and query specifications below are asked of the first (once SQL's
`meta.distributed.workers` is W); the
baseline is one query node with `--grpc-listen off`, which runs every query alone. Each node has a
chunk cache large enough for every segment, so hot runs read memory, not moto: the figures are
the cost of planning, shipping and merging tasks, not of the object store.

Every answer is checked equal to the baseline's (row for row) before timing. Then --repeats
interleaved hot runs per question and configuration; medians, and the ratio to the baseline
(above 1: slower than one node). This machine has two cores, so 2 and 4 workers share them: the
point is that it works and what it adds per query, not a speed-up.

    python3 benches/distributed.py --sonde $CARGO_TARGET_DIR/release/sonde --events 1000000

Needs moto (`make clients-venv`). Writes benches/results/distributed.json.
"""
import argparse, os, statistics, subprocess, sys, time, urllib.error

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from sonde_client import MOTO, Node, call, start_moto, stop_all, write_result  # noqa: E402
DATASET = "bench"
QUESTIONS = {
    "count by service": 'SELECT "service.name", COUNT(*) AS n FROM bench GROUP BY 1 ORDER BY 1',
    "P99 by service": 'SELECT "service.name", weighted_percentile(duration_ms, samplerate, 0.99) AS p99 '
                      'FROM bench GROUP BY 1 ORDER BY 1',
    "errors by route, top 10": 'SELECT "http.route", COUNT(*) AS n FROM bench WHERE error GROUP BY 1 '
                               'ORDER BY n DESC, 1 LIMIT 10',
    "avg by service and status": 'SELECT "service.name", "http.status_code", AVG(duration_ms) AS avg, COUNT(*) AS n '
                                 'FROM bench GROUP BY 1, 2 ORDER BY 1, 2',
    "distinct users": 'SELECT COUNT(DISTINCT "user.id") AS users FROM bench',
}
# Query specifications (POST /api/query): each runs its aggregates across the workers too. The
# time range is set once the events' start is known.
SPECS = {
    "spec: COUNT and P99 by service": {
        "calculations": [{"op": "COUNT"}, {"op": "P99", "column": "duration_ms"}], "breakdowns": ["service.name"]},
    "spec: HEATMAP of duration": {"calculations": [{"op": "HEATMAP", "column": "duration_ms"}]},
    "spec: errors by route, top 10": {
        "calculations": [{"op": "COUNT"}], "filters": [{"column": "error", "op": "=", "value": True}],
        "breakdowns": ["http.route"], "orders": [{"op": "COUNT", "order": "descending"}], "limit": 10},
    "spec: AVG by service and status": {
        "calculations": [{"op": "AVG", "column": "duration_ms"}], "breakdowns": ["service.name", "http.status_code"]},
}


def same(a, b):
    """Equal values, floats to 1e-9 (a sum's order differs between plans)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= 1e-9 * max(abs(b), 1.0)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def ask(node, name):
    """The answer to question `name` (SQL rows, or a spec's results and series), its
    `meta.distributed`, and the time it took in ms."""
    s = time.perf_counter()
    if name in QUESTIONS:
        r = call(node.url + "/api/sql", {"sql": QUESTIONS[name]})
        answer = r["rows"]
    else:
        r = call(node.url + f"/api/query/{DATASET}", SPECS[name])
        answer = r["data"]
    return answer, r["meta"].get("distributed"), (time.perf_counter() - s) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sonde", default=os.environ.get("SONDE_BIN", os.path.expanduser("~/.cache/sonde-target/release/sonde")))
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--bytes-per-partition", type=int, default=1 << 20,
                    help="the query nodes' --distributed-bytes-per-partition (small, so every size splits)")
    ap.add_argument("--moto", default=MOTO)
    args = ap.parse_args()
    moto, env = start_moto("bench", args.moto)
    common = ["--storage", "s3://bench/cluster", "--catalog-refresh", "500ms", "--lease", "3s",
              "--chunk-cache-bytes", str(1 << 30), "--cluster-key", "bench-cluster"]
    live = []
    try:
        ingest = Node(args.sonde, env, *common, "--role", "ingest", "--node-name", "ing", "--flush-age", "1s")
        live.append(ingest)
        s = time.perf_counter()
        start = int(time.time()) - 3600
        for spec in SPECS.values():
            spec.update({"start_time": start, "end_time": start + 3660})
        start_text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
        subprocess.run([args.sonde, "gen", str(args.events), "--seed", "19", "--start", start_text,
                        "--post", ingest.url, "--dataset", DATASET], check=True, stdout=subprocess.DEVNULL)
        while call(ingest.url + f"/api/datasets/{DATASET}/stats")["buffered_rows"] != 0:
            time.sleep(0.5)
        stats = call(ingest.url + f"/api/datasets/{DATASET}/stats")
        print(f"{args.events:,} events in {stats['segments']} segments ({stats['bytes_on_disk'] / 1e6:.0f} MB) "
              f"in {time.perf_counter() - s:.0f} s", file=sys.stderr)

        def wait_for(node, workers):
            deadline = time.monotonic() + 120
            while True:
                try:
                    rows, used, _ = ask(node, "count by service")
                    n = sum(row["n"] for row in rows)
                    used = (used or {}).get("workers", 1)
                    if n == args.events and used == workers:
                        return
                except urllib.error.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{node.url} did not reach {workers} workers with every event")
                time.sleep(0.3)

        configs = {}
        baseline = Node(args.sonde, env, *common, "--role", "query", "--node-name", "alone", grpc=False)
        live.append(baseline)
        wait_for(baseline, 1)
        configs["alone"] = [baseline]
        names = list(QUESTIONS) + list(SPECS)
        answers = {name: ask(baseline, name)[0] for name in names}
        report = {"events": args.events, "segments": stats["segments"], "bytes_on_disk": stats["bytes_on_disk"],
                  "binary": args.sonde, "repeats": args.repeats, "configs": {}}
        for w in [int(x) for x in args.workers.split(",")]:
            nodes = [Node(args.sonde, env, *common, "--role", "query", "--node-name", f"w{w}-{i}",
                          "--distributed-bytes-per-partition", str(args.bytes_per_partition)) for i in range(w)]
            live.extend(nodes)
            wait_for(nodes[0], w)
            configs[f"{w} workers"] = nodes
            for name in names:
                got, _, _ = ask(nodes[0], name)
                if not same(got, answers[name]):
                    print(f"MISMATCH {name} on {w} workers: {str(got)[:300]} vs {str(answers[name])[:300]}",
                          file=sys.stderr)
                    report.setdefault("mismatches", []).append(f"{name} on {w} workers")
            # Timed now, interleaved with the baseline, then stopped: the next size starts clean.
            for cfg in ("alone", f"{w} workers"):
                coordinator = configs[cfg][0]
                times, meta = {}, {}
                for name in names:
                    times[name] = []
                for _ in range(args.repeats):
                    for name in names:
                        _, used, ms = ask(coordinator, name)
                        times[name].append(ms)
                        meta[name] = used
                entry = report["configs"].setdefault(cfg, {"median_ms": {}, "distributed": {}})
                # The baseline is timed beside each size; its figure is the median over all of them.
                for name in names:
                    entry.setdefault("all_ms", {}).setdefault(name, []).extend(times[name])
                    entry["median_ms"][name] = round(statistics.median(entry["all_ms"][name]), 2)
                    entry["distributed"][name] = meta[name]
                entry["peak_rss_mib"] = [n.peak_rss_mib() for n in configs[cfg]]
            for n in nodes:
                n.stop()
                live.remove(n)
        alone = report["configs"]["alone"]["median_ms"]
        for cfg, entry in report["configs"].items():
            entry.pop("all_ms", None)
            entry["ratio_to_alone"] = {k: round(v / alone[k], 2) for k, v in entry["median_ms"].items()}
            entry["overhead_ms"] = {k: round(v - alone[k], 1) for k, v in entry["median_ms"].items()}
        write_result("distributed", report)
    finally:
        stop_all(live, moto)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Fresh (unflushed) events in distributed queries: a plan that carries the rows against one
that names them (`BufferScanExec`), two builds side by side.

Two clusters over one moto, each in its own bucket prefix and each of one build: an ingest node
that flushes once, after `--flushed` events (`--flush-rows`; `--flush-age` far away), so the
rest stay in its write buffer, and two query nodes (datafusion-distributed workers, a small
`--distributed-bytes-per-partition` so every query is split). Both ingest nodes take the same
`--events` generated events (`sonde gen`, the last hour). Once each cluster's first query node
sees every event with both workers, the SQL questions and query specifications in NAMES
(those of benches/distributed.py whose work grows with the rows) are asked of it, the two
clusters interleaved, `--repeats` hot runs each; medians and the ratio of the
new build to the old (below 1: faster). Every answer is checked equal between the builds and,
for the counts, equal to the events sent. `EXPLAIN ANALYZE` of the first question gives the
bytes of plan each build sends to the workers per query.

    python3 benches/fresh_scan.py --old /tmp/sonde-before --new $CARGO_TARGET_DIR/release/sonde

Needs moto (`make clients-venv`). Writes benches/results/fresh_scan.json.
"""
import argparse, os, re, statistics, subprocess, sys, time, urllib.error

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from sonde_client import MOTO, Node, call, start_moto, stop_all, write_result  # noqa: E402
from distributed import DATASET, QUESTIONS, SPECS, ask, same  # noqa: E402

# The questions of benches/distributed.py asked here: those whose work grows with the rows.
NAMES = ["count by service", "P99 by service", "errors by route, top 10",
         "spec: COUNT and P99 by service", "spec: HEATMAP of duration"]


def plan_bytes(node):
    """Bytes of plan sent to workers by one run of the first question (EXPLAIN ANALYZE)."""
    r = call(node.url + "/api/sql", {"sql": "EXPLAIN ANALYZE " + QUESTIONS["count by service"]})
    text = " ".join(str(row.get("plan", "")) for row in r["rows"])
    # Per stage, a map of task to bytes: plan_bytes_sent={0:5.2 KB, 1:4.9 KB}
    sizes = [float(v) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[unit]
             for group in re.findall(r"plan_bytes_sent=\{([^}]*)\}", text)
             for v, unit in re.findall(r"\d+:\s*([0-9.]+)\s*([KMG]?)B", group)]
    return int(sum(sizes)) if sizes else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", required=True, help="the build whose plans carry fresh rows")
    ap.add_argument("--new", default=os.path.expanduser("~/.cache/sonde-target/release/sonde"))
    ap.add_argument("--events", type=int, default=400_000)
    ap.add_argument("--flushed", type=int, default=250_000, help="events flushed into a segment; the rest stay buffered")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--moto", default=MOTO)
    args = ap.parse_args()
    moto, env = start_moto("bench", args.moto)
    start = int(time.time()) - 3600
    for spec in SPECS.values():
        spec.update({"start_time": start, "end_time": start + 3660})
    start_text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
    live, clusters = [], {}
    try:
        for build, binary in (("old", args.old), ("new", args.new)):
            common = ["--storage", f"s3://bench/{build}", "--catalog-refresh", "500ms", "--lease", "3s",
                      "--cluster-key", "bench-cluster", "--max-buffer-bytes", str(3 << 30)]
            ingest = Node(binary, env, *common, "--role", "ingest", "--node-name", f"ing-{build}",
                          "--flush-rows", str(args.flushed), "--flush-age", "1h")
            live.append(ingest)
            s = time.perf_counter()
            subprocess.run([binary, "gen", str(args.events), "--seed", "29", "--start", start_text,
                            "--post", ingest.url, "--dataset", DATASET], check=True, stdout=subprocess.DEVNULL)
            while call(ingest.url + f"/api/datasets/{DATASET}/stats")["segments"] == 0:
                time.sleep(0.2)
            stats = call(ingest.url + f"/api/datasets/{DATASET}/stats")
            print(f"{build}: {stats['buffered_rows']:,} events buffered in {time.perf_counter() - s:.0f} s",
                  file=sys.stderr)
            queries = [Node(binary, env, *common, "--role", "query", "--node-name", f"q-{build}-{i}",
                            "--distributed-bytes-per-partition", str(1 << 20)) for i in range(2)]
            live.extend(queries)
            clusters[build] = {"ingest": ingest, "queries": queries, "buffered_rows": stats["buffered_rows"]}
        for build, c in clusters.items():
            deadline = time.monotonic() + 300
            last = None
            while True:
                try:
                    rows, used, _ = ask(c["queries"][0], "count by service")
                    last = (sum(r["n"] for r in rows), used)
                    if last[0] == args.events and (used or {}).get("workers") == 2:
                        break
                except urllib.error.HTTPError as e:
                    last = e.read()[:500]
                if time.monotonic() > deadline:
                    raise SystemExit(f"{build}: the query node did not see every event over 2 workers: {last}")
                time.sleep(0.5)
        report = {"events": args.events, "repeats": args.repeats, "builds": {"old": args.old, "new": args.new},
                  "buffered_rows": {b: c["buffered_rows"] for b, c in clusters.items()}, "median_ms": {},
                  "distributed": {}}
        for name in NAMES:
            old, new = ask(clusters["old"]["queries"][0], name)[0], ask(clusters["new"]["queries"][0], name)[0]
            if not same(new, old):
                print(f"MISMATCH {name}: {str(new)[:300]} vs {str(old)[:300]}", file=sys.stderr)
                report.setdefault("mismatches", []).append(name)
        times = {b: {n: [] for n in NAMES} for b in clusters}
        for _ in range(args.repeats):
            for build, c in clusters.items():
                for name in NAMES:
                    _, used, ms = ask(c["queries"][0], name)
                    times[build][name].append(ms)
                    report["distributed"].setdefault(build, {})[name] = used
        for build in clusters:
            report["median_ms"][build] = {n: round(statistics.median(t), 1) for n, t in times[build].items()}
        report["ratio_new_to_old"] = {n: round(report["median_ms"]["new"][n] / report["median_ms"]["old"][n], 3)
                                      for n in NAMES}
        report["plan_bytes_sent"] = {b: plan_bytes(c["queries"][0]) for b, c in clusters.items()}
        report["peak_rss_mib"] = {b: [n.peak_rss_mib() for n in c["queries"]] for b, c in clusters.items()}
        write_result("fresh_scan", report)
    finally:
        stop_all(live, moto)


if __name__ == "__main__":
    main()

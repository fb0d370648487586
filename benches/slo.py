#!/usr/bin/env python3
"""An SLO over 30 days of 1M events a day, read from its per-minute counters, against the full
re-scan of the same 30 days (the same good and bad counts from a COUNT by the SLI over the
window), on a release build.

  python3 benches/slo.py --sonde $CARGO_TARGET_DIR/release/sonde [--events-per-day 1000000] [--days 30]

Ingests the generated events (`sonde gen --post`), creates the SLI and the SLO, then times:
the first read (which counts the whole window from the segments, once), the reads after it
(the counters, brought up to date), and the re-scan. Checks that the re-scan's compliance equals
the SLO's, and writes benches/results/slo.json.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sonde_client import call, start, stop  # noqa: E402

SLI = "IF(EXISTS($duration_ms), LT($duration_ms, 1000))"


def timed(f):
    t = time.perf_counter()
    out = f()
    return out, (time.perf_counter() - t) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sonde", required=True)
    ap.add_argument("--events-per-day", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "slo.json"))
    a = ap.parse_args()
    events = a.events_per_day * a.days
    with tempfile.TemporaryDirectory(prefix="sonde-slo-") as work:
        p, base = start(a.sonde, os.path.join(work, "data"))
        try:
            print(f"ingesting {events:,} events over {a.days} days …", flush=True)
            _, ingest_ms = timed(lambda: subprocess.run(
                [a.sonde, "gen", str(events), "--seed", "7", "--span", f"{a.days * 24}h", "--post", base, "--dataset", "slo"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            call(base + "/1/derived_columns/slo", {"alias": "sli.fast", "expression": SLI})
            slo = call(base + "/1/slos/slo", {"name": "fast", "sli": {"alias": "sli.fast"},
                                              "time_period_days": a.days, "target_per_million": 990000})
            url = f"{base}/1/slos/slo/{slo['id']}?detailed"
            first, first_ms = timed(lambda: call(url))
            reads = []
            for _ in range(a.repeats):
                got, ms = timed(lambda: call(url))
                reads.append(ms)
            # The re-scan: the same window, minute-aligned as the counters are, counted by the SLI.
            now_min = int(time.time()) // 60
            spec = {"calculations": [{"op": "COUNT"}], "breakdowns": ["sli.fast"], "disable_series": True,
                    "start_time": (now_min - a.days * 1440) * 60, "end_time": now_min * 60}
            scans = []
            for _ in range(max(3, a.repeats // 4)):
                r, ms = timed(lambda: call(base + "/api/query/slo", spec))
                scans.append(ms)
            counts = {row["data"].get("sli.fast"): row["data"]["COUNT"] for row in r["data"]["results"]}
            good, bad = counts.get(True, 0), counts.get(False, 0)
            rescan_compliance = good / (good + bad) * 100
            # Events of the minute that passed between the two are the only possible difference.
            slack = 100 * 2 * a.events_per_day / 1440 / (good + bad)
            ok = abs(rescan_compliance - got["compliance"]) <= slack
        finally:
            stop(p)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "events": events, "days": a.days,
        "ingest_s": round(ingest_ms / 1000, 1),
        "first_read_ms": round(first_ms, 1),
        "read_ms_median": round(statistics.median(reads), 2),
        "read_ms_max": round(max(reads), 2),
        "rescan_ms_median": round(statistics.median(scans), 1),
        "speedup": round(statistics.median(scans) / statistics.median(reads), 1),
        "compliance": got["compliance"], "rescan_compliance": rescan_compliance,
        "budget_remaining": got["budget_remaining"], "equal": ok,
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    print(f"SLO over {a.days} days x {a.events_per_day:,}/day: {result['read_ms_median']} ms with its counters "
          f"(target < 50 ms) against {result['rescan_ms_median']} ms re-scanning: {result['speedup']}x; "
          f"the first read, which counts the window once: {result['first_read_ms']:.0f} ms")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""An SLO over real data: the Apache access log of ../shared/realdata (10,000 requests over
four days of 2015), its times moved as a block to end five minutes ago (an SLO's window rolls
back from now), ingested into a running Sonde. The SLI is "no 4xx or 5xx"; the SLO's
per-minute counters (read from their document), compliance, budget left and each day's
history point are computed again here, in Python, from the same events, and must be equal.

  python3 benches/realdata_slo.py --sonde target/debug/sonde --realdata ../shared/realdata

Writes benches/results/realdata_slo.json and exits non-zero on any mismatch.
"""
import argparse, collections, json, os, sys, tempfile, time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sonde_client import call, realdata_events, start, stop  # noqa: E402

TARGET = 0.99


def parse(t):
    return int(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp())


def figures(good, bad):
    q = good + bad
    if q == 0:
        return 100.0, 100.0
    budget = (1 - TARGET) * q
    return good / q * 100, (1 - bad / budget) * 100


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sonde", required=True)
    ap.add_argument("--realdata", required=True)
    a = ap.parse_args()
    events = realdata_events(a.realdata, "apache", "apache-access-2015/apache_logs")
    now = int(time.time())
    shift = (now - 300) - max(parse(e["time"]) for e in events)
    for e in events:
        e["time"] = datetime.fromtimestamp(parse(e["time"]) + shift, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    # Brute force: weighted (sample rate 1) good and bad per minute.
    minutes = collections.defaultdict(lambda: [0, 0])
    for e in events:
        code = e.get("http.status_code")
        if code is None:
            continue
        minutes[parse(e["time"]) // 60][0 if code < 400 else 1] += 1
    problems = []
    with tempfile.TemporaryDirectory(prefix="sonde-realdata-slo-") as work:
        data = os.path.join(work, "data")
        proc, base = start(a.sonde, data)
        try:
            call(base + "/api/ingest/access", "\n".join(json.dumps(e) for e in events).encode())
            call(base + "/1/derived_columns/access",
                 {"alias": "sli.ok", "expression": "IF(EXISTS($http.status_code), LT($http.status_code, 400))"})
            slo = call(base + "/1/slos/access", {"name": "no errors", "sli": {"alias": "sli.ok"},
                                                 "time_period_days": 7, "target_per_million": int(TARGET * 1e6)})
            got = call(f"{base}/1/slos/access/{slo['id']}?detailed")
            with open(os.path.join(data, "documents", f"slo-{slo['id']}.json")) as f:
                kept = {int(m): tuple(v) for m, v in json.load(f)["minutes"].items() if sum(v) > 0}
            want = {m: tuple(v) for m, v in minutes.items()}
            if kept != want:
                diff = sorted(set(kept.items()) ^ set(want.items()))[:5]
                problems.append(f"per-minute counters differ from the brute force, e.g. {diff}")
            good = sum(v[0] for v in minutes.values())
            bad = sum(v[1] for v in minutes.values())
            compliance, budget = figures(good, bad)
            if abs(got["compliance"] - compliance) > 1e-9 or abs(got["budget_remaining"] - budget) > 1e-9:
                problems.append(f"figures {got['compliance']}, {got['budget_remaining']} != {compliance}, {budget}")
            hist = call(base + "/1/reporting/slos/historical",
                        {"ids": [slo["id"]], "start_time": now - 6 * 86400, "end_time": now})[slo["id"]]
            for p in hist:
                to = p["timestamp"] // 60
                g = sum(v[0] for m, v in minutes.items() if to - 7 * 1440 <= m < to)
                b = sum(v[1] for m, v in minutes.items() if to - 7 * 1440 <= m < to)
                c, r = figures(g, b)
                if abs(p["compliance"] - c) > 1e-9 or abs(p["budget_remaining"] - r) > 1e-9:
                    problems.append(f"history at {p['timestamp']}: {p} != {c}, {r}")
        finally:
            stop(proc)
    result = {"events": len(events), "qualified": good + bad, "bad": bad, "minutes": len(minutes),
              "compliance": compliance, "budget_remaining": budget, "history_points": len(hist),
              "problems": problems}
    os.makedirs("benches/results", exist_ok=True)
    with open("benches/results/realdata_slo.json", "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()

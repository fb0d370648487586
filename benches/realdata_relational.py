#!/usr/bin/env python3
"""Relational fields over real traces: the Online Boutique spans of ../shared/realdata (Nezha,
one hour of 2022-08-22), ingested into a running Sonde, then asked with `root.`, `any.` and
`none.` fields; every answer is computed again here, in Python, by building each trace in memory
from the same spans (independently of the engine).

  python3 benches/realdata_relational.py --sonde target/release/sonde --realdata ../shared/realdata

Writes benches/results/realdata_relational.json and exits non-zero on any mismatch.
"""
import argparse, collections, json, os, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sonde_client import call, realdata_events, start, stop  # noqa: E402
from datetime import datetime, timedelta, timezone


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sonde", default=os.environ.get("SONDE_BIN", "target/release/sonde"))
    ap.add_argument("--realdata", default="../shared/realdata")
    args = ap.parse_args()
    spans = realdata_events(args.realdata, "nezha-spans", "nezha-onlineboutique/traces_2022-08-22.csv.gz")
    hours = collections.Counter(s["time"][:13] for s in spans)
    hour = hours.most_common(1)[0][0]
    spans = [s for s in spans if s["time"].startswith(hour)]
    hour_start = datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=timezone.utc)
    end_excl = (hour_start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    hour_start = hour_start.strftime("%Y-%m-%dT%H:%M:%SZ")

    # The model: each trace in memory.
    by_trace = collections.defaultdict(list)
    for s in spans:
        if "trace.trace_id" in s:
            by_trace[s["trace.trace_id"]].append(s)

    def roots(s):
        return [x for x in by_trace.get(s.get("trace.trace_id"), []) if not x.get("trace.parent_id")]

    def any_span(s, pred):
        return any(pred(x) for x in by_trace.get(s.get("trace.trace_id"), []))

    names = collections.Counter(s.get("name") for s in spans)
    rare = [n for n, c in names.most_common() if 100 < c < len(spans) / 20][0]
    checks = {}

    # 1. COUNT by root.name
    want = collections.Counter()
    for s in spans:
        rn = [r["name"] for r in roots(s) if "name" in r]
        want[min(rn) if rn else None] += 1

    data = tempfile.mkdtemp(prefix="sonde-realdata-relational-")
    proc, base = start(args.sonde, data)
    try:
        lines = [json.dumps(s) for s in spans]
        for i in range(0, len(lines), 20000):
            call(base + "/api/ingest/spans", "\n".join(lines[i:i + 20000]).encode())
        rng = {"start_time": hour_start, "end_time": end_excl, "limit": 1000}

        def run(spec):
            t = time.perf_counter()
            r = call(base + "/api/query/spans", {**rng, **spec})
            return r, round((time.perf_counter() - t) * 1000, 1)

        r, ms = run({"breakdowns": ["root.name"]})
        got = {row["data"]["root.name"]: row["data"]["COUNT"] for row in r["data"]["results"]}
        checks["COUNT by root.name"] = {"groups": len(want), "match": got == dict(want), "elapsed_ms": ms}

        # 2. spans of traces that have some span named `rare`, by service
        want2 = collections.Counter(s.get("service.name") for s in spans if any_span(s, lambda x: x.get("name") == rare))
        r, ms = run({"filters": [{"column": "any.name", "op": "=", "value": rare}], "breakdowns": ["service.name"]})
        got2 = {row["data"]["service.name"]: row["data"]["COUNT"] for row in r["data"]["results"]}
        checks[f"any.name = {rare!r}, by service.name"] = {"groups": len(want2), "match": got2 == dict(want2), "elapsed_ms": ms}

        # 3. spans of traces without a root (the published snapshot has gaps)
        want3 = sum(1 for s in spans if "trace.trace_id" in s and not roots(s))
        r, ms = run({"filters": [{"column": "none.trace.parent_id", "op": "does-not-exist"}]})
        got3 = r["data"]["results"][0]["data"]["COUNT"] if r["data"]["results"] else 0
        checks["none.trace.parent_id does-not-exist"] = {"python": want3, "engine": got3, "match": got3 == want3, "elapsed_ms": ms}

        # 4. root filter: spans whose root is slow, by name (top groups compared whole)
        want4 = collections.Counter(
            s.get("name") for s in spans if any(r.get("duration_ms", -1) >= 500 for r in roots(s)))
        r, ms = run({"filters": [{"column": "root.duration_ms", "op": ">=", "value": 500}], "breakdowns": ["name"]})
        got4 = {row["data"]["name"]: row["data"]["COUNT"] for row in r["data"]["results"]}
        checks["root.duration_ms >= 500, by name"] = {"groups": len(want4), "match": got4 == dict(want4), "elapsed_ms": ms}

        # 5. COUNT by parent.name (every span's direct parent)
        by_id = collections.defaultdict(list)
        for x in spans:
            by_id[(x.get("trace.trace_id"), x.get("trace.span_id"))].append(x)
        want5 = collections.Counter()
        for x in spans:
            ps = [p["name"] for p in by_id.get((x.get("trace.trace_id"), x.get("trace.parent_id")), []) if "name" in p]
            want5[min(ps) if ps and "trace.trace_id" in x else None] += 1
        r, ms = run({"breakdowns": ["parent.name"]})
        got5 = {row["data"]["parent.name"]: row["data"]["COUNT"] for row in r["data"]["results"]}
        checks["COUNT by parent.name"] = {"groups": len(want5), "match": got5 == dict(want5), "elapsed_ms": ms}

        # 6. spans with a direct child named `rare`, by name
        has_child = set()
        for x in spans:
            if x.get("name") == rare and "trace.parent_id" in x:
                has_child.add((x.get("trace.trace_id"), x["trace.parent_id"]))
        want6 = collections.Counter(x.get("name") for x in spans
                                    if (x.get("trace.trace_id"), x.get("trace.span_id")) in has_child)
        r, ms = run({"filters": [{"column": "child.name", "op": "=", "value": rare}], "breakdowns": ["name"]})
        got6 = {row["data"]["name"]: row["data"]["COUNT"] for row in r["data"]["results"]}
        checks[f"child.name = {rare!r}, by name"] = {"groups": len(want6), "match": got6 == dict(want6), "elapsed_ms": ms}

        result = {"spans": len(spans), "traces": len(by_trace), "hour": hour, "checks": checks,
                  "mismatches": sum(not c["match"] for c in checks.values())}
        os.makedirs("benches/results", exist_ok=True)
        with open("benches/results/realdata_relational.json", "w") as f:
            json.dump(result, f, indent=2)
        print(json.dumps(result, indent=2))
        sys.exit(1 if result["mismatches"] else 0)
    finally:
        stop(proc)


if __name__ == "__main__":
    main()

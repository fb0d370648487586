#!/usr/bin/env python3
"""Derived columns over real data: the Apache access log of ../shared/realdata (10,000 requests
from 2015), ingested into a running Sonde, then broken down by derived columns whose answers are
computed again here, in Python, from the same events (independently of the engine).

  python3 benches/realdata_derived.py --sonde target/debug/sonde --realdata ../shared/realdata

Writes benches/results/realdata_derived.json and exits non-zero on any mismatch.
"""
import argparse, collections, json, math, os, re, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sonde_client import call, realdata_events, start, stop  # noqa: E402
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

DERIVED = {
    "klass": 'IF(GTE($http.status_code, 500), "5xx", IF(GTE($http.status_code, 400), "4xx", "ok"))',
    "ext": r"REG_VALUE($http.path, `\.([a-z0-9]+)$`)",
    "kb_bucket": "BUCKET(DIV($http.response_size, 1024), 100, 0, 1000)",
    "ny_hour": 'FORMAT_TIME("%H", EVENT_TIMESTAMP(), "America/New_York")',
    "is_bot": 'CONTAINS(TO_LOWER($user_agent), "bot")',
}


def py_value(name, e):
    code, path, size, ua = e.get("http.status_code"), e.get("http.path"), e.get("http.response_size"), e.get("user_agent")
    if name == "klass":
        if code is None:
            return "ok"
        return "5xx" if code >= 500 else "4xx" if code >= 400 else "ok"
    if name == "ext":
        if not isinstance(path, str) or path == "":
            return None
        m = re.search(r"\.([a-z0-9]+)$", path)
        return m.group(1) if m else None
    if name == "kb_bucket":
        if size is None:
            return None
        x = min(max(size / 1024, 0.0), 1000.0)
        return 0 + math.floor((x - 0) / 100) * 100
    if name == "ny_hour":
        t = datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        return t.astimezone(ZoneInfo("America/New_York")).strftime("%H")
    if name == "is_bot":
        return isinstance(ua, str) and "bot" in ua.lower()
    raise KeyError(name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sonde", default=os.environ.get("SONDE_BIN", "target/debug/sonde"))
    ap.add_argument("--realdata", default="../shared/realdata")
    args = ap.parse_args()
    events = realdata_events(args.realdata, "apache", "apache-access-2015/apache_logs")
    data = tempfile.mkdtemp(prefix="sonde-realdata-derived-")
    proc, base = start(args.sonde, data)
    try:
        body = "\n".join(json.dumps(e) for e in events).encode()
        call(base + "/api/ingest/access", body)
        for alias, expr in DERIVED.items():
            call(base + "/1/derived_columns/access", {"alias": alias, "expression": expr})
        rng = {"start_time": "2015-05-17T00:00:00Z", "end_time": "2015-05-22T00:00:00Z"}
        report, mismatches = {}, 0
        for alias in DERIVED:
            t0 = time.perf_counter()
            r = call(base + "/api/query/access", {**rng, "breakdowns": [alias], "limit": 1000})
            ms = (time.perf_counter() - t0) * 1000
            got = {json.dumps(row["data"][alias]): row["data"]["COUNT"] for row in r["data"]["results"]}
            want = collections.Counter(json.dumps(py_value(alias, e)) for e in events)
            want = {k: v for k, v in want.items()}
            # Python writes 100 where the engine's float column answers 100.0.
            got = {json.dumps(json.loads(k) if not isinstance(json.loads(k), float) else
                              (int(json.loads(k)) if json.loads(k).is_integer() else json.loads(k))): v for k, v in got.items()}
            ok = got == want
            mismatches += not ok
            report[alias] = {"expression": DERIVED[alias], "groups": len(got), "match": ok, "elapsed_ms": round(ms, 1)}
            if not ok:
                print(f"MISMATCH {alias}: engine {got} python {want}", file=sys.stderr)
        # A filter on a derived column, and the same through SQL.
        r = call(base + "/api/query/access", {**rng, "filters": [{"column": "is_bot", "op": "=", "value": True}]})
        bots = sum(1 for e in events if py_value("is_bot", e))
        got = r["data"]["results"][0]["data"]["COUNT"] if r["data"]["results"] else 0
        sql = call(base + "/api/sql", {"sql": "SELECT count(*) AS n FROM access WHERE is_bot"})["rows"][0]["n"]
        report["filter is_bot = true"] = {"engine": got, "sql": sql, "python": bots, "match": got == bots == sql}
        mismatches += not (got == bots == sql)
        out = {"events": len(events), "derived": report, "mismatches": mismatches}
        os.makedirs("benches/results", exist_ok=True)
        with open("benches/results/realdata_derived.json", "w") as f:
            json.dump(out, f, indent=2)
        print(json.dumps(out, indent=2))
        sys.exit(1 if mismatches else 0)
    finally:
        stop(proc)


if __name__ == "__main__":
    main()

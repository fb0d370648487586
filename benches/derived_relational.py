#!/usr/bin/env python3
"""Derived columns and relational fields at 1M events, beside DuckDB over the same Parquet.

1M generated events (`sonde gen`, seed 1, one fixed hour) with one extra stored column, `kind`,
holding exactly what the derived column `IF(GTE($http.status_code, 500), "error", "ok")`
computes. Timed hot (after warm-ups; the median of the repeats), one query at a time:

- COUNT and AVG(duration_ms) by the stored `kind`, and by the derived column: their ratio is the
  cost of computing the column in the scan (target: at most 1.2×);
- a `root.` filter matching few traces (`root.user.id = "u00042"`), by service (target: < 300 ms);
- DuckDB's fastest correct SQL for each over the segments Sonde wrote (`read_parquet`).

Every answer is checked: Sonde's stored and derived breakdowns agree, and each agrees with
DuckDB's. Usage: python3 benches/derived_relational.py --bin ~/.cache/sonde-target/release/sonde
Writes benches/results/derived_relational.json.
"""
import argparse, glob, json, os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sonde_client import call, start, stop  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.expanduser("~/.cache/sonde-bench-venv")


def ensure_duckdb():
    try:
        import duckdb  # noqa: F401
        return
    except ImportError:
        pass
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
                    os.path.join(HERE, "requirements.txt")], check=True)
    os.execv(py, [py] + sys.argv)


def timed(f, repeats, warm=2):
    for _ in range(warm):
        f()
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter(); out = f(); times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), out


def main():
    ensure_duckdb()
    import duckdb
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.expanduser("~/.cache/sonde-target/release/sonde"))
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sonde-derived-bench-")
    data = os.path.join(work, "data")
    gen = subprocess.run([args.bin, "gen", str(args.events), "--seed", "1", "--start", "2026-01-01T00:00:00Z", "--span", "3600s"],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    lines, root_users = [], 0
    for l in gen:
        e = json.loads(l)
        d = e.get("data", e)
        code = (d.get("http") or {}).get("status_code", d.get("http.status_code"))
        d["kind"] = "error" if isinstance(code, (int, float)) and code >= 500 else "ok"
        if d.get("user.id") == "u00042" and "trace.parent_id" not in d:
            root_users += 1
        lines.append(json.dumps(e))
    del gen
    p, base = start(args.bin, data)
    for i in range(0, len(lines), 5_000):
        call(base + "/api/ingest/bench", "\n".join(lines[i:i + 5_000]).encode())
    del lines
    call(base + "/1/derived_columns/bench", {"alias": "kind_derived", "expression": 'IF(GTE($http.status_code, 500), "error", "ok")'})
    stop(p)  # flushes every buffer into segments
    p, base = start(args.bin, data)
    rng = {"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T01:00:00Z"}
    calcs = [{"op": "COUNT"}, {"op": "AVG", "column": "duration_ms"}]

    def sonde(spec):
        return lambda: call(base + "/api/query/bench", {**rng, **spec})

    def rows(r, col):
        return sorted((x["data"][col], x["data"]["COUNT"], round(x["data"]["AVG(duration_ms)"], 6)) for x in r["data"]["results"])

    res = {}
    ms_stored, a = timed(sonde({"breakdowns": ["kind"], "calculations": calcs}), args.repeats)
    ms_derived, b = timed(sonde({"breakdowns": ["kind_derived"], "calculations": calcs}), args.repeats)
    assert rows(a, "kind") == rows(b, "kind_derived"), (rows(a, "kind"), rows(b, "kind_derived"))
    root_spec = {"filters": [{"column": "root.user.id", "op": "=", "value": "u00042"}], "breakdowns": ["service.name"]}
    ms_root, c = timed(sonde(root_spec), args.repeats)
    stop(p)

    files = glob.glob(os.path.join(data, "datasets", "bench", "*.parquet"))
    con = duckdb.connect()
    con.execute(f"CREATE VIEW p AS SELECT * FROM read_parquet({files!r}, union_by_name=true)")
    avg = 'sum("duration_ms" * samplerate) / sum(CASE WHEN "duration_ms" IS NOT NULL THEN samplerate END)'
    q_stored = f'SELECT kind, sum(samplerate) AS n, {avg} AS a FROM p GROUP BY 1'
    q_derived = f'''SELECT CASE WHEN "http.status_code" >= 500 THEN 'error' ELSE 'ok' END AS k, sum(samplerate) AS n, {avg} AS a FROM p GROUP BY 1'''
    q_root = '''SELECT "service.name", sum(samplerate) FROM p WHERE "trace.trace_id" IN (SELECT "trace.trace_id" FROM p
                WHERE ("trace.parent_id" IS NULL OR "trace.parent_id" = '') AND "user.id" = 'u00042') GROUP BY 1'''
    d_stored, ds = timed(lambda: con.execute(q_stored).fetchall(), args.repeats)
    d_derived, dd = timed(lambda: con.execute(q_derived).fetchall(), args.repeats)
    d_root, dr = timed(lambda: con.execute(q_root).fetchall(), args.repeats)
    assert sorted((k, n) for k, n, _ in ds) == sorted((k, n) for k, n, _ in dd) == [(x[0], x[1]) for x in rows(a, "kind")]
    got_root = sorted((x["data"]["service.name"], x["data"]["COUNT"]) for x in c["data"]["results"])
    assert got_root == sorted(dr), (got_root, sorted(dr))

    res = {
        "events": args.events,
        "segments": len(files),
        "roots_matching": root_users,
        "sonde_ms": {"by stored kind": round(ms_stored, 1), "by derived kind": round(ms_derived, 1), "root.user.id filter": round(ms_root, 1)},
        "duckdb_ms": {"by stored kind": round(d_stored, 1), "by derived kind": round(d_derived, 1), "root.user.id filter": round(d_root, 1)},
        "derived_over_stored": round(ms_derived / ms_stored, 3),
        "sonde_over_duckdb": {
            "by stored kind": round(ms_stored / d_stored, 3),
            "by derived kind": round(ms_derived / d_derived, 3),
            "root.user.id filter": round(ms_root / d_root, 3),
        },
        "root_meta": c["meta"],
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "derived_relational.json"), "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Real traces, loaded twice, every trace of one hour opened through the API.

The Online Boutique spans of the Nezha dataset (../shared/realdata/nezha-onlineboutique, MIT
licence, IntelligentDDS/Nezha; see that folder's README) are converted with its own
tools/convert.py and posted as NDJSON into two datasets — the same spans twice, as a re-sent
batch or a copy kept for testing would put them. Then every trace that starts in the busiest
hour is opened with GET /api/traces/{dataset}/{id}, and each answer is checked against an
independent computation made here, in Python, from the CSV rows as they were sent:

- the answer holds every copy of every span (2 × the trace's rows);
- its tree has one node per distinct span, and as many roots as the trace has spans whose
  parent is absent from it (almost always one: the published snapshot has gaps);
- the server's peak RSS (VmHWM) stays under the memory bound given.

Usage: python3 benches/realdata_traces.py --bin target/release/sonde [--day 2022-08-22]
Writes benches/results/realdata_traces.json.
"""

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, body=None, headers=None, timeout=120):
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def vm_hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--realdata", default=os.environ.get("SONDE_REALDATA", os.path.join(HERE, "..", "..", "shared", "realdata")))
    ap.add_argument("--day", default="2022-08-22")
    ap.add_argument("--memory-limit", type=int, default=1 << 30, help="--memory-limit given to the server")
    ap.add_argument("--rss-bound", type=int, default=1536 << 20, help="peak RSS the run must stay under")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "realdata_traces.json"))
    a = ap.parse_args()

    csv_path = os.path.join(a.realdata, "nezha-onlineboutique", f"traces_{a.day}.csv.gz")
    convert = os.path.join(a.realdata, "tools", "convert.py")
    data_dir = tempfile.mkdtemp(prefix="sonde-realdata-")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [a.bin, "serve", "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}", "--grpc-listen", "off",
         "--memory-limit", str(a.memory_limit), "--max-buffer-bytes", str(256 << 20)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                if request(url + "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)

        # Brute force, from the rows as sent: per trace its spans (id, parent) and first start.
        traces = collections.defaultdict(list)
        first = {}
        started = time.time()
        conv = subprocess.Popen([sys.executable, convert, "nezha-spans", csv_path], stdout=subprocess.PIPE)
        chunk, sent = [], 0

        def flush(lines):
            body = b"".join(lines)
            for ds in ("boutique", "boutique-copy"):
                status, r = request(f"{url}/api/ingest/{ds}", body, {"Content-Type": "application/x-ndjson"})
                if status != 200:
                    sys.exit(f"ingest into {ds} answered {status}: {r[:300]!r}")

        for line in conv.stdout:
            ev = json.loads(line)
            t = ev["trace.trace_id"]
            traces[t].append((ev["trace.span_id"], ev.get("trace.parent_id"), line))
            ts = ev["time"]
            if t not in first or ts < first[t]:
                first[t] = ts
            chunk.append(line)
            if len(chunk) == 5000:
                flush(chunk)
                sent += len(chunk)
                chunk = []
        if chunk:
            flush(chunk)
            sent += len(chunk)
        conv.wait()
        load_s = time.time() - started

        by_hour = collections.Counter(ts[:13] for ts in first.values())
        hour, n_hour = by_hour.most_common(1)[0]
        chosen = sorted(t for t, ts in first.items() if ts[:13] == hour)
        failures, one_root, lookups = [], 0, []
        for t in chosen:
            spans = traces[t]
            distinct = {line for (_, _, line) in spans}
            ids = {s for (s, _, _) in spans}
            roots = sum(1 for line in distinct if (lambda e: not e.get("trace.parent_id") or e["trace.parent_id"] not in ids)(json.loads(line)))
            t0 = time.time()
            status, body = request(f"{url}/api/traces/boutique/{t}")
            lookups.append((time.time() - t0) * 1000)
            if status != 200:
                failures.append((t, f"status {status}: {body[:200]!r}"))
                continue
            r = json.loads(body)
            got = (len(r["spans"]), len(r["tree"]), r["meta"]["roots"])
            want = (2 * len(spans), len(distinct), roots)
            if got != want:
                failures.append((t, f"(spans, nodes, roots) {got} != {want}"))
            one_root += roots == 1
        hwm = vm_hwm(server.pid)
        lookups.sort()
        result = {
            "source": f"nezha-onlineboutique traces_{a.day}.csv.gz (IntelligentDDS/Nezha, MIT)",
            "events_loaded": 2 * sent,
            "load_seconds": round(load_s, 1),
            "hour": hour,
            "traces_opened": len(chosen),
            "traces_with_one_root": one_root,
            "mismatches": len(failures),
            "first_mismatches": failures[:5],
            "lookup_ms_p50": round(lookups[len(lookups) // 2], 1) if lookups else None,
            "lookup_ms_p99": round(lookups[int(len(lookups) * 0.99)], 1) if lookups else None,
            "peak_rss_bytes": hwm,
            "rss_bound_bytes": a.rss_bound,
            "memory_limit": a.memory_limit,
        }
        print(json.dumps(result, indent=2))
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(result, f, indent=2)
        if failures or hwm >= a.rss_bound:
            sys.exit(1)
    finally:
        server.terminate()
        server.wait(timeout=120)
        subprocess.run(["rm", "-rf", data_dir])


if __name__ == "__main__":
    main()

"""What the benchmark scripts share to drive a Sonde server: start one on a free loopback port
over a data directory, call its JSON API, stop it (SIGTERM, which flushes every buffer)."""
import json, signal, socket, subprocess, sys, time, urllib.request


def realdata_events(realdata, kind, path):
    """The events of a file of ../shared/realdata, converted by its own tools/convert.py (`kind`
    as that script names it), with null fields dropped as Sonde's ingest drops them."""
    out = subprocess.run([sys.executable, f"{realdata}/tools/convert.py", kind, f"{realdata}/{path}"],
                         check=True, capture_output=True, text=True).stdout
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    for e in events:
        for k in [k for k, v in e.items() if v is None]:
            del e[k]
    return events


def call(url, body=None, method=None, timeout=600):
    """POSTs `body` (a JSON value, or bytes as they are) or GETs; the JSON answer."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def start(binary, data_dir, *flags):
    """A server over `data_dir`; returns (process, base URL) once /health answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--grpc-listen", "off",
                          "--data-dir", data_dir, *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            call(base + "/health")
            return p, base
        except Exception:
            if p.poll() is not None:
                raise SystemExit(f"sonde exited with {p.returncode}")
            time.sleep(0.05)
    raise SystemExit("sonde did not become healthy")


def stop(p):
    """SIGTERM and wait: the server flushes its buffers into segments first."""
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=600)

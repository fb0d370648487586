"""What the benchmark scripts share to drive a Sonde server: start one on a free loopback port
over a data directory, call its JSON API, stop it (SIGTERM, which flushes every buffer); and for
the cluster scripts, moto as the bucket and nodes that listen for gRPC too."""
import json, os, signal, socket, subprocess, sys, tempfile, time, urllib.request

MOTO = os.path.expanduser("~/.cache/sonde-clients-venv/bin/moto_server")


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


def start_moto(bucket, binary=MOTO):
    """moto's S3 server on a free loopback port with `bucket` made; returns (process, the AWS_*
    environment a node needs to reach it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_REGION": "us-east-1"}
    for _ in range(200):
        try:
            urllib.request.urlopen(urllib.request.Request(f"{env['AWS_ENDPOINT_URL']}/{bucket}", method="PUT"), timeout=1)
            return proc, env
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"moto did not start ({binary}: `make clients-venv` installs it)")


class Node:
    """A Sonde process over its own data directory, HTTP and (unless grpc=False) gRPC on loopback
    ports the OS picks: a cluster node given its role flags."""

    def __init__(self, binary, env, *flags, grpc=True):
        self.dir = tempfile.mkdtemp(prefix="sonde-bench-node-")
        self.proc = subprocess.Popen(
            [binary, "serve", "--data-dir", self.dir, "--listen", "127.0.0.1:0",
             "--grpc-listen", "127.0.0.1:0" if grpc else "off", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "SONDE_LOG": "warn", **env})
        self.url = self.proc.stdout.readline().strip().removeprefix("sonde listening on ")
        if not self.url.startswith("http://"):
            raise SystemExit(f"sonde did not start: {self.url!r}")

    def peak_rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        return None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=600)


def stop_all(nodes, moto):
    """Stops every node (killing one that does not stop) and then moto."""
    for n in nodes:
        try:
            n.stop()
        except Exception:
            n.proc.kill()
    moto.terminate()
    moto.wait(timeout=30)


def write_result(name, report):
    """Writes `report` to benches/results/<name>.json and prints it; exits 1 when it names
    mismatches."""
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(os.path.join(here, "results"), exist_ok=True)
    with open(os.path.join(here, "results", f"{name}.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    sys.exit(1 if report.get("mismatches") else 0)

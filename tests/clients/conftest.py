"""Starts the real sonde binary (HTTP and OTLP/gRPC on loopback ports chosen by the OS)."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

BIN = os.environ.get(
    "SONDE_BIN",
    os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/sonde-target")), "debug", "sonde"),
)


class Sonde:
    def __init__(self, env=None, key=None, args=()):
        self.dir = tempfile.TemporaryDirectory(prefix="sonde-clients-")
        self.key = key  # sent with get/post when set (servers with API keys)
        self.proc = subprocess.Popen(
            [BIN, "serve", "--data-dir", self.dir.name, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            env={**os.environ, "SONDE_LOG": "warn", **(env or {})},
            text=True,
        )
        self.url = self.proc.stdout.readline().strip().removeprefix("sonde listening on ")
        self.grpc = self.proc.stdout.readline().strip().removeprefix("sonde otlp/grpc listening on http://")
        assert self.url.startswith("http://"), self.url

    def headers(self):
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def get(self, path):
        with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=self.headers())) as r:
            return json.load(r)

    def post(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST", headers=self.headers())
        with urllib.request.urlopen(req) as r:
            return json.load(r)

    def events(self, dataset, filters=(), limit=1000):
        body = {"filters": list(filters), "time_range": 7 * 86400, "end_time": int(time.time()) + 3600, "limit": limit}
        return self.post(f"/api/events/{dataset}", body)["events"]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.dir.cleanup()


@pytest.fixture(scope="session")
def sonde():
    s = Sonde()
    yield s
    s.stop()


def new_key(name, scopes, datasets="*"):
    """A key made by `sonde keys new`: (secret, keys-file line)."""
    out = subprocess.run([BIN, "keys", "new", name, "--scopes", scopes, "--datasets", datasets], capture_output=True, text=True, check=True)
    secret, line = out.stdout.split("\n")[:2]
    return secret, line


@pytest.fixture(scope="session")
def locked_sonde():
    """A server with API keys: `ingest_key` (ingest, all datasets) and a query key it uses itself."""
    ingest, l1 = new_key("clients-ingest", "ingest")
    query, l2 = new_key("clients-query", "query")
    s = Sonde(env={"SONDE_KEYS": f"{l1};{l2}"}, key=query)
    s.ingest_key = ingest
    yield s
    s.stop()


class Moto:
    """moto's S3 server (from this virtualenv) on a loopback port, with one bucket."""

    def __init__(self, bucket):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = os.path.join(os.path.dirname(sys.executable), "moto_server")
        self.proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(urllib.request.Request(f"{self.url}/{bucket}", method="PUT"), timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("moto did not start")

    def env(self):
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Cluster:
    """Two ingest nodes and a query node over one bucket (`--role`, README's "Running a cluster")."""

    def __init__(self):
        self.moto = Moto("clients")
        storage = ["--storage", "s3://clients/cluster", "--catalog-refresh", "200ms"]
        node = lambda role, name: Sonde(env=self.moto.env(), args=[*storage, "--role", role, "--node-name", name])
        self.ingest = [node("ingest", "ing-a"), node("ingest", "ing-b")]
        self.query = node("query", "q-1")

    def stop(self):
        for n in [self.query, *self.ingest]:
            n.stop()
        self.moto.stop()


@pytest.fixture(scope="session")
def cluster():
    c = Cluster()
    yield c
    c.stop()


def eventually(check, seconds=20):
    """Runs `check` until it passes (a cluster's query node sees new events within a second or so)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except (AssertionError, KeyError, urllib.error.HTTPError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

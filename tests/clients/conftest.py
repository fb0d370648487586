"""Starts the real sonde binary (HTTP and OTLP/gRPC on loopback ports chosen by the OS)."""

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request

import pytest

BIN = os.environ.get(
    "SONDE_BIN",
    os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/sonde-target")), "debug", "sonde"),
)


class Sonde:
    def __init__(self, env=None, key=None):
        self.dir = tempfile.TemporaryDirectory(prefix="sonde-clients-")
        self.key = key  # sent with get/post when set (servers with API keys)
        self.proc = subprocess.Popen(
            [BIN, "serve", "--data-dir", self.dir.name, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"],
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

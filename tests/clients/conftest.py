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
    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="sonde-clients-")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--data-dir", self.dir.name, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            env={**os.environ, "SONDE_LOG": "warn"},
            text=True,
        )
        self.url = self.proc.stdout.readline().strip().removeprefix("sonde listening on ")
        self.grpc = self.proc.stdout.readline().strip().removeprefix("sonde otlp/grpc listening on http://")
        assert self.url.startswith("http://"), self.url

    def get(self, path):
        with urllib.request.urlopen(self.url + path) as r:
            return json.load(r)

    def post(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST")
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

#!/usr/bin/env python3
"""Runs the README's examples against a freshly started server, so a stale example fails `make test`.

Every ```sh and ```python block of README.md runs, in the order of the README, in one scratch
directory, against one server started here (the binary under test, on loopback ports) with demo
data already in it: `sonde gen` events in `demo`, and a few OpenTelemetry-shaped spans in `otel`.
Before running, a block's text gets only these substitutions:

- the ports 4318 and 4317 (`localhost:4318`, `127.0.0.1:4318`, `0.0.0.0:4318`, `127.0.0.1:4317`)
  become the test server's;
- the release binary's path (`~/.cache/sonde-target/release/sonde`, `$CARGO_TARGET_DIR/release/sonde`)
  and a bare `sonde` become the binary under test (it is first on PATH; `SONDE_URL` names the server).

In sh blocks each command (a logical line: continuations, quotes and here-documents followed) runs
in one bash process, with `curl` failing on an HTTP error (`--fail-with-body`), and must exit 0. A
comment `# → ANSWER` under a command (continued on `#    ` lines) documents its answer: the answer
must have that shape — the same keys at every level (more are allowed), lists whose items have the
shape of the first one shown, the same JSON types; `…` stands for anything. Python blocks run with
the clients' virtualenv (libhoney, the OpenTelemetry SDK) and must exit 0.

A comment on the line before a block changes how it runs:

- `<!-- readme-check: skip: WHY -->` — not run (builds for 20 minutes, benchmarks for an hour, or
  is `make test` itself); the reason is printed.
- `<!-- readme-check: serve -->` — the block starts a server: it runs in the background (with its
  own ports and data directory) until that server answers `/health`, and is then stopped.
- `<!-- readme-check: serve, s3 -->` — the same, with an S3-compatible server (moto) standing in for
  the one at `127.0.0.1:9000`, and the bucket the block names made first.

    python3 tests/readme/check_readme.py --bin $CARGO_TARGET_DIR/debug/sonde [--readme README.md]
    python3 tests/readme/check_readme.py --bin … --self-test    # also: a broken copy must fail
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

MARK = re.compile(r"^<!--\s*readme-check:\s*(.*?)\s*-->\s*$")
ELLIPSIS = "\u2026"


class Block:
    """A fenced code block: its language, lines, the README line of its fence and its mark."""

    def __init__(self, lang, lines, line, mark):
        self.lang, self.lines, self.line, self.mark = lang, lines, line, mark


def read_blocks(text):
    """The ```sh and ```python blocks of a Markdown text, with the mark on the line before each."""
    lines = text.split("\n")
    out, i, mark = [], 0, None
    while i < len(lines):
        line = lines[i]
        m = MARK.match(line.strip())
        if m:
            mark = m.group(1)
        elif line.startswith("```"):
            lang = line[3:].strip()
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if lang in ("sh", "python"):
                out.append(Block(lang, lines[i + 1:j], i + 1, mark))
            mark = None
            i = j
        elif line.strip():
            mark = None
        i += 1
    return out


class Command:
    """One shell command of a block, and the answer documented under it (if any)."""

    def __init__(self, text, line):
        self.text, self.line, self.expect = text, line, None


def scan(line, state):
    """Follows quoting through one line. Returns (state at its end, here-document word or None,
    whether the command goes on to the next line). States: n (plain), s ('…'), d ("…")."""
    i, heredoc = 0, None
    while i < len(line):
        c = line[i]
        if state == "s":
            if c == "'":
                state = "n"
        elif state == "d":
            if c == "\\":
                i += 1
            elif c == '"':
                state = "n"
        else:
            if c == "\\":
                if i == len(line) - 1:
                    return state, heredoc, True
                i += 1
            elif c == "'":
                state = "s"
            elif c == '"':
                state = "d"
            elif c == "#" and (i == 0 or line[i - 1].isspace()):
                break
            elif line.startswith("<<", i):
                m = re.match(r"<<-?\s*['\"]?(\w+)['\"]?", line[i:])
                if m:
                    heredoc = m.group(1)
                    i += m.end() - 1
        i += 1
    code = line.split(" #", 1)[0].rstrip() if state == "n" else line
    goes_on = state != "n" or code.endswith(("|", "&&", "||"))
    return state, heredoc, goes_on


def split_commands(lines):
    """The commands of an sh block, each with its documented answer."""
    cmds, cur, state, heredoc, open_answer = [], [], "n", None, False
    start = 0
    for idx, line in enumerate(lines):
        if heredoc is not None:
            cur.append(line)
            if line.strip() == heredoc:
                heredoc = None
                if state == "n":
                    cmds.append(Command("\n".join(cur), start))
                    cur = []
            continue
        if not cur:
            stripped = line.strip()
            if stripped.startswith("#"):
                body = stripped[1:].strip()
                if body.startswith("→") and cmds:
                    cmds[-1].expect = body[1:].strip()
                    open_answer = True
                elif open_answer and line.startswith("#    "):
                    cmds[-1].expect += " " + body
                else:
                    open_answer = False
                continue
            open_answer = False
            if not stripped:
                continue
            start = idx
        cur.append(line)
        state, hd, goes_on = scan(line, state)
        if hd:
            heredoc = hd
            continue
        if not goes_on:
            cmds.append(Command("\n".join(cur), start))
            cur, state = [], "n"
    if cur:
        cmds.append(Command("\n".join(cur), start))
    return cmds


# ---- documented answers: JSON with `…` for anything, and keys shown without a value ----

WILD = object()


class Lenient:
    """A parser for the JSON-like answers the README shows."""

    def __init__(self, text):
        self.s, self.i = text, 0

    def ws(self):
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def peek(self):
        self.ws()
        return self.s[self.i] if self.i < len(self.s) else ""

    def value(self):
        c = self.peek()
        if c == "{":
            return self.obj()
        if c == "[":
            return self.arr()
        if c == ELLIPSIS:
            return self.wild()
        if c == '"':
            return self.string()
        m = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?|true|false|null").match(self.s, self.i)
        if not m:
            raise ValueError(f"cannot read the documented answer at {self.s[self.i:self.i + 20]!r}")
        self.i = m.end()
        return json.loads(m.group(0))

    def wild(self):
        # `…` or `…every field…`: up to the next `,`, `}` or `]`.
        while self.i < len(self.s) and self.s[self.i] not in ",}]":
            self.i += 1
        return WILD

    def string(self):
        dec = json.JSONDecoder()
        v, end = dec.raw_decode(self.s, self.i)
        self.i = end
        return v

    def obj(self):
        self.i += 1
        out = {}
        while True:
            c = self.peek()
            if c == "}":
                self.i += 1
                return out
            if c == ",":
                self.i += 1
                continue
            if c == ELLIPSIS:
                self.wild()
                continue
            key = self.string()
            if self.peek() == ":":
                self.i += 1
                out[key] = self.value()
            else:
                out[key] = WILD

    def arr(self):
        self.i += 1
        out = []
        while True:
            c = self.peek()
            if c == "]":
                self.i += 1
                return out
            if c == ",":
                self.i += 1
                continue
            v = self.value()
            if v is not WILD:
                out.append(v)


def documented(expect):
    """The shape an answer must have: the JSON value in `# → …` (an HTTP status before it and
    words after it are skipped), or None when the comment shows no JSON."""
    starts = [i for i in (expect.find("{"), expect.find("[")) if i >= 0]
    if not starts:
        return None
    return Lenient(expect[min(starts):]).value()


def kind(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def shape_errors(doc, actual, path="$"):
    """Where `actual` does not have the shape `doc` shows."""
    if doc is WILD or doc is None:
        return []
    if isinstance(doc, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {kind(actual)}"]
        errs = []
        for k, v in doc.items():
            if k not in actual:
                errs.append(f"{path}: no key {k!r} (has {sorted(actual)[:12]})")
            else:
                errs += shape_errors(v, actual[k], f"{path}.{k}")
        return errs
    if isinstance(doc, list):
        if not isinstance(actual, list):
            return [f"{path}: expected a list, got {kind(actual)}"]
        if not doc:
            return []
        errs = []
        # Items have the shape of the first one shown (later ones show variations).
        for n, item in enumerate(actual[:3]):
            errs += shape_errors(doc[0], item, f"{path}[{n}]")
        return errs
    if kind(doc) != kind(actual) and actual is not None:
        return [f"{path}: expected a {kind(doc)}, got {kind(actual)} {json.dumps(actual)[:40]}"]
    return []


# ---- the servers ----

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`sonde serve` on loopback ports chosen by the kernel, over a scratch data directory."""

    def __init__(self, binary, data_dir, log):
        self.proc = subprocess.Popen(
            [binary, "serve", "--data-dir", data_dir, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=log, text=True)
        first = self.proc.stdout.readline()
        grpc = self.proc.stdout.readline()
        if not first.startswith("sonde listening on http://"):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {first!r}")
        self.port = int(first.strip().rsplit(":", 1)[1])
        self.grpc_port = int(grpc.strip().rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def post(url, body):
    req = urllib.request.Request(url, data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def load_demo(binary, server):
    """The data the examples query: `sonde gen` events in `demo`, OTel-shaped spans in `otel`."""
    subprocess.run([binary, "gen", "20000", "--post", server.url, "--dataset", "demo"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    now = int(time.time())
    spans = []
    for t in range(20):
        trace = f"{t:032x}"
        root = f"{t:08x}00000001"
        spans.append({"timestamp": now - 600 + t, "trace.trace_id": trace, "trace.span_id": root,
                      "name": "GET /checkout", "service.name": "frontend", "duration_ms": 40.0 + t,
                      "status_code": 200})
        for k, (svc, name, code) in enumerate([("cart", "db.query", 500 if t % 4 == 0 else 200),
                                               ("payments", "charge", 200)]):
            spans.append({"timestamp": now - 600 + t, "trace.trace_id": trace,
                          "trace.span_id": f"{t:08x}{k + 2:08x}", "trace.parent_id": root, "name": name,
                          "service.name": svc, "duration_ms": 5.0 + k + t / 10, "status_code": code})
    post(server.url + "/api/ingest/otel", "\n".join(json.dumps(s) for s in spans))


def substitute(text, binary, port, grpc_port):
    for host in ("localhost", "127.0.0.1", "0.0.0.0"):
        text = text.replace(f"{host}:4318", f"127.0.0.1:{port}")
    text = text.replace("127.0.0.1:4317", f"127.0.0.1:{grpc_port}")
    for path in ("~/.cache/sonde-target/release/sonde", "$CARGO_TARGET_DIR/release/sonde",
                 "$CARGO_TARGET_DIR/debug/sonde"):
        text = text.replace(path, binary)
    return text


def wait_health(port, proc, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return True
        except urllib.error.HTTPError as e:
            return e.code < 500
        except OSError:
            time.sleep(0.2)
    return False


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---- running the blocks ----

def run_serve_block(block, binary, scratch, env, moto):
    """A block that starts a server: it must come up and answer /health."""
    port, grpc = free_port(), free_port()
    text = substitute("\n".join(block.lines), binary, port, grpc)
    moto_proc = None
    try:
        if "s3" in block.mark:
            if not moto:
                return [f"README line {block.line}: needs moto (set SONDE_MOTO to moto_server)"]
            mport = free_port()
            moto_proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(mport)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            text = text.replace("127.0.0.1:9000", f"127.0.0.1:{mport}")
            bucket = re.search(r"s3://([^/\s]+)", text).group(1)
            deadline = time.time() + 30
            while True:
                try:
                    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{mport}/{bucket}", method="PUT"),
                                           timeout=2).read()
                    break
                except OSError:
                    if time.time() > deadline:
                        return [f"README line {block.line}: moto did not start"]
                    time.sleep(0.3)
        here = tempfile.mkdtemp(prefix="serve-", dir=scratch)
        # A block that names no address would listen on the defaults: give it its own.
        env = dict(env, SONDE_LISTEN=f"127.0.0.1:{port}", SONDE_GRPC_LISTEN=f"127.0.0.1:{grpc}")
        log = open(os.path.join(here, "output.txt"), "w")
        proc = subprocess.Popen(["bash", "-e", "-c", text], cwd=here, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        ok = wait_health(port, proc)
        kill_group(proc)
        log.close()
        if not ok:
            out = open(os.path.join(here, "output.txt")).read()
            return [f"README line {block.line}: the server this block starts did not answer /health on port {port}\n"
                    f"{indent(text)}\n  output:\n{indent(out[-2000:])}"]
        return []
    finally:
        if moto_proc:
            kill_group(moto_proc)


def indent(s, by="    "):
    return "\n".join(by + line for line in s.splitlines())


def run_sh_block(block, binary, server, scratch, env, n0):
    cmds = split_commands(block.lines)
    outdir = os.path.join(scratch, ".out")
    os.makedirs(outdir, exist_ok=True)
    script = ['curl() { command curl --show-error --fail-with-body "$@"; }']
    for n, c in enumerate(cmds, n0):
        text = substitute(c.text, binary, server.port, server.grpc_port)
        script.append(f'{{\n{text}\n}} >"{outdir}/{n}.out" 2>"{outdir}/{n}.err" </dev/null; echo $? >"{outdir}/{n}.rc"')
    subprocess.run(["bash", "-c", "\n".join(script)], cwd=scratch, env=env, timeout=600)
    errors = []
    for n, c in enumerate(cmds, n0):
        where = f"README line {block.line + 1 + c.line}"
        try:
            rc = int(open(f"{outdir}/{n}.rc").read())
        except (OSError, ValueError):
            errors.append(f"{where}: did not run (a command before it ended the shell)\n{indent(c.text)}")
            continue
        out = open(f"{outdir}/{n}.out", errors="replace").read()
        err = open(f"{outdir}/{n}.err", errors="replace").read()
        if rc != 0:
            errors.append(f"{where}: exit {rc}\n{indent(c.text)}\n  stdout: {out[:600]}\n  stderr: {err[:600]}")
            continue
        if c.expect is None:
            continue
        shape = documented(c.expect)
        if shape is None:
            continue
        try:
            actual = json.loads(out)
        except ValueError:
            errors.append(f"{where}: the documented answer is JSON, this is not:\n{indent(c.text)}\n  stdout: {out[:600]}")
            continue
        for e in shape_errors(shape, actual):
            errors.append(f"{where}: the answer differs from the one documented ({e})\n{indent(c.text)}\n"
                          f"  documented: {c.expect[:300]}\n  answer: {out[:600]}")
    return errors, n0 + len(cmds)


def run_python_block(block, binary, server, scratch, env, python):
    text = substitute("\n".join(block.lines), binary, server.port, server.grpc_port)
    r = subprocess.run([python, "-c", text], cwd=scratch, env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return [f"README line {block.line}: python exited {r.returncode}\n{indent(text)}\n  stderr: {r.stderr[-1500:]}"]
    return []


def check(readme, binary, python, moto, quiet=False):
    """Runs every example of `readme`; returns the failures (and keeps the scratch directory for
    a look when there are some, unless quiet)."""
    blocks = read_blocks(open(readme).read())
    scratch = tempfile.mkdtemp(prefix="readme-check-")
    bindir = os.path.join(scratch, ".bin")
    os.makedirs(bindir)
    os.symlink(binary, os.path.join(bindir, "sonde"))
    log = open(os.path.join(scratch, "server.log"), "w")
    server = Server(binary, os.path.join(scratch, ".server-data"), log)
    failures = []
    ran = skipped = 0
    try:
        load_demo(binary, server)
        env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"], SONDE_URL=server.url)
        env.pop("SONDE_DATA_DIR", None)
        n = 0
        for b in blocks:
            mark = b.mark or ""
            if mark.startswith("skip"):
                if ":" not in mark or not mark.split(":", 1)[1].strip():
                    failures.append(f"README line {b.line}: a skipped example must say why (readme-check: skip: WHY)")
                elif not quiet:
                    print(f"  skip  line {b.line}: {mark.split(':', 1)[1].strip()}")
                skipped += 1
                continue
            ran += 1
            if mark.startswith("serve"):
                errs = run_serve_block(b, binary, scratch, env, moto)
            elif b.lang == "python":
                errs = run_python_block(b, binary, server, scratch, env, python)
            else:
                errs, n = run_sh_block(b, binary, server, scratch, env, n)
            if not quiet:
                print(f"  {'FAIL' if errs else 'ok  '}  line {b.line}: {b.lines[0][:90] if b.lines else ''}")
            failures += errs
    finally:
        server.stop()
        log.close()
    if not quiet:
        print(f"{ran} examples run, {skipped} skipped, {len(failures)} failure(s)")
    if not failures or quiet:
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        print(f"(scratch directory kept: {scratch})")
    return failures


def self_test(readme, binary, python, moto):
    """A copy of the README with two examples broken must fail, naming both."""
    text = open(readme).read()
    broken = text.replace("curl -s localhost:4318/api/events/demo", "curl -s localhost:4318/api/evnets/demo", 1)
    broken = broken.replace('# → {"accepted":', '# → {"acepted":', 1)
    assert broken.count("evnets") == 1 and broken.count('"acepted"') == 1, "self-test: the README changed shape"
    path = os.path.join(tempfile.mkdtemp(prefix="readme-broken-"), "README.md")
    open(path, "w").write(broken)
    failures = check(path, binary, python, moto, quiet=True)
    found_route = any("evnets" in f and "exit 22" in f for f in failures)
    found_shape = any("no key 'acepted'" in f for f in failures)
    if len(failures) == 2 and found_route and found_shape:
        print("self-test: the broken copy fails with exactly its two broken examples")
        return True
    print("self-test FAILED: the broken copy should fail on exactly two examples; it gave:")
    for f in failures:
        print(f)
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the sonde binary under test")
    ap.add_argument("--readme", default=os.path.join(os.path.dirname(__file__), "..", "..", "README.md"))
    ap.add_argument("--python", default=os.path.expanduser("~/.cache/sonde-clients-venv/bin/python"),
                    help="Python with the clients (libhoney, OpenTelemetry SDK) for python blocks")
    ap.add_argument("--moto", default=os.environ.get("SONDE_MOTO"), help="moto_server, for s3 blocks")
    ap.add_argument("--self-test", action="store_true", help="also check that a broken copy fails")
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    failures = check(a.readme, binary, a.python, a.moto)
    for f in failures:
        print("\n" + f)
    ok = not failures
    if a.self_test:
        ok = self_test(a.readme, binary, a.python, a.moto) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

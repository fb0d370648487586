#!/usr/bin/env python3
"""Builds the release binary (`cargo build --release -p sonde`) and says how far along it is.

A first release build takes about 13 minutes on 2 cores, nearly all of it DataFusion, and
cargo's own progress bar (crates done out of all) moves fastest where the crates are small. So
this reads cargo's JSON messages and, each time a crate finishes, looks up when that crate
finished in a fresh build measured on the machine this repository is developed on
(`tools/release_build_profile.json`): if it finished at 40% of that build's time after 6 minutes
here, about 9 minutes are left. A build that is mostly up to date says so and finishes at once.

    python3 tools/release_build.py                     # what `make release` runs
    python3 tools/release_build.py --record FILE       # also write FILE: this build's profile

Without python3, `make release` runs cargo directly (Makefile).
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROFILE = os.path.join(HERE, "release_build_profile.json")


def unit_name(msg):
    """A compiled unit's name: package and target, as cargo would build them again."""
    pkg = msg["package_id"]
    # package_id is "registry+…#name@version" or "path+file://…#version" (name from the target).
    name = pkg.rsplit("#", 1)[-1].split("@")[0] if "@" in pkg.rsplit("#", 1)[-1] else msg["target"]["name"]
    kind = ",".join(msg["target"]["kind"])
    return f"{name}:{msg['target']['name']}:{kind}"


def fmt(seconds):
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", help="write this build's profile (unit -> share of the build's time) here")
    ap.add_argument("cargo_args", nargs="*", help="extra arguments for cargo build")
    a = ap.parse_args()

    profile = {}
    try:
        with open(PROFILE) as f:
            saved = json.load(f)
        profile = saved["finished_at"]
        ref_minutes = saved["seconds"] / 60
    except (OSError, ValueError, KeyError):
        ref_minutes = None

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.getcwd(), "target"))
    first = not os.path.exists(os.path.join(target, "release", "sonde"))
    if first:
        hint = f" (about {ref_minutes:.0f} min on 2 cores when nothing is built yet)" if ref_minutes else ""
        print(f"[release] first build of the release binary{hint}; progress below", file=sys.stderr, flush=True)
    cmd = ["cargo", "build", "--release", "-p", "sonde", "--message-format", "json-render-diagnostics", *a.cargo_args]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    finished = {}
    built = fresh = 0
    share = 0.0
    last_report = start
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") != "compiler-artifact":
            continue
        now = time.monotonic()
        name = unit_name(msg)
        finished[name] = now - start
        if msg.get("fresh"):
            fresh += 1
            continue
        built += 1
        share = max(share, profile.get(name, 0.0))
        # A line every 20 s at most, and for the binary itself.
        if now - last_report >= 20 or msg["target"]["name"] == "sonde":
            last_report = now
            elapsed = now - start
            if 0.02 < share < 1.0:
                left = elapsed * (1 - share) / share
                eta = f", about {max(1, round(left / 60))} min left"
            else:
                eta = ""
            print(f"[release] {fmt(elapsed)} elapsed, {built} crates built ({fresh} up to date){eta} — last: {name.split(':')[0]}",
                  file=sys.stderr, flush=True)
    rc = proc.wait()
    total = time.monotonic() - start
    if rc != 0:
        print(f"[release] cargo failed after {fmt(total)} (exit {rc})", file=sys.stderr)
        return rc
    print(f"[release] built in {fmt(total)} ({built} crates compiled, {fresh} up to date)", file=sys.stderr)
    if a.record:
        with open(a.record, "w") as f:
            json.dump({"seconds": round(total, 1), "units": len(finished),
                       "finished_at": {k: round(v / total, 4) for k, v in sorted(finished.items(), key=lambda kv: kv[1])}},
                      f, indent=0)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

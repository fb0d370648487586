# One entry point for humans and CI: `.ci/run` calls `make test`, exactly as the README says.
# Build output lives outside the clone so that repeated builds (and CI runs) are incremental.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/sonde-target
CLIENTS_VENV ?= $(HOME)/.cache/sonde-clients-venv
SONDE_ARGS ?=
BENCH_ARGS ?=

.PHONY: run dev test fmt layers lint unit ui clients clients-venv readme web build release bench bench-full bench-huge load fuzz

## Build the UI and the release binary (which embeds the UI), then serve on 127.0.0.1:4318 with ./sonde-data.
run: release
	$(CARGO_TARGET_DIR)/release/sonde serve $(SONDE_ARGS)

## Run a debug build (faster to build, slower to run).
dev: web
	cargo run -p sonde -- serve $(SONDE_ARGS)

## The release binary, saying how far along a long build is (tools/release_build.py; plain cargo
## without python3).
release: web
	@if command -v python3 >/dev/null 2>&1; then python3 tools/release_build.py; else cargo build --release -p sonde; fi

## The web UI: TypeScript checked, bundled by Vite into web/dist (embedded by the next cargo build).
web:
	@echo "[web] the UI: npm ci, then the TypeScript check and Vite build (about a minute the first time)"
	cd web && npm ci --no-audit --no-fund && npm run build

build:
	cargo build --workspace --all-targets

## Everything CI checks: formatting, lints, unit, property and end-to-end tests, and the UI in headless Chromium.
test: fmt layers web lint unit ui clients readme fuzz

fmt:
	cargo fmt --all -- --check

## The crate boundaries: fuzz and sonde-ingest never pull in DataFusion or the server; the query
## crate reaches storage only through `sonde_storage::{source, schema}` (.ci/layers.sh).
layers:
	bash .ci/layers.sh

lint:
	cargo clippy --workspace --all-targets -- -D warnings

## Unit, property and end-to-end tests; the S3 test runs moto (from the clients' virtualenv) on loopback.
unit: clients-venv
	SONDE_MOTO=$(CLIENTS_VENV)/bin/moto_server cargo test --workspace

## The UI's tests: unit tests of its pure modules (web/src as it is, in Node), then end to end: the
## debug binary built by `unit`, driven through Chromium by Playwright. To try a UI rebuilt since
## that binary (`cd web && npm run build`), serve it from disk: `make ui SONDE_UI_DIR=$PWD/web/dist`.
ui:
	cd web && node --test tests/unit/ && SONDE_BIN=$(CARGO_TARGET_DIR)/debug/sonde node --test tests/ui.test.mjs

## Real clients, unmodified: the OpenTelemetry Python SDK (OTLP/HTTP and gRPC) and libhoney, from
## PyPI into a virtualenv kept outside the clone, against the debug binary built by `unit`.
clients: clients-venv
	cd tests/clients && SONDE_BIN=$(CARGO_TARGET_DIR)/debug/sonde $(CLIENTS_VENV)/bin/pytest -q -p no:cacheprovider .

## The README's examples, each run against a fresh server (the debug binary built by `unit`) with
## demo data, answers checked against the shapes the README shows; then a copy with two examples
## broken, which must fail on exactly those (tests/readme/check_readme.py).
readme: clients-venv
	SONDE_MOTO=$(CLIENTS_VENV)/bin/moto_server python3 tests/readme/check_readme.py \
	  --bin $(CARGO_TARGET_DIR)/debug/sonde --python $(CLIENTS_VENV)/bin/python --self-test

## The Python virtualenv (outside the clone) with the real clients and moto, from PyPI.
clients-venv:
	test -x $(CLIENTS_VENV)/bin/python || python3 -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/pip install -q --disable-pip-version-check -r tests/clients/requirements.txt

## Fuzzing (fuzz/, cargo-fuzz, its own target dir): each target from the seeds in
## testdata/fuzz/<target>/ with a fixed seed into a scratch corpus, so a run is repeatable, bounded
## by FUZZ_RUNS inputs and FUZZ_SECONDS. A crash fails the run and leaves its input in
## fuzz/artifacts/ (copy it into testdata/fuzz/<target>/ as a regression seed).
## cargo fuzz needs nightly's -Z flags: the nightly toolchain if rustup has one, else the stable
## compiler told to accept them (RUSTC_BOOTSTRAP).
FUZZ_SECONDS ?= 20
FUZZ_RUNS ?= 100000
FUZZ_SEED ?= 1
FUZZ_TARGETS = events_json events_msgpack ndjson otlp flatten query_spec trace_tree derived_expr
FUZZ_CARGO = $(shell rustup toolchain list 2>/dev/null | grep -q '^nightly' && echo 'cargo +nightly' || echo 'env RUSTC_BOOTSTRAP=1 cargo')
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && CARGO_TARGET_DIR=$(HOME)/.cache/sonde-fuzz-target $(FUZZ_CARGO) fuzz build
	for t in $(FUZZ_TARGETS); do \
	  scratch=$$(mktemp -d) && \
	  (cd fuzz && CARGO_TARGET_DIR=$(HOME)/.cache/sonde-fuzz-target $(FUZZ_CARGO) fuzz run $$t \
	    $$scratch ../testdata/fuzz/$$t -- -seed=$(FUZZ_SEED) -runs=$(FUZZ_RUNS) \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -print_final_stats=1) || exit 1; \
	  rm -rf $$scratch; \
	done

## The load test against the release binary, for 30 s; prints its report (README, Reliability).
load: release
	SONDE_TEST_BIN=$(CARGO_TARGET_DIR)/release/sonde SONDE_LOAD_SECONDS=30 cargo test -p sonde --test it load -- --nocapture

## Benchmarks against DuckDB (benches/README.md): ingest, freshness, storage, query suite, and the
## footer/chunk caches on and off, on 1M generated events; results in benches/results/quick.json.
## Its own virtualenv (DuckDB from PyPI).
bench: release
	python3 benches/run.py --size quick --bin $(CARGO_TARGET_DIR)/release/sonde $(BENCH_ARGS)

## The same on 10M events (benches/results/full.json); needs ~12 GB free under ~/.cache/sonde-bench
## (checked before it starts): the events go from `sonde gen` into one file of batch bodies, and
## DuckDB reads Sonde's own segment files. Then one more ingest of the same events while the
## suite's questions are asked (benches/results/full-mixed.json): the peak RSS of both together.
bench-full: release
	python3 benches/run.py --size full --bin $(CARGO_TARGET_DIR)/release/sonde $(BENCH_ARGS)
	python3 benches/run.py --size full --sections ingest --clients 4 --query-load \
		--bin $(CARGO_TARGET_DIR)/release/sonde --out benches/results/full-mixed.json $(BENCH_ARGS)

## 100M events over 24 hours (benches/results/huge.json), streamed from the generator into Sonde
## (no copy of the events on disk; ~27 GB free for segments, WAL and DuckDB's files): one ingest
## with 4 clients while those views are asked in a loop (the peak RSS of both together), then
## the day's first views (benches/suite.py HUGE_VIEWS) beside DuckDB. About an hour.
bench-huge: release
	python3 benches/run.py --size huge --clients 4 --query-load --skip freshness,caches --bin $(CARGO_TARGET_DIR)/release/sonde $(BENCH_ARGS)

# One entry point for humans and CI: `.ci/run` calls `make test`, exactly as the README says.
# Build output lives outside the clone so that repeated builds (and CI runs) are incremental.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/sonde-target
SONDE_ARGS ?=

.PHONY: run dev test fmt lint unit build release

## Build (release) and run the server on 127.0.0.1:4318 with ./sonde-data.
run: release
	$(CARGO_TARGET_DIR)/release/sonde serve $(SONDE_ARGS)

## Run a debug build (faster to build, slower to run).
dev:
	cargo run -p sonde -- serve $(SONDE_ARGS)

release:
	cargo build --release -p sonde

build:
	cargo build --workspace --all-targets

## Everything CI checks: formatting, lints, unit, property and end-to-end tests.
test: fmt lint unit

fmt:
	cargo fmt --all -- --check

lint:
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test --workspace

#!/usr/bin/env bash
# The crate boundaries, checked (run by `make layers`, part of `make test`):
# - the fuzz targets build against the decoders alone: no DataFusion, no server, no storage;
# - sonde-ingest needs neither DataFusion nor the server;
# - the query crate reaches storage only through its public surface (`source`, `schema` and the
#   crate root), never through storage's internal modules.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0

forbid_deps() { # <manifest> <what> <crate>...
  local manifest=$1 what=$2; shift 2
  local tree
  tree=$(cargo tree --manifest-path "$manifest" --edges normal --prefix none --format '{p}' 2>/dev/null | awk '{print $1}' | sort -u)
  for crate in "$@"; do
    if grep -qx "$crate" <<<"$tree"; then
      echo "layers: $what depends on $crate"
      fail=1
    fi
  done
}

forbid_deps fuzz/Cargo.toml "the fuzz crate" datafusion sonde-query sonde-server sonde-storage axum
forbid_deps crates/sonde-ingest/Cargo.toml "sonde-ingest" datafusion sonde-query sonde-server sonde-storage axum

internal='sonde_storage::(buffer|catalog|compaction|index|quarantine|segment|wal)\b'
if grep -rnE "$internal" crates/sonde-query crates/sonde-server crates/sonde; then
  echo "layers: the lines above name storage's internal modules; use sonde_storage::{source, schema}"
  fail=1
fi

if [ "$fail" = 0 ]; then
  echo "layers: ok (fuzz and sonde-ingest free of DataFusion and the server; storage reached through its surface)"
fi
exit "$fail"

#!/usr/bin/env bash
# Runs the Docker suite (every tests/tests/docker_*.rs, on the real engine) N times in a row
# (default 20) from one nextest archive, so the runs test one build and the tree may change
# meanwhile; stops at the first failing run. Issue 11 §5: "the Docker suite green 20 times in a
# row". Needs the static binaries of scripts/test.sh (target/static) for the process tests.
# Usage: scripts/docker-suite-repeat.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
GHA_SCALER_STATIC_BIN_DIR="$(cd "${CARGO_TARGET_DIR:-target}/static/$HOST/release" && pwd)"
export GHA_SCALER_STATIC_BIN_DIR
archive="$(mktemp -d)/docker-suite.tar.zst"
cargo nextest archive -p tests --archive-file "$archive"
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  if ! cargo nextest run --archive-file "$archive" --workspace-remap . \
      -E 'binary(/^docker_/)' --no-fail-fast; then
    echo "run $i of $runs failed" >&2
    exit 1
  fi
  echo "run $i of $runs green in $(( $(date +%s) - start )) s"
done
rm -f "$archive"

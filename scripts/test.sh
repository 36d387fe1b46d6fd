#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the controller's CLI tests and the end-to-end system
# tests in tests/ (real controller, real agents, real mutual TLS on loopback, and the Docker
# runtime on the machine's real Docker engine).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# The Docker tests (tests/tests/docker_*.rs) run on the real engine with a runner image they
# make themselves from a static fake runner; build it once up front (the tests would otherwise
# build it on first use, behind cargo's lock). See tests/runner-image/README.md.
if ! docker version >/dev/null 2>&1; then
  echo "the Docker engine is not reachable: the Docker runtime tests need it" >&2
  exit 1
fi
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --quiet \
  --manifest-path tests/runner-image/Cargo.toml --target-dir "${CARGO_TARGET_DIR:-target}/runner-image"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi

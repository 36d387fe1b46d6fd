#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the controller's CLI tests and the end-to-end system
# tests in tests/ (real controller, real agents, real mutual TLS on loopback, and the Docker
# runtime on the machine's real Docker engine).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# deploy/systemd units are checked with systemd-analyze; the compose test uses the compose tool.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
# The store suite and the failover tests run on a real PostgreSQL (scripts/test-postgres.sh).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  need_apt+=(docker-compose)
fi
# The dashboard's browser test (tests/tests/dashboard_browser.rs) drives Debian's chromium.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# A throwaway PostgreSQL server on loopback for the tests (GHA_TEST_PG_URL), stopped on exit.
# shellcheck source=scripts/test-postgres.sh
source scripts/test-postgres.sh
start_test_postgres

# The Docker tests (tests/tests/docker_*.rs) run on the real engine with a runner image they
# make themselves from a static fake runner; build it once up front (the tests would otherwise
# build it on first use, behind cargo's lock). See tests/runner-image/README.md.
if ! docker version >/dev/null 2>&1; then
  echo "the Docker engine is not reachable: the Docker runtime tests need it" >&2
  exit 1
fi
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --quiet \
  --manifest-path tests/runner-image/Cargo.toml --target-dir "${CARGO_TARGET_DIR:-target}/runner-image"

# One static build of the shipped binaries for every test that runs them as users do (the
# images of deploy/build-images.sh for the compose test, the agent process of the Docker process
# tests): built once here, found by the tests through GHA_SCALER_STATIC_BIN_DIR (a test run on
# its own without it builds the same thing itself). --target: with crt-static on the host
# target proc macros could not be built.
HOST="$(rustc -vV | sed -n 's/^host: //p')"
STATIC_TARGET="${CARGO_TARGET_DIR:-target}/static"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --quiet \
  --target "$HOST" --target-dir "$STATIC_TARGET" -p controller -p agent -p tests \
  --bin gha-controller --bin gha-agent --bin github-sim
GHA_SCALER_STATIC_BIN_DIR="$(cd "$STATIC_TARGET/$HOST/release" && pwd)"
export GHA_SCALER_STATIC_BIN_DIR

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi

#!/usr/bin/env bash
# Builds and runs a controller plus one agent locally, enrolled with a join token.
# The agent uses the in-memory runtime (development builds only) until a real runtime is
# configured. State lives in .dev/; Ctrl-C stops both (runners are never stopped by that).
set -euo pipefail
cd "$(dirname "$0")/.."

DEV="$PWD/.dev"
PORT="${PORT:-8080}"
GRPC_PORT="${GRPC_PORT:-9443}"
mkdir -p "$DEV"

cargo build --locked -p controller -p agent --features agent/memory-runtime
BIN="$PWD/target/debug"

export STATE_DIR="$DEV/state" PORT GRPC_PORT
export API_TOKEN="${API_TOKEN:-dev-api-token-$(id -u)-0123456789}"
# A .env (the seed's variables: GITHUB_TOKEN, REPO_OWNER, ...) in the working directory is read
# by the controller; without one, a placeholder owner lets the controller start.
if [ ! -f .env ] && [ -z "${REPO_OWNER:-}${OWNERS:-}" ]; then
  export REPO_OWNER=dev-owner ALL_REPOS=true GITHUB_TOKEN=placeholder WEBHOOK_SECRET=dev-secret
fi
"$BIN/gha-controller" &
CONTROLLER=$!
trap 'kill $CONTROLLER ${AGENT:-} 2>/dev/null || true' EXIT INT TERM

for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done

if [ ! -f "$DEV/agent/agent.pem" ]; then
  TOKEN=$("$BIN/gha-controller" agents join-token --ttl 10m --name dev-agent --replace)
  "$BIN/gha-agent" join --controller "https://127.0.0.1:$GRPC_PORT" --token "$TOKEN" \
    --dir "$DEV/agent" --name dev-agent
fi

CONTROLLER_URL="https://127.0.0.1:$GRPC_PORT" TLS_DIR="$DEV/agent" RUNTIME=memory \
  "$BIN/gha-agent" &
AGENT=$!

sleep 1
echo
echo "controller: http://127.0.0.1:$PORT  (status: curl -s http://127.0.0.1:$PORT/status)"
echo "agents:     curl -s -H 'Authorization: Bearer $API_TOKEN' http://127.0.0.1:$PORT/api/v1/agents"
curl -fsS -H "Authorization: Bearer $API_TOKEN" "http://127.0.0.1:$PORT/api/v1/agents" || true
echo
wait $CONTROLLER

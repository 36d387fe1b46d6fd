#!/usr/bin/env bash
# The whole product on one machine with Docker, before you have a GitHub token:
# builds everything, makes a strict test runner image of the myoung34 layout under the seed's
# default tag (myoung34/github-runner:ubuntu-noble; no RUNNER_IMAGE is set, as in the seed's
# .env), starts the GitHub simulator, a controller and
# two Docker agents (one declaring arm64), queues a handful of jobs with mixed labels, and shows
# them being served: runner containers appear and finish, the agent list tells the story.
# Ctrl-C stops everything and removes every container, volume and image the demo created.
#
#   deploy/docker/demo.sh            # JOBS=8 MAX_RUNNERS=3 PORT=18080 GRPC_PORT=19443 to change
set -euo pipefail
cd "$(dirname "$0")/../.."

JOBS="${JOBS:-8}"
PORT="${PORT:-18080}"
GRPC_PORT="${GRPC_PORT:-19443}"
MAX_RUNNERS="${MAX_RUNNERS:-3}"
DEMO_ID="demo-$$"
LABEL="dev.gha-scaler.demo=$DEMO_ID"
# The seed's default RUNNER_IMAGE, made locally (nothing is pulled) and removed on exit.
IMAGE="myoung34/github-runner:ubuntu-noble"
WORK="$(mktemp -d)"
PIDS=()

say() { printf '\n== %s\n' "$*"; }

cleanup() {
  trap - EXIT INT TERM
  STOPPING=1
  say "stopping (runner containers are removed by the demo, not by the agents)"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ids=$(docker ps -aq --filter "label=$LABEL")
  [ -n "$ids" ] && docker rm -f -v $ids >/dev/null
  vols=$(docker volume ls -q --filter "label=$LABEL")
  [ -n "$vols" ] && docker volume rm -f $vols >/dev/null
  if [ "$(docker image inspect -f '{{index .Config.Labels "dev.gha-scaler.demo"}}' "$IMAGE" 2>/dev/null)" = "$DEMO_ID" ]; then
    docker rmi -f "$IMAGE" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  echo "nothing left behind"
}
# Ctrl-C and SIGTERM (docker stop, kill, a CI timeout) end the same way: clean up, then exit.
# (A trap that only cleaned up would return into the display loop below.)
STOPPING=0
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

docker version >/dev/null || { echo "the Docker engine is not reachable" >&2; exit 1; }
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE already exists on this engine; the demo makes its own under that tag and" \
    "removes it afterwards: remove or retag yours first" >&2
  exit 1
fi

say "building (the first time takes about 5-10 minutes on 2 cores: a debug build of the workspace and a static runner; later runs take seconds)"
cargo build --locked -p controller -p agent -p tests \
  --bin gha-controller --bin gha-agent --bin github-sim
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
  --manifest-path tests/runner-image/Cargo.toml --target-dir target/runner-image
BIN="$PWD/target/debug"

say "making the runner image $IMAGE (the fake runner in the myoung34 layout: /entrypoint.sh, /actions-runner)"
tests/runner-image/make-image.sh myoung34 "$IMAGE" "$LABEL"

say "starting the GitHub simulator (organization acme, repository app)"
SECRET="demo-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
GITHUB_SIM_HOOK_SECRET="$SECRET" "$BIN/github-sim" --org acme --repos app \
  --hook-url "http://127.0.0.1:$PORT/webhook" > "$WORK/sim.json" 2> "$WORK/sim.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/sim.json" ] && break; sleep 0.1; done
json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$@"; }
API_URL=$(json "$WORK/sim.json" api_url)
CONTROL_URL=$(json "$WORK/sim.json" control_url)
echo "GitHub API: $API_URL"

say "starting the controller on :$PORT (gRPC :$GRPC_PORT), MAX_RUNNERS=$MAX_RUNNERS"
export STATE_DIR="$WORK/state" PORT GRPC_PORT REPO_OWNER=acme ALL_REPOS=true \
  WEBHOOK_SECRET="$SECRET" GITHUB_API_URL="$API_URL" MAX_RUNNERS \
  API_TOKEN="demo-api-token-$SECRET"
GITHUB_TOKEN=$(json "$WORK/sim.json" token)
export GITHUB_TOKEN
"$BIN/gha-controller" > "$WORK/controller.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done

# arm-host is arm64 in name only: both run this host's test image, so the agents' check that an
# image fits the runner's architecture (IMAGE_PLATFORM_CHECK) is off.
for agent in amd-host:amd64 arm-host:arm64; do
  name="${agent%%:*}" arch="${agent##*:}"
  say "enrolling and starting agent $name (AGENT_ARCH=$arch)"
  TOKEN=$("$BIN/gha-controller" agents join-token --ttl 10m --name "$name" --max-runners 2 2>/dev/null)
  "$BIN/gha-agent" join --controller "https://127.0.0.1:$GRPC_PORT" --token "$TOKEN" \
    --dir "$WORK/$name" --name "$name" >/dev/null
  CONTROLLER_URL="https://127.0.0.1:$GRPC_PORT" TLS_DIR="$WORK/$name" RUNTIME=docker \
    AGENT_ARCH="$arch" IMAGE_PLATFORM_CHECK=false MAX_RUNNERS=2 RUNNER_NETWORK=host RUNNER_STOP_GRACE=2s \
    RUNNER_CONTAINER_LABELS="$LABEL" CACHE_VOLUME_PREFIX="$DEMO_ID" \
    CONTROL_SOCKET="$WORK/$name.sock" env -u GITHUB_TOKEN "$BIN/gha-agent" > "$WORK/$name.log" 2>&1 &
  PIDS+=($!)
done

say "queueing $JOBS jobs with mixed labels"
for i in $(seq "$JOBS"); do
  case $((i % 3)) in
    0) labels='["self-hosted","linux","arm64"]' ;;
    1) labels='["self-hosted","linux","x64"]' ;;
    *) labels='["self-hosted","linux"]' ;;
  esac
  ms=$(( (2 + RANDOM % 5) * 1000 ))
  curl -fsS -X POST "$CONTROL_URL/jobs" -H 'Content-Type: application/json' \
    -d "{\"owner\":\"acme\",\"repo\":\"app\",\"labels\":$labels,\"duration_ms\":$ms}"
  echo
done

say "serving (Ctrl-C to stop; logs in $WORK)"
# Every 2 s: the runner containers, each agent's runners by phase, the jobs at GitHub (the
# simulator) by status, and the controller's queue with each waiting job's reason; once every
# job is completed it says so (and keeps watching, e.g. for jobs you queue yourself).
ANNOUNCED=0
while [ "$STOPPING" = 0 ]; do
  sleep 2
  echo "--- $(date +%T) runner containers:"
  docker ps --filter "label=$LABEL" --filter "label=dev.gha-scaler.managed-by" \
    --format '  {{.Names}}\t{{.Label "dev.gha-scaler.agent"}}\t{{.Status}}' 2>/dev/null || true
  curl -fsS -H "Authorization: Bearer $API_TOKEN" "http://127.0.0.1:$PORT/api/v1/agents" 2>/dev/null | python3 -c '
import json, sys
for a in json.load(sys.stdin):
    phases = {}
    for r in a["runners"]:
        phases[r["phase"]] = phases.get(r["phase"], 0) + 1
    print("agent %-9s %-6s connected=%s healthy=%s runners=%s"
          % (a["name"], a["arch"], a["connected"], a["healthy"], phases or "none"))
' 2>/dev/null || true
  curl -fsS -H "Authorization: Bearer $GITHUB_TOKEN" \
    "$API_URL/repos/acme/app/actions/runs?per_page=100" 2>/dev/null | python3 -c '
import json, sys
by = {}
for r in json.load(sys.stdin)["workflow_runs"]:
    by[r["status"]] = by.get(r["status"], 0) + 1
print("jobs at GitHub: %s" % (", ".join("%d %s" % (n, s) for s, n in sorted(by.items())) or "none"))
open(sys.argv[1], "w").write(str(by.get("completed", 0)))
' "$WORK/completed" 2>/dev/null || true
  done_jobs=$(cat "$WORK/completed" 2>/dev/null || echo 0)
  curl -fsS -H "Authorization: Bearer $API_TOKEN" "http://127.0.0.1:$PORT/status" 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("controller %s: queue depth %d, runners %d/%d" % (s["status"], s["queue"]["depth"], s["runners"]["current"], s["runners"]["max"]))
if s.get("reason"):
    print("  degraded: %s" % s["reason"])
for j in s["queue"]["jobs"][:5]:
    print("  job %s %s: %s" % (j["job"], j["labels"], j["explanation"]))
' 2>/dev/null || true
  if [ "$ANNOUNCED" = 0 ] && [ "${done_jobs:-0}" -ge "$JOBS" ] 2>/dev/null; then
    say "all $JOBS jobs completed and the queue is empty; runners finished and were removed. Ctrl-C to stop."
    ANNOUNCED=1
  fi
done

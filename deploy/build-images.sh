#!/usr/bin/env bash
# Builds static release binaries and the gha-controller / gha-agent images from them,
# FROM scratch, so nothing is pulled from a registry.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${TAG:-dev}"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked --release \
  --target "$(rustc -vV | sed -n 's/^host: //p')" -p controller -p agent
TARGET_DIR="target/$(rustc -vV | sed -n 's/^host: //p')/release"
CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
mkdir -p "$CTX/etc/ssl/certs"
echo "127.0.0.1 localhost" > "$CTX/etc/hosts"
[ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$CTX/etc/ssl/certs/"
cp "$TARGET_DIR/gha-controller" "$TARGET_DIR/gha-agent" "$CTX/"
docker build -q -f deploy/docker/Dockerfile.controller -t "gha-controller:$TAG" "$CTX"
docker build -q -f deploy/docker/Dockerfile.agent -t "gha-agent:$TAG" "$CTX"
echo "built gha-controller:$TAG and gha-agent:$TAG"

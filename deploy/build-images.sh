#!/usr/bin/env bash
# Builds the images from static release binaries, FROM scratch, so nothing is pulled from a
# registry:
#   gha-controller:$TAG  the controller (STATE_DIR=/data, a volume owned by the image's user)
#   gha-agent:$TAG       the agent (TLS_DIR=/var/lib/gha-agent, a volume owned by the image's user)
#   github-sim:$TAG      the GitHub simulator, for tests and the demo only (never in the controller's image)
# Every image runs as the numeric user 65532 (no root, no shell, no package manager) and carries
# the OCI labels org.opencontainers.image.{version,revision,source,created}.
#
#   TAG=dev                 image tag
#   BIN_DIR=...             use static binaries built already (scripts/test.sh builds them once into
#                           target/static/<host>/release); otherwise they are built here
#   IMAGES="controller agent github-sim"   which images to build
#
# Multi-arch (not possible on this machine, which has neither buildx nor an aarch64 toolchain):
# build each architecture's static binaries, e.g.
#   rustup target add aarch64-unknown-linux-gnu   # plus a cross linker (gcc-aarch64-linux-gnu)
#   RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
#     --target aarch64-unknown-linux-gnu -p controller -p agent
# (or aarch64-unknown-linux-musl), lay them out as <context>/linux/amd64/ and <context>/linux/arm64/,
# and build one manifest list with `docker buildx build --platform linux/amd64,linux/arm64`
# using `COPY linux/${TARGETARCH}/gha-agent /gha-agent` (TARGETARCH is set by buildx). The
# Dockerfiles here copy from the context root, i.e. one architecture per build.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${TAG:-dev}"
IMAGES="${IMAGES:-controller agent github-sim}"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
if [ -z "${BIN_DIR:-}" ]; then
  # --target: with crt-static on the host target, proc macros could not be built.
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked --release --quiet \
    --target "$HOST" --target-dir target/static -p controller -p agent -p tests \
    --bin gha-controller --bin gha-agent --bin github-sim
  BIN_DIR="target/static/$HOST/release"
fi
VERSION="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
SOURCE="${IMAGE_SOURCE:-https://github.com/gha-scaler/gha-scaler}"
CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
mkdir -p "$CTX/etc/ssl/certs" "$CTX/data" "$CTX/var/lib/gha-agent" "$CTX/bootstrap" "$CTX/tmp"
chmod 1777 "$CTX/tmp"; chmod 0700 "$CTX/data" "$CTX/var/lib/gha-agent" "$CTX/bootstrap"
echo "127.0.0.1 localhost" > "$CTX/etc/hosts"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/data:/sbin/nologin\n' > "$CTX/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$CTX/etc/group"
[ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$CTX/etc/ssl/certs/"
for image in $IMAGES; do
  case "$image" in
    controller) bin=gha-controller; name=gha-controller ;;
    agent) bin=gha-agent; name=gha-agent ;;
    github-sim) bin=github-sim; name=github-sim ;;
    *) echo "unknown image $image (controller, agent, github-sim)" >&2; exit 2 ;;
  esac
  cp "$BIN_DIR/$bin" "$CTX/$bin"
  docker build -q -f "deploy/docker/Dockerfile.$image" -t "$name:$TAG" \
    --label "org.opencontainers.image.version=$VERSION" \
    --label "org.opencontainers.image.revision=$REVISION" \
    --label "org.opencontainers.image.source=$SOURCE" \
    --label "org.opencontainers.image.created=$CREATED" \
    --label "org.opencontainers.image.title=$name" \
    ${EXTRA_LABEL:+--label "$EXTRA_LABEL"} \
    "$CTX" >/dev/null
  echo "built $name:$TAG"
done

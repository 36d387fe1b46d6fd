#!/usr/bin/env bash
# Makes a test runner image of one layout from the static fake runner, with `docker import`:
# the same layouts as tests/src/docker/run.rs (`RunnerLayout`), described in README.md.
#
#   tests/runner-image/make-image.sh official|myoung34|custom TAG [LABEL=VALUE]
#
# Expects target/runner-image/release/fake-runner (see README.md for the build command).
set -euo pipefail
cd "$(dirname "$0")/../.."

layout="${1:?layout: official, myoung34 or custom}"
tag="${2:?image tag}"
label="${3:-}"
binary="${CARGO_TARGET_DIR:-target}/runner-image/release/fake-runner"
[ -x "$binary" ] || { echo "build the fake runner first: $binary is missing" >&2; exit 1; }

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nrunner:x:1001:1001:runner:/home/runner:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nrunner:x:1001:\ndocker:x:123:runner\n' > "$root/etc/group"
changes=()
case "$layout" in
  official)
    mkdir -p "$root/home/runner/bin"
    for p in run.sh config.sh bin/Runner.Listener; do cp "$binary" "$root/home/runner/$p"; done
    changes=(-c 'WORKDIR /home/runner' -c 'USER runner')
    ;;
  myoung34)
    mkdir -p "$root/actions-runner/bin" "$root/_work" "$root/opt/hostedtoolcache"
    cp "$binary" "$root/entrypoint.sh"
    for p in run.sh config.sh bin/Runner.Listener; do cp "$binary" "$root/actions-runner/$p"; done
    changes=(-c 'ENV AGENT_TOOLSDIRECTORY=/opt/hostedtoolcache' -c 'WORKDIR /actions-runner'
      -c 'ENTRYPOINT ["/entrypoint.sh"]'
      -c 'CMD ["./bin/Runner.Listener", "run", "--startuptype", "service"]')
    ;;
  custom)
    mkdir -p "$root/opt/custom-runner"
    cp "$binary" "$root/opt/custom-runner/start"
    changes=(-c 'WORKDIR /opt/custom-runner')
    ;;
  *) echo "unknown layout $layout (official, myoung34 or custom)" >&2; exit 1 ;;
esac
[ -n "$label" ] && changes+=(-c "LABEL $label")
# The runner's directories belong to the runner user (uid 1001), as in the real images (when
# this runs as root; otherwise they stay root's, which only matters to config.sh as `runner`).
if [ "$(id -u)" = 0 ]; then
  case "$layout" in
    official) chown -R 1001:1001 "$root/home/runner" ;;
    myoung34) chown -R 1001:1001 "$root/actions-runner" "$root/_work" "$root/opt/hostedtoolcache" ;;
  esac
fi
tar -C "$root" --numeric-owner -c . > "$root.tar"
docker import "${changes[@]}" "$root.tar" "$tag" > /dev/null
rm -f "$root.tar"

#!/usr/bin/env bash
# Install what slotgate needs on a Debian/Ubuntu host, idempotently:
#   tmux (holds every session), bubblewrap (sandboxes), cmake + pkg-config
#   (Pingora's build), nginx-light + wrk (the gateway benchmark's baseline),
#   ttyd (scripts/install-ttyd.sh: PATH, distribution package, or Debian
#   sid's build in a private prefix), and chromium for the browser tests.
# Rust (cargo) is expected from the machine image; Node.js comes from it too
# when present (Debian's nodejs is the fallback).
set -euo pipefail
log() { echo "install-deps: $*" >&2; }

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_cmd tmux || need+=(tmux)
have_cmd bwrap || need+=(bubblewrap)
have_cmd cmake || need+=(cmake)
have_cmd pkg-config || need+=(pkg-config)
have_cmd nginx || need+=(nginx-light)
have_cmd wrk || need+=(wrk)
have_cmd cc || need+=(build-essential)
# What the tests run besides the product: Node.js (the OpenID Provider,
# ecosystem.config.js files, a fixture app), python3 (a fixture app),
# kill (procps), prlimit (util-linux). SQLite is bundled into the binaries.
have_cmd node || need+=(nodejs)
have_cmd npm || need+=(npm)
have_cmd python3 || need+=(python3)
have_cmd kill || need+=(procps)
# prlimit (util-linux): the open-files test starts slotgate under a low limit.
have_cmd prlimit || need+=(util-linux)
# The portal's browser tests drive Debian's chromium (playwright-core, no
# browser download).
have_cmd chromium || need+=(chromium)
# A text font for it (chromium only recommends one; installs here skip
# recommends): the terminal's glyph metrics and the screenshots need it.
dpkg -s fonts-liberation >/dev/null 2>&1 || need+=(fonts-liberation)

if ((${#need[@]})); then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ttyd="$("$here/install-ttyd.sh")"
log "ttyd: $ttyd"

# Node packages the tests drive (a real OpenID Provider; playwright-core for
# the browser tests).
if command -v npm >/dev/null 2>&1; then
  for dir in tests/oidc tests/web; do
    if [[ -f "$here/../$dir/package-lock.json" && ! -d "$here/../$dir/node_modules" ]]; then
      log "npm ci in $dir"
      (cd "$here/../$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    fi
  done
else
  log "error: npm not found after installing it; the identity tests need Node.js"
  exit 1
fi

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
# pasta (Debian's passt): the user-space network stack of `egress` slots.
have_cmd pasta || need+=(passt)
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
# Debian's python3 in /usr/bin: slots see /usr, not a pyenv or a home's.
[[ -x /usr/bin/python3 ]] || need+=(python3)
# (`kill` is a shell builtin: ask for pgrep, which the tenant tests and
# slots' `ps` need too.)
have_cmd pgrep || need+=(procps)
# prlimit (util-linux): the open-files test starts slotgate under a low limit;
# setpriv (util-linux) runs the tenant tests' host-side checks as a slot's uid.
have_cmd prlimit || need+=(util-linux)
# The tenant-escape suite: curl inside slots, ip (iproute2) for the network
# namespace that stands in for the internet.
have_cmd curl || need+=(curl)
have_cmd ip || need+=(iproute2)
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

# pasta opens /dev/net/tun as the slot's user. udev makes it 0666 on a
# Debian host; a machine without udev (a container, some CI images) leaves
# the kernel's 0600, and every `egress` slot would fail to start.
if [[ ! -e /dev/net/tun && $(id -u) == 0 ]]; then
  log "creating /dev/net/tun (no udev here)"
  mkdir -p /dev/net && mknod -m 0666 /dev/net/tun c 10 200
fi
if [[ -c /dev/net/tun && $(stat -c %a /dev/net/tun) != 666 ]]; then
  if [[ $(id -u) == 0 ]]; then
    log "making /dev/net/tun usable by slot users (0666, as udev does)"
    chmod 0666 /dev/net/tun
  else
    log "warning: /dev/net/tun is not 0666; egress slots need it (run as root once)"
  fi
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

#!/usr/bin/env bash
# Make a working ttyd available and print its path on stdout.
#
# Order of preference (brief: "prefer a ttyd already on PATH or a
# distribution package"):
#   1. $SLOTGATE_TTYD if set and executable
#   2. `ttyd` on PATH (run with --version to prove it works)
#   3. the distribution's package (apt-get install ttyd) where one exists
#   4. Debian sid's ttyd 1.7.7 unpacked into a private prefix, started through
#      the prefix's own loader by a small wrapper script.
# Idempotent: a second run finds what the first installed and does nothing.
set -euo pipefail

PREFIX="${SLOTGATE_TTYD_PREFIX:-/opt/slotgate/ttyd}"
WRAPPER="$PREFIX/bin/ttyd"
log() { echo "install-ttyd: $*" >&2; }

works() { "$1" --version >/dev/null 2>&1; }

if [[ -n "${SLOTGATE_TTYD:-}" ]] && works "$SLOTGATE_TTYD"; then
  echo "$SLOTGATE_TTYD"; exit 0
fi
if command -v ttyd >/dev/null 2>&1 && works "$(command -v ttyd)"; then
  command -v ttyd; exit 0
fi
if [[ -x "$WRAPPER" ]] && works "$WRAPPER"; then
  echo "$WRAPPER"; exit 0
fi

if command -v apt-cache >/dev/null 2>&1 && apt-cache policy ttyd 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  log "installing the distribution's ttyd package"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q ttyd >&2
  command -v ttyd; exit 0
fi

log "no ttyd package for this distribution; unpacking Debian sid's ttyd into $PREFIX"
arch="$(dpkg --print-architecture)"
multiarch="$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/etc/apt/preferences.d" "$work/var/lib/apt/lists/partial" \
  "$work/var/cache/apt/archives/partial" "$work/var/lib/dpkg" "$work/debs"
touch "$work/var/lib/dpkg/status"
cat >"$work/etc/apt/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
SRC
aptopts=(
  -o "Dir::Etc::SourceList=$work/etc/apt/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::Etc::Preferences=/dev/null"
  -o "Dir::Etc::PreferencesParts=$work/etc/apt/preferences.d"
  -o "Dir::State=$work/var/lib/apt"
  -o "Dir::State::status=$work/var/lib/dpkg/status"
  -o "Dir::Cache=$work/var/cache/apt"
  -o "APT::Architecture=$arch"
  -o "APT::Architectures=$arch"
)
apt-get "${aptopts[@]}" -q update >&2
pkgs=(ttyd libc6 libcap2 libgcc-s1 libjson-c5 libssl3t64 libuv1t64
      libwebsockets-evlib-uv libwebsockets19t64 libzstd1 zlib1g)
(cd "$work/debs" && apt-get "${aptopts[@]}" -q download "${pkgs[@]}" >&2)
mkdir -p "$PREFIX.new"
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$PREFIX.new"; done
rm -rf "$PREFIX"; mv "$PREFIX.new" "$PREFIX"

libdir="$PREFIX/usr/lib/$multiarch"
loader="$(ls "$libdir"/ld-linux*.so.* | head -n1)"
# libwebsockets loads its event-loop plugin from a fixed system path.
plugin_src="$(ls "$libdir"/libwebsockets-evlib_uv.so* | head -n1)"
plugin_dst="/usr/lib/$multiarch/libwebsockets-evlib_uv.so"
if [[ ! -e "$plugin_dst" ]]; then
  cp "$plugin_src" "$plugin_dst"
fi
mkdir -p "$PREFIX/bin"
cat >"$WRAPPER" <<WRAP
#!/bin/sh
exec "$loader" --library-path "$libdir" "$PREFIX/usr/bin/ttyd" "\$@"
WRAP
chmod 755 "$WRAPPER"
works "$WRAPPER" || { log "unpacked ttyd does not run: $("$WRAPPER" --version 2>&1 | head -n3)"; exit 1; }
log "ttyd ready: $("$WRAPPER" --version 2>&1)"
echo "$WRAPPER"

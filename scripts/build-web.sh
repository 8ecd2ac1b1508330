#!/usr/bin/env bash
# Build the web portal (web/) into web/dist, which slotgate serves.
#   - needs Node.js >= 18.18 and npm (scripts/install-deps.sh installs them);
#   - runs `npm ci` only when web/node_modules is missing or older than
#     web/package-lock.json (the lock file is committed: same packages on
#     every machine, nothing fetched at run time, no CDN);
#   - then `npm run build` (type check + Vite production build), unless
#     web/dist is newer than every source file (`--force` builds anyway).
# Exit status: 0 built (or already current), 1 failed (the reason on stderr).
set -euo pipefail
log() { echo "build-web: $*" >&2; }
web="$(cd "$(dirname "${BASH_SOURCE[0]}")/../web" && pwd)"

if ! command -v node >/dev/null 2>&1; then
  log "error: node not found; install Node.js >= 18.18 (scripts/install-deps.sh does)"
  exit 1
fi
if ! command -v npm >/dev/null 2>&1; then
  log "error: npm not found; install npm (scripts/install-deps.sh does)"
  exit 1
fi
node_version="$(node -p 'process.versions.node')"
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>18||(a===18&&b>=18)?0:1)'; then
  log "error: Node.js $node_version is too old; the portal's build needs >= 18.18"
  exit 1
fi

cd "$web"
stamp=node_modules/.package-lock.json
if [[ ! -f "$stamp" || package-lock.json -nt "$stamp" ]]; then
  log "npm ci (node $node_version)"
  npm ci --no-audit --no-fund --loglevel=error >&2
else
  log "node_modules is current; skipping npm ci"
fi
force=0
[[ "${1:-}" == "--force" ]] && force=1
if ((!force)) && [[ -f dist/index.html ]] &&
  [[ -z "$(find src public index.html package.json package-lock.json vite.config.ts tsconfig.json \
    -newer dist/index.html -print -quit)" ]]; then
  log "web/dist is current; nothing to build (--force to rebuild)"
  exit 0
fi
log "npm run build"
npm run build --silent >&2
if [[ ! -f dist/index.html ]]; then
  log "error: the build finished without web/dist/index.html"
  exit 1
fi
log "built $(find dist -type f | wc -l) files into $web/dist"

#!/usr/bin/env bash
# User-space instructions slotgate executes per proxied request, counted
# exactly by callgrind (valgrind). Not a timing: the count does not depend
# on the machine's load, so it shows what a code change costs or saves on
# the request path to within ~0.1 %, where req/s and CPU time move by ±5 %
# between runs. Prints a table.
#
#   cargo build --release -p proxy
#   bench/instructions.sh [BINARY ...]     # default: target/release/slotgate
#
# For each binary: one ttyd (plain bash) on a unix socket, slotgate in front
# of it under callgrind (plain HTTP on loopback, default settings), then
# GET /slot/bench/token over 4 keep-alive connections, N1 requests in one
# run and N2 in another; instructions per request = (Ir(N2) - Ir(N1)) /
# (N2 - N1), which cancels start-up and shutdown. Each binary is measured
# twice (rounds alternate) so the table shows the count is repeatable.
# Environment: BENCH_N1 (default 2000), BENCH_N2 (default 12000),
# SLOTGATE_TTYD (ttyd binary).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v valgrind >/dev/null || {
    echo "error: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
}
command -v python3 >/dev/null || {
    echo "error: python3 is not installed (apt-get install python3)" >&2
    exit 1
}
ttyd=${SLOTGATE_TTYD:-}
for c in /opt/slotgate/ttyd/bin/ttyd "$(command -v ttyd || true)"; do
    [[ -z "$ttyd" && -n "$c" && -x "$c" ]] && ttyd=$c
done
[[ -n "$ttyd" ]] || {
    echo "error: no ttyd (scripts/install-deps.sh installs one)" >&2
    exit 1
}
bins=("$@")
[[ ${#bins[@]} -gt 0 ]] || bins=(target/release/slotgate)
for b in "${bins[@]}"; do
    [[ -x "$b" ]] || {
        echo "error: $b is not an executable (cargo build --release -p proxy)" >&2
        exit 1
    }
done
n1=${BENCH_N1:-2000}
n2=${BENCH_N2:-12000}

dir=$(mktemp -d /tmp/sginstr.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p "$dir/run/slots" "$dir/data"
PS1='$ ' "$ttyd" -i "$dir/run/slots/bench.sock" -b /slot/bench -H X-Slotgate-Auth -W \
    bash --norc --noprofile -i >/dev/null 2>"$dir/ttyd.log" &
pids+=($!)

# Free loopback port.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/slotgate.toml" <<EOF
[paths]
data_dir = "$dir/data"
run_dir = "$dir/run"
[slotgate]
listen = ["127.0.0.1:$port"]
tls = false
shutdown_grace = "0s"
auth = "none"
EOF

# Send `n` requests over 4 keep-alive connections; print how many got 200.
client() {
    python3 - "$port" "$1" <<'PY'
import socket, sys
port, n, conns = int(sys.argv[1]), int(sys.argv[2]), 4
ss = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
req = b"GET /slot/bench/token HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
ok = 0
for _ in range(n // conns):
    for s in ss:
        s.sendall(req)
    for s in ss:
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("connection closed by slotgate")
            buf += chunk
            head, sep, body = buf.partition(b"\r\n\r\n")
            if not sep:
                continue
            lengths = [int(l.split(b":")[1]) for l in head.split(b"\r\n")
                       if l.lower().startswith(b"content-length:")]
            if lengths and len(body) >= lengths[0]:
                break
        ok += head.startswith(b"HTTP/1.1 200")
print(ok)
PY
}

# Ir of one slotgate run serving `n` requests; the 200 count goes to $dir/ok.
run() {
    local bin=$1 n=$2 out="$dir/callgrind.out"
    rm -f "$out"
    SLOTGATE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$bin" --config "$dir/slotgate.toml" >/dev/null 2>"$dir/valgrind.log" &
    local p=$!
    local i
    for i in $(seq 1 300); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" \
            2>/dev/null && break
        sleep 0.1
    done
    # One request until the slot answers (its socket may still be binding).
    for i in $(seq 1 100); do
        [[ $(client 4) == 4 ]] && break
        sleep 0.1
    done
    client "$n" >"$dir/ok"
    kill -INT "$p"
    wait "$p" || true
    grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}'
}

for i in $(seq 1 100); do
    [[ -S "$dir/run/slots/bench.sock" ]] && break
    sleep 0.1
done

echo "slotgate user-space instructions per proxied request (callgrind Ir; $n1 and $n2 requests, 4 connections)"
echo
echo "| binary | round | instructions / request | 200s |"
echo "|---|---|---|---|"
for round in 1 2; do
    for b in "${bins[@]}"; do
        ir1=$(run "$b" "$n1")
        ok1=$(cat "$dir/ok")
        ir2=$(run "$b" "$n2")
        ok2=$(cat "$dir/ok")
        per=$(python3 -c "print(f'{($ir2 - $ir1) / ($n2 - $n1):,.0f}')")
        echo "| $b | $round | $per | $((ok1 + ok2)) / $((n1 + n2)) |"
    done
done

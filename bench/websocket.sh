#!/usr/bin/env bash
# WebSocket echo benchmark on loopback: weir and nginx each proxying to the
# same Python `websockets` echo backend (127.0.0.1:18281). One client keeps
# one socket open and sends N small messages one after another, each waiting
# for its echo: round-trip latency (median, p99, microseconds) and CPU us
# per message of the proxy process (user+sys from /proc/PID/stat, all its
# threads, before and after), a few rounds.
# Usage: bench/websocket.sh [-n MESSAGES] [-r ROUNDS] [-s SIZE]
#   (default 20000 messages of 64 bytes, 3 rounds; medians of the rounds)
# Pinning: the proxies on CPU 1, client and backend on CPU 0.
# Needs: nginx (nginx-light), taskset, ss, bc, and the test virtualenv's
# python with websockets (.ci/toolchains; WEIR_PYTHON overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
N=20000; ROUNDS=3; SIZE=64
while getopts n:r:s: o; do case $o in n) N=$OPTARG;; r) ROUNDS=$OPTARG;; s) SIZE=$OPTARG;; *) exit 2;; esac; done
for t in nginx taskset ss bc; do command -v $t >/dev/null || { echo "missing: $t" >&2; exit 2; }; done
PY=${WEIR_PYTHON:-${WEIR_TOOLS:-$HOME/.cache/weir-tools}/py/bin/python3}
"$PY" -c 'import websockets' || { echo "no websockets in $PY: run .ci/toolchains" >&2; exit 2; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -p weir --bin weir
WEIR=$CARGO_TARGET_DIR/release/weir

. bench/lib.sh
bench_workdir ws-bench

cat > "$W/echo.py" <<'PY'
import asyncio
from websockets.asyncio.server import serve
async def echo(ws):
    async for msg in ws:
        await ws.send(msg)
async def main():
    async with serve(echo, "127.0.0.1", 18281, max_size=None, ping_interval=None, compression=None):
        await asyncio.Future()
asyncio.run(main())
PY
cat > "$W/client.py" <<'PY'
import asyncio, os, sys, time
from websockets.asyncio.client import connect
url, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def main():
    async with connect(url, max_size=None, ping_interval=None, compression=None) as ws:
        msg = os.urandom(size)
        for _ in range(200):
            await ws.send(msg); await ws.recv()
        print("ready", flush=True)
        sys.stdin.readline()
        times = []
        for _ in range(n):
            t = time.perf_counter_ns()
            await ws.send(msg)
            assert await ws.recv() == msg
            times.append(time.perf_counter_ns() - t)
        times.sort()
        print(times[len(times) // 2] / 1000, times[int(len(times) * 0.99)] / 1000, flush=True)
asyncio.run(main())
PY
cat > "$W/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $W/n.pid; error_log $W/n.err;
events { worker_connections 4096; }
http { access_log off;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  server { listen 127.0.0.1:18290;
    location / { proxy_pass http://127.0.0.1:18281; proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection "upgrade";
      proxy_read_timeout 300s; } } }
CONF
cat > "$W/weir.toml" <<CONF
[[listeners]]
address = "127.0.0.1:18292"

[access_log]
enabled = false

[[routes]]
upstream = "web"

[upstreams.web]
[[upstreams.web.backends]]
address = "127.0.0.1:18281"
CONF

taskset -c 0 "$PY" "$W/echo.py" & PIDS+=($!)
taskset -c 1 nginx -c "$W/nginx.conf" -p "$W" 2>"$W/nginx.log" & PIDS+=($!)
WEIR_LOG=warn taskset -c 1 "$WEIR" run --config "$W/weir.toml" 2>"$W/weir.log" & PIDS+=($!)
TARGETS=("nginx=18290" "weir=18292")
for port in 18281 18290 18292; do
  for _ in $(seq 100); do ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.1; done
done

declare -A P50 P99 CPU
for ((i = 1; i <= ROUNDS; i++)); do
  for t in "${TARGETS[@]}"; do n=${t%%=*}; port=${t#*=}; pid=$(pid_of "$port")
    coproc C { taskset -c 0 "$PY" "$W/client.py" "ws://127.0.0.1:$port/echo" "$N" "$SIZE"; }
    read -r ready <&"${C[0]}"; [ "$ready" = ready ] || { echo "$n: no tunnel" >&2; cat "$W"/*.log >&2; exit 1; }
    t0=$(ticks "$pid"); echo go >&"${C[1]}"; read -r p50 p99 <&"${C[0]}"; t1=$(ticks "$pid")
    wait "$C_PID" 2>/dev/null || true
    P50[$n]+="$p50 "; P99[$n]+="$p99 "
    CPU[$n]+="$(echo "($t1 - $t0) * 1000000 / $HZ / $N" | bc -l) "
  done
done
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); weir $(git describe --always --dirty 2>/dev/null || echo "(no git)"); $N messages of $SIZE bytes x $ROUNDS rounds, medians"
printf "%-8s %14s %14s %16s\n" target "rtt p50 us" "rtt p99 us" "cpu us/message"
for t in "${TARGETS[@]}"; do n=${t%%=*}
  printf "%-8s %14.1f %14.1f %16.2f\n" "$n" "$(echo "${P50[$n]}" | med)" "$(echo "${P99[$n]}" | med)" "$(echo "${CPU[$n]}" | med)"
done
if [ -s "$W/weir.log" ]; then echo "--- weir log (WEIR_LOG=warn):"; head -20 "$W/weir.log"; fi

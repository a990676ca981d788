#!/usr/bin/env bash
# Heap allocations per proxied request, counted by valgrind's DHAT in the
# real weir binary (native round robin, HTTP/1.1 keep-alive, one nginx
# backend): weir serves N1 and then N2 requests in two runs, and the
# difference in blocks (and bytes) allocated, divided by N2 - N1, is what
# one request costs, start-up and shutdown cancelled out.
#
# Usage: bench/allocs.sh [WEIR_BINARY]
#   default: this tree built without mimalloc (`--no-default-features`;
#   the next ordinary build puts mimalloc back): DHAT replaces malloc, so it
#   sees nothing a custom global allocator hands out; the count is the same
#   either way.
#   env N1, N2 (default 2000, 6000) requests; C (default 4) connections.
# Needs: valgrind, nginx-light, h2load (nghttp2-client), ss.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
for t in valgrind nginx h2load ss; do command -v $t >/dev/null || { echo "missing: $t" >&2; exit 2; }; done
bench_workdir allocs
if [ -n "${1:-}" ]; then WEIR=$1; else
  cargo build --release -p weir --bin weir --no-default-features >&2
  cp "${CARGO_TARGET_DIR:-target}/release/weir" "$W/weir-system-allocator"
  WEIR=$W/weir-system-allocator
fi
N1=${N1:-2000}; N2=${N2:-6000}; C=${C:-4}
cat > "$W/backend.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $W/b.pid; error_log $W/b.err;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:18181; keepalive_requests 1000000;
  location / { return 200 "hello from the backend\n"; } } }
CONF
cat > "$W/weir.toml" <<CONF
[[listeners]]
address = "127.0.0.1:18182"
[plugins]
# Small, so the pooling allocator's reservation fits under valgrind.
max_instances = 4
memory_mib = 16
[access_log]
enabled = false
[[routes]]
upstream = "web"
[upstreams.web]
[[upstreams.web.backends]]
address = "127.0.0.1:18181"
CONF
nginx -c "$W/backend.conf" -p "$W" & PIDS+=($!)
run() { # requests -> "blocks bytes" allocated over the whole run
  WEIR_LOG=warn valgrind --tool=dhat --dhat-out-file="$W/dhat.$1" "$WEIR" run --config "$W/weir.toml" 2>"$W/valgrind.$1" &
  local pid=$!
  for _ in $(seq 600); do ss -Hltn "sport = :18182" | grep -q . && break; sleep 0.1; done
  local out; out=$(h2load --h1 -n "$1" -c "$C" http://127.0.0.1:18182/ 2>&1)
  local ok; ok=$(echo "$out" | awk '/^status codes:/ {print $3}')
  [ "$ok" = "$1" ] || { echo "only ${ok:-0} of $1 requests got 2xx:" >&2; echo "$out" >&2; kill $pid; exit 1; }
  kill -TERM $pid; wait $pid || true
  [ -n "${KEEP:-}" ] && cp "$W/dhat.$1" "$KEEP.$1"
  awk '/Total:/ {gsub(",", ""); print $(NF-1), $3}' "$W/valgrind.$1" | tail -1 | awk '{print $1, $2}'
}
read -r b1 y1 < <(run "$N1")
read -r b2 y2 < <(run "$N2")
echo "# $(date -u +%FT%TZ) $WEIR, $C connections, $N1 and $N2 requests"
echo "blocks: $b1 -> $b2; bytes: $y1 -> $y2"
awk -v b1="$b1" -v b2="$b2" -v y1="$y1" -v y2="$y2" -v n1="$N1" -v n2="$N2" \
  'BEGIN { printf "allocations per request: %.1f, bytes per request: %.0f\n", (b2-b1)/(n2-n1), (y2-y1)/(n2-n1) }'

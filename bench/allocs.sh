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
N1=${N1:-2000}; N2=${N2:-6000}; export C=${C:-4}
bench_backend 18181
# Small, so the pooling allocator's reservation fits under valgrind.
WEIR_EXTRA="[plugins]
max_instances = 4
memory_mib = 16" weir_config 18182 18181 > "$W/weir.toml"
run() { # requests -> "blocks bytes" allocated over the whole run
  WEIR_LOG=warn valgrind --tool=dhat --dhat-out-file="$W/dhat.$1" "$WEIR" run --config "$W/weir.toml" 2>"$W/valgrind.$1" &
  local pid=$!
  wait_listen 18182
  h2load_exactly "$1" http://127.0.0.1:18182/ || { kill $pid; exit 1; }
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

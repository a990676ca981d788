#!/usr/bin/env bash
# How soon a dropped plugin serves traffic: the real weir binary balances two
# backends with choose-first (every request to backend-1); the script copies
# round-robin.wasm over it (`cp`, as an operator drops a file) and polls the
# listener with curl until an answer comes from backend-2, which only the
# new plugin sends there. Between drops choose-first is copied back and
# confirmed (ten answers in a row from backend-1). Each mode runs DROPS
# times: filesystem events, then polling (WEIR_WATCH_MODE=poll) at the
# default watch_interval_ms = 500. Prints each drop and the median and max
# in milliseconds. The compiled-code cache is on (the default), so after the
# first drop the time is the watcher's plus the snapshot build, not a compile.
#
# Usage: bench/reload.sh [DROPS]   (default 20; after `cargo xtask plugins`
# and `cargo build --release -p weir --bin weir`)
# Needs: curl, python3 (the two backends).
set -euo pipefail
cd "$(dirname "$0")/.."
DROPS=${1:-20}
TARGET=${CARGO_TARGET_DIR:-target}
WEIR=$TARGET/release/weir
PLUGINS=$(cd "${WEIR_PLUGIN_DIR:-$TARGET/plugins}" && pwd)
W=$(mktemp -d /tmp/weir-reload.XXXX); PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT INT TERM

for i in 1 2; do
  mkdir -p "$W/b$i"; echo "backend-$i" > "$W/b$i/index.html"
  python3 -m http.server --bind 127.0.0.1 --directory "$W/b$i" $((18200 + i)) >/dev/null 2>&1 &
  PIDS+=($!)
done
mkdir -p "$W/plugins"
cp "$PLUGINS/choose-first.wasm" "$W/plugins/policy.wasm"
cat > "$W/weir.toml" <<CONF
[[listeners]]
address = "127.0.0.1:18210"
[access_log]
enabled = false
[plugins]
dir = "$W/plugins"
cache_dir = "$W/cache"
[[routes]]
upstream = "web"
[upstreams.web.balancer]
plugin = "policy"
[[upstreams.web.backends]]
name = "backend-1"
address = "127.0.0.1:18201"
[[upstreams.web.backends]]
name = "backend-2"
address = "127.0.0.1:18202"
CONF
answer() { curl -s --max-time 2 http://127.0.0.1:18210/ || true; }
now_us() { echo $(( $(date +%s%N) / 1000 )); }

run_mode() { # mode
  WEIR_WATCH_MODE=$1 WEIR_LOG=warn,weir::reload=info NO_COLOR=1 "$WEIR" run --config "$W/weir.toml" 2>"$W/weir-$1.log" &
  local weir=$!; PIDS+=($weir)
  for _ in $(seq 200); do [ "$(answer)" = backend-1 ] && break; sleep 0.05; done
  local times=()
  for ((d = 1; d <= DROPS; d++)); do
    # Back to choose-first, confirmed, and quiet.
    cp "$PLUGINS/choose-first.wasm" "$W/plugins/policy.wasm"
    local ok=0
    for _ in $(seq 1000); do
      if [ "$(answer)" = backend-1 ]; then ok=$((ok + 1)); else ok=0; fi
      [ $ok -ge 10 ] && break
    done
    sleep 0.3
    local start; start=$(now_us)
    cp "$PLUGINS/round-robin.wasm" "$W/plugins/policy.wasm"
    local seen=""
    for _ in $(seq 5000); do
      [ "$(answer)" = backend-2 ] && { seen=1; break; }
    done
    [ -n "$seen" ] || { echo "$1: drop $d never served" >&2; exit 1; }
    local ms; ms=$(( ($(now_us) - start) / 1000 ))
    times+=("$ms")
    echo "$1 drop $d: $ms ms"
  done
  kill "$weir"; wait "$weir" 2>/dev/null || true
  printf '%s\n' "${times[@]}" | sort -n | awk -v mode="$1" '
    { v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
      printf "%-6s drops %d  median %d ms  max %d ms  min %d ms\n", mode, NR, m, v[NR], v[1] }' >> "$W/summary"
}

run_mode events
run_mode poll
grep -h "watching files" "$W"/weir-*.log || true
cat "$W/summary"

#!/usr/bin/env bash
# Context switches of weir's epoch ticker and of the whole process, idle and
# under load, for one or more weir binaries (paired: each binary in turn,
# ROUNDS times).
#
# Usage: bench/ticker.sh [-r ROUNDS] [-d SECONDS] WEIR_BINARY...
#   Each binary serves 127.0.0.1:18190 with the round-robin plugin over one
#   nginx backend (127.0.0.1:18191, CPU 0); weir runs on CPU 1, wrk (-t1 -c16)
#   on CPU 0. Per binary and round it prints, per second: the `weir-epoch`
#   thread's context switches (voluntary + involuntary, from
#   /proc/PID/task/*/status) and the whole process's, idle (after 3 s without
#   a request) and under load, and the load's requests per second.
#   It fails unless every loaded request was chosen by the plugin
#   (weir_plugin_failures_total stays 0, no non-2xx answers).
#   env WEIR_PLUGIN_DIR (default $CARGO_TARGET_DIR/plugins or target/plugins)
# Needs: nginx-light, wrk, curl, taskset, ss.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=3; DUR=5
while getopts r:d: o; do case $o in r) ROUNDS=$OPTARG;; d) DUR=$OPTARG;; *) exit 2;; esac; done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: $0 [-r ROUNDS] [-d SECONDS] WEIR_BINARY..." >&2; exit 2; }
PLUGIN_DIR=$(realpath "${WEIR_PLUGIN_DIR:-${CARGO_TARGET_DIR:-target}/plugins}")
[ -f "$PLUGIN_DIR/round-robin.wasm" ] || { echo "no round-robin.wasm in $PLUGIN_DIR" >&2; exit 2; }
bench_workdir ticker

cat > "$W/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $W/nginx.pid; error_log $W/nginx.err;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:18191; location / { return 200 "ok\n"; } } }
NGX
taskset -c 0 nginx -c "$W/nginx.conf" -p "$W" & PIDS+=($!)
cat > "$W/weir.toml" <<TOML
[[listeners]]
address = "127.0.0.1:18190"

[admin]
address = "127.0.0.1:18192"

[plugins]
dir = "$PLUGIN_DIR"
watch = false

[[routes]]
upstream = "web"

[upstreams.web]
[upstreams.web.balancer]
plugin = "round-robin"
[[upstreams.web.backends]]
address = "127.0.0.1:18191"
TOML

# Context switches so far of the thread named $2 of $1 (all threads if "").
switches() {
  local total=0 t
  for t in /proc/$1/task/*; do
    if [ -z "$2" ] || [ "$(cat "$t/comm")" = "$2" ]; then
      total=$((total + $(awk '/ctxt_switches/ {s += $2} END {print s}' "$t/status")))
    fi
  done
  echo $total
}
failures() { curl -s 127.0.0.1:18192/metrics | awk '/^weir_plugin_failures_total/ {s += $2} END {print s + 0}'; }

printf '%-28s %5s %12s %12s %12s %12s %10s\n' binary round idle-epoch/s idle-all/s load-epoch/s load-all/s req/s
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    WEIR_LOG=warn taskset -c 1 "$bin" run --config "$W/weir.toml" >"$W/weir.log" 2>&1 & pid=$!
    for _ in $(seq 100); do curl -sf -o /dev/null 127.0.0.1:18190/ && break; sleep 0.1; done
    curl -sf -o /dev/null 127.0.0.1:18190/ || { cat "$W/weir.log"; exit 1; }
    sleep 3
    e0=$(switches $pid weir-epoch); a0=$(switches $pid ""); sleep "$DUR"
    e1=$(switches $pid weir-epoch); a1=$(switches $pid "")
    out=$(taskset -c 0 wrk -t1 -c16 -d"${DUR}s" http://127.0.0.1:18190/ &
          wpid=$!; sleep 1; switches $pid weir-epoch > "$W/e2"; switches $pid "" > "$W/a2"
          sleep $((DUR - 2)); switches $pid weir-epoch > "$W/e3"; switches $pid "" > "$W/a3"; wait $wpid)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    if echo "$out" | grep -q "Non-2xx"; then echo "$bin: non-2xx answers" >&2; echo "$out" >&2; exit 1; fi
    f=$(failures); [ "$f" = 0 ] || { echo "$bin: $f plugin failures" >&2; exit 1; }
    span=$((DUR - 2))
    printf '%-28s %5s %12s %12s %12s %12s %10s\n' "$(basename "$bin")" "$round" \
      $(( (e1 - e0) / DUR )) $(( (a1 - a0) / DUR )) \
      $(( ($(cat "$W/e3") - $(cat "$W/e2")) / span )) $(( ($(cat "$W/a3") - $(cat "$W/a2")) / span )) "$rps"
    kill $pid; wait $pid 2>/dev/null || true
  done
done

#!/usr/bin/env bash
# System calls, context switches and the wake-ups each proxy causes per
# request, and CPU per request (user and system apart), for
# nginx, HAProxy and weir (native round robin) proxying plain HTTP/1.1
# keep-alive to the same three nginx backends (the shared harness's, on
# CPU 0; each proxy on CPU 1; wrk -c32 on CPU 0). perf counts each proxy's
# system calls and context switches over a window in the middle of its
# wrk run (all threads: weir's workers, its epoch ticker, its log thread).
#
# Usage: bench/syscalls.sh [-d SECONDS] [WEIR_BINARY]
#   default binary $CARGO_TARGET_DIR/release/weir (built by this script).
#   env WEIR_TOML_EXTRA: lines appended to weir's config (e.g. a [runtime] table).
# Needs: perf (linux-perf), nginx-light, haproxy, wrk, ss, bc, and
# ../shared/bench/proxy-bench.sh (or env SHARED).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DUR=5
if [ "${1:-}" = -d ]; then DUR=$2; shift 2; fi
for t in perf nginx haproxy wrk ss bc; do command -v $t >/dev/null || { echo "missing: $t" >&2; exit 2; }; done
SHARED=${SHARED:-../shared}
if [ -n "${1:-}" ]; then WEIR=$1; else
  cargo build --release -p weir --bin weir >&2; WEIR=${CARGO_TARGET_DIR:-target}/release/weir; fi
bench_workdir syscalls
BENCH_BACKENDS_ONLY=1 bash "$SHARED/bench/proxy-bench.sh" >/dev/null 2>&1 & PIDS+=($!)
# The proxies, configured as the shared harness configures them.
sed -n '/^cat > "\$W\/nginx.conf" <<CONF$/,/^CONF$/p' "$SHARED/bench/proxy-bench.sh" | sed '1d;$d' | sed "s#\$W#$W#g" > "$W/nginx.conf"
sed -n '/^cat > "\$W\/haproxy.cfg" <<CONF$/,/^CONF$/p' "$SHARED/bench/proxy-bench.sh" | sed '1d;$d' > "$W/haproxy.cfg"
cat > "$W/weir.toml" <<CONF
[[listeners]]
address = "127.0.0.1:18093"
[access_log]
enabled = false
[[routes]]
upstream = "web"
[upstreams.web]
[[upstreams.web.backends]]
address = "127.0.0.1:18081"
[[upstreams.web.backends]]
address = "127.0.0.1:18082"
[[upstreams.web.backends]]
address = "127.0.0.1:18083"
${WEIR_TOML_EXTRA:-}
CONF
taskset -c 1 nginx -c "$W/nginx.conf" -p "$W" & PIDS+=($!)
taskset -c 1 haproxy -f "$W/haproxy.cfg" -db >/dev/null 2>&1 & PIDS+=($!)
WEIR_LOG=warn taskset -c 1 "$WEIR" run --config "$W/weir.toml" 2>"$W/weir.log" & PIDS+=($!)
TARGETS=("nginx=18090" "haproxy=18091" "weir=18093")
for _ in $(seq 100); do ok=1
  for t in "${TARGETS[@]}" "backend=18081"; do curl -fsS -o /dev/null "http://127.0.0.1:${t#*=}/" 2>/dev/null || ok=0; done
  [ $ok = 1 ] && break; sleep 0.1; done
[ $ok = 1 ] || { echo "a target does not answer" >&2; cat "$W/weir.log" >&2; exit 1; }
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); $WEIR; ${DUR}s windows"
# Wake-ups the proxy causes (sched_waking: a thread made runnable, mostly
# wrk or a backend on CPU 0 waiting for its data) and the IPIs they take.
printf "%-8s %9s %12s %9s %9s %13s %13s %11s %9s\n" target "req/s" "cpu us/req" "user" "sys" "syscalls/req" "ctx-sw/req" "wakes/req" "IPIs/req"
for t in "${TARGETS[@]}"; do n=${t%%=*}; port=${t#*=}; pid=$(pid_of "$port")
  taskset -c 0 wrk -t1 -c32 -d"$((DUR + 2))s" "http://127.0.0.1:$port/" > "$W/wrk.$n" 2>&1 &
  sleep 1; t0=$(ticks "$pid"); u0=$(utick "$pid")
  perf stat -x, -e raw_syscalls:sys_enter,context-switches,sched:sched_waking,ipi:ipi_send_cpu -p "$pid" -- sleep "$DUR" 2> "$W/perf.$n"
  t1=$(ticks "$pid"); u1=$(utick "$pid"); wait %?wrk 2>/dev/null || wait
  rps=$(awk '/Requests\/sec/ {print $2}' "$W/wrk.$n")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$W/wrk.$n"); [ -z "$non2xx" ] || { echo "$n: $non2xx non-2xx answers" >&2; exit 1; }
  sys=$(awk -F, '/sys_enter/ {print $1}' "$W/perf.$n"); cs=$(awk -F, '/context-switches/ {print $1}' "$W/perf.$n")
  wakes=$(awk -F, '/sched_waking/ {print $1}' "$W/perf.$n"); ipis=$(awk -F, '/ipi_send_cpu/ {print $1}' "$W/perf.$n")
  req=$(echo "$rps * $DUR" | bc -l)
  printf "%-8s %9.0f %12.2f %9.2f %9.2f %13.2f %13.4f %11.3f %9.3f\n" "$n" "$rps" \
    "$(echo "($t1 - $t0) * 1000000 / $HZ / $req" | bc -l)" "$(echo "($u1 - $u0) * 1000000 / $HZ / $req" | bc -l)" \
    "$(echo "($t1 - $t0 - $u1 + $u0) * 1000000 / $HZ / $req" | bc -l)" "$(echo "$sys / $req" | bc -l)" "$(echo "$cs / $req" | bc -l)" \
    "$(echo "$wakes / $req" | bc -l)" "$(echo "$ipis / $req" | bc -l)"
done

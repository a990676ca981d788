#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's
# callgrind (every thread, kernel not included), for each weir binary given
# and for nginx as a proxy: plain HTTP/1.1 keep-alive to one nginx backend
# (run natively). Each target serves N1 and then N2 requests in two runs;
# the difference in instructions, divided by N2 - N1, is one request's,
# start-up and shutdown cancelled out.
#
# An instruction count does not depend on what else the machine runs, so
# it compares builds where CPU time on a busy 2-core machine cannot; it is
# not a time (cache misses, system calls and wake-ups are not in it), so
# the CPU tables of bench/e2e.sh stay the measure of record.
#
# Usage: bench/instructions.sh [WEIR_BINARY...]
#   default: this tree's release build ($CARGO_TARGET_DIR/release/weir).
#   env N1, N2 (default 1000, 4000) requests; C (default 4) connections;
#   WITH_NGINX=false leaves nginx out (nginx itself reads $NGINX); WEIR_EXTRA: lines added to weir's config.
# Needs: valgrind, nginx-light, h2load (nghttp2-client), ss.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
for t in valgrind nginx h2load ss; do command -v $t >/dev/null || { echo "missing: $t" >&2; exit 2; }; done
bench_workdir instructions
if [ $# = 0 ]; then
  cargo build --release -p weir --bin weir >&2
  set -- "${CARGO_TARGET_DIR:-target}/release/weir"
fi
export WEIR_LOG=warn
N1=${N1:-1000}; N2=${N2:-4000}; export C=${C:-4}
bench_backend 18181
# Small, so the pooling allocator's reservation fits under valgrind.
WEIR_EXTRA="[plugins]
max_instances = 4
memory_mib = 16
${WEIR_EXTRA:-}" weir_config 18182 18181 > "$W/weir.toml"
cat > "$W/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $W/proxy.pid; error_log $W/proxy.err;
events { worker_connections 1024; }
http { access_log off;
  upstream web { server 127.0.0.1:18181; keepalive 64; }
  server { listen 127.0.0.1:18182; keepalive_requests 1000000;
    location / { proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
run() { # requests command... -> instructions over the whole run
  local n=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" "$@" 2>"$W/valgrind.log" &
  local pid=$!
  wait_listen 18182
  h2load_exactly "$n" http://127.0.0.1:18182/ || { kill $pid; exit 1; }
  kill -TERM $pid; wait $pid || true
  for _ in $(seq 100); do ss -Hltn "sport = :18182" | grep -q . || break; sleep 0.1; done
  awk '/Collected :/ {print $NF}' "$W/valgrind.log" | tail -1
}
per_request() { # label command...
  local label=$1; shift
  local i1 i2; i1=$(run "$N1" "$@"); i2=$(run "$N2" "$@")
  [ -n "$i1" ] && [ -n "$i2" ] || { echo "$label: no count from callgrind" >&2; exit 1; }
  awk -v l="$label" -v a="$i1" -v b="$i2" -v n1="$N1" -v n2="$N2" \
    'BEGIN { printf "%-40s %12.0f\n", l, (b-a)/(n2-n1) }'
}
echo "# $(date -u +%FT%TZ) $C connections, $N1 and $N2 requests, user-space instructions (callgrind)"
printf "%-40s %12s\n" target "instr/request"
[ "${WITH_NGINX:-true}" = false ] || per_request nginx nginx -c "$W/nginx.conf" -p "$W"
for weir in "$@"; do
  per_request "$weir" "$weir" run --config "$W/weir.toml"
done

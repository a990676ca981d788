#!/usr/bin/env bash
# HTTP/2 to HTTP/2 backends, on loopback, in one run: weir (protocol =
# "h2c"), nginx (grpc_pass, which speaks HTTP/2 to its upstream, one stream
# per connection, keep-alive) and HAProxy (`proto h2`) in front of the same
# three nginx h2c backends (127.0.0.1:18281-18283, round robin), and the
# client straight at one backend for scale.
#
# h2load over h2c (prior knowledge), -c32 -m10: req/s and CPU us per
# request of the proxy process (user+sys of all its threads over the run).
# Usage: bench/h2.sh [-d SECONDS] [-r ROUNDS]   (default 5 s, 3 rounds; medians)
# Pinning: the proxies on CPU 1, the client and backends on CPU 0.
# Needs: nginx (with http_v2 and grpc), haproxy, h2load, bc, ss, taskset
# (Debian packages nginx-light haproxy nghttp2-client bc).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=5; ROUNDS=3
while getopts d:r: o; do case $o in d) DUR=$OPTARG;; r) ROUNDS=$OPTARG;; *) exit 2;; esac; done
for t in nginx haproxy h2load bc ss taskset curl; do
  command -v $t >/dev/null || { echo "missing: $t" >&2; exit 2; }; done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -p weir --bin weir
WEIR=$CARGO_TARGET_DIR/release/weir

. bench/lib.sh
bench_workdir h2-bench

cat > "$W/backends.conf" <<CONF
daemon off; worker_processes 1; pid $W/b.pid; error_log $W/b.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  http2_max_concurrent_streams 128;
  server { listen 127.0.0.1:18281 http2; location / { return 200 "backend-1\n"; } }
  server { listen 127.0.0.1:18282 http2; location / { return 200 "backend-2\n"; } }
  server { listen 127.0.0.1:18283 http2; location / { return 200 "backend-3\n"; } } }
CONF
cat > "$W/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $W/n.pid; error_log $W/n.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream pool { server 127.0.0.1:18281; server 127.0.0.1:18282; server 127.0.0.1:18283;
    keepalive 128; keepalive_requests 1000000; }
  server { listen 127.0.0.1:18290 http2;
    location / { grpc_pass grpc://pool; } } }
CONF
cat > "$W/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:18291 proto h2
  default_backend pool
backend pool
  balance roundrobin
  server b1 127.0.0.1:18281 proto h2
  server b2 127.0.0.1:18282 proto h2
  server b3 127.0.0.1:18283 proto h2
CONF
cat > "$W/weir.toml" <<CONF
[[listeners]]
address = "127.0.0.1:18292"

[access_log]
enabled = false

[[routes]]
upstream = "web"

[upstreams.web]
protocol = "h2c"
[[upstreams.web.backends]]
address = "127.0.0.1:18281"
[[upstreams.web.backends]]
address = "127.0.0.1:18282"
[[upstreams.web.backends]]
address = "127.0.0.1:18283"
CONF

taskset -c 0 nginx -c "$W/backends.conf" -p "$W" & PIDS+=($!)
taskset -c 1 nginx -c "$W/nginx.conf" -p "$W" 2>"$W/nginx.log" & PIDS+=($!)
taskset -c 1 haproxy -f "$W/haproxy.cfg" -db >"$W/haproxy.log" 2>&1 & PIDS+=($!)
WEIR_LOG=warn taskset -c 1 "$WEIR" run --config "$W/weir.toml" 2>"$W/weir.log" & PIDS+=($!)
TARGETS=("direct=18281" "nginx=18290" "haproxy=18291" "weir=18292")
for t in "${TARGETS[@]}"; do
  url="http://127.0.0.1:${t#*=}/"
  for _ in $(seq 100); do curl -fsS --http2-prior-knowledge -o /dev/null "$url" 2>/dev/null && break; sleep 0.1; done
  body=$(curl -fsS --http2-prior-knowledge "$url") || {
    echo "${t%%=*} does not answer over h2c" >&2; cat "$W"/*.log >&2; exit 1; }
  case $body in backend-*) ;; *) echo "${t%%=*} answered '$body', not a backend" >&2; exit 1;; esac
done
# weir must really speak HTTP/2 to the backends: one connection each, however many streams.
taskset -c 0 h2load -n 2000 -c32 -m10 "http://127.0.0.1:18292/" >/dev/null 2>&1
conns=$(ss -Htnp state established "dport >= :18281 and dport <= :18283" | grep -c "pid=$(pid_of 18292),")
echo "# weir's HTTP/2 connections to the 3 backends after 2000 requests 320 at a time (100 streams each at most): $conns"
rate() { taskset -c 0 h2load -c32 -m10 -D "$DUR" "http://127.0.0.1:$1/" 2>/dev/null | awk '
  /^finished in/ {gsub(",", ""); r=$4} /^requests:/ {ok=$8; bad=$10+$12}
  END {if (bad > 0) print "FAILED"; else print r}'; }
declare -A RATE CPU
for ((i = 1; i <= ROUNDS; i++)); do
  for t in "${TARGETS[@]}"; do n=${t%%=*}; port=${t#*=}; pid=$(pid_of "$port")
    t0=$(ticks "$pid"); r=$(rate "$port"); t1=$(ticks "$pid")
    [ "$r" = FAILED ] && { echo "$n: h2load saw failed requests" >&2; exit 1; }
    RATE[$n]+="$r "
    CPU[$n]+="$(echo "($t1 - $t0) * 1000000 / $HZ / ($r * $DUR)" | bc -l) "
  done
done
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); weir $(git describe --always --dirty 2>/dev/null || echo "(no git)"); $DUR s x $ROUNDS rounds, medians"
printf "%-8s %12s %12s %10s\n" target "req/s" "cpu us/req" "vs nginx"
NC=$(echo "${CPU[nginx]}" | med)
for t in "${TARGETS[@]}"; do n=${t%%=*}; c=$(echo "${CPU[$n]}" | med)
  printf "%-8s %12.0f %12.2f %10.2f\n" "$n" "$(echo "${RATE[$n]}" | med)" "$c" "$(echo "$c / $NC" | bc -l)"
done
if [ -s "$W/weir.log" ]; then echo "--- weir log (WEIR_LOG=warn):"; head -20 "$W/weir.log"; fi

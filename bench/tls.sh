#!/usr/bin/env bash
# TLS benchmark on loopback, all in one run: weir, nginx and HAProxy each
# terminating TLS with the same ECDSA P-256 certificate in front of the same
# three plain nginx backends (127.0.0.1:18081-18083, round robin).
#
#   keepalive  wrk over HTTPS keep-alive connections: req/s, CPU us/request
#   handshake  wrk with `Connection: close`: a new TLS connection, a full
#              handshake (wrk does not resume sessions), per request:
#              connections/s, CPU us per connection
#   h2         h2load over TLS (ALPN h2, -c16 -m10): req/s, CPU us/request
#
# CPU is user+sys of the proxy process (all its threads) over the run, so it
# stays comparable when the client, not the proxy, sets the ceiling.
# Usage: bench/tls.sh [-d SECONDS] [-r ROUNDS]   (default 5 s, 3 rounds; medians)
#   env WEIR_A  an older weir binary, run beside as target weir-A (port 18193)
#               and measured in the same rounds: a paired comparison
#   env WEIR_B  this build's binary (default: built, $CARGO_TARGET_DIR/release/weir)
# Pinning: the proxies on CPU 1, clients and backends on CPU 0.
# Needs: nginx, haproxy, wrk, h2load, openssl, bc, ss, taskset (Debian
# packages nginx-light haproxy wrk nghttp2-client openssl bc).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=5; ROUNDS=3
while getopts d:r: o; do case $o in d) DUR=$OPTARG;; r) ROUNDS=$OPTARG;; *) exit 2;; esac; done
for t in nginx haproxy wrk h2load openssl bc ss taskset; do
  command -v $t >/dev/null || { echo "missing: $t" >&2; exit 2; }; done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${WEIR_B:-}" ]; then cargo build --release -p weir --bin weir; fi
WEIR=${WEIR_B:-$CARGO_TARGET_DIR/release/weir}

. bench/lib.sh
bench_workdir tls-bench

# One CA, one ECDSA P-256 leaf for 127.0.0.1, as every proxy serves it.
openssl ecparam -name prime256v1 -genkey -noout -out "$W/ca.key" 2>/dev/null
openssl req -x509 -new -key "$W/ca.key" -subj /CN=bench-ca -days 2 -out "$W/ca.pem" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$W/leaf.ec" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$W/leaf.ec" -out "$W/leaf.key"
openssl req -new -key "$W/leaf.key" -subj /CN=127.0.0.1 -out "$W/leaf.csr" 2>/dev/null
printf "subjectAltName=IP:127.0.0.1,DNS:localhost\n" > "$W/ext"
openssl x509 -req -in "$W/leaf.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial \
  -days 2 -extfile "$W/ext" -out "$W/leaf.crt" 2>/dev/null
cat "$W/leaf.crt" "$W/leaf.key" > "$W/haproxy.pem"

cat > "$W/backends.conf" <<CONF
daemon off; worker_processes 1; pid $W/b.pid; error_log $W/b.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:18081; location / { return 200 "backend-1\n"; } }
  server { listen 127.0.0.1:18082; location / { return 200 "backend-2\n"; } }
  server { listen 127.0.0.1:18083; location / { return 200 "backend-3\n"; } } }
CONF
cat > "$W/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $W/n.pid; error_log $W/n.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream pool { server 127.0.0.1:18081; server 127.0.0.1:18082; server 127.0.0.1:18083; keepalive 64; }
  server { listen 127.0.0.1:18190 ssl http2;
    ssl_certificate $W/leaf.crt; ssl_certificate_key $W/leaf.key;
    ssl_session_cache shared:SSL:10m;
    location / { proxy_pass http://pool; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
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
  bind 127.0.0.1:18191 ssl crt $W/haproxy.pem alpn h2,http/1.1
  default_backend pool
backend pool
  balance roundrobin
  server b1 127.0.0.1:18081
  server b2 127.0.0.1:18082
  server b3 127.0.0.1:18083
CONF
cat > "$W/weir.toml" <<CONF
[[listeners]]
address = "127.0.0.1:18192"
[listeners.tls]
[[listeners.tls.certificates]]
cert_file = "$W/leaf.crt"
key_file = "$W/leaf.key"

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
CONF

taskset -c 0 nginx -c "$W/backends.conf" -p "$W" & PIDS+=($!)
taskset -c 1 nginx -c "$W/nginx.conf" -p "$W" 2>"$W/nginx.log" & PIDS+=($!)
taskset -c 1 haproxy -f "$W/haproxy.cfg" -db >"$W/haproxy.log" 2>&1 & PIDS+=($!)
WEIR_LOG=warn taskset -c 1 "$WEIR" run --config "$W/weir.toml" 2>"$W/weir.log" & PIDS+=($!)
TARGETS=("nginx=18190" "haproxy=18191" "weir=18192")
if [ -n "${WEIR_A:-}" ]; then
  sed 's/127.0.0.1:18192/127.0.0.1:18193/' "$W/weir.toml" > "$W/weir-a.toml"
  WEIR_LOG=warn taskset -c 1 "$WEIR_A" run --config "$W/weir-a.toml" 2>"$W/weir-a.log" & PIDS+=($!)
  TARGETS+=("weir-A=18193")
fi
for t in "${TARGETS[@]}"; do
  for _ in $(seq 100); do curl -fsS --cacert "$W/ca.pem" -o /dev/null "https://127.0.0.1:${t#*=}/" 2>/dev/null && break; sleep 0.1; done
  curl -fsS --cacert "$W/ca.pem" -o /dev/null "https://127.0.0.1:${t#*=}/" || {
    echo "${t%%=*} does not answer over TLS" >&2; cat "$W"/*.log >&2; exit 1; }
  # Each must really speak h2 over TLS for the h2 test.
  [ "$(curl -s --http2 --cacert "$W/ca.pem" -o /dev/null -w '%{http_version}' "https://127.0.0.1:${t#*=}/")" = 2 ] || {
    echo "${t%%=*} does not negotiate h2" >&2; exit 1; }
done

# test port -> "count_per_second"; the client pinned to CPU 0
client() {
  local url="https://127.0.0.1:$2/"
  case $1 in
    keepalive) taskset -c 0 wrk -t1 -c32 -d"${DUR}s" "$url" | awk '/Requests\/sec/ {print $2}' ;;
    handshake) taskset -c 0 wrk -t1 -c16 -d"${DUR}s" -H "Connection: close" "$url" | awk '/Requests\/sec/ {print $2}' ;;
    h2) taskset -c 0 h2load -c16 -m10 -D "$DUR" "$url" 2>/dev/null | awk '/^finished in/ {gsub(",", ""); print $4}' ;;
  esac; }
declare -A RATE CPU
for ((i = 1; i <= ROUNDS; i++)); do
  for test in keepalive handshake h2; do
    for t in "${TARGETS[@]}"; do n=${t%%=*}; port=${t#*=}; pid=$(pid_of "$port")
      t0=$(ticks "$pid"); r=$(client $test "$port"); t1=$(ticks "$pid")
      RATE[$test.$n]+="$r "
      CPU[$test.$n]+="$(echo "($t1 - $t0) * 1000000 / $HZ / ($r * $DUR)" | bc -l) "
    done
  done
done
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); weir $(git describe --always --dirty 2>/dev/null || echo "(no git)"); $DUR s x $ROUNDS rounds, medians"
printf "%-10s %-8s %12s %12s %10s\n" test target "per second" "cpu us/each" "vs nginx"
for test in keepalive handshake h2; do
  NC=$(echo "${CPU[$test.nginx]}" | med)
  for t in "${TARGETS[@]}"; do n=${t%%=*}; c=$(echo "${CPU[$test.$n]}" | med)
    printf "%-10s %-8s %12.0f %12.2f %10.2f\n" "$test" "$n" "$(echo "${RATE[$test.$n]}" | med)" "$c" "$(echo "$c / $NC" | bc -l)"
  done
done
if [ -s "$W/weir.log" ]; then echo "--- weir log (WEIR_LOG=warn):"; head -20 "$W/weir.log"; fi

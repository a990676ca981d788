#!/usr/bin/env bash
# Memory per idle keep-alive client connection: one client opens N
# connections, one request each, and keeps them open; the server's RSS
# (/proc/PID/status VmRSS) is read before and after, for weir (this build,
# and optionally an older binary) and nginx, each in front of the same
# nginx backend.
#
# Usage: bench/idle.sh [N [ROUNDS [MODE]]]   (default 8000 connections, 3 rounds, http)
#   MODE http: plain HTTP/1.1 keep-alive (weir hibernates these);
#        tls:  HTTP/1.1 over TLS 1.3 (ALPN http/1.1; a self-signed P-256
#              certificate made with openssl), weir and nginx both
#              terminating TLS (weir hibernates these too);
#        h2c:  HTTP/2 with prior knowledge (nginx `listen ... http2`),
#              one GET on stream 1 each, the connection held after.
#   env WEIR_A   an older weir binary to measure too (e.g. main's)
#   env WEIR_B   this build's binary (default: built, $CARGO_TARGET_DIR/release/weir)
#   env CARGO_TARGET_DIR (default target/)
# Checks that what it measures happened: every connection got its 200 (in
# its protocol: a TLS session, an HTTP/2 HEADERS frame with :status 200
# and the body's END_STREAM), and in http and tls modes this build reports
# all N connections hibernated (weir_client_connections_hibernated) before
# its RSS is read. An older binary (WEIR_A), nginx, and h2c mode (which
# does not hibernate) are read 3 s after the last answer.
# Needs: python3, nginx, curl, ss; `ulimit -n` above N.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${1:-8000}; ROUNDS=${2:-3}; MODE=${3:-http}
case $MODE in http|tls|h2c) ;; *) echo "mode: http, tls or h2c, not $MODE" >&2; exit 2;; esac
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
[ "$(ulimit -n)" -gt $((N + 100)) ] || { echo "ulimit -n $(ulimit -n) is too low for $N" >&2; exit 2; }
if [ -z "${WEIR_B:-}" ]; then cargo build --release -p weir --bin weir >&2; fi
WEIR=${WEIR_B:-$CARGO_TARGET_DIR/release/weir}
bench_workdir idle

cat > "$W/backend.conf" <<CONF
daemon off; worker_processes 1; pid $W/b.pid; error_log $W/b.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:18081; location / { return 200 "backend-1\n"; } } }
CONF
case $MODE in
  http) NGINX_LISTEN="listen 127.0.0.1:18090;" ;;
  tls) openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
         -keyout "$W/key.pem" -out "$W/cert.pem" -subj /CN=localhost \
         -addext subjectAltName=DNS:localhost 2>/dev/null
    NGINX_LISTEN="listen 127.0.0.1:18090 ssl; ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem; ssl_protocols TLSv1.3;" ;;
  h2c) NGINX_LISTEN="listen 127.0.0.1:18090 http2;" ;;
esac
WEIR_TLS=""
if [ "$MODE" = tls ]; then WEIR_TLS="[listeners.tls]
min_version = \"1.3\"
[[listeners.tls.certificates]]
cert_file = \"$W/cert.pem\"
key_file = \"$W/key.pem\""; fi
cat > "$W/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $W/n.pid; error_log $W/n.err;
worker_rlimit_nofile $((N + 1000));
events { worker_connections $((N + 1000)); }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 600s;
  upstream pool { server 127.0.0.1:18081; keepalive 64; }
  server { $NGINX_LISTEN location / { proxy_pass http://pool; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat > "$W/weir.toml" <<CONF
[[listeners]]
address = "127.0.0.1:18092"
idle_timeout_ms = 600000
max_connections = $((N + 1000))
$WEIR_TLS
[access_log]
enabled = false
[admin]
address = "127.0.0.1:18099"
[[routes]]
upstream = "web"
[upstreams.web]
[[upstreams.web.backends]]
address = "127.0.0.1:18081"
CONF
cat > "$W/client.py" <<'PY'
import socket, ssl, struct, sys
port, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
tls = None
if mode == "tls":
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    tls.set_alpn_protocols(["http/1.1"])

def http1(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
    while len(body) < length:
        body += s.recv(4096)

def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

def h2c(s):
    # The preface, empty SETTINGS, and GET / on stream 1 (HPACK: :method GET,
    # :scheme http, :path /, :authority x), END_HEADERS | END_STREAM.
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) +
              frame(1, 5, 1, bytes([0x82, 0x86, 0x84, 0x41, 1]) + b"x"))
    buf, status, done = b"", False, False
    while not done:
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
            more = s.recv(65536)
            assert more, "closed"
            buf += more
        length, kind, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
        stream = int.from_bytes(buf[5:9], "big") & 0x7fffffff
        payload, buf = buf[9:9 + length], buf[9 + length:]
        if kind == 4 and not flags & 1:
            s.sendall(frame(4, 1, 0))  # SETTINGS ACK
        elif kind == 1 and stream == 1:
            status = payload[:1] == b"\x88"  # :status 200, indexed
            assert status, payload
            done = bool(flags & 1)
        elif kind == 0 and stream == 1:
            done = bool(flags & 1)
        elif kind == 7:
            raise SystemExit("GOAWAY")
    assert status

held = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if tls:
        s = tls.wrap_socket(s, server_hostname="localhost")
    h2c(s) if mode == "h2c" else http1(s)
    held.append(s)
print("open", len(held), flush=True)
sys.stdin.read()
PY

nginx -c "$W/backend.conf" -p "$W" & PIDS+=($!)
sleep 0.5
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hibernated() { curl -s "http://127.0.0.1:18099/metrics" | awk '$1 == "weir_client_connections_hibernated" {print $2}'; }
wait_port() { for _ in $(seq 100); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; done; echo "nothing on $1" >&2; exit 1; }

measure() { # name port start-command... -> prints "name before after kb_per_conn"
  local name=$1 port=$2; shift 2
  "$@" & local pid=$!; PIDS+=($pid)
  wait_port "$port"
  local curl=(curl -sf "http://127.0.0.1:$port/")
  [ "$MODE" = tls ] && curl=(curl -sfk "https://127.0.0.1:$port/")
  [ "$MODE" = h2c ] && curl=(curl -sf --http2-prior-knowledge "http://127.0.0.1:$port/")
  "${curl[@]}" >/dev/null # warm: the upstream connection, the pools
  sleep 0.5
  local before; before=$(rss "$pid")
  coproc CLIENT { python3 "$W/client.py" "$port" "$N" "$MODE"; }
  local line; read -r line <&"${CLIENT[0]}"
  [ "$line" = "open $N" ] || { echo "client: $line" >&2; exit 1; }
  if [ "$name" = weir ] && [ "$MODE" != h2c ]; then
    for _ in $(seq 600); do [ "$(hibernated)" = "$N" ] && break; sleep 0.1; done
    [ "$(hibernated)" = "$N" ] || { echo "weir: only $(hibernated) of $N hibernated" >&2; exit 1; }
  else
    sleep 3
  fi
  local after; after=$(rss "$pid")
  exec {CLIENT[1]}>&-; wait "$CLIENT_PID" 2>/dev/null || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$name $before $after $(echo "scale=2; ($after - $before) / $N" | bc)"
}

printf "%-8s %10s %10s %12s\n" target "RSS0 KB" "RSS KB" "KB per conn"
declare -A KB
for r in $(seq "$ROUNDS"); do
  rows=("$(measure weir 18092 "$WEIR" run --config "$W/weir.toml")")
  [ -n "${WEIR_A:-}" ] && rows+=("$(measure weir-A 18092 "$WEIR_A" run --config "$W/weir.toml")")
  rows+=("$(measure nginx 18090 nginx -c "$W/nginx.conf" -p "$W")")
  for row in "${rows[@]}"; do
    read -r name before after kb <<<"$row"
    printf "%-8s %10s %10s %12s   (round %s)\n" "$name" "$before" "$after" "$kb" "$r"
    KB[$name]="${KB[$name]:-} $kb"
  done
done
echo "median KB per idle $MODE connection over $ROUNDS rounds, N=$N:"
for name in "${!KB[@]}"; do printf "  %-8s %s   (all: %s)\n" "$name" "$(echo "${KB[$name]}" | med)" "${KB[$name]}"; done

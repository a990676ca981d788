#!/usr/bin/env bash
# Memory per idle keep-alive client connection: one client opens N
# connections, one request each, and keeps them open; the server's RSS
# (/proc/PID/status VmRSS) is read before and after, for weir (this build,
# and optionally an older binary) and nginx, each in front of the same
# nginx backend.
#
# Usage: bench/idle.sh [N [ROUNDS]]   (default 8000 connections, 3 rounds)
#   env WEIR_A   an older weir binary to measure too (e.g. main's)
#   env WEIR_B   this build's binary (default: built, $CARGO_TARGET_DIR/release/weir)
#   env CARGO_TARGET_DIR (default target/)
# Checks that what it measures happened: every connection got its 200, and
# this build reports all N connections hibernated
# (weir_client_connections_hibernated) before its RSS is read. An older
# binary without hibernation is read after the same wait.
# Needs: python3, nginx, curl, ss; `ulimit -n` above N.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${1:-8000}; ROUNDS=${2:-3}
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
cat > "$W/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $W/n.pid; error_log $W/n.err;
worker_rlimit_nofile $((N + 1000));
events { worker_connections $((N + 1000)); }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 600s;
  upstream pool { server 127.0.0.1:18081; keepalive 64; }
  server { listen 127.0.0.1:18090; location / { proxy_pass http://pool; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat > "$W/weir.toml" <<CONF
[[listeners]]
address = "127.0.0.1:18092"
idle_timeout_ms = 600000
max_connections = $((N + 1000))
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
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
held = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
    while len(body) < length:
        body += s.recv(4096)
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
  curl -sf "http://127.0.0.1:$port/" >/dev/null # warm: the upstream connection, the pools
  sleep 0.5
  local before; before=$(rss "$pid")
  coproc CLIENT { python3 "$W/client.py" "$port" "$N"; }
  local line; read -r line <&"${CLIENT[0]}"
  [ "$line" = "open $N" ] || { echo "client: $line" >&2; exit 1; }
  if [ "$name" = weir ]; then
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
echo "median KB per idle connection over $ROUNDS rounds, N=$N:"
for name in "${!KB[@]}"; do printf "  %-8s %s   (all: %s)\n" "$name" "$(echo "${KB[$name]}" | med)" "${KB[$name]}"; done

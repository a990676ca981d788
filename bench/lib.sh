# Shared by the bench scripts that run weir beside other proxies: source it
# after `cd` to the repository root.
#   bench_workdir NAME  a temp dir in $W, and $PIDS, whose processes are
#                       killed (and the dir removed) when the script exits
#   pid_of PORT         the pid of the process listening on PORT
#   ticks PID           the user+sys clock ticks PID has used (all threads)
#   utick PID           the user-space clock ticks alone
#   med                 the median of numbers given space-separated on stdin
#   HZ                  clock ticks per second
#   bench_backend PORT  starts a one-worker nginx on 127.0.0.1:PORT that
#                       answers every request "hello from the backend"
#   weir_config LISTEN BACKEND_PORT...
#                       prints a weir config: one listener, the access log
#                       off, one route to native round robin over the
#                       backends; env WEIR_EXTRA: more lines at its end
#   wait_listen PORT    waits (up to 60 s) until something listens on PORT
#   h2load_exactly N URL
#                       N HTTP/1.1 requests by h2load (env C connections,
#                       default 4); fails unless all N got a 2xx
bench_workdir() {
  W=$(mktemp -d "/tmp/weir-$1.XXXX"); PIDS=()
  trap bench_cleanup EXIT INT TERM
}
bench_cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.3; rm -rf "$W"; }
pid_of() { ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
utick() { awk '{print $14}' "/proc/$1/stat"; }
med() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
HZ=$(getconf CLK_TCK)
bench_backend() {
  cat > "$W/backend-$1.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $W/backend-$1.pid; error_log $W/backend-$1.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$1; keepalive_requests 1000000;
  location / { return 200 "hello from the backend\n"; } } }
CONF
  nginx -c "$W/backend-$1.conf" -p "$W" & PIDS+=($!)
}
weir_config() {
  local listen=$1; shift
  printf '[[listeners]]\naddress = "127.0.0.1:%s"\n[access_log]\nenabled = false\n' "$listen"
  printf '[[routes]]\nupstream = "web"\n[upstreams.web]\n'
  for port in "$@"; do printf '[[upstreams.web.backends]]\naddress = "127.0.0.1:%s"\n' "$port"; done
  [ -z "${WEIR_EXTRA:-}" ] || printf '%s\n' "$WEIR_EXTRA"
}
wait_listen() { for _ in $(seq 600); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; done; return 1; }
h2load_exactly() {
  local out; out=$(h2load --h1 -n "$1" -c "${C:-4}" "$2" 2>&1)
  local ok; ok=$(echo "$out" | awk '/^status codes:/ {print $3}')
  [ "$ok" = "$1" ] || { echo "only ${ok:-0} of $1 requests got 2xx:" >&2; echo "$out" >&2; return 1; }
}

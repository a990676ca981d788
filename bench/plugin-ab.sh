#!/usr/bin/env bash
# bench/e2e.sh with one more --ab mode, AB=custom: each side its own binary
# (WEIR_A, WEIR_B), balancer table (A_BAL, B_BAL), route lines (A_ROUTE,
# B_ROUTE) and [plugins] lines (A_PLUG, B_PLUG), labelled A_LABEL/B_LABEL;
# NOBUILD=1 skips the cargo build. BENCHMARKS.md section 15 used it, e.g.
#   RR=$'[upstreams.web.balancer]\nplugin = "round-robin"\n'
#   NOBUILD=1 WEIR_A=/tmp/weir-base WEIR_B=target/release/weir AB=custom \
#     A_LABEL=base B_LABEL=new A_BAL="$RR" B_BAL="$RR" bench/plugin-ab.sh --ab 8 5
# Run it under the shared lock: flock /tmp/weir-bench.lock bash bench/plugin-ab.sh ...
# End-to-end proxy benchmark: weir balancing with the round-robin plugin
# (weir-wasm, 127.0.0.1:18092) and with its native round robin (weir-native,
# 127.0.0.1:18093), measured beside a direct backend, nginx and HAProxy by the
# shared harness, all over the same three nginx backends 127.0.0.1:18081-18083.
#
# Usage: bench/e2e.sh [harness options: -d SECONDS -r ROUNDS -c CONNS]
#        bench/e2e.sh --ab [PAIRS [SECONDS]]
#   --ab: weir-wasm against weir-native only, in PAIRS back-to-back pairs of
#   SECONDS-long wrk runs (default 10 pairs of 5 s; the order alternates
#   between pairs), printing each pair and the median ratios. A paired
#   comparison is steadier than the harness's medians on a shared machine.
#   env SHARED          folder holding bench/proxy-bench.sh (default ../shared,
#                       relative to the repo root)
#   env ACCESS_LOG      true: weir writes its JSON access log (to a file in the
#                       work dir); default false, like nginx and HAProxy here
#   env AB              what --ab compares (A on 18092 against B, weir-native,
#                       on 18093): plugin (default: the round-robin plugin),
#                       log (the JSON access log on), filter (one empty filter),
#                       build (the weir binary in env WEIR_A, e.g. one built
#                       from an earlier commit, both with native round robin:
#                       a before/after comparison of a change),
#                       workers (native round robin with [runtime] scheduler
#                       = "per-worker" against the default "shared");
#                       without --ab, A is what the harness runs as weir-wasm
#   env CARGO_TARGET_DIR (default target/), WEIR_PLUGIN_DIR (default
#                       $CARGO_TARGET_DIR/plugins, built by `cargo xtask plugins`)
# Pinning: both weirs run on CPU 1 like nginx and HAProxy; wrk and the
# backends on CPU 0 (the harness does that part).
# Needs: cargo, taskset, ss, curl, and what the harness needs (nginx-light,
# haproxy, wrk, bc).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
HARNESS=${SHARED:-../shared}/bench/proxy-bench.sh
[ -f "$HARNESS" ] || { echo "no harness at $HARNESS (set SHARED)" >&2; exit 2; }
for t in taskset ss curl; do command -v $t >/dev/null || { echo "missing: $t" >&2; exit 2; }; done

[ -n "${NOBUILD:-}" ] || cargo build --release -p weir --bin weir
if [ -z "${WEIR_PLUGIN_DIR:-}" ]; then cargo xtask plugins >/dev/null; fi
PLUGIN_DIR=$(realpath "${WEIR_PLUGIN_DIR:-$CARGO_TARGET_DIR/plugins}")
[ -f "$PLUGIN_DIR/round-robin.wasm" ] || { echo "no round-robin.wasm in $PLUGIN_DIR" >&2; exit 2; }
WEIR=$CARGO_TARGET_DIR/release/weir

W=$(mktemp -d /tmp/weir-e2e.XXXX); PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT INT TERM

config() { # port balancer-table [route-table-lines [access-log]] -> config text
  cat <<CONF
[[listeners]]
address = "127.0.0.1:$1"

# Like nginx and HAProxy in the harness (access_log off).
[access_log]
enabled = ${4:-${ACCESS_LOG:-false}}
path = "$W/access-$1.log"

[plugins]
dir = "$PLUGIN_DIR"
${5:-}

[[routes]]
upstream = "web"
${3:-}

[upstreams.web]
$2
[[upstreams.web.backends]]
address = "127.0.0.1:18081"
[[upstreams.web.backends]]
address = "127.0.0.1:18082"
[[upstreams.web.backends]]
address = "127.0.0.1:18083"
CONF
}
# The two weirs --ab compares: A on 18092 ("wasm"), B on 18093 ("native").
case "${AB:-plugin}" in
  plugin) LABEL="A = round-robin plugin, B = native round robin"
    config 18092 $'[upstreams.web.balancer]\nplugin = "round-robin"\n' > "$W/wasm.toml" ;;
  log) LABEL="A = native + JSON access log to a file, B = native"
    config 18092 "" "" true > "$W/wasm.toml" ;;
  filter) LABEL="A = native + one filter (pass-filter), B = native"
    config 18092 "" $'[[routes.filters]]\nplugin = "pass-filter"\n' > "$W/wasm.toml" ;;
  workers) LABEL="A = native, scheduler per-worker, B = native, scheduler shared"
    { printf '[runtime]\nscheduler = "per-worker"\n\n'; config 18092 ""; } > "$W/wasm.toml" ;;
  build) [ -x "${WEIR_A:-}" ] || { echo "AB=build needs WEIR_A, a weir binary" >&2; exit 2; }
    LABEL="A = $WEIR_A, B = this build, both native round robin"
    config 18092 "" > "$W/wasm.toml" ;;
  custom) LABEL="A = $A_LABEL, B = $B_LABEL"
    config 18092 "${A_BAL:-}" "${A_ROUTE:-}" "" "${A_PLUG:-}" > "$W/wasm.toml" ;;
  *) echo "AB must be plugin, log, filter, workers or build" >&2; exit 2 ;;
esac
config 18093 "${B_BAL:-}" "${B_ROUTE:-}" "" "${B_PLUG:-}" > "$W/native.toml"

start() { # name port [binary]
  if ss -Hltn "sport = :$2" | grep -q .; then echo "port $2 is already in use" >&2; exit 1; fi
  WEIR_LOG=warn taskset -c 1 "${3:-$WEIR}" run --config "$W/$1.toml" 2>"$W/$1.log" & PIDS+=($!)
  for _ in $(seq 100); do
    ss -Hltn "sport = :$2" | grep -q . && return 0
    kill -0 "${PIDS[-1]}" 2>/dev/null || break; sleep 0.1
  done
  echo "weir ($1) did not start listening on $2:" >&2; cat "$W/$1.log" >&2; exit 1; }
start wasm 18092 "${WEIR_A:-$WEIR}"
start native 18093 "${WEIR_B:-$WEIR}"

echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); weir $(git describe --always --dirty 2>/dev/null || echo "(no git)")"
if [ "${1:-}" = --ab ]; then
  PAIRS=${2:-10}; DUR=${3:-5}; HZ=$(getconf CLK_TCK)
  for t in wrk bc; do command -v $t >/dev/null || { echo "missing: $t" >&2; exit 2; }; done
  BENCH_BACKENDS_ONLY=1 bash "$HARNESS" >"$W/backends.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 50); do ss -Hltn "sport = :18083" | grep -q . && break; sleep 0.1; done
  for port in 18092 18093; do curl -fsS -o /dev/null "http://127.0.0.1:$port/"; done
  ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
  measure() { # name port pid -> "rps cpu_us_per_request"
    local t0 t1 r; t0=$(ticks "$3")
    r=$(taskset -c 0 wrk -t1 -c32 -d"${DUR}s" "http://127.0.0.1:$2/" | awk '/Requests\/sec/ {print $2}')
    t1=$(ticks "$3")
    echo "$r $(echo "($t1 - $t0) * 1000000 / $HZ / ($r * $DUR)" | bc -l)"; }
  echo "# --ab: $LABEL"
  printf "%-5s %11s %11s %11s %11s %9s %9s\n" pair "A req/s" "B req/s" "A us/rq" "B us/rq" "rps A/B" "cpu A/B"
  : > "$W/ratios"
  for ((i = 1; i <= PAIRS; i++)); do
    if ((i % 2)); then order="wasm native"; else order="native wasm"; fi
    for n in $order; do
      if [ $n = wasm ]; then read -r rw cw < <(measure wasm 18092 "${PIDS[0]}")
      else read -r rn cn < <(measure native 18093 "${PIDS[1]}"); fi
    done
    printf "%-5s %11.0f %11.0f %11.2f %11.2f %9.3f %9.3f\n" "$i" "$rw" "$rn" "$cw" "$cn" \
      "$(echo "$rw / $rn" | bc -l)" "$(echo "$cw / $cn" | bc -l)"
    echo "$(echo "$rw / $rn" | bc -l) $(echo "$cw / $cn" | bc -l)" >> "$W/ratios"
  done
  med() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
  printf "median ratio A/B: req/s %.3f, cpu us/request %.3f\n" \
    "$(cut -d' ' -f1 "$W/ratios" | med)" "$(cut -d' ' -f2 "$W/ratios" | med)"
else
  bash "$HARNESS" "$@" weir-wasm=http://127.0.0.1:18092/ weir-native=http://127.0.0.1:18093/
fi
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in wasm native; do
  if [ -s "$W/$n.log" ]; then echo "--- weir-$n log (WEIR_LOG=warn):"; head -20 "$W/$n.log"; fi
done

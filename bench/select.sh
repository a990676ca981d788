#!/usr/bin/env bash
# The select micro-benchmark (host/benches/select.rs), pinned to one CPU,
# then a table of its medians from criterion's estimates.
#
# Usage: bench/select.sh [criterion args, e.g. a filter like plugin]
#        bench/select.sh --table   (only print the table of the last run)
#   env CARGO_TARGET_DIR (default: target/), BENCH_CPU (default: 1),
#       WEIR_PLUGIN_DIR (default: $CARGO_TARGET_DIR/plugins)
# Needs: cargo, taskset, jq.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
for t in taskset jq; do command -v $t >/dev/null || { echo "missing: $t" >&2; exit 2; }; done
[ -f "${WEIR_PLUGIN_DIR:-$CARGO_TARGET_DIR/plugins}/round-robin.wasm" ] || cargo xtask plugins
if [ "${1:-}" != --table ]; then
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), pinned to CPU ${BENCH_CPU:-1}"
taskset -c "${BENCH_CPU:-1}" cargo bench -p weir --bench select -- "$@"
fi

dir=$CARGO_TARGET_DIR/criterion/select
est() { # kind n field -> ns, or empty
  local f=$dir/$1/$2/new/estimates.json
  [ -f "$f" ] && jq -r ".$3.point_estimate // empty" "$f" || true; }
fmt() { # ns -> human
  awk -v t="$1" 'BEGIN { if (t == "") print "-"; else if (t >= 1e6) printf "%.2f ms", t/1e6;
    else if (t >= 1e3) printf "%.2f us", t/1e3; else printf "%.1f ns", t }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print "-"; else printf "%.2fx", a/b }'; }
echo
echo "median time per call (criterion's median of per-sample means); set-change also"
echo "as criterion's slope estimate where it used linear sampling"
printf "%-8s %12s %12s %12s %12s %14s %14s\n" backends "plugin med" "native med" "plugin/nat" "plugin/3" "set-change med" "(slope)"
p3=$(est plugin 3 median)
for n in 3 100 10000; do
  p=$(est plugin $n median); q=$(est native $n median); s=$(est set-change $n median); sl=$(est set-change $n slope)
  printf "%-8s %12s %12s %12s %12s %14s %14s\n" "$n" "$(fmt "$p")" "$(fmt "$q")" "$(ratio "$p" "$q")" \
    "$(ratio "$p" "$p3")" "$(fmt "$s")" "$(fmt "$sl")"
done

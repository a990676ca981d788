# Shared by the bench scripts that run weir beside other proxies: source it
# after `cd` to the repository root.
#   bench_workdir NAME  a temp dir in $W, and $PIDS, whose processes are
#                       killed (and the dir removed) when the script exits
#   pid_of PORT         the pid of the process listening on PORT
#   ticks PID           the user+sys clock ticks PID has used (all threads)
#   med                 the median of numbers given space-separated on stdin
#   HZ                  clock ticks per second
bench_workdir() {
  W=$(mktemp -d "/tmp/weir-$1.XXXX"); PIDS=()
  trap bench_cleanup EXIT INT TERM
}
bench_cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.3; rm -rf "$W"; }
pid_of() { ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
med() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
HZ=$(getconf CLK_TCK)

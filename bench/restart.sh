#!/usr/bin/env bash
# Startup cost of loading plugins with a cold and a warm compiled-code cache:
# `weir check` loads (compiles or fetches from the cache) and inits every
# plugin the config names, then exits. Prints wall-clock milliseconds.
#
# Usage: bench/restart.sh [ROUNDS]   (after `cargo xtask plugins` and
# `cargo build --release -p weir`)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
TARGET=${CARGO_TARGET_DIR:-target}
WEIR=$TARGET/release/weir
PLUGINS=$(cd "$TARGET/plugins" && pwd)
W=$(mktemp -d /tmp/weir-restart.XXXX); trap 'rm -rf "$W"' EXIT
cat > "$W/weir.toml" <<CONF
[[listeners]]
address = "127.0.0.1:0"
[plugins]
dir = "$PLUGINS"
cache_dir = "$W/cache"
[upstreams.a.balancer]
plugin = "round-robin"
[upstreams.b.balancer]
plugin = "consistent-hash"
[upstreams.c.balancer]
plugin = "p2c-ewma"
CONF
ms() { local s; s=$(date +%s%N); WEIR_LOG=warn taskset -c 1 "$WEIR" check --config "$W/weir.toml" >/dev/null; echo $(( ($(date +%s%N) - s) / 1000000 )); }
echo "round  cold_ms  warm_ms"
for ((i = 1; i <= ROUNDS; i++)); do
  rm -rf "$W/cache"
  cold=$(ms); sleep 1 # the cache is written by a background worker
  warm=$(ms)
  echo "$i      $cold      $warm"
done

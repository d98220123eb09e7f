#!/usr/bin/env bash
# PSS of a running uv-supervisor and its sentinel: starts `BINARY run CONFIG`, waits SECONDS
# (default 1.5), prints each process's Pss from /proc/PID/smaps_rollup and their sum, stops it.
#   bash scripts/daemon-pss.sh .build/release/uv-supervisor my.yaml [SECONDS]
# The config tool is taken from UVS_CONFIG_TOOL, or next to BINARY.
set -euo pipefail
binary="$1"; config="$2"; wait_s="${3:-1.5}"
"$binary" run "$config" & daemon=$!
sleep "$wait_s"
kill -0 "$daemon" 2>/dev/null || { echo "the daemon ended early" >&2; exit 1; }
total=0
for pid in "$daemon" $(pgrep -P "$daemon" -x uvs-sentinel || true); do
    [ -r "/proc/$pid/smaps_rollup" ] || continue
    pss=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")
    echo "$(cat /proc/$pid/comm) ($pid): $pss kB"
    total=$((total + pss))
done
echo "total PSS: $total kB"
kill "$daemon"; wait "$daemon" 2>/dev/null || true

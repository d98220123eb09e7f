#!/usr/bin/env bash
# Head to head: uv-supervisor against supervisord, s6, runit, daemontools, Erlang/OTP and the
# C floors, measured by the team's harness (../shared/peers-process) in one run.
#   bash Benchmarks/peers/run.sh                      every peer, every test (about an hour)
#   bash Benchmarks/peers/run.sh --runs 2 --restarts 30 --idle-runs 1
#   bash Benchmarks/peers/run.sh --peers posix_spawn,libuv,uv-supervisor --tests gap,loop
# Then start-up to 100 children running for every peer (Benchmarks/peers/startup.py), and the
# restart gap of the floors and uv-supervisor running side by side (Benchmarks/peers/paired_gap.py).
# Needs root: the harness installs the peers (Debian packages) and runs perf. Results:
# .build-peers/harness/RESULTS.md (and raw/); nothing is written to the shared copy.
set -euo pipefail
cd "$(dirname "$0")/../.."
shared="${UVS_PEERS_SOURCE:-../shared/peers-process}"
[ -f "$shared/bench.py" ] || { echo "no harness at $shared (set UVS_PEERS_SOURCE)" >&2; exit 1; }
bash scripts/bootstrap.sh
swift build -c release --product uv-supervisor
swift build -c release --product uv-supervisor-config
rm -rf .build-peers/harness
mkdir -p .build-peers
cp -r "$shared" .build-peers/harness
rm -rf .build-peers/harness/raw .build-peers/harness/RESULTS.md
cd .build-peers/harness
need=""
command -v cc >/dev/null 2>&1 || need="$need gcc"
command -v make >/dev/null 2>&1 || need="$need make"
[ -x /usr/bin/supervisord ] || need="$need supervisor"
[ -x /usr/bin/s6-svscan ] || need="$need s6"
[ -x /usr/bin/runsvdir ] || need="$need runit"
[ -x /usr/bin/svscan ] || need="$need daemontools"
command -v perf >/dev/null 2>&1 || need="$need linux-perf"
command -v erl >/dev/null 2>&1 || need="$need erlang-nox"
if [ -n "$need" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need
fi
make -s
UVS_PEERS_HARNESS="$PWD" UVS_BIN="$(cd ../.. && pwd)/.build/release" /usr/bin/python3 ../../Benchmarks/peers/uvs_peer.py "$@"
# The harness's report lists its own peers; ours is added after the C and Python loops.
rm -f NOTES.md
/usr/bin/python3 -c '
import report
report.ORDER.insert(report.ORDER.index("asyncio") + 1, "uv-supervisor")
report.LABEL["uv-supervisor"] = "uv-supervisor (this project: config file, no backoff)"
report.main()'
# Start-up to 100 children running: not a test of the harness; measured here for every peer
# (UVS_STARTUP_RUNS=0 skips it).
if [ "${UVS_STARTUP_RUNS:-3}" != "0" ]; then
    UVS_PEERS_HARNESS="$PWD" UVS_BIN="$(cd ../.. && pwd)/.build/release" \
        /usr/bin/python3 ../../Benchmarks/peers/startup.py --runs "${UVS_STARTUP_RUNS:-3}" >> RESULTS.md
fi
# Restart gap with the floor, raw libuv and uv-supervisor running at the same time (see
# Benchmarks/peers/paired_gap.py; UVS_PAIRED_RESTARTS=0 skips it).
if [ "${UVS_PAIRED_RESTARTS:-200}" != "0" ]; then
    UVS_PEERS_HARNESS="$PWD" UVS_BIN="$(cd ../.. && pwd)/.build/release" \
        /usr/bin/python3 ../../Benchmarks/peers/paired_gap.py --restarts "${UVS_PAIRED_RESTARTS:-200}" >> RESULTS.md
fi
echo "wrote $PWD/RESULTS.md"

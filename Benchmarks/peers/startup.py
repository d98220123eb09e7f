#!/usr/bin/python3
"""Start-up time to N children running, for every peer of the team's harness and uv-supervisor.

The harness (../shared/peers-process) has no start-up test; this one drives its peers through
the same Peer interface: each supervisor is started with N children that live until killed, and
the time from just before the supervisor's exec to the N-th child's own "start" stamp (the first
thing its main() does, CLOCK_MONOTONIC) is the start-up time. Round-robin over peers in each run;
the median over runs is printed as a Markdown table. Run by run.sh after the harness:
    UVS_PEERS_HARNESS=... UVS_BIN=... python3 startup.py [--runs 3] [--children 100] [--peers a,b]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import uvs_peer  # noqa: E402,F401  (adds uv-supervisor to bench.PEERS)
import bench  # noqa: E402


def start_stamps(log):
    try:
        with open(log) as f:
            return [int(line.split()[1]) for line in f if line.startswith("start ")]
    except OSError:
        return []


def measure(peer, n, run):
    work = bench.fresh_work(f"startup_{peer.name}_{n}_{run}")
    log = os.path.join(work, "crashy.log")
    before = time.monotonic_ns()
    peer.start(n, {"CRASHY_LOG": log, "CRASHY_MS": "-1", "CRASHY_MODE": "exit"}, work)
    deadline = time.time() + 60
    stamps = []
    while time.time() < deadline:
        stamps = start_stamps(log)
        if len(stamps) >= n:
            break
        time.sleep(0.005)
    peer.stop()
    if len(stamps) < n:
        return None
    return (sorted(stamps)[n - 1] - before) / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--children", type=int, default=100)
    ap.add_argument("--peers", default="")
    a = ap.parse_args()
    peers = [P() for P in bench.PEERS if getattr(P, "idle", True)]
    if a.peers:
        peers = [p for p in peers if p.name in a.peers.split(",")]
    os.makedirs(bench.WORKROOT, exist_ok=True)
    times = {p.name: [] for p in peers}
    for run in range(1, a.runs + 1):
        for p in peers:
            ms = measure(p, a.children, run)
            if ms is not None:
                times[p.name].append(ms)
            print(f"run {run} {p.name}: {ms if ms is None else round(ms, 1)} ms", file=sys.stderr, flush=True)
    print(f"\n## Start-up: {a.children} children running\n")
    print("Time from just before the supervisor's exec to the last child's own start stamp (CLOCK_MONOTONIC), "
          f"median of {a.runs} runs (`Benchmarks/peers/startup.py`).\n")
    print("| system | ms to all children running (median) | runs |")
    print("|---|---:|---|")
    for p in peers:
        got = times[p.name]
        median = f"{statistics.median(got):,.1f}" if got else "did not start them all"
        print(f"| {p.label} | {median} | {', '.join(f'{t:,.0f}' for t in got)} |")


if __name__ == "__main__":
    main()

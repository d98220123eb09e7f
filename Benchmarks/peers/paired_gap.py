#!/usr/bin/python3
"""Restart gap measured in pairs: the floor and the event-loop supervisors at the same time.

The harness's gap test runs one peer at a time (round-robin, 3 runs of 50 restarts). On this
shared 2-core VM the machine's state drifts over minutes: the floor's own median moved from 872
to 1,213 µs from one run to the next, more than the 10% that separates a good supervisor from
the floor. Here the peers run at the same time instead, each with its own crashy child (the
harness's, living --life-ms), started a fraction of the child's life apart so that their
restarts never overlap: every peer's gaps are taken over the same minutes, under the same load.
A gap overlapped by another peer's restart (its exit to its next start, widened by --guard-ms)
is left out and counted. Ratios to the floor come with a 95% bootstrap interval.

Run by run.sh after the harness (UVS_PAIRED_RESTARTS=0 skips it), or by hand:
    UVS_PEERS_HARNESS=... UVS_BIN=... python3 paired_gap.py [--restarts 200] [--peers a,b,c]
"""
import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import uvs_peer  # noqa: E402,F401  (adds uv-supervisor to bench.PEERS)
import bench  # noqa: E402


def restarts(events):
    """(exit, next start) stamp pairs, in ns, of a one-child log."""
    pairs, last_exit = [], None
    for tag, t, _ in events:
        if tag == "exit":
            last_exit = t
        elif tag == "start" and last_exit is not None:
            pairs.append((last_exit, t))
            last_exit = None
    return pairs


def overlapped(window, others, guard_ns):
    exit_t, start_t = window
    return any(o_exit <= start_t + guard_ns and o_start >= exit_t - guard_ns for o_exit, o_start in others)


def bootstrap_ratio(gaps, floor_gaps, rounds=2000, seed=1):
    """95% interval of median(gaps) / median(floor_gaps), both resampled."""
    rng = random.Random(seed)
    ratios = []
    for _ in range(rounds):
        a = statistics.median(rng.choices(gaps, k=len(gaps)))
        b = statistics.median(rng.choices(floor_gaps, k=len(floor_gaps)))
        ratios.append(a / b)
    ratios.sort()
    return ratios[int(0.025 * rounds)], ratios[int(0.975 * rounds) - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--restarts", type=int, default=200, help="restarts per peer (default 200)")
    ap.add_argument("--life-ms", type=int, default=1100, help="how long the child lives (default 1100)")
    ap.add_argument("--guard-ms", type=float, default=2.0, help="widening of the overlap check (default 2)")
    ap.add_argument("--peers", default="posix_spawn,libuv,uv-supervisor",
                    help="comma-separated; the first is the floor the ratios refer to")
    a = ap.parse_args()
    by_name = {P.name: P for P in bench.PEERS}
    names = a.peers.split(",")
    unknown = [n for n in names if n not in by_name]
    if unknown or len(names) < 2:
        sys.exit(f"paired_gap: need at least two known peers, got {a.peers!r} (known: {', '.join(by_name)})")
    peers = [by_name[n]() for n in names]
    os.makedirs(bench.WORKROOT, exist_ok=True)
    logs = {}
    stagger = a.life_ms / 1000 / len(peers)
    started = []
    try:
        for p in peers:
            work = bench.fresh_work(f"paired_gap_{p.name}")
            logs[p.name] = os.path.join(work, "crashy.log")
            p.start(1, {"CRASHY_LOG": logs[p.name], "CRASHY_MS": str(a.life_ms), "CRASHY_MODE": "exit"}, work)
            started.append(p)
            time.sleep(stagger)
        deadline = time.time() + (a.restarts + 2) * (a.life_ms / 1000 + 0.1) + 30
        while time.time() < deadline:
            if all(bench.count_starts(logs[p.name]) > a.restarts for p in peers):
                break
            time.sleep(0.5)
    finally:
        leftovers = sum(p.stop() for p in started)
    windows = {p.name: restarts(bench.read_log(logs[p.name]))[:a.restarts] for p in peers}
    guard = int(a.guard_ms * 1e6)
    gaps, excluded = {}, {}
    for p in peers:
        others = [w for q in peers if q is not p for w in windows[q.name]]
        kept = [w for w in windows[p.name] if not overlapped(w, others, guard)]
        excluded[p.name] = len(windows[p.name]) - len(kept)
        gaps[p.name] = [(start - exit_t) / 1000 for exit_t, start in kept]
    floor = peers[0]
    if any(len(gaps[p.name]) < 10 for p in peers):
        sys.exit("paired_gap: too few restarts measured: "
                 + ", ".join(f"{p.name} {len(gaps[p.name])}" for p in peers))

    print(f"\n## Restart gap, peers at the same time\n")
    print(f"Each peer supervises one child living {a.life_ms} ms; all {len(peers)} run together, started "
          f"{stagger * 1000:.0f} ms apart so that no two restarts overlap (a gap within {a.guard_ms:g} ms of "
          f"another peer's restart is left out). Gap = the child's exit stamp to its successor's start stamp. "
          f"`Benchmarks/peers/paired_gap.py --restarts {a.restarts}`; leftovers killed at the end: {leftovers}.\n")
    print(f"| system | gaps | left out | p50 µs | p90 µs | p99 µs | p50 / {floor.name} (95% interval) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    floor_gaps = gaps[floor.name]
    for p in peers:
        g = gaps[p.name]
        p50 = statistics.median(g)
        if p is floor:
            ratio = "1"
        else:
            low, high = bootstrap_ratio(g, floor_gaps)
            ratio = f"{p50 / statistics.median(floor_gaps):.3f} ({low:.3f} to {high:.3f})"
        print(f"| {p.label} | {len(g)} | {excluded[p.name]} | {p50:,.0f} | {bench.pct(g, 90):,.0f} | "
              f"{bench.pct(g, 99):,.0f} | {ratio} |")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""uv-supervisor as one more peer of the team's process-supervisor harness.

The harness (bench.py, report.py and its C helpers) lives in ../shared/peers-process; run.sh
here copies it into .build-peers/ (so that its results never overwrite the shared ones), adds
this peer and runs it. Everything bench.py accepts passes through.
"""
import os
import sys

HARNESS = os.environ["UVS_PEERS_HARNESS"]      # the copy made by run.sh
UVS_BIN = os.environ["UVS_BIN"]                # directory with uv-supervisor and uv-supervisor-config
sys.path.insert(0, HARNESS)

import bench  # noqa: E402


class UvSupervisor(bench.Peer):
    """`uv-supervisor run CONFIG`: N permanent children, no backoff, as the other peers are run."""
    name, label = "uv-supervisor", "uv-supervisor (this project; config file, no backoff, sentinel on)"
    # No per-service supervisors (the harness's orphan test would take the sentinel for one);
    # the descendant sentinel is counted with the daemon in sup_pids below.
    sup_comms = ()

    def version(self):
        import subprocess
        return subprocess.run([os.path.join(UVS_BIN, "uv-supervisor"), "--version"],
                              capture_output=True, text=True).stdout.strip()

    def prepare(self, n):
        children = "".join(
            f"  - id: c{i}\n    command: [{bench.CRASHY}]\n    backoff: none\n" for i in range(n))
        with open(os.path.join(self.work, "uvs.yaml"), "w") as f:
            # UVS_PEER_DAEMON_EXTRA adds daemon settings (e.g. "kill-descendants: false") to
            # measure what a feature costs.
            extra = os.environ.get("UVS_PEER_DAEMON_EXTRA", "")
            f.write("daemon:\n  log-level: off\n" + (f"  {extra}\n" if extra else "")
                    + "intensity: {max-restarts: 1000000000, period: 1s}\n"
                    + "children:\n" + children)

    def cmd(self, n):
        return [os.path.join(UVS_BIN, "uv-supervisor"), "run", os.path.join(self.work, "uvs.yaml")]

    def sup_pids(self):
        # The daemon and its descendant sentinel (a fork of it named uvs-sentinel), whose
        # memory is the daemon's price too.
        if not self.proc:
            return []
        procs = bench.all_procs()
        sentinels = [p for p in bench.descendants(self.proc.pid, procs)
                     if procs[p][0] == "uvs-sentinel" and procs[p][1] not in ("Z", "X")]
        return [self.proc.pid] + sentinels


bench.PEERS.append(UvSupervisor)

if __name__ == "__main__":
    bench.main()

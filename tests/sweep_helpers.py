"""Test-only helpers of the sweep tests (not collected by pytest).

Importing this module registers the rule ``flaky``: BP that raises (or kills its own process)
while a marker file exists. Run as a script, it starts a sweep (serial, one thread, two seeds)
that SIGKILLs itself just before the N-th rename of a KIND file (config, metrics or done: a
status file saying done) into place in the results store:

    python tests/sweep_helpers.py OUT KIND N CONFIG_JSON
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import bioplaus
from bioplaus.rules import Backprop


@bioplaus.rules.register("flaky")
class Flaky(Backprop):
    """BP that fails while the file ``marker`` exists: it raises, or with ``kill`` SIGKILLs its process."""

    def __init__(self, marker: str = "", kill: bool = False) -> None:
        self.marker, self.kill = marker, kill

    def update(self, model, ctx) -> None:
        if self.marker and Path(self.marker).exists():
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"flaky failure: {self.marker} exists")
        super().update(model, ctx)


def kill_before_rename(kind: str, n: int) -> None:
    """SIGKILL this process just before the ``n``-th rename of a ``kind`` file (config, metrics, done status)."""
    real_replace, seen = os.replace, [0]

    def replace(src, dst):
        name = Path(dst).name
        matches = {
            "config": name == "config.json",
            "metrics": name == "metrics.csv",
            "done": name == "status.json" and json.loads(Path(src).read_text())["status"] == "done",
        }[kind]
        if matches:
            seen[0] += 1
            if seen[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    os.replace = replace


if __name__ == "__main__":
    out, kind, n, config = sys.argv[1:]
    kill_before_rename(kind, int(n))
    bioplaus.sweep(json.loads(config), seeds=2, out=out, workers=1, threads=1, progress=False)

"""CPU seconds of a process tree, for per-core figures that hold on a loaded machine:
wall-clock rates fall when other work shares the cores, CPU seconds per event do not
(much)."""

from __future__ import annotations

import os
from pathlib import Path


def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of a process and its descendants (Linux /proc): live ones
    directly, exited ones through their parents' children times (e.g. the tesseract
    processes the OCR runtime spawns per request)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d.name)] = int(fields[1])
        cpu[int(d.name)] = sum(int(x) for x in fields[11:15]) / tick

    def under(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parent.get(pid, 1)
        return False

    return sum(c for p, c in cpu.items() if under(p))

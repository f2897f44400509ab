"""CPU placement for the 1 kHz loop and the process on the other end of it (franka-sim).

A SCHED_FIFO loop and a simulator sharing a core preempt each other and miss 1 ms deadlines;
on a machine with spare cores each gets its own (:attr:`LibfrankaConfig.cpus`,
``FrankaSimServer(cpus=)``, ``bench franka --pin auto``).
"""

from __future__ import annotations

import os

__all__ = ["check_cpus", "split_cpus"]


def _available() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def check_cpus(cpus, name: str) -> tuple[int, ...] | None:
    """``cpus`` as a tuple of CPU indices this process may use (or None); a clear error otherwise."""
    if cpus is None:
        return None
    try:
        out = tuple(int(c) for c in cpus)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of CPU indices, got {cpus!r}") from None
    avail = _available()
    if not out or any(c not in avail for c in out):
        raise ValueError(f"{name} {list(out)} must be a non-empty subset of this process's CPUs {sorted(avail)}")
    return out


def split_cpus() -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """(peer cores, loop cores): the last available core for the peer (franka-sim), the others for
    our 1 kHz loop, so neither preempts the other; (None, None) on a single core."""
    cpus = sorted(_available())
    if len(cpus) < 2:
        return None, None
    return (cpus[-1],), tuple(cpus[:-1])

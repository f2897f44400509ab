"""Shared by the system tests that run the node graph with the built-in launcher (their
``monitor`` fixture is in conftest.py): a condition wait that fails at once when a node of the
launched graph exits early."""

from __future__ import annotations

import time

from async_vla_ros.bringup.launcher import Launcher


def wait_for(cond, timeout: float, launcher: Launcher) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` s pass; a node that exits meanwhile fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        assert launcher.check(), "a node exited early:\n" + "\n".join(line for n in launcher.nodes for line in n.tail)
        time.sleep(0.05)
    return cond()

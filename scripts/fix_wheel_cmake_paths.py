"""Rewrite the wheel builder's Python paths in the ROS wheels' exported CMake files.

The ros-kilted-* wheels export CMake config files that point at the Python of the machine
that built them (``/opt/python/cp311-cp311/...``). Generating our own messages against the
venv needs them to point at this venv's Python include dir and numpy include dir.
Idempotent: files already rewritten are left alone.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy

_BUILDER = re.compile(r"/opt/python/cp3\d+-cp3\d+[^\";\s)]*")


def _replacement(match: re.Match) -> str:
    text = match.group(0)
    if "numpy" in text and text.rstrip("/").endswith("include"):
        return numpy.get_include()
    if text.rstrip("/").endswith(("include/python3.11", "include/python3.12")) or "/include/python" in text:
        return sysconfig.get_paths()["include"]
    raise SystemExit(f"unexpected wheel-builder path in CMake file: {text}")


def main(prefix: str) -> int:
    changed = 0
    for path in Path(prefix, "share").rglob("*.cmake"):
        text = path.read_text()
        if "/opt/python/" not in text:
            continue
        path.write_text(_BUILDER.sub(_replacement, text))
        changed += 1
    print(f"[setup] rewrote wheel-builder Python paths in {changed} CMake files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else sys.prefix))

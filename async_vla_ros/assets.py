"""Locate (and fetch, once) the MuJoCo Menagerie Franka Panda model.

The Menagerie Panda MJCF with its meshes (Apache-2.0) ships inside the PyPI wheel
``genesis-world`` under ``genesis/assets/xml/franka_emika_panda/``. We download that
wheel without installing it and unzip only that folder into a cache directory:

    ${ASYNC_VLA_ROS_CACHE:-~/.cache/async_vla_ros}/menagerie/franka_emika_panda/

``python -m async_vla_ros.assets`` fetches it (``make setup`` calls this); a second call
returns immediately.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

GENESIS_WHEEL = "genesis-world==1.4.5"
_PREFIX_IN_WHEEL = "genesis/assets/xml/franka_emika_panda/"
_MARKER = ".complete"


def cache_dir() -> Path:
    """Root of the project's download cache."""
    root = os.environ.get("ASYNC_VLA_ROS_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "async_vla_ros"


def panda_dir() -> Path:
    """Folder holding ``panda.xml``, ``panda_nohand.xml`` and ``assets/``."""
    return cache_dir() / "menagerie" / "franka_emika_panda"


def panda_available() -> bool:
    return (panda_dir() / _MARKER).exists()


def require_panda() -> Path:
    """Return the model folder or raise a clear error saying how to get it."""
    if not panda_available():
        raise FileNotFoundError(
            f"The Menagerie Panda model is not in {panda_dir()}. "
            "Run `make setup` or `python -m async_vla_ros.assets` to fetch it."
        )
    return panda_dir()


def fetch_panda(verbose: bool = True) -> Path:
    """Download the genesis-world wheel (no install) and extract the Panda folder. Idempotent."""
    target = panda_dir()
    if panda_available():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        if verbose:
            print(f"[assets] downloading {GENESIS_WHEEL} (Panda MJCF + meshes) ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", GENESIS_WHEEL, "-d", tmp],
            check=True,
        )
        wheels = list(Path(tmp).glob("genesis_world-*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download of {GENESIS_WHEEL} produced no wheel in {tmp}")
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(wheels[0]) as zf:
            members = [m for m in zf.namelist() if m.startswith(_PREFIX_IN_WHEEL) and not m.endswith("/")]
            for m in members:
                out = staging / m[len(_PREFIX_IN_WHEEL) :]
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if not (staging / "panda.xml").exists():
            raise RuntimeError("panda.xml not found in the genesis-world wheel; has its layout changed?")
        (staging / _MARKER).write_text(GENESIS_WHEEL + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    if verbose:
        print(f"[assets] Panda model in {target}", flush=True)
    return target


if __name__ == "__main__":
    print(fetch_panda())

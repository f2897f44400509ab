"""Hugging Face libraries stay offline: no hub access is ever attempted.

LeRobot, transformers and huggingface_hub read these variables when they are first imported, and
without them every config / tokenizer lookup retries the hub (slowly, and off this machine).
:func:`apply_hf_offline` runs when :mod:`async_vla_ros` is imported, i.e. before any of our
entry points (CLI, nodes, scripts) can import those libraries; the tests' conftest calls it too.

``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are forced to ``1`` (a LeRobot policy is loaded
from a local folder; see docs/lerobot.md); ``HF_HOME`` defaults to a local cache folder so the
libraries never write into a shared home cache unless the user points it there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HUB_MODULES = ("huggingface_hub", "transformers", "lerobot", "datasets")
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def default_hf_home() -> Path:
    """``$XDG_CACHE_HOME/async_vla_ros/hf`` (``~/.cache/async_vla_ros/hf``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "async_vla_ros" / "hf"


def apply_hf_offline(hf_home: str | os.PathLike | None = None) -> list[str]:
    """Set the offline variables (and ``HF_HOME`` unless set); returns the names of hub modules
    that were imported while the variables were not yet set (they may have read the old values:
    callers that care treat a non-empty list as an error)."""
    was_offline = all(os.environ.get(var) == "1" for var in OFFLINE_VARS)
    for var in OFFLINE_VARS:
        os.environ[var] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if hf_home is not None:
        os.environ["HF_HOME"] = str(hf_home)
    else:
        os.environ.setdefault("HF_HOME", str(default_hf_home()))
    return [] if was_offline else [m for m in HUB_MODULES if m in sys.modules]

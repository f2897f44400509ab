"""The ``config/`` folder (YAML: node parameters, graphs, method presets), read one way.

Neutral module (no ROS, no torch): bringup, the presets catalogue, eval and the nodes read
configuration through :func:`load_config`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PACKAGE", "ConfigError", "config_dir", "load_config"]

PACKAGE = "async_vla_ros"


class ConfigError(ValueError):
    """Bad launch arguments or configuration (message says what and how to fix it)."""


def config_dir() -> Path:
    """The ``config/`` folder: the repository's, else the installed share folder."""
    repo = Path(__file__).resolve().parents[1] / "config"
    if (repo / "graph.yaml").is_file():
        return repo
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        share = Path(prefix) / "share" / PACKAGE / "config"
        if (share / "graph.yaml").is_file():
            return share
    raise ConfigError(f"config/graph.yaml not found (looked in {repo} and share/{PACKAGE}/config of {prefixes})")


def load_config(name: str, directory: Path | None = None) -> dict[str, Any]:
    """A YAML file of ``config/`` as a dict."""
    path = (directory or config_dir()) / name
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"missing config file {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping")
    return data

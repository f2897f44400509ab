"""Policy backends the policy node can serve, behind the one ``ChunkPolicy`` interface.

* ``flow``: a flow-matching checkpoint (``policy.base.load_policy``); ``checkpoint`` is a path,
  or empty for the shipped default of the task (``async_vla_ros/checkpoints/``).
* ``expert``: the task's scripted expert (``sim.experts.ScriptedExpert``) as a chunk policy,
  for development and tests without trained weights.

Why here and not in ``policy/``: ``policy`` depends only on ``core`` (docs/architecture.md);
the expert lives in ``sim``, and only the nodes (and the lockstep runner) may tie the two
together. Other backends register with :func:`register_node_backend`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from async_vla_ros.policy.base import ChunkPolicy

__all__ = [
    "BackendSpec",
    "register_node_backend",
    "node_backends",
    "make_backend",
    "default_checkpoint",
    "CHECKPOINT_DIR",
]

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


@dataclass(frozen=True)
class BackendSpec:
    """What the policy node asks a backend factory for."""

    name: str  # registry name ("flow", "expert", ...)
    task: str  # task the policy is for (expert: which expert; flow: default checkpoint)
    checkpoint: str = ""  # path ('' : the backend's default)
    horizon: int = 8  # H for backends that choose it (expert); checkpoints carry their own
    n_steps: int = 0  # denoising steps (0: the checkpoint's setting)
    bid_n: int = 0  # BID samples (0: the checkpoint's setting)
    beta: float = 0.0  # RTC guidance clip (<= 0: the checkpoint's setting)
    seed: int = 0  # backend noise seed
    weak_checkpoint: str = ""  # BID forward contrast: a weaker flow checkpoint ('' : none)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("backend name must not be empty")
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")


Factory = Callable[[BackendSpec], ChunkPolicy]
_REGISTRY: dict[str, Factory] = {}


def register_node_backend(name: str, factory: Factory) -> None:
    """Register ``factory(spec) -> ChunkPolicy`` under ``name`` (no silent overwrite)."""
    if name in _REGISTRY and _REGISTRY[name] is not factory:
        raise ValueError(f"node backend {name!r} is already registered")
    _REGISTRY[name] = factory


def node_backends() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def make_backend(spec: BackendSpec) -> ChunkPolicy:
    """Build the backend; unknown names raise ValueError with a "did you mean"."""
    if spec.name not in _REGISTRY:
        close = difflib.get_close_matches(spec.name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown policy backend {spec.name!r}{hint}; known: {', '.join(node_backends())}")
    return _REGISTRY[spec.name](spec)


def default_checkpoint(task: str, directory: Path | None = None, kind: str = "base") -> Path:
    """The shipped ``kind`` checkpoint of ``task`` (``<task>_<kind>.pt``, see
    ``async_vla_ros.checkpoints``); FileNotFoundError that says what to do instead."""
    from async_vla_ros.checkpoints import checkpoint_path

    try:
        return checkpoint_path(task, kind, directory if directory is not None else CHECKPOINT_DIR)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"no shipped {kind} checkpoint for task {task!r} ({exc}); pass checkpoint:=PATH, "
            "or use the scripted expert (backend 'expert')"
        ) from exc


def _flow(spec: BackendSpec) -> ChunkPolicy:
    import dataclasses

    from async_vla_ros.policy.base import FlowPolicyBackend, SamplerSettings, load_checkpoint

    path = Path(os.path.expanduser(spec.checkpoint)) if spec.checkpoint else default_checkpoint(spec.task)
    ckpt = load_checkpoint(path)
    if ckpt.get("backend", "flow") != "flow":
        raise ValueError(f"{path} is a {ckpt['backend']!r} checkpoint, not a flow one")
    settings = SamplerSettings.from_dict(ckpt.get("sampler_settings", {}))
    changes = {"num_threads": 1, "seed": int(spec.seed)}
    if spec.n_steps > 0:
        changes["n_steps"] = int(spec.n_steps)
    if spec.bid_n > 0:
        changes["bid_n"] = int(spec.bid_n)
    if spec.beta > 0:
        changes["beta"] = float(spec.beta)
    weak = None
    if spec.weak_checkpoint:
        from async_vla_ros.policy.networks import FlowNetConfig, build_network

        wck = load_checkpoint(Path(os.path.expanduser(spec.weak_checkpoint)))
        weak = build_network(FlowNetConfig.from_dict(wck["network_config"]))
        weak.load_state_dict(wck["state_dict"])
    return FlowPolicyBackend.from_checkpoint(ckpt, settings=dataclasses.replace(settings, **changes), weak_network=weak)


def _expert(spec: BackendSpec) -> ChunkPolicy:
    from async_vla_ros.sim.experts import ScriptedExpert

    if spec.checkpoint:
        raise ValueError("the 'expert' backend takes no checkpoint (leave it empty)")
    return ScriptedExpert(spec.task, horizon=spec.horizon, seed=spec.seed)


register_node_backend("flow", _flow)
register_node_backend("expert", _expert)

"""Method presets, once: ``config/methods.yaml`` read into frozen :class:`MethodPreset` records.

Three words, three things:

* a **preset** (``rtc``, ``remac_rtc``, ``a2c2`` ...) is what a user picks (``method:=``,
  ``--method``): a merge strategy, a checkpoint kind and whether the A2C2 head runs;
* a **merge strategy** (:mod:`async_vla_ros.core.strategies`) is how the scheduler stitches
  chunks and what a request carries;
* a **sampler** (``vanilla`` | ``rtc`` | ``rtc_jf`` | ``prefix`` | ``remac`` | ``bid``) is how the
  policy draws a chunk;
  the strategy alone decides it (:func:`~async_vla_ros.core.strategies.strategy_sampler`).

Bringup, ``eval``, ``bench paper``, ``replay`` and the demo all read presets here; models for a
preset load through :func:`async_vla_ros.policy.registry.load_models`.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from async_vla_ros.config import ConfigError, load_config
from async_vla_ros.core.strategies import STRATEGIES, make_strategy, strategy_sampler

__all__ = ["MethodPreset", "PresetError", "presets", "get_preset", "preset_names"]


class PresetError(ConfigError):
    """Unknown preset name or a malformed ``config/methods.yaml`` entry."""


@dataclass(frozen=True)
class MethodPreset:
    """One row of ``config/methods.yaml``."""

    name: str  # preset name, used everywhere (CLI, launch argument, reports, plots)
    strategy: str  # merge strategy (core.strategies.STRATEGIES)
    checkpoint: str = "base"  # checkpoint kind the policy loads (<task>_<kind>.pt)
    a2c2: bool = False  # the A2C2 correction head adds its residual
    help: str = ""  # one line for --help and reports
    ablation: bool = False  # only run on request (bench paper --ablations)
    schedule: str | None = None  # soft-mask schedule of an RTC-type strategy (None: the strategy's default)
    beta: float | None = None  # guidance clip of an RTC-type sampler, sent with each request (None: the policy's)
    backends: tuple[str, ...] = ()  # policy backends that can serve it (empty: any; e.g. rtc_lerobot: lerobot)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise PresetError(f"preset name {self.name!r}: use letters, digits and '_' only")
        if self.strategy not in STRATEGIES:
            close = difflib.get_close_matches(str(self.strategy), list(STRATEGIES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PresetError(
                f"preset {self.name!r}: unknown merge strategy {self.strategy!r}{hint}; known: {', '.join(STRATEGIES)}"
            )
        if not isinstance(self.a2c2, bool) or not isinstance(self.ablation, bool):
            raise PresetError(f"preset {self.name!r}: a2c2 and ablation must be true or false")
        if isinstance(self.backends, str) or not all(isinstance(b, str) and b for b in self.backends):
            raise PresetError(f"preset {self.name!r}: backends must be a list of backend names")
        object.__setattr__(self, "backends", tuple(self.backends))
        if not self.checkpoint or not isinstance(self.checkpoint, str):
            raise PresetError(f"preset {self.name!r}: checkpoint kind must be a non-empty string")
        if self.schedule is not None:
            try:
                make_strategy(self.strategy, schedule=self.schedule)
            except ValueError as exc:
                raise PresetError(f"preset {self.name!r}: {exc}") from exc
        if self.beta is not None:
            b = self.beta
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not (0 < b < float("inf")):
                raise PresetError(f"preset {self.name!r}: beta must be a number > 0, got {b!r}")
            if self.sampler not in ("rtc", "rtc_jf"):
                raise PresetError(f"preset {self.name!r}: beta applies to the rtc / rtc_jf samplers only")

    @property
    def strategy_options(self) -> tuple[tuple[str, object], ...]:
        """Keyword options of ``make_strategy`` this preset sets (``(("schedule", ...), ("beta", ...))``).

        The guidance clip is a strategy option: the strategy puts it into every request
        (``Guidance.beta`` -> ``RequestSpec.beta`` -> ``ChunkRequest.guidance_beta`` / ``infer(beta=)``),
        so one loaded policy serves every preset's beta, in the lockstep runner and in the nodes."""
        opts: list[tuple[str, object]] = []
        if self.schedule is not None:
            opts.append(("schedule", self.schedule))
        if self.beta is not None:
            opts.append(("beta", float(self.beta)))
        return tuple(opts)

    @property
    def sampler(self) -> str:
        """The sampler the policy runs for this preset (its strategy's)."""
        return strategy_sampler(self.strategy)

    @property
    def uses_weak(self) -> bool:
        """BID's forward contrast uses the task's weak snapshot (``base_weak``) when it exists."""
        return self.strategy == "bid"


_FIELDS = {"strategy", "checkpoint", "a2c2", "help", "ablation", "schedule", "beta", "backends"}


def _parse(table: Mapping) -> Mapping[str, MethodPreset]:
    out: dict[str, MethodPreset] = {}
    for name, row in table.items():
        if not isinstance(row, Mapping) or "strategy" not in row:
            raise PresetError(f"methods.yaml: preset {name!r} must be a mapping with at least 'strategy'")
        unknown = set(row) - _FIELDS
        if unknown:
            raise PresetError(f"methods.yaml: preset {name!r} has unknown field(s) {sorted(unknown)}")
        out[str(name)] = MethodPreset(name=str(name), **dict(row))
    if not out:
        raise PresetError("methods.yaml defines no preset")
    return MappingProxyType(out)


@functools.lru_cache(maxsize=8)
def _load(directory: Path | None) -> Mapping[str, MethodPreset]:
    return _parse(load_config("methods.yaml", directory).get("methods") or {})


def presets(directory: Path | None = None) -> Mapping[str, MethodPreset]:
    """All presets, in file order (read once per folder; read-only)."""
    return _load(directory)


def preset_names(ablations: bool = False, directory: Path | None = None, backend: str | None = None) -> tuple[str, ...]:
    """Preset names in file order; ablation presets only when ``ablations``; presets limited to
    some backends (``backends``) only when ``backend`` is one of them."""
    return tuple(
        n
        for n, p in presets(directory).items()
        if (ablations or not p.ablation) and (not p.backends or backend in p.backends)
    )


def get_preset(name: str, directory: Path | None = None) -> MethodPreset:
    """The preset ``name``; PresetError with a "did you mean" for an unknown one."""
    table = presets(directory)
    if name not in table:
        close = difflib.get_close_matches(str(name), list(table), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PresetError(f"unknown method preset {name!r}{hint}; known: {', '.join(table)}")
    return table[name]

"""One registry of policy backends, and one ``load`` of a task's models for a method preset.

A **policy spec** string selects a backend and what it loads:

* ``default``: the task's shipped flow checkpoints (``async_vla_ros/checkpoints/<task>_<kind>.pt``,
  the kind coming from the preset: ``base``, ``remac`` ...),
* a checkpoint path (``.pt``): that flow checkpoint, whatever the preset,
* ``NAME`` or ``NAME:TARGET``: the registered backend ``NAME`` (``expert``: the task's scripted
  expert), ``TARGET`` being what it loads (a folder, a file ...),
* ``SCHEME://ADDRESS``: the registered backend ``SCHEME`` with target ``ADDRESS`` (remote servers).

A backend is one module that calls :func:`register_backend` at import, plus its module name in
:data:`BACKEND_MODULES` (imported on first lookup, so ``policy`` keeps no static dependency on
``sim``, and optional heavy libraries load only when their backend is used)::

    register_backend(Backend("mine", load_mine, "what it is", kinds=("base",)))

``load_mine(request: BackendRequest) -> ChunkPolicy``. Checkpoint files name their backend
(``"backend": "flow"``); :func:`async_vla_ros.policy.base.load_policy` dispatches on it through
the same registry (``Backend.from_checkpoint``).

:func:`load_models` is the one way eval, ``bench paper``, replay (and the policy node, for one
policy) get a task's base / weak / REMAC / A2C2 models for a preset; a preset the backend cannot
serve is a :class:`BackendError` that says why (never a silent fallback).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from async_vla_ros import names as N
from async_vla_ros.core.strategies import SAMPLERS  # every sampler name, once
from async_vla_ros.presets import MethodPreset

__all__ = [
    "BACKEND_MODULES",
    "Backend",
    "BackendError",
    "BackendRequest",
    "BackendUnavailable",
    "PolicySpec",
    "PresetModels",
    "available_backends",
    "checkpoint_file",
    "get_backend",
    "load_models",
    "load_policy_spec",
    "parse_policy_spec",
    "policy_cameras",
    "register_backend",
]

# modules that register backends when imported (one line per backend module)
BACKEND_MODULES = (
    "async_vla_ros.policy.base",  # flow
    "async_vla_ros.sim.experts",  # expert
    "async_vla_ros.policy.openpi_backend",  # openpi (remote: openpi websocket server)
    "async_vla_ros.policy.lerobot_backend",  # lerobot (LeRobot policy folders; lerobot imported on load)
    "async_vla_ros.policy.lerobot_grpc_backend",  # lerobot-grpc (remote: LeRobot's stock gRPC policy server)
)


class BackendError(ValueError):
    """Unknown backend, bad policy spec, missing model file, or a preset the backend cannot serve."""


class BackendUnavailable(ConnectionError):
    """A remote backend cannot answer now (no server, connection lost, no reply in time).

    Transient: the caller answers the request as unavailable and asks again later; the backend
    reconnects on a later call. (The policy node does not count it towards its fatal-error limit.)
    """


@dataclass(frozen=True)
class BackendRequest:
    """What a backend's loader is asked for (one policy)."""

    task: str  # task the policy is for
    target: str = ""  # the spec after the backend name ('' : the backend's default for the task)
    kind: str = "base"  # checkpoint kind of the preset (default checkpoints: <task>_<kind>.pt)
    checkpoint_dir: str = ""  # folder of default checkpoints ('' : the shipped one)
    horizon: int = 8  # H for backends that choose it (expert); checkpoints carry their own
    n_steps: int = 0  # denoising steps (0: the checkpoint's)
    bid_n: int = 0  # BID samples (0: the checkpoint's)
    beta: float = 0.0  # RTC guidance clip (<= 0: the checkpoint's)
    seed: int | None = None  # backend noise seed (None: the checkpoint's / 0)
    num_threads: int | None = None  # torch threads set by the backend (None: the checkpoint's)
    weak: str = ""  # BID forward contrast: a weaker flow checkpoint path, 'default' (the task's, if any), ''

    def __post_init__(self) -> None:
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 1:
            raise BackendError(f"horizon must be an int >= 1, got {self.horizon!r}")


@dataclass(frozen=True)
class Backend:
    """A registered backend."""

    name: str  # registry name, used in policy specs
    load: Callable[[BackendRequest], Any]  # request -> ChunkPolicy
    help: str = ""  # one line for --help and docs
    kinds: tuple[str, ...] | None = None  # checkpoint kinds it can serve (None: any; expert: base only)
    samplers: tuple[str, ...] = SAMPLERS  # samplers it runs (others: the preset is refused)
    from_checkpoint: Callable[..., Any] | None = None  # (ckpt dict, **kw) -> ChunkPolicy for checkpoint files
    # request -> {camera: (h, w)} the policy takes, read cheaply (no model built): bringup renders
    # and ingests only these. None: the backend cannot tell before it runs (no cameras unless the
    # launch names them)
    cameras: Callable[[BackendRequest], dict[str, tuple[int, int]]] | None = None
    # infer takes a per-request guidance clip ``beta=`` (the preset's beta then travels with each
    # request); otherwise the registry loads the backend with the preset's beta
    per_request_beta: bool = False
    # None: presets with an A2C2 head run with the task's head; else why this backend's policy has none
    no_a2c2: str | None = None
    # request -> the A2C2 head file of this backend's policy (None: the task's <task>_a2c2.pt); it
    # raises BackendError saying how to make it when missing
    head_file: Callable[[BackendRequest], Path] | None = None
    # request -> the width of the observation state the policy reads (a VLA: its proprioception),
    # read cheaply (no model built): bringup refuses a head of another width before anything starts.
    # None: the backend cannot tell before it loads
    state_dim: Callable[[BackendRequest], int] | None = None

    def cannot_serve(self, preset: MethodPreset, target: str = "") -> str | None:
        """Why this backend cannot serve ``preset`` (None: it can)."""
        if preset.a2c2 and self.no_a2c2:
            return f"preset {preset.name!r} runs an A2C2 head: {self.no_a2c2}"
        if self.kinds is not None and preset.checkpoint not in self.kinds:
            return (
                f"the {self.name!r} backend has no {preset.checkpoint} model: preset {preset.name!r} needs the "
                f"task's {preset.checkpoint} checkpoint (use policy 'default' or a {preset.checkpoint} checkpoint path)"
            )
        if preset.sampler not in self.samplers:
            return (
                f"the {self.name!r} backend runs only the {'/'.join(self.samplers)} sampler(s); preset "
                f"{preset.name!r} needs {preset.sampler!r}"
            )
        return None


_REGISTRY: dict[str, Backend] = {}
_discovered = False


def register_backend(backend: Backend) -> None:
    """Add ``backend`` (no silent overwrite of another one under the same name)."""
    if not isinstance(backend, Backend):
        raise TypeError("register_backend takes a Backend")
    if not backend.name or not backend.name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"backend name {backend.name!r}: letters, digits, '-' and '_' only")
    old = _REGISTRY.get(backend.name)
    if old is not None and old != backend:
        raise ValueError(f"policy backend {backend.name!r} is already registered")
    _REGISTRY[backend.name] = backend


def _discover() -> None:
    global _discovered
    if not _discovered:
        _discovered = True
        for mod in BACKEND_MODULES:
            importlib.import_module(mod)


def available_backends() -> tuple[str, ...]:
    _discover()
    return tuple(sorted(_REGISTRY))


def get_backend(name: str) -> Backend:
    _discover()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BackendError(f"unknown policy backend {name!r}{hint}; known: {', '.join(available_backends())}")
    return _REGISTRY[name]


# ---------------------------------------------------------------------- policy specs
@dataclass(frozen=True)
class PolicySpec:
    """A parsed policy spec string."""

    text: str  # as given
    backend: str  # registry name
    target: str  # '' : the backend's default for the task

    @property
    def is_default(self) -> bool:
        return self.backend == "flow" and not self.target


def parse_policy_spec(text: str) -> PolicySpec:
    """``default`` | checkpoint path | ``NAME`` | ``NAME:TARGET`` | ``SCHEME://ADDRESS`` (module docstring)."""
    s = str(text).strip()
    if not s:
        raise BackendError("empty policy spec: use 'default', 'expert', a checkpoint path, or NAME:TARGET")
    if s in ("default", "state"):  # state: the privileged-state baseline, the task's shipped checkpoints
        return PolicySpec(s, "flow", "")
    if "://" in s:
        scheme, rest = s.split("://", 1)
        get_backend(scheme)
        return PolicySpec(s, scheme, rest)
    _discover()
    if s in _REGISTRY:
        return PolicySpec(s, s, "")
    head, sep, rest = s.partition(":")
    if sep and head in _REGISTRY:
        return PolicySpec(s, head, rest)
    return PolicySpec(s, "flow", s)  # a checkpoint path


def policy_cameras(spec: str, request: BackendRequest) -> dict[str, tuple[int, int]] | None:
    """The cameras (name -> (h, w)) the policy ``spec`` takes, without building it; None when
    its backend cannot tell (a remote server: name them at launch). BackendError as loading would."""
    parsed = parse_policy_spec(spec)
    backend = get_backend(parsed.backend)
    if backend.cameras is None:
        return None
    return dict(backend.cameras(replace(request, target=parsed.target)))


def checkpoint_file(task: str, kind: str, directory: str | Path | None = None) -> Path:
    """``<dir>/<task>_<kind>.pt`` (default: the shipped folder); BackendError saying what to do."""
    from async_vla_ros.checkpoints import checkpoint_path

    try:
        return checkpoint_path(task, kind, directory or None)
    except (FileNotFoundError, ValueError) as exc:
        raise BackendError(
            f"no {kind} checkpoint for task {task!r} ({exc}); pass a checkpoint path, "
            "or use the scripted expert (policy 'expert')"
        ) from exc


def load_policy_spec(spec: str | PolicySpec, request: BackendRequest) -> Any:
    """One policy for a spec (the policy node's path; presets are checked by :func:`load_models`)."""
    ps = spec if isinstance(spec, PolicySpec) else parse_policy_spec(spec)
    return get_backend(ps.backend).load(replace(request, target=ps.target))


# ---------------------------------------------------------------------- models for a preset
def _cached(cache: MutableMapping[Any, Any], key: Any, make: Callable[[], Any]) -> Any:
    if key not in cache:
        cache[key] = make()
    return cache[key]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _file_entry(path: Path) -> str:
    """``"path (sha)"`` for reports: a file of this package relative to the package's parent
    (``async_vla_ros/checkpoints/track_base.pt``), so reports name it the same from any checkout;
    any other file by its path as given."""
    pkg_parent = Path(__file__).resolve().parents[2]
    try:
        shown = Path(path).resolve().relative_to(pkg_parent)
    except ValueError:
        shown = path
    return f"{shown} ({_sha(Path(path))})"


@dataclass
class PresetModels:
    """A task's models for one preset."""

    preset: MethodPreset
    spec: PolicySpec
    policy: Any  # ChunkPolicy
    head: Any | None  # A2C2 CorrectionHead when the preset uses one
    files: dict[str, str] = field(default_factory=dict)  # role -> "path (sha)" of every file loaded

    @property
    def label(self) -> str:
        """What ran, for reports: the spec, and the checkpoint kind for ``default``."""
        return f"default ({self.preset.checkpoint})" if self.spec.is_default else self.spec.text


def load_models(
    task: str,
    preset: MethodPreset,
    policy: str = "default",
    *,
    checkpoint_dir: str | Path | None = None,
    a2c2: str = "default",
    request: BackendRequest | None = None,
    cache: MutableMapping[Any, Any] | None = None,
) -> PresetModels:
    """The policy (and A2C2 head) of ``task`` for ``preset`` under the policy spec ``policy``.

    ``default``: the task's ``<kind>`` checkpoint of the preset (+ its weak snapshot for BID, when
    present); ``a2c2``: ``default`` (the task's head) or a head file, used when the preset has
    ``a2c2``. ``request`` carries backend settings (seed, n_steps ...); ``cache`` (a dict) shares
    loaded models between presets of one run. Raises BackendError when the backend cannot serve
    the preset, or a file is missing.
    """
    spec = parse_policy_spec(policy)
    backend = get_backend(spec.backend)
    why = backend.cannot_serve(preset, spec.target)
    if why:
        raise BackendError(f"policy {spec.text!r} cannot serve preset {preset.name!r}: {why}")
    cdir = str(checkpoint_dir or "")
    req = replace(request or BackendRequest(task), task=task, target=spec.target, kind=preset.checkpoint)
    if preset.beta is not None and req.beta <= 0 and not backend.per_request_beta:
        # a backend without a per-request clip is loaded with the preset's (unless the caller set one);
        # the others get it with every request (the strategy's Guidance.beta), one model for all betas
        req = replace(req, beta=float(preset.beta))
    req = replace(req, checkpoint_dir=cdir)
    files: dict[str, str] = {}
    if spec.is_default:
        path = checkpoint_file(task, preset.checkpoint, cdir)
        files[preset.checkpoint] = _file_entry(path)
        req = replace(req, target=str(path))
        if preset.uses_weak and not req.weak:
            req = replace(req, weak="default")
    elif backend.name == "flow":
        path = Path(spec.target).expanduser()
        if not path.is_file():
            raise BackendError(f"policy {spec.text!r}: no such checkpoint file (or use 'default' / 'expert')")
        files["policy"] = _file_entry(path)
    if req.weak == "default":
        try:
            wpath = checkpoint_file(task, "base_weak", cdir)
        except BackendError:
            req = replace(req, weak="")  # BID then scores by backward coherence only
        else:
            req = replace(req, weak=str(wpath))
            files["base_weak"] = _file_entry(wpath)
    cache = {} if cache is None else cache
    pol = _cached(cache, ("policy", backend.name, req), lambda: backend.load(req))
    head = None
    if preset.a2c2:
        from async_vla_ros.policy.a2c2 import CorrectionHead

        if a2c2 != "default":
            hpath = Path(a2c2).expanduser()
        elif backend.head_file is not None:
            hpath = backend.head_file(req)
        else:
            hpath = checkpoint_file(task, "a2c2", cdir)
        if not hpath.is_file():
            raise BackendError(f"A2C2 head {hpath}: no such file")
        head = _cached(cache, ("head", str(hpath)), lambda: CorrectionHead.load(hpath))
        files["a2c2"] = _file_entry(hpath)
        check_head_fits(head, pol, f"policy {spec.text!r} cannot serve preset {preset.name!r}")
    return PresetModels(preset, spec, pol, head, files)


def check_head_fits(head: Any, policy: Any, context: str) -> None:
    """BackendError (prefixed ``context``) unless the A2C2 head reads what ``policy`` gives it: the
    state it reads (``policy_state``: a VLA's proprioception), its action size and horizon, and
    its features (``latent``) when the head takes them."""
    cfg = head.config
    reads = N.N_PROPRIO if getattr(policy, "reads_proprio", False) else int(policy.obs_dim)
    if (cfg.obs_dim, cfg.action_dim, cfg.horizon) != (reads, int(policy.action_dim), int(policy.horizon)):
        raise BackendError(
            f"{context}: the A2C2 head takes state {cfg.obs_dim}, action {cfg.action_dim}, H {cfg.horizon}; the "
            f"policy gives state {reads}, action {policy.action_dim}, H {policy.horizon}"
        )
    if cfg.latent_dim:
        if not hasattr(policy, "latent"):
            raise BackendError(f"{context}: the A2C2 head takes the base policy's latent, which it does not provide")
        have = getattr(policy, "latent_dim", cfg.latent_dim)
        if int(have) != cfg.latent_dim:
            raise BackendError(f"{context}: the A2C2 head takes {cfg.latent_dim} features, the policy gives {have}")

"""Pieces shared by the trainers: seeding, run provenance, LR schedule, EMA, resumable state.

Resume: next to every checkpoint ``X.pt`` a trainer writes ``X.pt.trainstate`` (torch file,
``weights_only``-loadable) with the raw (non-EMA) weights, the EMA weights, the optimiser state,
the step and the RNG states. ``--resume X.pt`` reloads both and continues to the configured
number of steps; the resulting run is step-for-step identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

TRAINSTATE_SUFFIX = ".trainstate"
TRAINSTATE_FORMAT = "async_vla_ros.trainstate/1"


def set_threads(n: int | None) -> None:
    """``torch.set_num_threads(n)`` (None: leave torch's default). One thread by default: the
    machine's cores are shared with a control loop and other jobs."""
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"num_threads must be None or an int >= 1, got {n!r}")
        torch.set_num_threads(n)


def git_commit(repo: str | os.PathLike | None = None) -> str:
    """``<sha>[+dirty]`` of the checkout holding this package, or "" when git is unavailable."""
    cwd = Path(repo) if repo is not None else Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance() -> dict[str, Any]:
    """Where and with what a run was made (JSON-compatible)."""
    return {
        "git_commit": git_commit(),
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def lr_at(step: int, total: int, base_lr: float, warmup: int, min_ratio: float = 0.05) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio * base_lr`` at ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac)))


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.shadow.items()}

    def load_state_dict(self, sd: Mapping[str, torch.Tensor]) -> None:
        missing = set(self.shadow) ^ set(sd)
        if missing:
            raise ValueError(f"EMA state does not match the module: {sorted(missing)[:5]}")
        self.shadow = {k: v.detach().clone() for k, v in sd.items()}


def rng_state(np_rng: np.random.Generator, gen: torch.Generator) -> dict[str, Any]:
    return {"numpy": np_rng.bit_generator.state, "torch_gen": gen.get_state(), "torch_global": torch.get_rng_state()}


def set_rng_state(state: Mapping[str, Any], np_rng: np.random.Generator, gen: torch.Generator) -> None:
    np_rng.bit_generator.state = state["numpy"]
    gen.set_state(state["torch_gen"])
    torch.set_rng_state(state["torch_global"])


def trainstate_path(ckpt: str | os.PathLike) -> Path:
    return Path(str(ckpt) + TRAINSTATE_SUFFIX)


def save_trainstate(
    ckpt: str | os.PathLike,
    *,
    kind: str,
    step: int,
    model_state: Mapping[str, torch.Tensor],
    ema_state: Mapping[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    rng: Mapping[str, Any],
    config: Mapping[str, Any],
    history: Iterable[Mapping[str, Any]],
) -> Path:
    """Write the resume file next to ``ckpt`` (atomic rename)."""
    path = trainstate_path(ckpt)
    tmp = path.with_name(path.name + ".partial")
    torch.save(
        {
            "format": TRAINSTATE_FORMAT,
            "kind": kind,
            "step": int(step),
            "model": {k: v.detach().cpu().clone() for k, v in model_state.items()},
            "ema": None if ema_state is None else {k: v.detach().cpu().clone() for k, v in ema_state.items()},
            "optimizer": optimizer.state_dict(),
            "rng": _rng_to_saveable(rng),
            "config": dict(config),
            "history": [dict(h) for h in history],
        },
        tmp,
    )
    os.replace(tmp, path)
    return path


def _rng_to_saveable(rng: Mapping[str, Any]) -> dict[str, Any]:
    npst = rng["numpy"]
    return {
        "numpy": {
            "bit_generator": npst["bit_generator"],
            "state": {k: int(v) for k, v in npst["state"].items()},
            "has_uint32": int(npst["has_uint32"]),
            "uinteger": int(npst["uinteger"]),
        },
        "torch_gen": rng["torch_gen"],
        "torch_global": rng["torch_global"],
    }


def load_trainstate(ckpt: str | os.PathLike, kind: str) -> dict[str, Any]:
    """Read the resume file of ``ckpt`` and check it belongs to a ``kind`` trainer."""
    path = trainstate_path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: {path} not found (it is written next to every checkpoint)")
    st = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(st, dict) or st.get("format") != TRAINSTATE_FORMAT:
        raise ValueError(f"{path}: not a {TRAINSTATE_FORMAT} file")
    if st.get("kind") != kind:
        raise ValueError(f"{path}: written by the {st.get('kind')!r} trainer, not {kind!r}")
    return st


class DictConfig:
    """Mixin for the trainers' frozen config dataclasses: a plain dict in the checkpoint and back,
    refusing fields this version does not know."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**dict(d))


def resume_state(ckpt: str | os.PathLike, kind: str, config_cls: Any, config: Any, demos: Any) -> dict[str, Any]:
    """Load the resume file of ``ckpt`` and check it continues the same run: same config (only
    ``steps`` may change) and the same demonstrations (content fingerprint)."""
    st = load_trainstate(ckpt, kind)
    saved = config_cls.from_dict(st["config"]["config"])
    if dataclasses.replace(saved, steps=config.steps) != config:
        raise ValueError("cannot resume: the run's config differs from the saved one (only --steps may change)")
    if st["config"]["demos"]["fingerprint"] != demos.describe()["fingerprint"]:
        raise ValueError("cannot resume: the demonstrations differ from the ones the run started with")
    return st


def unfinished(path: str | os.PathLike) -> str | None:
    """Why what a training or recording command left at ``path`` is not a finished result, or None
    when it is (what ``scripts/train_vla.sh`` checks before it reuses a step with RESUME=1).

    The marks are the ones the commands write last: a demonstrations folder's ``meta/info.json``
    (``demos``, after every episode); a LeRobot policy folder's sidecar ``async_vla_ros.json`` whose
    ``training.step`` reached its ``training.config.steps`` (``train vla`` also writes it at each
    checkpoint, every ``ckpt_every`` steps); an A2C2 head file's recorded ``step`` reaching its
    ``steps`` (it is rewritten at each checkpoint too); a ``train remac`` folder's sidecar with its
    ``remac`` record (written once, at its end). A killed run leaves one of those short or missing:
    ``train vla`` writes its folder, sidecar without a training record, before its first step.
    """
    import json

    path = Path(path)
    if not path.exists():
        return "missing"
    if path.is_file():
        try:
            rec = torch.load(path, map_location="cpu", weights_only=True)["extra"]["train_config"]
            step, steps = int(rec["step"]), int(rec["config"]["steps"])
        except Exception as exc:  # noqa: BLE001 - any unreadable file is not a result
            return f"unreadable ({type(exc).__name__}: {exc})"
        return None if step >= steps else f"a checkpoint at step {step} of {steps}"
    side = path / "async_vla_ros.json"
    if side.is_file():
        record = json.loads(side.read_text())
        training = record.get("training")
        if training is None:
            if "remac" in record:  # `train remac` writes its folder once, at its end
                return None
            # `train vla` builds its folder (sidecar without a training record) before its first
            # step and adds the record at its first checkpoint: a run killed before it leaves this
            return "no training record (a `train vla` ended before its first checkpoint)"
        step, steps = int(training["step"]), int(training["config"]["steps"])
        return None if step >= steps else f"a checkpoint at step {step} of {steps}"
    if (path / "meta" / "info.json").is_file():
        return None
    return "no record of a finished run (no async_vla_ros.json or meta/info.json)"


def progress(total: int, initial: int, desc: str, enabled: bool):
    """A tqdm bar (disabled: a no-op object with the same methods)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, leave=True)


def _end_with_parent(parent: int) -> None:
    """In a forked process: be sent SIGTERM when the thread that forked it ends (Linux's
    ``PR_SET_PDEATHSIG``; rank 0's training thread, which outlives the ranks' own exit in
    :meth:`DataParallel.finish`), so a rank 0 killed outright (SIGKILL, the OOM killer) does not
    leave its other ranks waiting out their meeting's timeout; exit at once if it has already
    ended."""
    import signal

    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # ended between the fork and the prctl
        os._exit(1)


class DataParallel:
    """Synchronous data parallelism over ``world`` processes of this machine, forked from the one
    that builds it: each rank computes the gradient of its share of a batch, :meth:`average` makes
    the gradients and the loss their mean over the ranks, and every rank's optimiser then takes the
    same step, so the weights stay equal without being sent.

    Why: a tiny VLA's training step on this 2-core machine runs on one core (torch's intra-op
    threads buy nothing at these tensor sizes, docs/training.md), while two processes with half the
    batch each run side by side. Build it once everything the ranks share exists (data, model,
    optimiser, generators): the fork copies it, and the data's pages stay shared (copy-on-write,
    never written). The ranks meet in shared memory: a ``world x (n + 1)`` float32 buffer (each
    rank's flat gradient and loss in its row) and a barrier, both made before the fork; every rank
    then sums the rows in the same order, so all get bitwise the same mean. (gloo's all-reduce over
    127.0.0.1 took 1.9 ms for these 628,000 values, but its polling threads slowed both ranks'
    compute: a 2-process step cost more than a 1-process one, measured.)

    Rank 0 is the calling process; it alone validates, writes and logs. Ranks > 0 end in
    :meth:`finish` (``os._exit``), never returning to the caller. A rank that fails breaks the
    barrier (:meth:`abort`), so the others' wait fails at once; one that dies without a word makes
    their wait fail after ``timeout_s``. Rank 0 stops the other ranks (SIGTERM, by their pids); on
    Linux a rank > 0 is also sent SIGTERM when rank 0 ends (killed outright included).
    """

    def __init__(self, world: int, params: Iterable[nn.Parameter], timeout_s: float = 120.0) -> None:
        import multiprocessing

        if world < 2:
            raise ValueError(f"data parallelism needs at least 2 processes, got {world}")
        params = list(params)
        n = sum(p.numel() for p in params)
        ctx = multiprocessing.get_context("fork")
        self._barrier = ctx.Barrier(world)
        self._buf = torch.zeros((world, n + 1), dtype=torch.float32).share_memory_()
        self._timeout_s = float(timeout_s)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the tokenizer's threads do not survive a fork
        self.world, self.rank, self.children = int(world), 0, []
        parent = os.getpid()
        for r in range(1, self.world):
            pid = os.fork()
            if pid == 0:
                self.rank, self.children = r, []
                _end_with_parent(parent)
                break
            self.children.append(pid)

    def _meet(self) -> None:
        import threading

        try:
            self._barrier.wait(self._timeout_s)
        except threading.BrokenBarrierError as exc:
            raise RuntimeError(
                f"data-parallel rank {self.rank}: another training process failed or ended "
                f"(no meeting within {self._timeout_s:g} s, or it gave up)"
            ) from exc

    def _mean(self, flat: torch.Tensor) -> torch.Tensor:
        self._buf[self.rank].copy_(flat)
        self._meet()  # every row written
        mean = self._buf.sum(0) / self.world  # the same rows, the same order: the same result everywhere
        self._meet()  # every row read: the next step may overwrite
        return mean

    def average(self, params: list[nn.Parameter], loss: torch.Tensor) -> float:
        """Every parameter's gradient and ``loss`` become their mean over the ranks (an unused
        parameter counts as a zero gradient); returns the mean loss."""
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).float() for p in params]
            + [loss.detach().reshape(1).float()]
        )
        mean = self._mean(flat)
        offset = 0
        for p in params:
            p.grad = mean[offset : offset + p.numel()].view_as(p).to(p.dtype).clone()
            offset += p.numel()
        return float(mean[-1])

    def max_weight_difference(self, params: Iterable[nn.Parameter]) -> float:
        """The largest difference of a weight between two ranks (0 while they stay in step)."""
        flat = torch.cat([p.detach().reshape(-1).float() for p in params] + [torch.zeros(1)])
        self._buf[self.rank].copy_(flat)
        self._meet()
        diff = float((self._buf.max(0).values - self._buf.min(0).values).max())
        self._meet()
        return diff

    def finish(self) -> None:
        """Ranks > 0 exit here (status 0). Rank 0 waits for them and raises if one did not exit
        cleanly."""
        if self.rank > 0:
            os._exit(0)
        failed = []
        for pid in self.children:
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                failed.append(f"pid {pid}: exit status {os.waitstatus_to_exitcode(status)}")
        self.children = []
        if failed:
            raise RuntimeError(f"data-parallel training processes failed: {', '.join(failed)}")

    def abort(self) -> None:
        """After an error: the barrier is broken (the other ranks' waits fail at once); a rank > 0
        prints its traceback and exits 1 here; rank 0 gives the other ranks 5 s to end so
        (their tracebacks are what says which failed first), stops the rest (SIGTERM, by pid) and
        reaps them, then the caller re-raises."""
        import signal
        import time
        import traceback

        with contextlib.suppress(Exception):
            self._barrier.abort()
        if self.rank > 0:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        left, deadline = list(self.children), time.monotonic() + 5.0
        while left and time.monotonic() < deadline:
            left = [pid for pid in left if os.waitpid(pid, os.WNOHANG)[0] == 0]
            if left:
                time.sleep(0.05)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in left:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children = []


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.5g}"
    return "-" if v is None else str(v)


def train_loop(
    *,
    step_fn: Callable[[int], tuple[torch.Tensor, Mapping[str, float]]],
    params: Iterable[nn.Parameter],
    opt: torch.optim.Optimizer,
    config: Any,
    step: int,
    stop_at: int | None,
    validate: Callable[[], Mapping[str, Any]],
    write: Callable[[int], Any],
    out: str | os.PathLike,
    history: list[dict[str, Any]],
    t_start: float,
    desc: str,
    progress_bar: bool,
    log: Callable[[str], None],
    lr_schedule: bool = True,
    after_step: Callable[[int], None] | None = None,
    entry_info: Callable[[int], Mapping[str, Any]] | None = None,
    on_step_end: Callable[[int], None] | None = None,
    loss_name: str = "loss",
    grad_sync: Callable[[list[nn.Parameter], torch.Tensor], float] | None = None,
) -> int:
    """The one optimisation loop of the trainers (base, REMAC both variants, A2C2): from ``step``
    to ``end = min(config.steps, stop_at)`` (``stop_at`` None: ``config.steps``), returns the step
    reached. ``config`` is the trainer's config: ``steps``, ``grad_clip``, ``val_every``,
    ``ckpt_every`` and, with ``lr_schedule``, ``lr`` and ``warmup`` are read from it.

    Per step: with ``lr_schedule``, :func:`lr_at` (warm-up, cosine) into every param group (else
    the optimiser's constant rate),
    ``loss, parts = step_fn(step)``, backward, gradient-norm clip ``grad_clip`` over ``params``,
    ``opt.step()``, then ``after_step(step + 1)`` (an EMA update). Every ``val_every`` steps and at
    ``steps``: one history entry ``{"step", **entry_info(step), **validate(), "seconds",
    "train_<loss_name>", "train_<part>"...}`` (training means since the previous entry), shown on
    the bar or logged. Then ``on_step_end(step)`` (an extra snapshot), and ``write(step)`` every
    ``ckpt_every`` steps and at ``end``; after the loop, ``write(step)`` if ``out`` does not exist yet.
    ``grad_sync(params, loss)``, between backward and the clip, makes the gradients and the loss the
    mean over data-parallel processes and returns that loss (:meth:`DataParallel.average`).
    """
    steps, grad_clip = int(config.steps), float(config.grad_clip)
    val_every, ckpt_every = int(config.val_every), int(config.ckpt_every)
    end = steps if stop_at is None else min(steps, int(stop_at))
    params = list(params)
    bar = progress(steps, step, desc, progress_bar)
    agg: dict[str, float] = {}
    n_agg = 0
    try:
        while step < end:
            if lr_schedule:
                lr = lr_at(step, steps, config.lr, config.warmup)
                for g in opt.param_groups:
                    g["lr"] = lr
            loss, parts = step_fn(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            loss_value = grad_sync(params, loss) if grad_sync is not None else loss.item()
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            step += 1
            if after_step is not None:
                after_step(step)
            n_agg += 1
            agg[loss_name] = agg.get(loss_name, 0.0) + loss_value
            for k, v in parts.items():
                agg[k] = agg.get(k, 0.0) + float(v)
            bar.update(1)
            if step % val_every == 0 or step == steps:
                entry: dict[str, Any] = {"step": step}
                if entry_info is not None:
                    entry.update(entry_info(step))
                entry.update(validate())
                entry["seconds"] = round(time.perf_counter() - t_start, 2)
                entry.update({f"train_{k}": v / max(n_agg, 1) for k, v in agg.items()})
                history.append(entry)
                shown = {k: v for k, v in entry.items() if k not in ("step", "seconds")}
                bar.set_postfix(
                    {k: _short(v) for k, v in shown.items() if k.startswith("val") or k == f"train_{loss_name}"}
                )
                if not progress_bar:
                    log(f"step {step}: " + " ".join(f"{k} {_short(v)}" for k, v in shown.items()))
                agg, n_agg = {}, 0
            if on_step_end is not None:
                on_step_end(step)
            if step % ckpt_every == 0 or step == end:
                write(step)
    finally:
        bar.close()
    if not Path(out).exists():
        write(step)
    return step

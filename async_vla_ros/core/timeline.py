"""Step-indexed action plan with provenance, executed history and switch points.

Every planned step ``t`` holds ``(action (A,), chunk_id, k)``: the action, the chunk it came from
and its index inside that chunk (for blended strategies such as temporal ensembling, the newest
contributing chunk). Steps are integer control steps (docs/architecture.md, "Time").

The timeline answers:

* :meth:`ActionTimeline.planned` -- what is planned for step ``t``;
* :meth:`ActionTimeline.frozen_prefix` -- which actions will execute before a chunk requested at
  ``t_req`` with delay ``d`` can arrive (steps ``t_req .. t_req+d-1``);
* :meth:`ActionTimeline.remaining_of_chunk` -- what remains of the chunk executing at ``t``;
* :meth:`ActionTimeline.prefix` -- the guidance prefix ``Y (H, A)`` for a request at ``t_req``.

All arrays handed out are copies.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["ActionTimeline", "PlanEntry", "ExecutedStep", "SwitchPoint"]


class PlanEntry(NamedTuple):
    """One planned step."""

    action: np.ndarray  # (A,)
    chunk_id: int
    k: int  # index inside the source chunk


@dataclass(frozen=True)
class ExecutedStep:
    """One step that was handed to the robot (``action_at`` returned it)."""

    t: int
    chunk_id: int
    k: int
    action: np.ndarray  # (A,), read-only copy


@dataclass(frozen=True)
class SwitchPoint:
    """The first executed step of a new source chunk."""

    t: int
    from_chunk: int | None  # None: the first chunk, or the plan had run dry before
    to_chunk: int
    k: int  # index of the new chunk executed at t


class ActionTimeline:
    """The plan (future steps) and the record of what executed (past steps).

    ``history`` keeps the last ``history_len`` executed steps (bounded memory for long runs).
    """

    def __init__(self, action_dim: int, history_len: int = 100_000) -> None:
        if not isinstance(action_dim, int) or action_dim < 1:
            raise ValueError(f"action_dim must be a positive int, got {action_dim!r}")
        if not isinstance(history_len, int) or history_len < 1:
            raise ValueError(f"history_len must be a positive int, got {history_len!r}")
        self.action_dim = action_dim
        self._plan: dict[int, PlanEntry] = {}
        self._history: deque[ExecutedStep] = deque(maxlen=history_len)
        self._switches: list[SwitchPoint] = []
        self._last_exec_t: int | None = None
        self._last_exec_chunk: int | None = None

    # ------------------------------------------------------------------ writing
    def clear(self) -> None:
        """Forget plan, history and switch points."""
        self._plan.clear()
        self._history.clear()
        self._switches.clear()
        self._last_exec_t = None
        self._last_exec_chunk = None

    def set_plan_from(self, t_start: int, actions: np.ndarray, chunk_ids, ks) -> None:
        """Replace the plan from step ``t_start`` on with ``actions (n, A)``.

        ``chunk_ids`` and ``ks`` are scalars or length-``n`` sequences. Steps before ``t_start``
        keep their plan; every planned step ``>= t_start`` is dropped first.
        """
        acts = np.asarray(actions, dtype=np.float64)
        if acts.ndim != 2 or acts.shape[1] != self.action_dim:
            raise ValueError(f"actions must be (n, {self.action_dim}), got {acts.shape}")
        if not np.all(np.isfinite(acts)):
            raise ValueError("actions contain non-finite values")
        n = acts.shape[0]
        cids = np.broadcast_to(np.asarray(chunk_ids, dtype=np.int64), (n,))
        kk = np.broadcast_to(np.asarray(ks, dtype=np.int64), (n,))
        self.truncate_from(t_start)
        for i in range(n):
            a = acts[i].copy()
            a.setflags(write=False)
            self._plan[t_start + i] = PlanEntry(a, int(cids[i]), int(kk[i]))

    def truncate_from(self, t: int) -> None:
        """Drop every planned step ``>= t``."""
        for step in [s for s in self._plan if s >= t]:
            del self._plan[step]

    def prune_before(self, t: int) -> None:
        """Drop planned steps ``< t`` (they are in the past)."""
        for step in [s for s in self._plan if s < t]:
            del self._plan[step]

    # ------------------------------------------------------------------ queries
    def planned(self, t: int) -> PlanEntry | None:
        """The plan for step ``t`` (action copy) or None."""
        e = self._plan.get(t)
        if e is None:
            return None
        return PlanEntry(e.action.copy(), e.chunk_id, e.k)

    def is_standstill(self, t: int) -> bool:
        """True when nothing is planned for step ``t`` nor for ``t - 1``: the robot is (or will
        be) holding, so a chunk arriving at ``t`` starts at its own first action."""
        return (t not in self._plan) and ((t - 1) not in self._plan)

    def planned_steps(self, t_from: int | None = None) -> list[int]:
        """Sorted planned steps (``>= t_from`` if given)."""
        steps = sorted(self._plan)
        if t_from is not None:
            steps = [s for s in steps if s >= t_from]
        return steps

    def last_planned_step(self) -> int | None:
        """The latest planned step, or None when the plan is empty."""
        return max(self._plan) if self._plan else None

    def contiguous_from(self, t: int) -> int:
        """Number of consecutive planned steps starting at ``t``."""
        n = 0
        while (t + n) in self._plan:
            n += 1
        return n

    def remaining(self, t: int) -> np.ndarray:
        """Actions planned for the consecutive steps ``t, t+1, ...``: ``(n, A)`` (n may be 0)."""
        n = self.contiguous_from(t)
        out = np.empty((n, self.action_dim), dtype=np.float64)
        for i in range(n):
            out[i] = self._plan[t + i].action
        return out

    def remaining_of_chunk(self, t: int) -> tuple[int | None, np.ndarray, np.ndarray]:
        """What remains of the chunk planned at ``t``: ``(chunk_id, actions (n, A), ks (n,))``.

        Follows consecutive steps while they still come from the same chunk. ``(None, (0, A),
        (0,))`` when nothing is planned at ``t``.
        """
        first = self._plan.get(t)
        if first is None:
            return None, np.empty((0, self.action_dim)), np.empty((0,), dtype=np.int64)
        acts, ks = [], []
        i = 0
        while (e := self._plan.get(t + i)) is not None and e.chunk_id == first.chunk_id:
            acts.append(e.action)
            ks.append(e.k)
            i += 1
        return first.chunk_id, np.array(acts, dtype=np.float64), np.array(ks, dtype=np.int64)

    def frozen_prefix(self, t_req: int, d: int) -> np.ndarray | None:
        """Actions that execute at steps ``t_req .. t_req+d-1``: ``(d, A)``.

        These run before a chunk requested at ``t_req`` with delay ``d`` can arrive. Steps past
        the end of the plan are padded with the last planned action (the robot holds it). None
        when nothing is planned at ``t_req``.
        """
        if d < 0:
            raise ValueError(f"d must be >= 0, got {d}")
        if t_req not in self._plan:
            return None
        return self.prefix(t_req, d)[0]

    def prefix(self, t_req: int, length: int) -> tuple[np.ndarray, int]:
        """Guidance prefix for a request at ``t_req``: ``(Y (length, A), n_real)``.

        ``Y[i]`` is the plan's action for step ``t_req + i``; after the last consecutive planned
        step it is padded with that last action. ``n_real`` counts the planned (unpadded) rows.
        With nothing planned at ``t_req``, Y is all zeros and ``n_real == 0``.
        """
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        rem = self.remaining(t_req)
        n_real = min(rem.shape[0], length)
        y = np.zeros((length, self.action_dim), dtype=np.float64)
        if n_real > 0:
            y[:n_real] = rem[:n_real]
            y[n_real:] = rem[n_real - 1]
        return y, n_real

    # ------------------------------------------------------------------ execution
    def execute(self, t: int) -> PlanEntry | None:
        """Look up step ``t`` and record it as executed (idempotent for a repeated ``t``).

        Returns None (nothing planned: the caller holds its last safe command). ``t`` must not go
        backwards.
        """
        if self._last_exec_t is not None and t < self._last_exec_t:
            raise ValueError(f"execution cannot go back in time: t={t} < last executed {self._last_exec_t}")
        e = self._plan.get(t)
        if t == self._last_exec_t:
            return None if e is None else PlanEntry(e.action.copy(), e.chunk_id, e.k)
        self._last_exec_t = t
        if e is None:
            self._last_exec_chunk = None
            return None
        if e.chunk_id != self._last_exec_chunk:
            self._switches.append(SwitchPoint(t, self._last_exec_chunk, e.chunk_id, e.k))
        self._last_exec_chunk = e.chunk_id
        self._history.append(ExecutedStep(t, e.chunk_id, e.k, e.action))
        return PlanEntry(e.action.copy(), e.chunk_id, e.k)

    @property
    def history(self) -> list[ExecutedStep]:
        """Executed steps, oldest first (bounded by ``history_len``)."""
        return list(self._history)

    @property
    def switch_points(self) -> list[SwitchPoint]:
        """Every step where execution moved to a different source chunk."""
        return list(self._switches)

    def last_executed(self) -> ExecutedStep | None:
        """The most recent executed step, or None."""
        return self._history[-1] if self._history else None

    def executed_provenance(self) -> list[tuple[int, int, int]]:
        """``[(t, chunk_id, k), ...]`` for the executed history (handy in tests and reports)."""
        return [(h.t, h.chunk_id, h.k) for h in self._history]

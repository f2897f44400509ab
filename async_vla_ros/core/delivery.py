"""The simulated-delay delivery loop: chunks answer requests ``d`` control steps later.

One :class:`DelayedDelivery` per :class:`~async_vla_ros.core.scheduler.ChunkScheduler`; the
lockstep runner, replay and the robot session all step it the same way (docs/architecture.md):

1. :meth:`DelayedDelivery.arrive` hands every chunk whose arrival step has come to
   ``on_chunk`` (arrival order; ties in request order);
2. :meth:`DelayedDelivery.request` asks the scheduler whether to request (``maybe_request``);
3. the caller answers the request with the policy (:mod:`async_vla_ros.core.requests`) and
   :meth:`DelayedDelivery.send` files the chunk for step ``t + d``; with ``d = 0`` it is merged
   at once, before step ``t``'s action is chosen;
4. the caller takes ``scheduler.action_at(t)``.

The delay is asked per chunk: ``delay(spec) -> int`` (a constant, the recorded delays of a bag in
order, a seeded jitter, a distribution ...), so a caller changes what delays it simulates
without touching the loop. :func:`constant_delay` and :func:`cycled_delays` are the common ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from async_vla_ros.core.chunk import Chunk
from async_vla_ros.core.scheduler import ChunkScheduler, MergeResult, RequestSpec

__all__ = ["DelaySource", "DelayedDelivery", "constant_delay", "cycled_delays", "step_requests"]

DelaySource = Callable[[RequestSpec], int]  # delay (control steps) of the chunk answering a request


def constant_delay(d: int) -> DelaySource:
    """Every chunk arrives ``d`` steps after its request."""
    d = _check_delay(d)
    return lambda spec: d


def cycled_delays(delays: Sequence[int], d_max: int | None = None) -> DelaySource:
    """Delays taken in order from ``delays``, cycled (e.g. a recording's measured delays), each
    capped at ``d_max``."""
    vals = [_check_delay(d) for d in delays]
    if not vals:
        raise ValueError("cycled_delays needs at least one delay")
    it = itertools.cycle(vals)
    return lambda spec: next(it) if d_max is None else min(next(it), int(d_max))


def _check_delay(d: Any) -> int:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
        raise ValueError(f"a delay must be an int >= 0 (control steps), got {d!r}")
    return int(d)


class DelayedDelivery:
    """Chunks in flight for one scheduler (module docstring).

    ``on_merge(chunk, result, t)``: called for every chunk handed to the scheduler (e.g. raise
    on a reject, or record the merge). ``delays_used`` lists the delay of every chunk sent.
    """

    def __init__(
        self,
        scheduler: ChunkScheduler,
        delay: DelaySource,
        on_merge: Callable[[Chunk, MergeResult, int], None] | None = None,
    ) -> None:
        if not callable(delay):
            raise TypeError("delay must be a callable (RequestSpec) -> int; use constant_delay(d)")
        self.scheduler = scheduler
        self.delay = delay
        self.on_merge = on_merge
        self._pending: list[tuple[int, int, Chunk]] = []  # (arrival step, send order, chunk)
        self._sent = 0
        self.next_chunk_id = 0
        self.delays_used: list[int] = []

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def clear(self) -> None:
        """Drop the chunks in flight (a new episode)."""
        self._pending.clear()

    def arrive(self, t: int) -> list[MergeResult]:
        """Merge every chunk due by step ``t``."""
        due = [p for p in self._pending if p[0] <= t]
        if not due:
            return []
        self._pending = [p for p in self._pending if p[0] > t]
        out = []
        for _, _, chunk in sorted(due, key=lambda p: (p[0], p[1])):
            res = self.scheduler.on_chunk(chunk, t)
            if self.on_merge is not None:
                self.on_merge(chunk, res, t)
            out.append(res)
        return out

    def request(self, t: int) -> RequestSpec | None:
        """``scheduler.maybe_request(t)``."""
        return self.scheduler.maybe_request(t)

    def send(self, spec: RequestSpec, actions: np.ndarray, t: int) -> Chunk:
        """File the chunk ``actions (H, A)`` answering ``spec`` (requested at step ``t``) for
        step ``t + delay(spec)``; delay 0 merges it now. Returns the chunk."""
        d = _check_delay(self.delay(spec))
        chunk = Chunk(self.next_chunk_id, spec.request_id, spec.t_obs, actions)
        self.next_chunk_id += 1
        self.delays_used.append(d)
        self._pending.append((t + d, self._sent, chunk))
        self._sent += 1
        if d == 0:
            self.arrive(t)
        return chunk


def step_requests(deliveries: Iterable[tuple[int, DelayedDelivery]], t: int) -> tuple[list[int], list[RequestSpec]]:
    """``request(t)`` for each ``(index, delivery)``: the indices that requested and their specs."""
    idx, specs = [], []
    for i, dl in deliveries:
        sp = dl.request(t)
        if sp is not None:
            idx.append(i)
            specs.append(sp)
    return idx, specs

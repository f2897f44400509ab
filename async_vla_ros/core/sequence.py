"""Ids that only grow while their sender runs (episode ids, observation ids, plan ids): pure, no clock.

A receiver orders its inputs by such ids: a newer id is taken, an older one is stale and dropped.
Two real situations break "only grow", and with a plain ``id > last`` test either one stops the robot
for good, because every later message is dropped as stale:

* the sender restarted (the sim node, camera ingestion or the scheduler died and was relaunched):
  its ids start again at 1;
* one bad message (rogue or corrupted) carried a huge id, and the receiver moved to it.

Rule (:class:`SequenceTracker`): ``rewind_after`` consecutive older ids that do not go backwards
among themselves (the same older episode again and again; older observation ids counting up again),
with no current-or-newer id in between, mean the sender has moved on: the receiver follows it (a
*rewind*). A single stale message (reordering, a late one from before) is still dropped. At 20 Hz the
default of 10 is half a second of holding, during which the robot holds its last safe command.

Episodes repeat their id on every observation (``repeats_ok=True``: the same id is ``SAME``);
message counters must not (``repeats_ok=False``: the same id is a ``DUPLICATE``).

    episodes = SequenceTracker("episode", rewind_after=10)
    d = episodes.update(msg.episode_id)
    if d.kind is SeqEvent.STALE: drop(d.describe())
    elif d.starts_new: reset(...)   # NEW or REWIND
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["SeqEvent", "SeqDecision", "SequenceTracker"]


class SeqEvent(enum.Enum):
    SAME = "same"  # the current id again (episodes): use it
    DUPLICATE = "duplicate"  # the current id again (counters): drop it
    NEW = "new"  # a newer id: take it
    STALE = "stale"  # an older id: drop it
    REWIND = "rewind"  # older ids ``rewind_after`` times in a row: the sender restarted; take it


@dataclass(frozen=True)
class SeqDecision:
    kind: SeqEvent
    what: str  # what the ids number ("episode", "obs_id", ...)
    seen: int  # the message's id
    current: int  # the current id after this message
    previous: int  # the current id before it
    streak: int = 0  # STALE: older ids in a row so far

    @property
    def accepted(self) -> bool:
        """True for SAME, NEW and REWIND: the message is used."""
        return self.kind in (SeqEvent.SAME, SeqEvent.NEW, SeqEvent.REWIND)

    @property
    def starts_new(self) -> bool:
        """True for NEW and REWIND (for episodes: the caller resets its per-episode state)."""
        return self.kind in (SeqEvent.NEW, SeqEvent.REWIND)

    def describe(self) -> str:
        if self.kind is SeqEvent.REWIND:
            return (
                f"{self.what} went back from {self.previous} to {self.seen} and kept going from there: "
                f"its sender restarted, or {self.previous} came from a bad message; following it"
            )
        if self.kind is SeqEvent.STALE:
            return f"{self.what} {self.seen} after {self.previous} ({self.streak} older in a row)"
        if self.kind is SeqEvent.DUPLICATE:
            return f"{self.what} {self.seen} repeated"
        return f"{self.what} {self.seen}"


class SequenceTracker:
    """See the module docstring. ``current`` is ``initial`` (0) before the first message."""

    def __init__(self, what: str, rewind_after: int = 10, repeats_ok: bool = False, initial: int = 0) -> None:
        if isinstance(rewind_after, bool) or not isinstance(rewind_after, int) or rewind_after < 1:
            raise ValueError(f"rewind_after must be an int >= 1, got {rewind_after!r}")
        self.what = what
        self.rewind_after = rewind_after
        self.repeats_ok = bool(repeats_ok)
        self.current = int(initial)
        self.rewinds = 0
        self._older: int | None = None  # the last older id of the current streak
        self._streak = 0

    def reset(self, initial: int = 0) -> None:
        """Forget the current id (the receiver starts over)."""
        self.current = int(initial)
        self._older, self._streak = None, 0

    def update(self, seq_id: int) -> SeqDecision:
        sid, prev = int(seq_id), self.current
        if sid >= prev:
            self._older, self._streak = None, 0
            if sid > prev:
                self.current = sid
                return SeqDecision(SeqEvent.NEW, self.what, sid, sid, prev)
            kind = SeqEvent.SAME if self.repeats_ok else SeqEvent.DUPLICATE
            return SeqDecision(kind, self.what, sid, prev, prev)
        # older than current: a streak goes on while its ids do not go backwards among themselves
        # (and, for counters, do not repeat)
        continues = self._older is not None and (sid > self._older or (self.repeats_ok and sid == self._older))
        self._streak = self._streak + 1 if continues else 1
        self._older = sid
        if self._streak >= self.rewind_after:
            self.current = sid
            self._older, self._streak = None, 0
            self.rewinds += 1
            return SeqDecision(SeqEvent.REWIND, self.what, sid, sid, prev)
        return SeqDecision(SeqEvent.STALE, self.what, sid, prev, prev, streak=self._streak)

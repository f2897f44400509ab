"""Which observation a chunk request is for, when requests may go out a step ahead of it: pure, no clock.

The scheduler can send the request that the next observation would send as soon as the request
slot is free (after an observation that sent none, or after a chunk merged), naming that next
observation by id; the policy starts the moment it arrives instead of waiting for the request's
round trip (``ChunkScheduler.maybe_request(t, ahead=)`` says why that request is the same one).
Observation ids count up by one per observation sent (camera_ingestion), so "the next observation"
is the last one's id + 1.

Rules (:class:`AheadRequests`), one request per observation at most:

* an observation that a request sent ahead already named sends no request of its own;
* no request is sent ahead for an observation that already has one. In one process with the
  policy, the chunk answering the request sent ahead for observation k can come back before the
  scheduler takes observation k; the merge frees the request slot, but observation k is answered:
  observation k, when it comes, sends the request for k + 1;
* no request is sent ahead when the scheduler's step is already past the step after the last
  observation (the stream paused): the next observation requests for itself;
* observation ids that go back (camera_ingestion restarted and counts from 1 again) forget what
  was named before.

    ahead = AheadRequests()
    if ahead.observed(step, stamp, obs_id):        # this observation needs its own request
        spec = core.maybe_request(t) ...
    target = ahead.next_target(core_t)             # slot free: the next observation's request?
    if target is not None and (spec := core.maybe_request(core_t, ahead=target.ahead)):
        send(spec, obs_id=target.obs_id, obs_after=target.after_stamp)
        ahead.named(target.obs_id)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AheadTarget:
    """The observation a request sent now, ahead of it, would be for."""

    obs_id: int  # the next observation's id (last + 1)
    ahead: int  # steps from the scheduler's step to that observation's: 1, or 0 once the clock entered it
    after_stamp: int  # stamp (ns) of the last observation: the named one is stamped after it


class AheadRequests:
    """See the module docstring."""

    def __init__(self) -> None:
        self.last: tuple[int, int, int] | None = None  # (step, stamp ns, obs_id) of the last observation
        self.named_id = -1  # the highest observation id a request sent ahead named

    def observed(self, step: int, stamp_ns: int, obs_id: int) -> bool:
        """Record an observation; True when it needs a request of its own (none sent ahead named it)."""
        if self.last is not None and obs_id <= self.last[2]:
            self.named_id = -1  # ids went back: a restarted sender; what was named is not these
        self.last = (int(step), int(stamp_ns), int(obs_id))
        return obs_id != self.named_id

    def next_target(self, core_step: int) -> AheadTarget | None:
        """The observation a request sent now would be for, or None when none may be sent ahead."""
        if self.last is None:
            return None
        step, stamp, obs_id = self.last
        if obs_id + 1 <= self.named_id:
            return None  # the next observation already has its request
        ahead = step + 1 - core_step
        if ahead < 0:
            return None  # the stream paused: the next observation requests for itself
        return AheadTarget(obs_id + 1, ahead, stamp)

    def named(self, obs_id: int) -> None:
        """A request sent ahead named ``obs_id``."""
        self.named_id = max(self.named_id, int(obs_id))

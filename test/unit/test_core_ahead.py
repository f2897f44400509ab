"""core/ahead.py: one request per observation when requests go out a step ahead of it."""

from __future__ import annotations

from async_vla_ros.core.ahead import AheadRequests, AheadTarget

DT = 50_000_000


def _stream(gate: AheadRequests, core, steps, ids=None):
    """Drive the gate like the scheduler node: each observation requests for itself unless named,
    then the slot (always free here: the policy answers within the step) sends the next one ahead.
    Returns the observation ids requests were sent for, in order."""
    sent = []
    for i, step in enumerate(steps):
        obs_id = ids[i] if ids else step + 1
        core["t"] = max(core["t"], step)
        if gate.observed(step, step * DT, obs_id):
            sent.append(obs_id)
        target = gate.next_target(core["t"])
        if target is not None:
            sent.append(target.obs_id)
            gate.named(target.obs_id)
    return sent


def test_a_steady_stream_sends_each_observations_request_one_step_ahead():
    gate = AheadRequests()
    sent = _stream(gate, {"t": 0}, range(6))
    # the first observation requests for itself, every later one was named ahead: one each
    assert sent == [1, 2, 3, 4, 5, 6, 7]
    assert len(sent) == len(set(sent))


def test_the_target_is_the_next_id_stamped_after_the_last_observation():
    gate = AheadRequests()
    assert gate.next_target(0) is None  # no observation yet
    assert gate.observed(4, 4 * DT, 17)
    assert gate.next_target(4) == AheadTarget(obs_id=18, ahead=1, after_stamp=4 * DT)
    # the clock already entered the next step (its observation is late): ahead 0, same observation
    assert gate.next_target(5) == AheadTarget(obs_id=18, ahead=0, after_stamp=4 * DT)
    # two steps past the last observation: the stream paused, nothing is sent ahead
    assert gate.next_target(6) is None


def test_a_chunk_back_before_its_observation_sends_no_second_request_for_it():
    gate = AheadRequests()
    assert gate.observed(0, 0, 1)
    gate.named(gate.next_target(0).obs_id)  # ahead for observation 2
    # its chunk merges before the scheduler takes observation 2: the core moved to step 1 and the
    # slot is free, but observation 2 has its request
    assert gate.next_target(1) is None
    # observation 2 arrives: no request of its own, the one for observation 3 goes ahead
    assert not gate.observed(1, DT, 2)
    assert gate.next_target(1) == AheadTarget(3, 1, DT)


def test_a_burst_after_a_stall_keeps_one_request_per_observation():
    # the sim catches up after a stall: observations of steps 3..7 come back to back, the core is
    # already at step 7 when the first of them is taken
    gate = AheadRequests()
    core = {"t": 0}
    sent = _stream(gate, core, [0, 1, 2])
    core["t"] = 7
    sent += _stream(gate, core, [3, 4, 5, 6, 7, 8])
    assert len(sent) == len(set(sent)), sent
    # steps 3..6 are behind the clock: each requests for itself, none ahead (a paused stream)
    assert sent == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_a_dropped_observation_is_requested_again_by_the_next():
    # observation 3 never comes: the request sent ahead for it is answered with an error, and
    # observation 4 (not named) requests for itself
    gate = AheadRequests()
    sent = _stream(gate, {"t": 0}, [0, 1, 3], ids=[1, 2, 4])
    assert sent == [1, 2, 3, 4, 5]


def test_observation_ids_that_restart_forget_what_was_named():
    gate = AheadRequests()
    _stream(gate, {"t": 0}, range(5))  # named up to 6
    assert gate.named_id == 6
    # camera_ingestion restarted: ids from 1 again (a new episode, steps from 0)
    assert gate.observed(0, 0, 1)  # needs its own request
    assert gate.named_id == -1
    assert gate.next_target(0) == AheadTarget(2, 1, 0)


def test_ids_carry_across_an_episode_boundary():
    # episodes do not restart the ids (camera_ingestion counts on); the scheduler resets its core
    # and steps, and the gate keeps one request per observation across it
    gate = AheadRequests()
    sent = _stream(gate, {"t": 0}, range(3))
    sent += _stream(gate, {"t": 0}, range(3), ids=[4, 5, 6])  # the new episode's steps from 0
    assert sent == [1, 2, 3, 4, 5, 6, 7]

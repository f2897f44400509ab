"""SequenceTracker: newer ids are taken at once, a stray older one is dropped, a sender that
restarted (or a bad message with a huge id) is followed after `rewind_after` older ids in a row."""

import pytest

from async_vla_ros.core.sequence import SeqEvent, SequenceTracker

E = SeqEvent


def kinds(tracker, ids):
    return [tracker.update(i).kind for i in ids]


def test_episodes_count_up_and_repeat():
    t = SequenceTracker("episode", rewind_after=3, repeats_ok=True)
    assert kinds(t, [1, 1, 1, 2, 2, 5]) == [E.NEW, E.SAME, E.SAME, E.NEW, E.SAME, E.NEW]
    assert t.current == 5 and t.rewinds == 0


def test_counters_flag_repeats_as_duplicates():
    t = SequenceTracker("obs_id", rewind_after=3)
    assert kinds(t, [1, 2, 2, 3]) == [E.NEW, E.NEW, E.DUPLICATE, E.NEW]
    d = t.update(3)
    assert not d.accepted and d.describe() == "obs_id 3 repeated"


def test_single_stale_message_is_dropped_and_the_streak_resets():
    t = SequenceTracker("episode", rewind_after=3, repeats_ok=True)
    t.update(4)
    d = t.update(3)
    assert d.kind is E.STALE and not d.accepted and (d.seen, d.current, d.streak) == (3, 4, 1)
    assert d.describe() == "episode 3 after 4 (1 older in a row)"
    # the current episode in between resets the streak: 2 + 2 stale never rewinds with N = 3
    assert kinds(t, [3, 4, 3, 3, 4]) == [E.STALE, E.SAME, E.STALE, E.STALE, E.SAME]
    # older ids going backwards among themselves do not add up either
    assert kinds(t, [2, 1, 2, 1]) == [E.STALE] * 4
    assert t.current == 4


def test_restarted_episode_source_is_followed_after_n_in_a_row():
    t = SequenceTracker("episode", rewind_after=3, repeats_ok=True)
    for i in (1, 2, 3, 7):
        t.update(i)
    out = [t.update(1) for _ in range(3)]
    assert [d.kind for d in out] == [E.STALE, E.STALE, E.REWIND]
    assert out[-1].starts_new and out[-1].accepted and (out[-1].current, out[-1].previous) == (1, 7)
    assert "went back from 7 to 1" in out[-1].describe()
    assert t.current == 1 and t.rewinds == 1
    assert kinds(t, [1, 2]) == [E.SAME, E.NEW]  # and counts up normally again


def test_restarted_counter_is_followed_and_repeats_do_not_count():
    t = SequenceTracker("obs_id", rewind_after=4)
    for i in range(1, 501):
        t.update(i)
    # the sender restarted: 1, 2, 3, 4 -> rewind on the 4th
    assert kinds(t, [1, 2, 3, 4]) == [E.STALE] * 3 + [E.REWIND] and t.current == 4
    t2 = SequenceTracker("obs_id", rewind_after=3)
    t2.update(100)
    assert kinds(t2, [5, 5, 5, 5]) == [E.STALE] * 4  # a repeated old counter value is no restart


def test_rogue_huge_id_costs_n_messages():
    t = SequenceTracker("episode", rewind_after=10, repeats_ok=True)
    t.update(3)
    assert t.update(2**63 - 1).kind is E.NEW  # cannot be told apart from a real jump when it arrives
    assert kinds(t, [3] * 10) == [E.STALE] * 9 + [E.REWIND] and t.current == 3


def test_reset_forgets_the_current_id():
    t = SequenceTracker("plan_id", rewind_after=5)
    t.update(50)
    t.reset()
    assert t.update(1).kind is E.NEW and t.current == 1


def test_bad_rewind_after():
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="rewind_after"):
            SequenceTracker("x", rewind_after=bad)

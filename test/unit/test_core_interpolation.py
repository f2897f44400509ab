"""core.interpolation: one interpolation for the command-rate streamer and the correction node's
plan buffer (the knot is the position at the END of its step)."""

from __future__ import annotations

import numpy as np
import pytest

from async_vla_ros.core.interpolation import INTERPOLATIONS, interpolate
from async_vla_ros.nodes.plan import INTERPOLATIONS as PLAN_INTERPOLATIONS
from async_vla_ros.nodes.plan import PlanBuffer
from async_vla_ros.robot import streamer


def test_known_answers_at_the_step_ends():
    a_m1, a_0 = np.array([1.0, -2.0]), np.array([3.0, 2.0])
    for mode in INTERPOLATIONS:
        np.testing.assert_array_equal(interpolate(a_m1, a_m1, a_0, a_0, 1.0, mode), a_0)  # reached at the end
    np.testing.assert_array_equal(interpolate(a_m1, a_m1, a_0, a_0, 0.0, "linear"), a_m1)
    np.testing.assert_array_equal(interpolate(a_m1, a_m1, a_0, a_0, 0.5, "linear"), [2.0, 0.0])
    np.testing.assert_array_equal(interpolate(a_m1, a_m1, a_0, a_0, 0.0, "hold"), a_0)


def test_returns_a_new_array():
    a = np.array([1.0, 2.0])
    for mode in INTERPOLATIONS:
        out = interpolate(a, a, a, a, 0.0 if mode != "linear" else 1.0, mode)
        out[0] = 99.0
        assert a[0] == 1.0, mode


def test_streamer_and_plan_buffer_share_it():
    assert streamer.interpolate is interpolate and streamer.INTERPOLATIONS is INTERPOLATIONS
    assert set(PLAN_INTERPOLATIONS) <= set(INTERPOLATIONS)
    buf = PlanBuffer(2, "linear")
    acts = np.array([[0.0, 1.0], [4.0, -1.0]])
    buf.set_plan(1, 1000, 0, 100, acts, [1, 1], [0, 1], 8)
    for now in (1100, 1125, 1190):
        s = buf.sample(now)
        np.testing.assert_array_equal(s.action, interpolate(acts[0], acts[0], acts[1], acts[1], s.fraction))
    np.testing.assert_array_equal(buf.sample(1050).action, acts[0])  # first planned step: its own action


def test_rejects_bad_input():
    z = np.zeros(2)
    with pytest.raises(ValueError, match="unknown interpolation"):
        interpolate(z, z, z, z, 0.5, "spline")
    with pytest.raises(ValueError, match="phase"):
        interpolate(z, z, z, z, -0.1)

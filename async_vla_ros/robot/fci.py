"""Models of the Franka Control Interface (FCI) joint-position stream, for the libfranka backend.

The FCI differences every command it receives against the last one it applied; a cycle without a
command is filled in by the robot ("keeps acceleration constant and integrates"). These models
say where that leaves the robot (:func:`fci_extrapolate`), which command continues a reported
history with zero jerk (:func:`history_step`), and how many fill-in steps a reported history is
beyond a command that was sent (:func:`steps_since`). Pure numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fci_extrapolate", "history_step", "steps_since"]


def fci_extrapolate(
    q: np.ndarray, v: np.ndarray, a: np.ndarray, dt: float, cycles: int
) -> tuple[np.ndarray, np.ndarray]:
    """Where Franka's controller puts a joint-position stream over ``cycles`` missed commands: it
    "keeps acceleration constant and integrates", ``v += a dt`` then ``q += v dt`` per cycle, from
    the last command ``q`` and its backward differences ``v``, ``a``. Returns the new ``(q, v)``."""
    q, v = np.asarray(q, dtype=np.float64), np.asarray(v, dtype=np.float64)
    for _ in range(int(cycles)):
        v = v + a * dt
        q = q + v * dt
    return q, v


def history_step(q, v, a, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The next command with zero jerk against a robot's differencing history (last command ``q``,
    its backward differences ``v``, ``a``) when the robot differences it over ``step`` seconds:
    ``q + step (v + a step)``, whose first difference is ``v + a step``, second ``a``, third 0.
    Returns that command's history ``(q', v', a)``."""
    q, v, a = (np.asarray(x, dtype=np.float64) for x in (q, v, a))
    v2 = v + a * step
    return q + step * v2, v2, a.copy()


def steps_since(q_sent, q, v, a, dt: float, max_steps: int, tol: float) -> int | None:
    """How many fill-in steps (:func:`fci_extrapolate`) a robot's reported history ``(q, v, a)`` is
    beyond a command ``q_sent`` it applied, 0..``max_steps``; None when none matches within ``tol``
    (rad). Going back ``s`` steps at constant ``a`` from ``(q, v)`` lands on
    ``q - s dt v + a dt^2 s (s - 1) / 2``. Where several match (the arm barely moving), the largest."""
    q_sent, q, v, a = (np.asarray(x, dtype=np.float64) for x in (q_sent, q, v, a))
    s = np.arange(int(max_steps) + 1, dtype=np.float64)[:, None]
    back = q - s * dt * v + a * dt * dt * (s * (s - 1) / 2)
    match = np.flatnonzero(np.max(np.abs(back - q_sent), axis=1) <= tol)
    return int(match[-1]) if match.size else None

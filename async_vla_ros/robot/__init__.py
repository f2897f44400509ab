"""Robot backends that run without ROS.

* :mod:`.base` -- the ``Robot`` interface (``observe()`` / ``command()``) and the robot state.
* :mod:`.streamer` -- pure numpy: sample a control-rate plan at the 1 kHz command rate with
  interpolation, run the core safety filter on every tick, measure the stream's derivatives.
* :mod:`.stress` -- a deterministic stress chunk source (a ``ChunkPolicy``).
* :mod:`.session` -- pure: a ``ChunkScheduler`` driven at the control rate from a ``ChunkPolicy``
  with simulated delay, feeding the streamer (the plan a backend streams).
* :mod:`.libfranka_backend` -- the thin adapter that streams a session over the real libfranka
  protocol (``pylibfranka``), tested against ``franka-sim`` (:mod:`.franka_sim`).

Nothing here imports libfranka at module import time.
"""

"""Pure helpers of the ROS nodes (no rclpy): parameter tables, plan sampling, pairing, images,
the single-slot inference worker. Known answers, no sleeps."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from async_vla_ros.nodes.ingest import InputError, StampedBuffer, image_to_rgb, joint_arrays, resize_nearest
from async_vla_ros.nodes.params import Param, ParamError, validate_values
from async_vla_ros.nodes.plan import PlanBuffer
from async_vla_ros.nodes.worker import InferenceWorker

TABLE = (
    Param("rate_hz", 100.0, "rate", min=10.0, max=1000.0),
    Param("method", "rtc", "method", choices=("rtc", "naive")),
    Param("names", ["a", "b"], "names"),
    Param("n", 3, "count", min=1),
    Param("flag", True, "flag"),
)


# ---------------------------------------------------------------------- params
def test_params_defaults_and_int_to_double():
    v = validate_values("x", TABLE, {"rate_hz": 200})
    assert v == {"rate_hz": 200.0, "method": "rtc", "names": ["a", "b"], "n": 3, "flag": True}
    assert isinstance(v["rate_hz"], float)


def test_params_every_problem_reported_with_hints():
    with pytest.raises(ParamError) as exc:
        validate_values("x", TABLE, {"rate_hz": 5.0, "method": "rtx", "n": 1.5, "flag": "yes", "nmae": 1})
    text = str(exc.value)
    assert "rate_hz: must be >= 10.0" in text
    assert "did you mean 'rtc'" in text
    assert "n: must be an integer" in text
    assert "flag: must be a bool" in text
    assert "nmae: unknown parameter (did you mean 'names'?)" in text
    assert len(exc.value.problems) == 5


def test_param_rejects_bad_default_and_nan():
    with pytest.raises(ValueError):
        Param("x", 5.0, "d", max=1.0)
    with pytest.raises(ParamError, match="finite"):
        validate_values("x", TABLE, {"rate_hz": float("nan")})


# ---------------------------------------------------------------------- plan buffer
def _plan(buf, plan_id, step, actions, dt_ns=100, t0=1000):
    a = np.asarray(actions, dtype=float).reshape(len(actions), 1)
    n = a.shape[0]
    return buf.set_plan(plan_id, t0 + step * dt_ns, step, dt_ns, a, np.full(n, plan_id), np.arange(n), 8)


def test_plan_hold_and_linear_known_answers():
    hold, lin = PlanBuffer(1, "hold"), PlanBuffer(1, "linear")
    for b in (hold, lin):
        assert _plan(b, 1, 5, [1.0, 2.0, 4.0])
    # step 6 spans [1600, 1700): hold gives 2; linear ramps 1 -> 2 over the step
    assert hold.sample(1650).action[0] == pytest.approx(2.0)
    assert lin.sample(1650).action[0] == pytest.approx(1.5)
    assert lin.sample(1600).action[0] == pytest.approx(1.0)
    assert lin.sample(1775).action[0] == pytest.approx(2.0 + 0.75 * 2.0)
    s = lin.sample(1700)
    assert (s.step, s.k, s.chunk_id) == (7, 2, 1)
    # first planned step has no predecessor: its own action
    assert lin.sample(1550).action[0] == pytest.approx(1.0)
    # ran dry / before the plan
    assert lin.sample(1800) is None and lin.sample(1400) is None


def test_plan_newer_overwrites_from_its_step_and_keeps_history():
    b = PlanBuffer(1, "linear")
    _plan(b, 1, 0, [0.0, 1.0, 2.0, 3.0])
    assert not _plan(b, 1, 2, [9.0])  # same id: ignored
    assert _plan(b, 2, 2, [10.0, 20.0])
    assert b.sample(1250).action[0] == pytest.approx(1.0 + 0.5 * 9.0)  # from old step 1 to new step 2
    assert b.sample(1450) is None  # the new plan is shorter: step 4 is no longer planned
    # a different grid (scheduler restart) drops everything
    assert _plan(b, 3, 0, [5.0], t0=1050)
    assert b.sample(1060).action[0] == pytest.approx(5.0)
    assert b.sample(1250) is None


def test_plan_rejects_bad_input():
    b = PlanBuffer(2)
    with pytest.raises(ValueError):
        b.set_plan(1, 0, 0, 100, np.array([[np.nan, 0.0]]), [1], [0], 8)
    with pytest.raises(ValueError):
        b.set_plan(1, 0, 0, 100, np.zeros((2, 3)), [1, 1], [0, 1], 8)
    with pytest.raises(ValueError):
        PlanBuffer(2, "cubic")


# ---------------------------------------------------------------------- ingestion helpers
def test_stamped_buffer_nearest_and_order():
    b = StampedBuffer(3)
    for t in (10, 20, 30, 40):
        b.push(t, t * 2)
    assert len(b) == 3 and b.latest() == (40, 80)
    assert b.nearest(26) == (30, 60)
    assert b.nearest(25) == (20, 40)  # tie: the older
    assert b.nearest(100, max_dt_ns=10) is None
    with pytest.raises(InputError) as exc:
        b.push(40, 0)
    assert exc.value.reason == "out_of_order"


def test_resize_nearest_known_answer():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    out = resize_nearest(img, 2)
    assert out[:, :, 0].tolist() == [[5, 7], [13, 15]]
    assert resize_nearest(img, 8).shape == (8, 8, 1)


def test_image_to_rgb_encodings_and_padding():
    bgr = np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint8)  # 1 x 2
    padded = np.concatenate([bgr.reshape(-1), [0, 0]]).astype(np.uint8)  # step 8 > 6
    rgb = image_to_rgb("bgr8", 1, 2, 8, padded.tobytes())
    assert rgb.tolist() == [[[3, 2, 1], [6, 5, 4]]]
    mono = image_to_rgb("mono8", 1, 2, 2, bytes([7, 9]))
    assert mono.tolist() == [[[7, 7, 7], [9, 9, 9]]]
    with pytest.raises(InputError, match="bytes"):
        image_to_rgb("rgb8", 2, 2, 6, bytes(5))
    with pytest.raises(InputError) as exc:
        image_to_rgb("yuv422", 1, 1, 2, bytes(2))
    assert exc.value.reason == "bad_encoding"


def test_joint_arrays_order_and_errors():
    q, qd, extra = joint_arrays(["b", "f", "a"], [2.0, 0.02, 1.0], [], ["a", "b"], ["f", "g"])
    assert q.tolist() == [1.0, 2.0] and qd.tolist() == [0.0, 0.0] and extra == {"f": 0.02}
    for args, reason in (
        ((["a"], [1.0, 2.0], [], ["a"]), "bad_shape"),
        ((["a"], [1.0], [], ["a", "b"]), "missing_joint"),
        ((["a"], [np.inf], [], ["a"]), "non_finite"),
    ):
        with pytest.raises(InputError) as exc:
            joint_arrays(*args)
        assert exc.value.reason == reason


# ---------------------------------------------------------------------- worker
def test_worker_newest_request_supersedes_waiting_one():
    gate = threading.Event()
    started = threading.Event()
    ran: list[int] = []

    def run(job):
        started.set()
        if job == 1:
            assert gate.wait(5.0)
        ran.append(job)

    w = InferenceWorker(run, lambda j, e: None)
    w.start()
    try:
        assert w.submit(1) is None
        assert started.wait(5.0)  # job 1 is running (blocked on the gate)
        assert w.submit(2) is None
        assert w.submit(3) == 2  # 2 was still waiting: superseded, never runs
        gate.set()
        for _ in range(500):  # deadline 5 s
            if ran == [1, 3]:
                break
            threading.Event().wait(0.01)
        assert ran == [1, 3]
        assert w.superseded == 1 and w.completed == 2
    finally:
        w.stop()
    assert not w.alive


def test_worker_consecutive_errors_become_fatal():
    errors: list[tuple[int, str]] = []
    w = InferenceWorker(
        lambda j: (_ for _ in ()).throw(RuntimeError(f"bad {j}")),
        lambda j, e: errors.append((j, str(e))),
        max_consecutive_errors=2,
    )
    w.start()
    w.submit(1)
    for _ in range(500):
        if errors:
            break
        threading.Event().wait(0.01)
    w.submit(2)
    w._thread.join(5.0)
    assert not w.alive and isinstance(w.fatal, RuntimeError)
    assert errors == [(1, "bad 1"), (2, "bad 2")]


def _run_script(path, source: str, env=None):
    """Write ``source`` (a node run by run_node) to ``path`` and run it in a process of its own."""
    import subprocess
    import sys

    path.write_text(source)
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60, env=env)


def test_a_second_sigint_during_close_does_not_interrupt_the_stop(tmp_path):
    """Ctrl-C in a terminal signals the whole process group and `ros2 launch` forwards another
    SIGINT: the second one lands while the node closes. run_node must finish the close and exit 0
    (seen before the fix: KeyboardInterrupt in the sim node's thread join, exit code -2)."""

    out = _run_script(
        tmp_path / "node.py",
        """
import os, signal, sys, time
from rclpy.node import Node
from async_vla_ros.nodes.common import run_node

class TwoSigints(Node):
    NODE_NAME = "two_sigints"
    def __init__(self):
        super().__init__("two_sigints")
        self.shutdown_requested = True  # stop at once: the test is about the close
    def close(self):
        os.kill(os.getpid(), signal.SIGINT)  # the forwarded second SIGINT
        time.sleep(0.2)                      # a close that takes a while (a thread join)
        print("closed", flush=True)

sys.exit(run_node(TwoSigints, sys.argv))
""",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "closed" in out.stdout and "KeyboardInterrupt" not in out.stderr, out.stderr[-2000:]


def test_a_sigint_while_spinning_never_interrupts_a_callback_half_done(tmp_path):
    """A SIGINT that lands inside a callback (pthread_kill to the main thread, so it is handled
    right there) must not raise between two of its statements: the recorder once counted a message
    received and was interrupted before queueing it for the bag. The callback finishes, the context
    going down ends the spin, close runs, exit 0. A SIGINT while the node still starts aborts the
    start (second script)."""

    out = _run_script(
        tmp_path / "node.py",
        """
import signal, sys, threading, time
from rclpy.node import Node
from async_vla_ros.nodes.common import run_node

class SignalInCallback(Node):
    NODE_NAME = "signal_in_callback"
    def __init__(self):
        super().__init__("signal_in_callback")
        self.steps = []
        self.create_timer(0.05, self.tick)
    def tick(self):
        self.steps.append("counted")
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        time.sleep(0.05)  # Python runs its signal handlers at the next bytecodes: here
        self.steps.append("queued")
    def close(self):
        print("steps", self.steps, flush=True)

sys.exit(run_node(SignalInCallback, sys.argv))
""",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "steps ['counted', 'queued']" in out.stdout, (out.stdout[-2000:], out.stderr[-2000:])
    assert "KeyboardInterrupt" not in out.stderr, out.stderr[-2000:]

    t0 = time.monotonic()
    out = _run_script(
        tmp_path / "slow_start.py",
        """
import signal, sys, threading, time
from rclpy.node import Node
from async_vla_ros.nodes.common import run_node

class SlowStart(Node):
    NODE_NAME = "slow_start"
    def __init__(self):
        super().__init__("slow_start")
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        time.sleep(30.0)  # a long start (a checkpoint): the SIGINT must cut it short
        print("started", flush=True)

sys.exit(run_node(SlowStart, sys.argv))
""",
    )
    assert out.returncode == 0 and "started" not in out.stdout, (out.returncode, out.stderr[-2000:])
    assert time.monotonic() - t0 < 25.0


def test_a_node_that_dies_of_a_fatal_signal_prints_where_every_thread_was(tmp_path):
    """run_node enables faulthandler: a crash in C (here a SIGSEGV raised in the node's close, as
    the intermittent exit crashes looked from outside: status -11 and nothing else) leaves the
    Python traceback of every thread on stderr, the node's log under a launcher."""
    import subprocess
    import sys

    script = tmp_path / "node.py"
    script.write_text(
        """
import os, signal, sys, threading, time
from rclpy.node import Node
from async_vla_ros.nodes.common import run_node

def worker_loop(stop):
    while not stop.is_set():
        time.sleep(0.01)

class Crashes(Node):
    NODE_NAME = "crashes"
    def __init__(self):
        super().__init__("crashes")
        self._stop = threading.Event()
        self._worker = threading.Thread(target=worker_loop, args=(self._stop,), daemon=True)
        self._worker.start()
        self.shutdown_requested = True
    def close(self):
        # to this thread: a process-directed kill() can land on a DDS thread while main runs on
        signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)

sys.exit(run_node(Crashes, sys.argv))
"""
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == -signal.SIGSEGV, (out.returncode, out.stderr[-2000:])
    assert "Fatal Python error: Segmentation fault" in out.stderr, out.stderr[-2000:]
    assert "in close" in out.stderr and "in run_node" in out.stderr, out.stderr[-2000:]
    assert "in worker_loop" in out.stderr, out.stderr[-2000:]  # every thread, not only the crashing one


def test_a_stop_that_hangs_prints_where_every_thread_is(tmp_path):
    """A node whose stop takes longer than STOP_TRACE_AFTER_S (launch sends SIGTERM after 5 s)
    leaves every thread's traceback on stderr, then still exits 0 when its close ends: a policy
    node that did not stop within launch's grace once left nothing to go on."""
    import subprocess
    import sys

    script = tmp_path / "node.py"
    script.write_text(
        """
import sys, threading, time
from rclpy.node import Node
from async_vla_ros.nodes import common
from async_vla_ros.nodes.common import run_node

common.STOP_TRACE_AFTER_S = 0.5

def busy_inference(stop):
    while not stop.is_set():
        time.sleep(0.01)

class SlowStop(Node):
    NODE_NAME = "slow_stop"
    def __init__(self):
        super().__init__("slow_stop")
        self._stop = threading.Event()
        self._worker = threading.Thread(target=busy_inference, args=(self._stop,), daemon=True)
        self._worker.start()
        self.shutdown_requested = True
    def close(self):
        time.sleep(1.5)  # a join that hangs past the watchdog
        self._stop.set()
        self._worker.join()

sys.exit(run_node(SlowStop, sys.argv))
"""
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "in close" in out.stderr and "in busy_inference" in out.stderr, out.stderr[-2000:]


def test_a_hang_at_interpreter_exit_is_traced_too(tmp_path):
    """After run_node returns, Python's exit joins every non-daemon thread: a thread that does not
    end (a pool worker stuck in a step) holds the process past launch's grace. The stop trace stays
    armed until then, so the node's log says which thread it waited for."""
    import subprocess
    import sys

    script = tmp_path / "node.py"
    script.write_text(
        """
import sys, threading, time
from rclpy.node import Node
from async_vla_ros.nodes import common
from async_vla_ros.nodes.common import run_node

common.STOP_TRACE_AFTER_S = 0.5

def lingering_worker():
    time.sleep(1.5)

class Lingers(Node):
    NODE_NAME = "lingers"
    def __init__(self):
        super().__init__("lingers")
        self.shutdown_requested = True
    def close(self):
        threading.Thread(target=lingering_worker, daemon=False).start()

sys.exit(run_node(Lingers, sys.argv))
"""
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "in lingering_worker" in out.stderr and "most recent call first" in out.stderr, out.stderr[-2000:]


def test_a_node_whose_constructor_fails_is_destroyed_before_the_error_is_reported(tmp_path):
    """A bad parameter found after rclpy's Node.__init__ made the node: run_node destroys the
    half-built node with destroy_node right there, instead of leaving it to be freed implicitly
    when the exception is dropped (the scheduler died of SIGSEGV there once in 240 such exits) or
    to rclpy.shutdown's clean-up of tracked nodes."""

    out = _run_script(
        tmp_path / "node.py",
        """
import sys, traceback
from rclpy.node import Node
from std_msgs.msg import String
from async_vla_ros.nodes.common import run_node
from async_vla_ros.nodes.params import ParamError

class FailsLate(Node):
    NODE_NAME = "fails_late"
    def __init__(self):
        super().__init__("fails_late")
        self.create_publisher(String, "fails_late/out", 10)
        raise ParamError("fails_late", ["bad: invalid"])
    def destroy_node(self):
        callers = [f.name for f in traceback.extract_stack()[:-1]]
        print("destroy_node from", "shutdown" if "_cleanup" in callers else callers[-1], flush=True)
        super().destroy_node()

sys.exit(run_node(FailsLate, sys.argv))
""",
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "cannot start" in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["destroy_node from build_node"], out.stdout + out.stderr[-2000:]


def test_a_node_stuck_in_a_callback_is_dumped_then_killed_by_the_launcher(tmp_path):
    """A node whose executor thread is stuck inside C code (a DDS call, a lock) never runs Python's
    signal handlers, so SIGINT and SIGTERM do nothing: the built-in launcher asks it for every
    thread's stack (SIGUSR1, registered by run_node, answered by a C-level handler) before it
    SIGKILLs it, so the log says where it hung. A CI run once lost a scheduler that way, with
    nothing to go on. The stuck call is modelled by a sleep with SIGINT / SIGTERM / SIGUSR1 blocked
    on the executor's thread (a Python-level wait would be interrupted by KeyboardInterrupt; the
    dump then runs on another thread, as it would during a hang in C)."""
    import sys

    from async_vla_ros.bringup.graph import Graph, NodeLaunch
    from async_vla_ros.bringup.launcher import Launcher

    (tmp_path / "stuck_node.py").write_text(
        """
import signal, sys, time
from rclpy.node import Node
from async_vla_ros.nodes.common import run_node

class Stuck(Node):
    NODE_NAME = "stuck"
    def __init__(self):
        super().__init__("stuck")
        self.create_timer(0.05, self.stuck_callback)
    def stuck_callback(self):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1})
        print("in the callback", flush=True)
        time.sleep(3600)  # never returns in time

if __name__ == "__main__":
    sys.exit(run_node(Stuck, sys.argv))
"""
    )
    graph = Graph("stuck", (NodeLaunch("stuck", "stuck_node", "stuck_node"),), {})
    lines: list[str] = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    launcher = Launcher(graph, echo=lines.append, grace_s=1.0, env=env, python=sys.executable)
    launcher.start()
    try:
        import time

        deadline = time.monotonic() + 60.0
        while not any("in the callback" in line for line in lines):
            assert launcher.check() and time.monotonic() < deadline, "\n".join(lines)
            time.sleep(0.05)
    finally:
        codes = launcher.stop()
    out = "\n".join(lines)
    assert codes == {"stuck": -signal.SIGKILL}, out
    assert "stuck ignored SIGINT; sending SIGTERM" in out, out
    assert "its threads' stacks follow" in out, out
    assert "in stuck_callback" in out and "most recent call first" in out, out


def test_sigterm_ends_a_node_whose_close_hangs_after_sigint(tmp_path):
    """launch's escalation works: SIGINT starts the stop, close() hangs, SIGTERM ends the process
    at once (rclpy's handlers would only shut down an already shut-down context, and the
    EventsExecutor's answers the first signal only)."""
    import subprocess
    import sys
    import time

    script = tmp_path / "node.py"
    script.write_text(
        """
import sys, time
from rclpy.node import Node
from async_vla_ros.nodes.common import run_node

class HangingClose(Node):
    NODE_NAME = "hanging_close"
    def __init__(self):
        super().__init__("hanging_close")
        self.create_timer(0.05, lambda: None)
        print("up", flush=True)
    def close(self):
        print("closing", flush=True)
        time.sleep(60)

sys.exit(run_node(HangingClose, sys.argv))
"""
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.readline().strip() == "closing"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_echo_filter_skips_the_topic_copy_of_a_message_taken_in_process_once():
    from async_vla_ros.nodes.common import EchoFilter

    echoes = EchoFilter(capacity=3)
    assert not echoes.is_echo(1)  # never taken in process: a message like any other
    echoes.taken(1)
    assert echoes.is_echo(1)  # its published copy: skipped
    assert not echoes.is_echo(1)  # a second copy (a rogue re-send) is taken and checked
    for k in range(10, 14):  # bounded: the oldest taken key is forgotten past the capacity
        echoes.taken(k)
    assert not echoes.is_echo(10) and echoes.is_echo(13)
    assert echoes.n_echoes == 2

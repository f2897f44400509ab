"""train.common.DataParallel and ``train vla --procs``: ranks forked from the training process
average their shares' gradients into the whole batch's, stay in step, fail together; a 2-process
VLA run is reproducible. Each case runs in a fresh interpreter (it forks; pytest's own threads
must not be copied into the ranks)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def _python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


def test_two_ranks_average_their_halves_into_the_whole_batch_gradient_and_stay_in_step():
    out = _python(
        """
        import os, torch
        from async_vla_ros.train.common import DataParallel

        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
        x, y = torch.randn(8, 5), torch.randn(8, 3)
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        params = list(model.parameters())
        full, full_loss = [p.grad.clone() for p in params], float(loss)
        for p in params:
            p.grad = None
        opt = torch.optim.AdamW(params, lr=0.1)
        dp = DataParallel(2, params)
        share = slice(dp.rank, None, 2)
        mine = ((model(x[share]) - y[share]) ** 2).mean()
        mine.backward()
        mean_loss = dp.average(params, mine)
        err = max(float((p.grad - g).abs().max()) for p, g in zip(params, full))
        opt.step()
        drift = dp.max_weight_difference(params)
        ok = err < 1e-6 and abs(mean_loss - full_loss) < 1e-6 and drift == 0.0
        if dp.rank > 0 and not ok:
            os._exit(3)
        dp.finish()  # rank 1 exits here (0); rank 0 raises if it did not
        print(f"rank {dp.rank}: ok {ok} err {err:.1e} loss {mean_loss:.6f} / {full_loss:.6f} drift {drift}")
        """
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("rank 0: ok True"), out.stdout


def test_a_rank_that_fails_stops_the_others_at_once():
    """Rank 1 raises: its abort breaks the barrier, so rank 0's next meeting fails at once (not
    after the timeout) with a clear error, and rank 0 reaps it."""
    out = _python(
        """
        import os, sys, time, torch
        from async_vla_ros.train.common import DataParallel

        model = torch.nn.Linear(3, 2)
        params = list(model.parameters())
        model(torch.ones(1, 3)).sum().backward()
        dp = DataParallel(2, params, timeout_s=60.0)
        t0 = time.monotonic()
        try:
            if dp.rank == 1:
                raise ValueError("rank 1 fails on purpose")
            dp.average(params, torch.tensor(1.0))
            print("rank 0 passed the meeting: wrong")
        except Exception as exc:
            if dp.rank == 0:
                print(f"rank 0: {type(exc).__name__}: {exc} after {time.monotonic() - t0:.1f} s")
            dp.abort()  # rank 1 exits 1 here
            print(f"children left: {dp.children}")
        """
    )
    assert out.returncode == 0, out.stderr[-3000:]
    first = out.stdout.splitlines()[0]
    assert first.startswith("rank 0: RuntimeError: data-parallel rank 0: another training process failed"), out.stdout
    assert float(first.split(" after ")[1].split()[0]) < 30.0, first
    assert "children left: []" in out.stdout
    assert "ValueError: rank 1 fails on purpose" in out.stderr  # the failing rank's traceback is shown


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_other_ranks_end_with_a_rank_0_killed_outright():
    """Rank 0 killed with SIGKILL (no abort, no word): rank 1 ends with it, not after its meeting's
    timeout (here 300 s)."""
    import os
    import signal
    import time
    from pathlib import Path

    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, time, torch
                from async_vla_ros.train.common import DataParallel

                model = torch.nn.Linear(3, 2)
                dp = DataParallel(2, list(model.parameters()), timeout_s=300.0)
                if dp.rank == 0:
                    print(dp.children[0], flush=True)
                time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child = int(proc.stdout.readline())
        state = Path(f"/proc/{child}/stat")

        def ended() -> bool:  # gone, or a zombie no one reaps (a container's pid 1 may not)
            try:
                return state.read_text().split(")")[1].split()[0] in ("Z", "X")
            except (FileNotFoundError, ProcessLookupError):
                return True

        assert not ended(), "rank 1 is not running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30.0
        while not ended() and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = not ended()
        if alive:
            os.kill(child, signal.SIGKILL)  # the rank this test started
        assert not alive, "rank 1 outlived rank 0 by 30 s"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


@pytest.mark.slow
def test_train_vla_with_two_processes_is_reproducible_and_says_so(tmp_path):
    # the demonstrations in a process of their own, as `demos` then `train vla` (torchvision imported
    # after MuJoCo's EGL rendering in one process crashed it, with or without --procs)
    made = _python(
        f"""
        from pathlib import Path
        from async_vla_ros.sim.demos import write_demos
        write_demos("track", Path({str(tmp_path / "track")!r}), 2, batch=2, images=("scene", "wrist"), image_size=32,
                    progress=False)
        """
    )
    assert made.returncode == 0, made.stderr[-3000:]
    out = _python(
        f"""
        import json
        from pathlib import Path
        from safetensors.torch import load_file
        from async_vla_ros.train.vla import VLAConfig, train_vla

        tmp = Path({str(tmp_path)!r})
        cfg = VLAConfig(steps=4, batch_size=4, val_every=2, ckpt_every=4, chunk=4, image_size=32, num_threads=1, procs=2)
        lines = []
        for run in ("a", "b"):
            res = train_vla([tmp / "track"], cfg, tmp / run, log=lines.append)
            assert res["step"] == 4, res
        wa, wb = (load_file(str(tmp / r / "model.safetensors")) for r in ("a", "b"))
        same = all(bool((wa[k] == wb[k]).all()) for k in wa)
        rec = json.loads((tmp / "a" / "async_vla_ros.json").read_text())["training"]
        print("same", same, "procs", rec["config"]["procs"], "history", len(rec["history"]))
        print([l for l in lines if "in each of 2 processes" in l][0])
        try:
            VLAConfig(batch_size=4, procs=3)
        except ValueError as exc:
            print("refused:", exc)
        """,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "same True procs 2 history 2" in out.stdout, out.stdout
    assert "1 thread(s) in each of 2 processes" in out.stdout, out.stdout
    assert "refused: procs must be >= 1 and divide batch_size 4, got 3" in out.stdout, out.stdout

"""SIGINT and SIGTERM stop a running `orchestra-ray train` within seconds, also when the shell
started it with SIGINT ignored: its actors end, and one line says what was kept and how to resume."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from test_e2e_grpo import overrides


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_cleanly_with_one_line(frames_dir, tmp_path, sig):
    run_dir = tmp_path / "runs" / "stop"
    argv = [sys.executable, "-m", "pipelines.cli", "train", *overrides(frames_dir, tmp_path / "runs", tmp_path / "cache"),
            "run.name=stop", "policy.tiny.pretrain_steps=20", "trainer.steps=50", "eval.enabled=false",
            "cluster.include_dashboard=false"]
    # started as a non-interactive shell starts a background job: SIGINT ignored
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=os.getcwd(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 300
    while time.time() < deadline and not (run_dir / "checkpoints" / "step_000001" / "state.json").is_file():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.2)
    children = psutil.Process(proc.pid).children(recursive=True)
    t0 = time.time()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.time() - t0 < 20, "stopped within 20 s"
    assert proc.returncode == 128 + sig
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"orchestra-ray: stopped by {sig.name}; actors ended; last checkpoint: ") and \
        f"--resume {run_dir}" in last, last
    assert "Traceback" not in err
    time.sleep(2)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE], "no process of the run is left"

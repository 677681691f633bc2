"""`orchestra-ray submit` against a real Ray head started with `ray start`, token authentication on:
the quickstart runs as a Ray job, its driver joins that cluster, relative paths land in the
submitting directory, and `job status` reads SUCCEEDED. Bad configs fail before any contact."""

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import psutil
import pyarrow.parquet as pq
import pytest

from ports import free_ports

BIN = os.path.dirname(sys.executable)
SMALL = ["trainer.steps=1", "warm_start.examples=8", "eval.enabled=false", "policy.tiny.pretrain_steps=20",
         "data.max_train_questions=16", "data.max_heldout_questions=4", "rollout.tasks_per_step=2",
         "rollout.group_size=2", "rollout.max_turns=2", "rollout.max_new_tokens=16", "rollout.num_workers=1"]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env.update(extra)
    return env


def cli(*args, cwd=None, **env):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=300)


def one_line_error(res):
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def head():
    tmp = tempfile.mkdtemp(prefix="orj", dir="/tmp")  # Ray's socket paths under it must stay < 108 chars
    token = secrets.token_hex(32)
    gcs, dash, client, agent = free_ports(4)
    # The job's `python` is the cluster's: the venv comes first on PATH, as when it is activated.
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, PATH=BIN + os.pathsep + os.environ["PATH"])
    cmd = [os.path.join(BIN, "ray"), "start", "--head", "--block", f"--port={gcs}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
           "--min-worker-port=0", "--max-worker-port=0", "--num-cpus=2", f"--temp-dir={tmp}/t",
           "--include-dashboard=true", "--disable-usage-stats"]
    with open(os.path.join(tmp, "head.log"), "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None and time.time() < deadline, open(os.path.join(tmp, "head.log")).read()[-3000:]
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # 401: up, asking for the token
                break
            except OSError:
                time.sleep(1)
        yield address, token
    finally:
        # Not `ray stop`: it stops every Ray cluster of the machine. The blocking `ray start` stops
        # the processes it started on SIGTERM; whatever of its tree outlives it is killed.
        tree = psutil.Process(proc.pid).children(recursive=True)
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        for p in psutil.wait_procs(tree, timeout=10)[1]:
            p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def test_bad_config_or_unreachable_address_fails_in_one_line():
    nowhere = f"http://127.0.0.1:{free_ports(1)[0]}"
    # The config is checked before the job server is contacted: its error, not the address's.
    msg = one_line_error(cli("submit", "quickstart", "trainer.stepz=1", "--address", nowhere))
    assert "trainer.stepz" in msg
    msg = one_line_error(cli("submit", "quickstart", "--address", nowhere))
    assert f"cannot reach the Ray job server at {nowhere}" in msg


def test_submitted_quickstart_trains_on_the_cluster(head, frames_dir, tmp_path):
    address, token = head
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(token)
    # Relative paths, read from the submitting directory: the job must not resolve them in its copy.
    work = tmp_path / "work"
    work.mkdir()
    res = cli("submit", "quickstart", *SMALL, "run.root=runs", "run.name=job", "policy.cache_dir=cache",
              f"data.path={os.path.relpath(frames_dir, work)}", "--address", address, "--follow",
              cwd=work, HOME=str(home), RAY_AUTH_MODE="token")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    job_id = re.search(r"submitted job (\S+)", res.stdout).group(1)
    assert "joined Ray cluster at" in res.stdout  # the driver used the head, not a cluster of its own
    assert res.stdout.rstrip().endswith(f"job {job_id} SUCCEEDED")

    run_dir = work / "runs" / "job"
    assert (run_dir / "config.yaml").is_file()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1]
    assert pq.read_table(run_dir / "trajectories" / "step_000001.parquet").num_rows == 4
    assert (run_dir / "checkpoints" / "step_000001" / "policy").is_dir()
    assert (work / "cache").is_dir()

    status = cli("job", "status", job_id, "--address", address, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    assert status.returncode == 0 and status.stdout.startswith(f"{job_id}: SUCCEEDED"), status.stderr
    msg = one_line_error(cli("job", "status", "raysubmit_none", "--address", address,
                             RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token))
    assert msg.endswith(f"no job 'raysubmit_none' on the Ray cluster at {address}")
    msg = one_line_error(cli("job", "logs", job_id, "--address", address, HOME=str(home)))  # RAY_AUTH_MODE unset
    assert f"the Ray cluster at {address} requires token authentication" in msg
    for out in (res, status):
        assert token not in out.stdout + out.stderr

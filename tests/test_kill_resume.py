"""A training process killed with SIGKILL in the middle of a step, then resumed with --resume, ends
where an uninterrupted run with the same seed ends: the same steps, data position, trajectory files
and metrics, each step once, and (the run being deterministic) the same weights and optimizer state.

The runs are real `orchestra-ray train` subprocesses, each in its own session, so that killing the
session's process group takes the run's local Ray cluster down with it, as a crash would."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, TASKS, GROUP = 4, 4, 4
# Fields of a step's metrics that measure time, not what the step computed.
TIMINGS = {"tokens_per_s", "rollout_s", "rollout_wait_s", "learn_s", "update_s", "publish_s"}  # wall-clock figures

# Three training processes (reference, killed, resumed): several minutes on 2 cores.
pytestmark = pytest.mark.slow


def overrides(frames_dir, root, name, cache):
    return [
        f"data.path={frames_dir}",
        "data.max_train_questions=48",
        f"run.root={root}",
        f"run.name={name}",
        f"policy.cache_dir={cache}",
        "policy.tiny.pretrain_steps=200",
        "cluster.include_dashboard=false",
        "rollout.num_workers=2",
        f"rollout.tasks_per_step={TASKS}",
        f"rollout.group_size={GROUP}",
        "rollout.max_turns=3",
        "rollout.max_new_tokens=32",
        # Without a warm start the tiny policy answers nothing, every reward is 0 and no weight moves.
        "warm_start.examples=32",
        "warm_start.epochs=2",
        "warm_start.batch_size=8",
        "warm_start.lr=1e-3",
        f"trainer.steps={STEPS}",
        "trainer.checkpoint_every=2",
        "trainer.lr=1e-3",
        "trainer.kl_coef=0.01",
        "reward.filter_zero_variance=false",
        "eval.enabled=false",
    ]


def start(args, log_path):
    log = open(log_path, "ab")
    # Its own session: the run's Ray processes share its process group, which the kill takes down.
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "train", *args], cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc, log_path, timeout=900):
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc = "timeout"
    assert rc == 0, f"training exited with {rc}:\n{tail(log_path)}"


def tail(path, n=40):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-n:])


def session_members(sid):
    """Processes still in session `sid` (the run's driver and every Ray process it started)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(pid))
    return out


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def final_state(run_dir):
    with open(os.path.join(run_dir, "checkpoints", f"step_{STEPS:06d}", "state.json")) as f:
        return json.load(f)


def policy(run_dir, step):
    from transformers import AutoModelForCausalLM

    path = os.path.join(run_dir, "checkpoints", f"step_{step:06d}", "policy")
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def optimizer(run_dir, step, tmp="optimizer.pt"):
    """The checkpoint's optimizer state (from its DCP shards, keyed by parameter name) and version."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    path = os.path.join(run_dir, "checkpoints", f"step_{step:06d}")
    out = os.path.join(run_dir, f"{tmp}.{step}")
    dcp_to_torch_save(os.path.join(path, "dcp"), out)
    state = torch.load(out, weights_only=False)
    os.remove(out)
    return {"optimizer": state["optimizer"], "version": torch.load(os.path.join(path, "learner.pt"), weights_only=False)["version"]}


def leftovers(run_dir):
    return sorted(os.path.relpath(os.path.join(d, n), run_dir) for d, dirs, files in os.walk(run_dir)
                  for n in dirs + files if n.endswith(".tmp") or n.startswith("tmp"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, frames_dir):
    # One cache for the session: the tiny base policy is keyed by its config and corpus.
    cache = tmp_path_factory.getbasetemp() / "policy-cache"
    root = tmp_path_factory.mktemp("runs")
    logs = tmp_path_factory.mktemp("logs")
    t0 = time.monotonic()

    reference = os.path.join(root, "reference")
    finish(start(overrides(frames_dir, root, "reference", cache), logs / "reference.log"), logs / "reference.log")

    crashed = os.path.join(root, "crashed")
    log = logs / "crashed.log"
    proc = start(overrides(frames_dir, root, "crashed", cache), log)
    step3 = os.path.join(crashed, "trajectories", "step_000003.parquet")
    deadline = time.monotonic() + 900
    # Step 3 is under way once its rollouts are on disk (after step 2's checkpoint); its update,
    # metrics and step 4 are still to come.
    while not os.path.exists(step3):
        assert proc.poll() is None, f"training ended before step 3 (exit {proc.returncode}):\n{tail(log)}"
        assert time.monotonic() < deadline, f"no step 3 after 900 s:\n{tail(log)}"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(100):
        alive = session_members(proc.pid)
        if not alive:
            break
        time.sleep(0.1)
    at_kill = {
        "alive": alive,
        "checkpoints": sorted(os.listdir(os.path.join(crashed, "checkpoints"))),
        "metrics_steps": [m["step"] for m in read_metrics(crashed)],
        "trajectories": sorted(os.listdir(os.path.join(crashed, "trajectories"))),
    }

    log = logs / "resumed.log"
    finish(start(["--resume", crashed], log), log)
    with open(log) as f:
        resumed_log = f.read()
    return {"reference": reference, "resumed": crashed, "at_kill": at_kill, "log": resumed_log,
            "seconds": time.monotonic() - t0}


def test_kill_landed_inside_step_3_and_took_ray_down(runs):
    k = runs["at_kill"]
    assert k["alive"] == [], f"processes of the killed run survived: {k['alive']}"
    assert "step_000002" in k["checkpoints"] and "step_000004" not in k["checkpoints"], k
    assert "step_000003.parquet" in k["trajectories"], k  # step 3's own output, to be dropped on resume
    assert k["metrics_steps"][:2] == [1, 2] and set(k["metrics_steps"]) <= {1, 2, 3}, k
    assert "resumed from" in runs["log"] and "at step 2" in runs["log"], runs["log"][-2000:]


def test_resumed_run_counts_each_step_once(runs):
    for run_dir in (runs["reference"], runs["resumed"]):
        assert [m["step"] for m in read_metrics(run_dir)] == list(range(1, STEPS + 1))
        assert sorted(os.listdir(os.path.join(run_dir, "trajectories"))) == [
            f"step_{s:06d}.parquet" for s in range(1, STEPS + 1)]
        assert leftovers(run_dir) == []
        for s in range(1, STEPS + 1):
            rows = pq.read_table(os.path.join(run_dir, "trajectories", f"step_{s:06d}.parquet")).to_pylist()
            assert len(rows) == TASKS * GROUP and len({r["episode_id"] for r in rows}) == TASKS * GROUP
            assert {r["step"] for r in rows} == {s} and {r["weight_version"] for r in rows} == {s - 1}
        with open(os.path.join(run_dir, "summary.json")) as f:
            assert json.load(f)["steps"] == STEPS


def test_resumed_run_continues_at_the_same_data_position(runs):
    ref, res = final_state(runs["reference"]), final_state(runs["resumed"])
    assert res["step"] == ref["step"] == STEPS
    assert res["data_position"] == ref["data_position"]
    for s in (3, 4):  # the redone steps drew the very questions and profiles the reference drew
        a, b = (pq.read_table(os.path.join(runs[r], "trajectories", f"step_{s:06d}.parquet"),
                              columns=["task_id", "question_id", "preference_profile"]).to_pylist()
                for r in ("reference", "resumed"))
        assert a == b


def test_optimizer_state_was_restored(runs):
    ref, res = optimizer(runs["reference"], STEPS), optimizer(runs["resumed"], STEPS)
    assert res["version"] == ref["version"] == STEPS
    # AdamW counts its updates per parameter: a fresh optimizer after the resume would count only
    # the updates since step 2.
    ref_steps = [float(s["step"]) for s in ref["optimizer"]["state"].values()]
    res_steps = [float(s["step"]) for s in res["optimizer"]["state"].values()]
    assert res_steps == ref_steps and min(ref_steps) >= STEPS
    for k, s in ref["optimizer"]["state"].items():
        for moment in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(s[moment], res["optimizer"]["state"][k][moment]), (k, moment)


def test_resumed_run_ends_with_the_reference_weights_and_metrics(runs):
    # Rollouts are seeded per batch, the learner's generator and RNG are checkpointed, replayed
    # experts are deterministic: the interrupted run is expected to match bit for bit.
    ref, res = policy(runs["reference"], STEPS), policy(runs["resumed"], STEPS)
    assert ref.keys() == res.keys()
    differ = [k for k in ref if not torch.equal(ref[k], res[k])]
    assert differ == []
    warm = os.path.join(runs["reference"], "checkpoints", "warm_start", "policy")
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(warm).state_dict()
    assert any(not torch.equal(start[k], ref[k]) for k in ref), "training left the weights unchanged"
    for a, b in zip(read_metrics(runs["reference"]), read_metrics(runs["resumed"])):
        assert {k: v for k, v in a.items() if k not in TIMINGS} == {k: v for k, v in b.items() if k not in TIMINGS}

"""Rollout workers killed mid-step: the pool re-issues the lost batches to live workers, the run
completes every step, and each step's ledger balances (issued = completed, each episode trained on
at most once, re-issues counted). Then a node holding rollout workers is removed from a
multi-node `ray.cluster_utils.Cluster` mid-run, and training completes on the remaining node."""

import json
import os
import signal
import threading
import time

import pyarrow.parquet as pq
import pytest
import ray
from ray.cluster_utils import Cluster

from orchestra_ray.config_load import load_config
from pipelines.cluster import connect
from pipelines.families import load_families
from pipelines.progress import Progress
from pipelines.train import Trainer, new_run_dir
from pipelines.zoo import load_zoo

from test_e2e_grpo import overrides

TASKS, GROUP = 4, 4


def start_trainer(cfg):
    zoo = load_zoo(cfg)
    tr = Trainer(cfg, zoo, new_run_dir(cfg, "quickstart"), Progress(), load_families(cfg, zoo))
    path = tr.policy_path()
    tr.workers.start(path)
    ray.get(tr.learner.publish.remote())
    tr.workers.start_reference(path)  # none when trainer.kl_coef = 0
    return tr


def step_with(tr, fault, after_s=0.3):
    """Runs one GRPO step while `fault(tr)` fires once a batch is in flight; returns the metrics
    and whether the fault fired mid-step."""
    fired = threading.Event()

    def inject():
        deadline = time.time() + 60
        while time.time() < deadline and not fired.is_set():
            if tr.pool.busy_pids():
                time.sleep(after_s)
                if tr.pool.busy_pids() and fault(tr):
                    fired.set()
                    return
            time.sleep(0.02)

    t = threading.Thread(target=inject, daemon=True)
    t.start()
    metrics = tr.grpo_step()
    fired_mid_step = fired.is_set()
    fired.set()
    t.join()
    return metrics, fired_mid_step


def kill_a_busy_worker(tr):
    pids = tr.pool.busy_pids()
    if not pids:
        return False
    os.kill(pids[0], signal.SIGKILL)
    return True


def check_books(run_dir, metrics):
    books = metrics["ledger"]
    assert books["issued"] == books["completed"] == TASKS * GROUP
    assert books["trained"] == books["trained_unique"]  # no episode trained twice
    rows = pq.read_table(os.path.join(run_dir, "trajectories", f"step_{metrics['step']:06d}.parquet")).to_pylist()
    ids = [r["episode_id"] for r in rows]
    assert len(ids) == len(set(ids)) == TASKS * GROUP


@pytest.fixture
def small_cfg(tmp_path, frames_dir):
    def make(*extra):
        args = overrides(frames_dir, tmp_path / "runs", tmp_path / "cache") + [
            "policy.tiny.pretrain_steps=20", "trainer.kl_coef=0", "rollout.retry_backoff_s=0.2", *extra]
        return load_config("pipelines/configs/quickstart.yaml", args)
    return make


@pytest.mark.parametrize("transport", ["object_store", "collective"])
def test_killed_rollout_workers_lose_no_episode(small_cfg, transport):
    """With the collective transport a replacement joins the broadcast group; the killed worker's
    place in it is given up, so each step's version is still broadcast (not the object store)."""
    cfg = small_cfg("run.name=kill", "rollout.num_workers=2", "cluster.num_cpus=2", "trainer.kl_coef=0.01",
                    f"weights.transport={transport}")
    connect(cfg)
    try:
        tr = start_trainer(cfg)
        kills, steps = 0, []
        for step in range(3):
            if step == 2:  # the reference model dies between steps: it restarts and answers the retried call
                os.kill(ray.get(tr.reference.pid.remote()), signal.SIGKILL)
            metrics, fired = step_with(tr, kill_a_busy_worker)
            kills += fired
            steps.append(metrics)
            check_books(tr.run_dir, metrics)
        assert kills >= 2, f"only {kills} workers were killed mid-step"
        assert [m["step"] for m in steps] == [1, 2, 3]
        assert all(m["updated"] and "kl" in m for m in steps), steps[-1]
        assert sum(m["ledger"]["reissued"] for m in steps) >= 2 * (TASKS * GROUP // 2)  # a lost batch is half the step
        assert sum(m["ledger"]["failed_attempts"] for m in steps) == sum(m["ledger"]["reissued"] for m in steps)
        assert tr.pool.counts["replaced"] >= 2 and tr.pool.wait_ready(2, timeout_s=60) == 2  # replacements came up
        version, refs, _ = ray.get(tr.workers.store.latest.remote())
        assert version == 3 and (refs == [] if transport == "collective" else len(refs) == 1)
        if transport == "collective":
            epoch, members = ray.get(tr.workers.store.transport_members.remote())
            assert len(members) == 2, "the killed workers left the group, their replacements joined"
        with open(os.path.join(tr.run_dir, "metrics.jsonl")) as f:
            assert [json.loads(line)["step"] for line in f] == [1, 2, 3]
    finally:
        ray.shutdown()


def test_training_goes_on_when_a_node_is_removed(small_cfg):
    # Head: learner and reference (by their `learner` resource, as in the production overlay),
    # experts and room for two rollout workers; the worker node holds two more. Four workers need
    # all four `rollout` units, so two of them live on the worker node.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"rollout": 2, "learner": 2},
                                                            "include_dashboard": False})
    node = cluster.add_node(num_cpus=1, resources={"rollout": 2})
    cfg = small_cfg("run.name=node", "rollout.num_workers=4", "rollout.num_cpus_per_worker=0.25",
                    "rollout.resources.rollout=1", "trainer.resources.learner=1")
    try:
        connect(cfg, cluster.address)
        tr = start_trainer(cfg)
        assert tr.pool.wait_ready(4, timeout_s=120) == 4
        first = tr.grpo_step()
        check_books(tr.run_dir, first)

        def remove_node(_):
            cluster.remove_node(node, allow_graceful=False)
            return True

        second, fired = step_with(tr, remove_node, after_s=0.0)  # at once: a fast step may end its remote batches first
        assert fired
        check_books(tr.run_dir, second)
        assert second["ledger"]["failed_attempts"] > 0  # batches on the lost node were re-issued
        third = tr.grpo_step()
        check_books(tr.run_dir, third)
        assert [m["step"] for m in (first, second, third)] == [1, 2, 3]
        assert tr.pool.size()["ready"] == 2  # the replacements wait for a node; the head's two serve
    finally:
        ray.shutdown()
        cluster.shutdown()


def learner_rank_pids():
    """Processes of the learner group's ranks on this machine (Ray titles them ray::Learner...)."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and cmd[0].startswith("ray::Learner") and not cmd[0].startswith("ray::LearnerGroup"):
            out.append(p.pid)
    return out


def test_a_killed_learner_rank_fails_the_run_with_one_line_and_resume_continues(frames_dir, tmp_path, capsys):
    """What README's Reliability section says of a learner group: a dead rank fails the run with one
    line naming it and the last checkpoint; `--resume` continues from there."""
    from pipelines.cli import main

    base = overrides(frames_dir, tmp_path / "runs", tmp_path / "cache")
    run_dir = str(tmp_path / "runs" / "rank")
    argv = ["train", *base, "run.name=rank", "policy.tiny.pretrain_steps=20", "trainer.num_learners=2",
            "trainer.steps=4", "trainer.checkpoint_every=1", "eval.enabled=false", "trainer.collective_timeout_s=120"]
    killed = []

    def kill_after_first_checkpoint():
        deadline = time.time() + 300
        while time.time() < deadline:
            if os.path.isfile(os.path.join(run_dir, "checkpoints", "step_000001", "state.json")):
                pids = learner_rank_pids()
                if len(pids) == 2:
                    os.kill(pids[1], signal.SIGKILL)
                    killed.append(pids[1])
                    return
            time.sleep(0.05)

    t = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    t.start()
    assert main(argv) == 1
    t.join()
    assert killed
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "learner rank" in err and "of 2 died" in err and "last checkpoint:" in err and "--resume" in err, err
    step = int(err.split("step_")[1][:6])
    assert step >= 1
    assert main(["train", "--resume", run_dir]) == 0
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2, 3, 4]

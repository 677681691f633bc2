"""Asynchronous GRPO on a real local Ray cluster: rollouts of the next step are generated while the
learner trains (rollout.max_staleness=1). Every trained sample is at most one weight version behind
the learner, the PPO ratio is taken against the rollout log-probs that drew it, checkpoints record
the data position of the steps trained (not of those running ahead), and a resumed run goes on."""

import json
import os

import pyarrow.parquet as pq
import pytest

from orchestra_ray.config_load import load_config
from orchestra_ray.families.task import TaskSampler
from pipelines.cli import main
from pipelines.zoo import load_zoo

TASKS, GROUP, STEPS, BOUND = 4, 4, 4, 1


@pytest.fixture(scope="module")
def run(tmp_path_factory, frames_dir):
    root = tmp_path_factory.mktemp("runs")
    args = [
        f"data.path={frames_dir}", "data.max_train_questions=48", "data.max_heldout_questions=6",
        f"run.root={root}", "run.name=async", f"policy.cache_dir={tmp_path_factory.mktemp('cache')}",
        "policy.tiny.pretrain_steps=60", "rollout.num_workers=2", f"rollout.tasks_per_step={TASKS}",
        f"rollout.group_size={GROUP}", "rollout.max_turns=3", "rollout.max_new_tokens=32",
        f"rollout.max_staleness={BOUND}", "warm_start.examples=16", f"trainer.steps={STEPS}",
        "trainer.checkpoint_every=2", "trainer.lr=1e-3",
        # Keep every sample so that each step surely updates the weights.
        "reward.filter_zero_variance=false", "eval.enabled=false", "cluster.include_dashboard=false",
    ]
    assert main(["train", *args]) == 0
    return os.path.join(root, "async")


def rows_of(run_dir, step):
    return pq.read_table(os.path.join(run_dir, "trajectories", f"step_{step:06d}.parquet")).to_pylist()


def metrics_of(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_no_trajectory_older_than_the_bound_is_trained_on(run):
    metrics = metrics_of(run)
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert [m["weight_version"] for m in metrics] == list(range(1, STEPS + 1))  # every step updated
    ahead = 0
    for step in range(1, STEPS + 1):
        rows = rows_of(run, step)
        assert len(rows) == TASKS * GROUP
        for r in rows:
            # The learner held version step-1 when it trained step `step`.
            assert r["learner_version"] == step - 1
            assert r["staleness"] == r["learner_version"] - r["weight_version"]
            assert 0 <= r["staleness"] <= BOUND
            assert r["kept"]
            assert len(r["rollout_logprobs"]) == len(r["token_ids"])  # the behaviour policy's log-probs
        ahead += sum(r["staleness"] == 1 for r in rows)
        assert metrics[step - 1]["staleness"]["max"] <= BOUND
        assert metrics[step - 1]["filters"]["stale_samples"] == 0
    # Rollouts of steps 2.. were generated while the learner trained the step before.
    assert ahead > 0
    assert rows_of(run, 1)[0]["weight_version"] == 0


def test_checkpoints_record_the_data_position_of_the_steps_trained(run):
    cfg = load_config(os.path.join(run, "config.yaml"))
    sampler = TaskSampler(load_zoo(cfg).train, cfg.preferences.train_profiles, load_zoo(cfg).slots, cfg.run.seed)
    for step in (1, 2):
        sampler.next_tasks(TASKS, step)
    state = json.load(open(os.path.join(run, "checkpoints", "step_000002", "state.json")))
    assert state["step"] == 2 and state["data_position"] == {"frames": sampler.position}


def test_an_asynchronous_run_resumes_from_its_checkpoint(run):
    assert main(["train", "--resume", run, f"trainer.steps={STEPS + 1}"]) == 0
    metrics = metrics_of(run)
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 2))
    cfg = load_config(os.path.join(run, "config.yaml"))
    zoo = load_zoo(cfg)
    sampler = TaskSampler(zoo.train, cfg.preferences.train_profiles, zoo.slots, cfg.run.seed)
    for step in range(1, STEPS + 1):
        sampler.next_tasks(TASKS, step)
    expected = [t.question_id for t in sampler.next_tasks(TASKS, STEPS + 1)]
    got = []
    for r in rows_of(run, STEPS + 1):
        if r["question_id"] not in got:
            got.append(r["question_id"])
    assert got == expected
    assert all(r["staleness"] <= BOUND for r in rows_of(run, STEPS + 1))

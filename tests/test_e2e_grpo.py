"""End to end on a real local Ray cluster: warm start, two GRPO steps with two rollout workers,
weight versions on every trajectory, then an interrupted run resumed from its checkpoint."""

import json
import os

import pyarrow.parquet as pq
import pytest
import torch

from orchestra_ray.config_load import load_config
from orchestra_ray.families.task import TaskSampler
from pipelines.cli import main
from pipelines.zoo import load_zoo

TASKS, GROUP = 4, 4


def overrides(frames_dir, root, cache):
    return [
        f"data.path={frames_dir}",
        "data.max_train_questions=48",
        "data.max_heldout_questions=6",
        f"run.root={root}",
        "run.name=e2e",
        f"policy.cache_dir={cache}",
        "policy.tiny.pretrain_steps=200",
        "rollout.num_workers=2",
        f"rollout.tasks_per_step={TASKS}",
        f"rollout.group_size={GROUP}",
        "rollout.max_turns=3",
        "rollout.max_new_tokens=32",
        "warm_start.examples=32",
        "warm_start.epochs=2",
        "warm_start.batch_size=8",
        "warm_start.lr=1e-3",
        "trainer.steps=2",
        "trainer.checkpoint_every=1",
        "trainer.lr=1e-3",
        "trainer.kl_coef=0.01",
        # Keep every sample so that each step surely updates the weights.
        "reward.filter_zero_variance=false",
        "eval.bootstrap_samples=200",
    ]


@pytest.fixture(scope="module")
def run(tmp_path_factory, frames_dir):
    root = tmp_path_factory.mktemp("runs")
    cache = tmp_path_factory.mktemp("cache")
    args = overrides(frames_dir, root, cache)
    assert main(["train", *args]) == 0
    return os.path.join(root, "e2e"), args


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def params(path):
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def test_two_grpo_steps_version_weights_and_trajectories(run):
    run_dir, _ = run
    for step, version in ((1, 0), (2, 1)):
        rows = pq.read_table(os.path.join(run_dir, "trajectories", f"step_{step:06d}.parquet")).to_pylist()
        assert len(rows) == TASKS * GROUP
        # Every trajectory carries the version it was generated with: step k uses version k-1.
        assert {r["weight_version"] for r in rows} == {version}
        for r in rows:
            assert len(r["token_ids"]) == len(r["loss_mask"]) == len(r["rollout_logprobs"])
            assert sum(r["loss_mask"][: r["prompt_len"]]) == 0  # the prompt is never trained on
            assert sum(r["loss_mask"]) > 0
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2]
    assert [m["weight_version"] for m in metrics] == [1, 2]  # the learner advanced the version
    warm = params(os.path.join(run_dir, "checkpoints", "warm_start", "policy"))
    final = params(os.path.join(run_dir, "checkpoints", "step_000002", "policy"))
    changed = [k for k in warm if not torch.equal(warm[k], final[k])]
    assert changed, "GRPO steps left every weight unchanged"
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["steps"] == 2 and "reward_difference" in summary


def test_resume_after_interruption_continues_step_and_data_position(run, frames_dir):
    run_dir, args = run
    # Simulate a crash during step 3: its trajectories and metrics were written, its checkpoint not.
    tdir = os.path.join(run_dir, "trajectories")
    step2 = pq.read_table(os.path.join(tdir, "step_000002.parquet"))
    pq.write_table(step2, os.path.join(tdir, "step_000003.parquet"))
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": 3, "partial": True}) + "\n")

    assert main(["train", "--resume", run_dir, "trainer.steps=3"]) == 0

    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3]  # no step counted twice
    assert "partial" not in metrics[-1]
    rows = pq.read_table(os.path.join(tdir, "step_000003.parquet")).to_pylist()
    assert len(rows) == TASKS * GROUP and {r["weight_version"] for r in rows} == {2}
    # Same data position as an uninterrupted run: step 3 draws the sampler's third batch.
    cfg = load_config(os.path.join(run_dir, "config.yaml"))
    zoo = load_zoo(cfg)
    sampler = TaskSampler(zoo.train, cfg.preferences.train_profiles, zoo.slots, cfg.run.seed)
    sampler.next_tasks(TASKS, 1)
    sampler.next_tasks(TASKS, 2)
    expected = [t.question_id for t in sampler.next_tasks(TASKS, 3)]
    got = []
    for r in rows:
        if r["question_id"] not in got:
            got.append(r["question_id"])
    assert got == expected
    state = json.load(open(os.path.join(run_dir, "checkpoints", "step_000003", "state.json")))
    assert state["step"] == 3 and state["data_position"] == {"frames": sampler.position}

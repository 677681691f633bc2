"""End to end on a real local Ray cluster: warm start, two GRPO steps with two rollout workers,
weight versions on every trajectory, the figures in each experiment tracker, then an interrupted run
resumed from its checkpoint (and in the same tracker runs)."""

import glob
import json
import math
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
    args = overrides(frames_dir, root, cache) + ["logging.backends=[console,tensorboard,mlflow,wandb]"]
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


def tracker_figures(run_dir):
    """Every scalar as each tracker's own reader gives it back: {tracker: {name: {step: value}}}."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tests.wandb_records import history

    tb = EventAccumulator(os.path.join(run_dir, "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    tb.Reload()
    state = json.load(open(os.path.join(run_dir, "trackers.json")))
    client = MlflowClient(state["mlflow"]["tracking_uri"])
    run_id = state["mlflow"]["run_id"]
    rows = [r for path in sorted(glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb")))
            for r in history(path)]
    wandb = {}
    for r in rows:
        for name, value in r.items():
            if isinstance(value, (int, float)) and not name.startswith("_"):
                wandb.setdefault(name, {})[r["step"]] = value
    return {
        "tensorboard": {tag: {e.step: e.value for e in tb.Scalars(tag)} for tag in tb.Tags()["scalars"]},
        "mlflow": {k: {m.step: m.value for m in client.get_metric_history(run_id, k)}
                   for k in client.get_run(run_id).data.metrics},
        "wandb": wandb,
    }, tb, client, run_id, rows


def assert_trackers_match_metrics(run_dir, steps):
    from orchestra_ray.tracking.flatten import flatten_metrics

    figures = tracker_figures(run_dir)[0]
    lines = {m["step"]: flatten_metrics({k: v for k, v in m.items() if k != "step"}) for m in read_metrics(run_dir)}
    assert sorted(lines) == steps
    for tracker, got in figures.items():
        for step, line in lines.items():
            assert {"reward", "accuracy", "cost", "staleness/mean", "filters/kept_samples"} <= set(line)
            for name, value in line.items():
                # TensorBoard keeps 32-bit floats; MLflow and wandb the number itself.
                assert math.isclose(got[name][step], value, rel_tol=1e-6, abs_tol=1e-6), (tracker, name, step)
    return figures


def test_every_tracker_holds_the_figures_of_metrics_jsonl(run):
    run_dir, _ = run
    figures = assert_trackers_match_metrics(run_dir, [1, 2])
    _, tb, client, run_id, rows = tracker_figures(run_dir)
    warm = json.load(open(os.path.join(run_dir, "eval", "warm_start.json")))
    final = json.load(open(os.path.join(run_dir, "eval", "final.json")))
    for tracker, got in figures.items():
        assert math.isclose(got["eval/warm_start/profiles/balanced/reward"][0], warm["profiles"]["balanced"]["reward"],
                            rel_tol=1e-6), tracker
        assert math.isclose(got["eval/final/profiles/cost-first/cost"][2], final["profiles"]["cost-first"]["cost"],
                            rel_tol=1e-6), tracker
    # The run is named after its directory; the resolved config is its parameters; the plot is there.
    run = client.get_run(run_id)
    assert run.info.run_name == "e2e" and run.info.status == "FINISHED"
    assert run.data.params["trainer.steps"] == "2" and run.data.params["rollout.group_size"] == str(GROUP)
    assert "plots/training_curves.png" in [a.path for a in client.list_artifacts(run_id, "plots")]
    assert "plots/training_curves" in tb.Tags()["images"] and "config/text_summary" in tb.Tags()["tensors"]
    assert any(r.get("plots/training_curves/_type") == "image-file" for r in rows)
    assert json.load(open(os.path.join(run_dir, "trackers.json")))["wandb"]["id"] == "e2e"


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
    # The trackers' runs go on: step 3 lands in the same MLflow run and wandb id as steps 1 and 2.
    run_id = json.load(open(os.path.join(run_dir, "trackers.json")))["mlflow"]["run_id"]
    assert_trackers_match_metrics(run_dir, [1, 2, 3])
    _, _, client, same_id, _ = tracker_figures(run_dir)
    assert same_id == run_id and len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1
    assert {os.path.basename(p) for p in glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))} == {"run-e2e.wandb"}

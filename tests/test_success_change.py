"""The paired success comparison of two held-out evaluations, without Ray: the same episodes
(task and profile) lined up, episodes gained and lost counted, and the change averaged per task
with a bootstrap interval over tasks."""

import pytest

from orchestra_ray.reports.evaluation import compare_outcomes, episode_outcomes
from orchestra_ray.families.task import DOMAIN, FRAMES
from orchestra_ray.rollout.sample import Sample
from pipelines.progress import format_summary


def _scored(family, qid, profile, outcome):
    return Sample(family=family, question_id=qid, preference_profile=profile, metrics={"outcome": outcome})


def test_episodes_are_keyed_by_family_task_and_profile():
    eps = episode_outcomes([_scored(DOMAIN, "bank-1", "balanced", 1.0), _scored(DOMAIN, "bank-1", "cost-first", 0.0),
                            _scored(FRAMES, "7", "balanced", 1.0)])
    assert eps == {DOMAIN: {"bank-1|balanced": 1.0, "bank-1|cost-first": 0.0}, FRAMES: {"7|balanced": 1.0}}


def test_gains_and_losses_are_counted_and_the_change_is_a_mean_over_tasks():
    profiles = ["balanced", "accuracy-first", "cost-first", "latency-first"]
    before = {f"a|{p}": 0.0 for p in profiles} | {"b|balanced": 1.0, "c|balanced": 0.0, "d|balanced": 1.0}
    after = {f"a|{p}": 1.0 for p in profiles} | {"b|balanced": 1.0, "c|balanced": 0.0, "d|balanced": 0.0}
    c = compare_outcomes(before, after, samples=500, seed=0)
    assert (c["episodes"], c["tasks"], c["gained"], c["lost"]) == (7, 4, 4, 1)
    # Task a counts once (+1), not four times: (1 + 0 + 0 - 1) / 4 tasks.
    assert c["mean"] == pytest.approx(0.0)
    assert c["ci95"][0] < 0 < c["ci95"][1]


def test_no_change_has_a_zero_interval_and_only_shared_episodes_count():
    before = {"a|balanced": 1.0, "b|balanced": 0.0, "gone|balanced": 1.0}
    after = {"a|balanced": 1.0, "b|balanced": 0.0, "new|balanced": 1.0}
    c = compare_outcomes(before, after, samples=200)
    assert (c["episodes"], c["gained"], c["lost"], c["mean"], c["ci95"]) == (2, 0, 0, 0.0, [0.0, 0.0])
    with pytest.raises(ValueError, match="no shared episodes"):
        compare_outcomes({"a|balanced": 1.0}, {"b|balanced": 1.0})


def test_a_consistent_gain_has_an_interval_above_zero():
    before = {f"t{i}|balanced": 0.0 for i in range(20)}
    after = {f"t{i}|balanced": float(i % 2 == 0) for i in range(20)}
    c = compare_outcomes(before, after, samples=1000, seed=1)
    assert c["gained"] == 10 and c["lost"] == 0 and c["mean"] == pytest.approx(0.5)
    assert 0 < c["ci95"][0] <= 0.5 <= c["ci95"][1]


def test_the_run_summary_prints_the_paired_change_under_its_family():
    fam = {"n": 8, "reward": 0.1, "accuracy": 0.25, "cost": 0.0, "function_match": 0.5, "argument_match": 0.4}
    summary = {"run_dir": "runs/x", "steps": 3, "eval_warm_start_families": {DOMAIN: fam}, "eval_final_families": {DOMAIN: fam},
               "success_change": {DOMAIN: {"episodes": 8, "tasks": 2, "gained": 3, "lost": 1, "mean": 0.25, "ci95": [-0.1, 0.5]}}}
    text = format_summary(summary, None)
    assert "episodes solved +3 -1 of 8; success change per task +0.250 (95% bootstrap -0.100 .. +0.500)" in text

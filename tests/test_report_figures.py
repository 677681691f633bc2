"""Report figures and pictures from trajectory records (plain data, no Ray)."""

import numpy as np
import pytest

from orchestra_ray.reports.baselines import Answer, baseline_records, plan_baselines
from orchestra_ray.grpo.preferences import profile_vector
from orchestra_ray.reports.figures import adherence, bootstrap_interval, profile_tables
from orchestra_ray.reports.plots import accuracy_cost_plot, pareto_frontier, tool_share_plot, training_curves_plot

SLOTS = ["a", "b"]


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_questions():
    assert bootstrap_interval([1.0] * 10, 500, 0) == (1.0, 1.0)
    rng = np.random.default_rng(0)
    small = rng.random(20) < 0.4
    lo, hi = bootstrap_interval(small, 2000, 0)
    assert lo < small.mean() < hi
    big = rng.random(2000) < 0.4
    lo2, hi2 = bootstrap_interval(big, 2000, 0)
    assert hi2 - lo2 < (hi - lo) / 3
    assert bootstrap_interval(small, 500, 3) == bootstrap_interval(small, 500, 3)


def _records():
    ans = {f"q{i}": {"a": Answer("x", "A" if i % 3 else "B", 5, 5, 0.01, 1.0), "b": Answer("y", "A", 5, 5, 0.1, 4.0)}
           for i in range(12)}
    profiles = {p: dict(profile_vector(p, SLOTS).weights) for p in ("balanced", "cost-first", "accuracy-first")}
    plan = plan_baselines(ans, list(ans), SLOTS, profiles)
    return baseline_records(ans, list(ans), SLOTS, profiles, plan, 0), profiles


def test_tables_have_every_method_under_every_profile_with_consistent_figures():
    records, profiles = _records()
    tables = profile_tables(records, 200, 0)
    assert set(tables) == set(profiles)
    by = {f.method: f for f in tables["balanced"]}
    assert by["arm:a"].accuracy == pytest.approx(8 / 12) and by["arm:b"].accuracy == 1.0
    assert by["arm:a"].cost == pytest.approx(0.01) and by["arm:b"].latency == pytest.approx(4.0)
    assert by["oracle"].accuracy == 1.0 and by["oracle"].cost < by["arm:b"].cost
    assert by["arm:a"].share == {"a": 1.0}
    # The oracle is never below a single arm on reward; every figure counts 12 questions.
    assert by["oracle"].reward >= max(by["arm:a"].reward, by["arm:b"].reward) - 1e-9
    assert all(f.questions == 12 for f in tables["balanced"])


def test_adherence_compares_the_asked_metric_with_balanced():
    records, profiles = _records()
    tables = profile_tables({"policy": records["arm:a"][:12] + records["arm:b"][12:24] + records["arm:b"][24:]}, 100, 0)
    figs = {f.profile: f for t in tables.values() for f in t}
    # Balanced asked "a" only, cost-first "b": cost went up, so cost-first is not followed.
    rows = {a.profile: a for a in adherence(figs, profiles)}
    assert rows["cost-first"].metric == "cost" and rows["cost-first"].wanted == "lower"
    assert not rows["cost-first"].followed
    assert rows["accuracy-first"].metric == "accuracy" and rows["accuracy-first"].followed


def test_pareto_frontier_keeps_points_no_other_beats():
    pts = [(1.0, 50.0), (2.0, 40.0), (3.0, 70.0), (0.5, 30.0), (3.0, 60.0)]
    assert pareto_frontier(pts) == [(0.5, 30.0), (1.0, 50.0), (3.0, 70.0)]


def test_plots_are_written_as_png(tmp_path):
    records, _ = _records()
    tables = profile_tables(records, 100, 0)
    accuracy_cost_plot(tables, str(tmp_path / "p.png"), "t")
    tool_share_plot({"x": {"a": 0.3, "b": 0.7}}, SLOTS, str(tmp_path / "s.png"), "t")
    training_curves_plot([{"step": 1, "reward": 0.2, "accuracy": 0.5, "cost": 0.01}], str(tmp_path / "c.png"), "t")
    training_curves_plot([], str(tmp_path / "empty.png"), "t")
    for name in ("p.png", "s.png", "c.png", "empty.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""Routing baselines over recorded answers (plain data, no Ray)."""

import pytest

from orchestra_ray.reports.baselines import (Answer, baseline_records, best_cascade, cascade_asked, cheapest_slot, oracle_slot,
                                     plan_baselines, strongest_slot)
from orchestra_ray.grpo.preferences import COST, LATENCY, OUTCOME, calls_metric, profile_vector
from orchestra_ray.rollout.sample import Sample
from orchestra_ray.rollout.trajectory import trajectory_rows

SLOTS = ["cheap", "big", "wrong"]


def _a(grade, cost, latency=1.0):
    return Answer(text=f"answer-{grade}", grade=grade, input_tokens=10, output_tokens=20, cost=cost, latency=latency)


def _answers(n=20):
    # "cheap" knows half the questions and abstains on the rest; "big" is always right and dear;
    # "wrong" answers everything wrongly at a middling price.
    return {f"q{i}": {"cheap": _a("A" if i % 2 == 0 else "C", 0.001, 0.5), "big": _a("A", 0.05, 5.0),
                      "wrong": _a("B", 0.01, 1.0)} for i in range(n)}


def test_cascade_asks_until_an_expert_does_not_abstain():
    ans = _answers()
    assert [s for s, _ in cascade_asked(["cheap", "big", "wrong"], ans["q0"])] == ["cheap"]
    assert [s for s, _ in cascade_asked(["cheap", "big", "wrong"], ans["q1"])] == ["cheap", "big"]
    assert [s for s, _ in cascade_asked(["cheap"], ans["q1"])] == ["cheap"]  # the cascade ends: its answer stands


def test_oracle_is_the_cheapest_correct_arm_or_the_cheapest_arm():
    ans = _answers()
    assert oracle_slot(ans["q0"], SLOTS) == "cheap"
    assert oracle_slot(ans["q1"], SLOTS) == "big"
    none_right = {"cheap": _a("B", 0.002), "big": _a("C", 0.05), "wrong": _a("B", 0.001)}
    assert oracle_slot(none_right, SLOTS) == "wrong"


def test_cheapest_and_strongest_are_picked_on_the_given_questions():
    ans = _answers()
    ids = list(ans)
    assert cheapest_slot(ans, ids, SLOTS) == "cheap"
    assert strongest_slot(ans, ids, SLOTS) == "big"


@pytest.mark.parametrize("profile", ["balanced", "accuracy-first", "cost-first", "latency-first"])
def test_best_cascade_asks_the_cheap_expert_first_and_falls_back_on_the_strong_one(profile):
    ans = _answers()
    w = profile_vector(profile, SLOTS).weights
    # Always right, and cheaper and faster than "big" alone on the half "cheap" knows.
    assert best_cascade(ans, list(ans), SLOTS, w) == ("cheap", "big")


def test_best_cascade_needs_training_questions():
    with pytest.raises(ValueError, match="at least one training question"):
        best_cascade({}, [], SLOTS, profile_vector("balanced", SLOTS).weights)


def test_baseline_records_cover_every_method_profile_and_question_in_the_trajectory_schema():
    ans = _answers(10)
    train, heldout = [f"q{i}" for i in range(6)], [f"q{i}" for i in range(6, 10)]
    profiles = {p: dict(profile_vector(p, SLOTS).weights) for p in ("balanced", "cost-first")}
    plan = plan_baselines(ans, train, SLOTS, profiles)
    router = {(p, q): "big" for p in profiles for q in heldout}
    out = baseline_records(ans, heldout, SLOTS, profiles, plan, seed=0, router_choices=router)
    assert set(out) == {"arm:cheap", "arm:big", "arm:wrong", "random", "cheapest", "strongest", "cascade", "oracle", "router"}
    for method, rows in out.items():
        assert len(rows) == len(profiles) * len(heldout)
        assert trajectory_rows("run", 0, [Sample(**r) for r in rows]).num_rows == len(rows)
    q7 = [r for r in out["cascade"] if r["question_id"] == "q7" and r["preference_profile"] == "balanced"][0]
    # q7: "cheap" abstains, so "big" is asked too: both billed, "big" relayed.
    assert q7["metrics"][calls_metric("cheap")] == 1 and q7["metrics"][calls_metric("big")] == 1
    assert q7["metrics"][COST] == pytest.approx(0.051) and q7["metrics"][LATENCY] == pytest.approx(5.5)
    assert q7["answer_source"] == "big" and q7["outcome"] and q7["metrics"][OUTCOME] == 1.0
    arm = [r for r in out["arm:wrong"] if r["question_id"] == "q6"][0]
    assert arm["metrics"][OUTCOME] == 0.0 and arm["metrics"][COST] == pytest.approx(0.01)
    assert all(r["answer_source"] == "big" for r in out["router"])


def test_random_arm_is_fixed_by_the_seed():
    ans = _answers(30)
    profiles = {"balanced": dict(profile_vector("balanced", SLOTS).weights)}
    plan = plan_baselines(ans, list(ans), SLOTS, profiles)
    picks = lambda seed: [r["answer_source"] for r in baseline_records(ans, list(ans), SLOTS, profiles, plan, seed)["random"]]
    assert picks(0) == picks(0)
    assert picks(0) != picks(1)
    assert set(picks(0)) == set(SLOTS)


def test_bench_routes_bounds_what_question_blind_routes_reach():
    """`orchestra-ray bench routes` on the quickstart's recorded answers: the hindsight cascade is the
    best of all orders (so at least the training split's choice), the hindsight reading policy the
    best of all readers, a reader of wrong answers is at least as accurate as its order, and the
    oracle is the most accurate of all."""
    from orchestra_ray.config_load import load_config
    from pipelines.bench import routes
    from pipelines.families import load_families
    from pipelines.zoo import load_zoo

    cfg = load_config("pipelines/configs/quickstart.yaml", ["preferences.eval_profiles=[balanced,cost-first]"])
    zoo = load_zoo(cfg)
    result = routes.run(cfg, zoo, load_families(cfg, zoo))
    assert result["heldout_questions"] > 100 and list(result["profiles"]) == ["balanced", "cost-first"]
    for r in result["profiles"].values():
        chosen, reads, reader, reader_hindsight, hindsight, ceiling, fitted, oracle = r.values()
        assert reads["order"] == chosen["order"] and ceiling["order"] == hindsight["order"]
        assert hindsight["reward"] >= chosen["reward"]
        # the best reading tree on the held-out questions is at least any reader there: the training
        # split's tree, and the cascade that escalates on the text it reads
        assert reader_hindsight["reward"] >= max(reader["reward"], reads["reward"]) - 1e-9
        assert ceiling["accuracy"] >= hindsight["accuracy"] and oracle["accuracy"] >= ceiling["accuracy"]
        assert oracle["reward"] >= fitted["reward"] and 0 < fitted["most_chosen"]["questions"] <= result["heldout_questions"]
    assert "| balanced | best fixed cascade (training split) | grok-3-mini -> gpt-5-mini" in routes.table(result)
    frontier = result["reading_frontier"]
    assert [c["cost"] for c in frontier] == sorted(c["cost"] for c in frontier)
    assert [c["accuracy"] for c in frontier] == sorted(c["accuracy"] for c in frontier)  # more accurate, dearer

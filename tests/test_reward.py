"""The orchestration reward: outcome gate, metric directions, group normalisation, preferences."""

from __future__ import annotations

import random

import pytest

from orchestra_ray.grpo.preferences import (
    COST,
    LATENCY,
    OUTCOME,
    PreferenceError,
    calls_metric,
    profile_names,
    profile_vector,
)
from orchestra_ray.grpo.reward import anchored_reward, normalised_metrics, orchestration_reward

SLOTS = ["big", "mid", "small"]


def sample(outcome=1.0, cost=0.0, latency=0.0, **calls):
    m = {OUTCOME: outcome, COST: cost, LATENCY: latency}
    for slot, n in calls.items():
        m[calls_metric(slot)] = float(n)
    return m


def test_wrong_outcome_gets_zero_even_when_cheapest_and_fastest():
    weights = {OUTCOME: 0.2, COST: 0.7, LATENCY: 0.1}
    group = [
        sample(outcome=0.0, cost=0.0, latency=0.0),  # best cost and latency, but wrong
        sample(outcome=1.0, cost=5.0, latency=9.0),
    ]
    rewards = orchestration_reward(group, weights)
    assert rewards[0] == 0.0
    # The correct one wins on outcome only: its cost and latency are the worst end of the group.
    assert rewards[1] == pytest.approx(0.2)


def test_cheaper_correct_sample_gets_higher_reward_under_cost_first():
    weights = profile_vector("cost-first", SLOTS).weights
    group = [
        sample(outcome=1.0, cost=0.10, latency=3.0),
        sample(outcome=1.0, cost=0.01, latency=3.0),
        sample(outcome=0.0, cost=0.05, latency=3.0),
    ]
    r = orchestration_reward(group, weights)
    assert r[1] > r[0] > r[2] == 0.0
    # Hand-computed: outcome normalises to 1 for both correct samples (0.2), cost 0.01 is the best
    # end (1.0 * 0.7), 0.10 the worst (0), latency is constant (contributes 0).
    assert r[1] == pytest.approx(0.2 + 0.7)
    assert r[0] == pytest.approx(0.2)


def test_lower_latency_is_better():
    weights = profile_vector("latency-first", SLOTS).weights
    group = [sample(cost=1.0, latency=10.0), sample(cost=1.0, latency=2.0), sample(cost=1.0, latency=6.0)]
    norm = normalised_metrics(group, weights)
    assert [n[LATENCY] for n in norm] == pytest.approx([0.0, 1.0, 0.5])
    r = orchestration_reward(group, weights)
    assert r[1] > r[2] > r[0]


def test_metric_constant_in_group_contributes_zero():
    weights = {OUTCOME: 0.5, COST: 0.3, LATENCY: 0.2}
    group = [sample(cost=2.0, latency=1.0), sample(cost=2.0, latency=3.0)]
    norm = normalised_metrics(group, weights)
    # outcome and cost are constant -> 0 for everybody
    assert all(n[OUTCOME] == 0.0 and n[COST] == 0.0 for n in norm)
    assert orchestration_reward(group, weights) == pytest.approx([0.2, 0.0])


def test_all_correct_identical_group_gets_all_zero():
    weights = profile_vector("balanced", SLOTS).weights
    group = [sample(cost=1.0, latency=1.0, big=1)] * 4
    assert orchestration_reward(group, weights) == [0.0, 0.0, 0.0, 0.0]


def test_zero_weight_metric_is_ignored():
    weights = {OUTCOME: 1.0, COST: 0.0, LATENCY: 0.0}
    group = [sample(outcome=1.0, cost=100.0), sample(outcome=1.0, cost=0.0), sample(outcome=0.0)]
    r = orchestration_reward(group, weights)
    assert r == pytest.approx([1.0, 1.0, 0.0])


def test_rewards_stay_in_unit_interval_scaled_by_weight_sum():
    rng = random.Random(1234)
    profiles = profile_names(SLOTS)
    for _ in range(300):
        weights = dict(profile_vector(rng.choice(profiles), SLOTS).weights)
        if rng.random() < 0.5:  # also random signed weights, not only the shipped profiles
            weights = {k: rng.uniform(-2, 2) if k.startswith("calls:") else rng.uniform(0, 2) for k in weights}
        bound = sum(abs(w) for w in weights.values())
        group = [
            sample(
                outcome=float(rng.random() < 0.6),
                cost=rng.choice([0.0, rng.uniform(0, 1)]),
                latency=rng.uniform(0, 30),
                **{s: rng.randint(0, 3) for s in SLOTS},
            )
            for _ in range(rng.randint(1, 8))
        ]
        for r in orchestration_reward(group, weights):
            assert -1e-12 <= r <= bound + 1e-9


def test_best_sample_on_every_metric_reaches_the_bound():
    weights = {OUTCOME: 0.2, COST: 0.5, LATENCY: 0.3}
    group = [sample(outcome=1.0, cost=0.0, latency=0.0), sample(outcome=0.0, cost=1.0, latency=1.0)]
    assert orchestration_reward(group, weights) == pytest.approx([1.0, 0.0])


def test_prefer_profile_rewards_more_calls_of_that_expert():
    pv = profile_vector("prefer:small", SLOTS)
    assert pv.weights[calls_metric("small")] > 0
    group = [sample(small=0), sample(small=2), sample(small=1)]
    r = orchestration_reward(group, pv.weights)
    assert r[1] > r[2] > r[0]
    w = pv.weights[calls_metric("small")]
    assert r[1] - r[0] == pytest.approx(abs(w))


def test_avoid_profile_rewards_fewer_calls_of_that_expert():
    pv = profile_vector("avoid:big", SLOTS)
    assert pv.weights[calls_metric("big")] < 0
    group = [sample(big=0), sample(big=2), sample(big=1)]
    r = orchestration_reward(group, pv.weights)
    assert r[0] > r[2] > r[1]
    # |P| is used, so the avoided expert's term is positive for the sample that avoided it.
    assert r[0] == pytest.approx(abs(pv.weights[calls_metric("big")]))
    assert r[1] == pytest.approx(0.0)


def test_calls_sign_flips_the_direction():
    group = [sample(mid=0), sample(mid=3)]
    pos = orchestration_reward(group, {calls_metric("mid"): 1.0})
    neg = orchestration_reward(group, {calls_metric("mid"): -1.0})
    assert pos == pytest.approx([0.0, 1.0])
    assert neg == pytest.approx([1.0, 0.0])


def test_missing_calls_metric_counts_as_zero_calls():
    group = [sample(), sample(mid=2)]
    assert orchestration_reward(group, {calls_metric("mid"): 0.5}) == pytest.approx([0.0, 0.5])


def test_profile_vectors_cover_all_metrics_and_have_nonnegative_base_weights():
    for p in profile_names(SLOTS):
        w = profile_vector(p, SLOTS).weights
        assert set(w) == {calls_metric(s) for s in SLOTS} | {OUTCOME, COST, LATENCY}
        assert w[OUTCOME] >= 0 and w[COST] >= 0 and w[LATENCY] >= 0
    cf = profile_vector("cost-first", SLOTS).weights
    assert cf[COST] > cf[OUTCOME] and cf[COST] > cf[LATENCY]
    assert all(cf[calls_metric(s)] == 0.0 for s in SLOTS)


@pytest.mark.parametrize("bad", ["nonsense", "prefer:unknown-slot", "avoid:", "prefer", "", "Balanced", "avoid:big:x"])
def test_unknown_profiles_raise_preference_error(bad):
    with pytest.raises(PreferenceError):
        profile_vector(bad, SLOTS)


def test_preference_error_names_the_unknown_expert():
    with pytest.raises(PreferenceError, match="nope"):
        profile_vector("prefer:nope", SLOTS)


def test_anchored_reward_normalises_against_anchors():
    weights = profile_vector("cost-first", SLOTS).weights
    anchors = [sample(outcome=1.0, cost=0.02, latency=5.0), sample(outcome=0.0, cost=0.001, latency=1.0)]
    # Cheaper than every anchor, slower than every anchor, correct.
    s = sample(outcome=1.0, cost=0.0005, latency=10.0)
    r = anchored_reward(s, anchors, weights)
    assert r == pytest.approx(weights[OUTCOME] * 1.0 + weights[COST] * 1.0 + weights[LATENCY] * 0.0)
    # Same as the first element of the group reward.
    assert r == orchestration_reward([s, *anchors], weights)[0]
    # The anchors fix the scale: a pricier sample scores less against the same anchors.
    mid = sample(outcome=1.0, cost=0.0105, latency=10.0)
    assert anchored_reward(mid, anchors, weights) < r
    # Wrong answer: 0 whatever the anchors.
    assert anchored_reward(sample(outcome=0.0, cost=0.0), anchors, weights) == 0.0


def test_anchored_reward_does_not_depend_on_anchor_order():
    weights = profile_vector("balanced", SLOTS).weights
    anchors = [sample(cost=0.3, latency=4.0), sample(outcome=0.0, cost=0.1, latency=1.0), sample(cost=0.9, latency=8.0)]
    s = sample(cost=0.2, latency=2.0)
    a = anchored_reward(s, anchors, weights)
    b = anchored_reward(s, list(reversed(anchors)), weights)
    assert a == pytest.approx(b)
    assert 0.0 < a < sum(abs(w) for w in weights.values())

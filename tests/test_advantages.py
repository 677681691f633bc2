"""Grouped advantages (GRPO and Dr.GRPO) and the sample filters with their counts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import pytest

from orchestra_ray.config import RewardConfig
from orchestra_ray.grpo.advantages import grouped_advantages
from orchestra_ray.grpo.scoring import FilterCounts, apply_filters, stamp_group, stamp_staleness, step_filters
from orchestra_ray.rollout.sample import Sample


# One group given as plain lists, through the scoring module's own stamping and filters.
@dataclass
class GroupResult:
    advantages: List[float]
    keep: List[bool]
    counts: FilterCounts
    zero_variance: bool = False


def advantages_with_filters(rewards: Sequence[float], format_error: Sequence[bool], has_answer: Sequence[bool], *,
                            std_normalize: bool = True, eps: float = 1e-6, filter_zero_variance: bool = True,
                            filter_format_errors: bool = False, filter_no_answer: bool = False,
                            counts: Optional[FilterCounts] = None) -> GroupResult:
    """One group given as plain lists (its rewards, format-error and answer flags), through the same
    stamping and filters as a step's samples (fresh ones: none stale, none hurt by a tool)."""
    group = [Sample(format_errors=["format"] if bad else [], answer_source="text" if answered else "")
             for bad, answered in zip(format_error, has_answer)]
    reward = RewardConfig(std_normalize, eps, filter_zero_variance, filter_format_errors, filter_no_answer)
    stamp_group(group, rewards, reward)
    stamp_staleness(group, learner_version=-1)
    counts = apply_filters(step_filters(reward, max_staleness=0), [group], counts)
    return GroupResult([s.advantage for s in group], [s.kept for s in group], counts,
                       bool(group and group[0].zero_variance))


def test_grpo_advantages_match_hand_computation_population_std():
    rewards = [1.0, 0.0, 0.5, 0.5]
    # mean 0.5; centred [0.5, -0.5, 0, 0]; population var = (0.25+0.25)/4 = 0.125
    std = math.sqrt(0.125)
    adv = grouped_advantages(rewards, std_normalize=True, eps=0.0)
    assert adv == pytest.approx([0.5 / std, -0.5 / std, 0.0, 0.0], rel=1e-12)
    assert adv[0] == pytest.approx(1.414213562373095)
    # Not the sample (n-1) std: that would give 0.5 / sqrt(1/6) = 1.2247...
    assert adv[0] != pytest.approx(0.5 / math.sqrt(0.5 / 3))


def test_grpo_advantages_with_eps():
    rewards = [0.0, 2.0]
    # mean 1, centred [-1, 1], population std 1
    adv = grouped_advantages(rewards, std_normalize=True, eps=0.5)
    assert adv == pytest.approx([-1.0 / 1.5, 1.0 / 1.5])


def test_grpo_advantages_three_values():
    rewards = [0.9, 0.2, 0.0]
    mean = 1.1 / 3
    centred = [r - mean for r in rewards]
    std = math.sqrt(sum(c * c for c in centred) / 3)
    adv = grouped_advantages(rewards, eps=1e-6)
    assert adv == pytest.approx([c / (std + 1e-6) for c in centred], rel=1e-12)
    assert sum(adv) == pytest.approx(0.0, abs=1e-12)
    # Normalised advantages have (population) unit variance, up to eps.
    assert sum(a * a for a in adv) / 3 == pytest.approx(1.0, rel=1e-4)


def test_dr_grpo_is_only_centred():
    rewards = [1.0, 0.0, 0.25, 0.75]
    adv = grouped_advantages(rewards, std_normalize=False)
    assert adv == pytest.approx([0.5, -0.5, -0.25, 0.25], abs=1e-15)
    # The scale of the rewards is kept (unlike GRPO, which is scale-invariant).
    assert grouped_advantages([2 * r for r in rewards], std_normalize=False) == pytest.approx([1.0, -1.0, -0.5, 0.5])
    g1 = grouped_advantages(rewards, eps=0.0)
    g2 = grouped_advantages([2 * r for r in rewards], eps=0.0)
    assert g1 == pytest.approx(g2)


@pytest.mark.parametrize("std_normalize", [True, False])
def test_zero_variance_group_gives_zeros(std_normalize):
    assert grouped_advantages([0.7] * 5, std_normalize=std_normalize) == [0.0] * 5
    assert grouped_advantages([0.0] * 3, std_normalize=std_normalize) == [0.0] * 3


def test_empty_group():
    assert grouped_advantages([]) == []


def test_zero_variance_group_filtered_when_switched_on():
    res = advantages_with_filters([1.0, 1.0, 1.0], [False] * 3, [True] * 3, filter_zero_variance=True)
    assert res.keep == [False, False, False]
    assert res.advantages == [0.0, 0.0, 0.0]
    c = res.counts
    assert (c.zero_variance_groups, c.zero_variance_samples, c.kept_samples, c.total_samples) == (1, 3, 0, 3)


def test_zero_variance_group_kept_when_switched_off():
    res = advantages_with_filters([0.0, 0.0], [False, False], [True, True], filter_zero_variance=False)
    assert res.keep == [True, True]
    # Still counted as a zero-variance group, even though kept.
    assert res.counts.zero_variance_groups == 1
    assert res.counts.zero_variance_samples == 2
    assert res.counts.kept_samples == 2


def test_group_with_variance_is_kept_and_not_counted_zero_variance():
    res = advantages_with_filters([1.0, 0.0], [False, False], [True, True])
    assert res.keep == [True, True]
    assert res.counts.zero_variance_groups == 0
    assert res.advantages == pytest.approx(grouped_advantages([1.0, 0.0]))


def test_format_error_filter():
    rewards = [1.0, 0.0, 0.0, 0.5]
    fmt = [False, True, False, True]
    ans = [True] * 4
    off = advantages_with_filters(rewards, fmt, ans, filter_format_errors=False)
    assert off.keep == [True] * 4
    assert off.counts.format_error_samples == 2
    on = advantages_with_filters(rewards, fmt, ans, filter_format_errors=True)
    assert on.keep == [True, False, True, False]
    assert on.counts.format_error_samples == 2
    assert on.counts.kept_samples == 2
    # Filtering does not change the advantages of the kept samples (computed on the whole group).
    assert on.advantages == pytest.approx(grouped_advantages(rewards))


def test_no_answer_filter():
    rewards = [1.0, 0.0, 0.0]
    fmt = [False] * 3
    ans = [True, False, True]
    off = advantages_with_filters(rewards, fmt, ans)
    assert off.keep == [True, True, True]
    assert off.counts.no_answer_samples == 1
    on = advantages_with_filters(rewards, fmt, ans, filter_no_answer=True)
    assert on.keep == [True, False, True]
    assert on.counts.no_answer_samples == 1
    assert on.counts.kept_samples == 2


def test_filters_combine():
    rewards = [1.0, 0.0, 0.2, 0.4]
    fmt = [False, True, False, True]
    ans = [True, False, False, True]
    res = advantages_with_filters(rewards, fmt, ans, filter_format_errors=True, filter_no_answer=True)
    assert res.keep == [True, False, False, False]
    c = res.counts
    assert (c.format_error_samples, c.no_answer_samples, c.kept_samples, c.total_samples) == (2, 2, 1, 4)


def test_std_normalize_switch_reaches_the_advantages():
    rewards = [1.0, 0.0, 0.0, 0.0]
    dr = advantages_with_filters(rewards, [False] * 4, [True] * 4, std_normalize=False)
    assert dr.advantages == pytest.approx([0.75, -0.25, -0.25, -0.25])
    g = advantages_with_filters(rewards, [False] * 4, [True] * 4, std_normalize=True, eps=0.0)
    std = math.sqrt((0.75**2 + 3 * 0.25**2) / 4)
    assert g.advantages == pytest.approx([0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std])


def test_counts_accumulate_across_groups():
    counts = FilterCounts()
    r1 = advantages_with_filters([1.0, 0.0], [True, False], [True, False], counts=counts, filter_format_errors=True)
    assert r1.counts is counts
    r2 = advantages_with_filters([0.5, 0.5, 0.5], [False] * 3, [True, True, False], counts=counts)
    assert r2.counts is counts
    r3 = advantages_with_filters([0.0, 1.0, 0.3], [False, False, True], [True] * 3, counts=counts, filter_zero_variance=True)
    assert r3.counts is counts
    assert counts.as_dict() == {
        "zero_variance_groups": 1,
        "zero_variance_samples": 3,
        "format_error_samples": 2,
        "no_answer_samples": 2,
        "infrastructure_failure_samples": 0,  # counted by the driver, from the tool calls
        "stale_samples": 0,  # counted by the driver, from the weight versions
        # group 1: 1 kept (format error dropped); group 2: zero variance dropped; group 3: all 3 kept
        "kept_samples": 4,
        "total_samples": 8,
    }


def test_fresh_counts_without_counts_argument():
    a = advantages_with_filters([1.0, 1.0], [False] * 2, [True] * 2)
    b = advantages_with_filters([1.0, 0.0], [False] * 2, [True] * 2)
    assert a.counts is not b.counts
    assert a.counts.zero_variance_groups == 1
    assert b.counts.zero_variance_groups == 0
    assert b.counts.total_samples == 2

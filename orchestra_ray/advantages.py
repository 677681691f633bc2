"""Grouped advantages (GRPO, or Dr.GRPO without std normalisation) and the sample filters.

Plain lists in, plain lists out: the learner only ever sees per-sample advantages and a keep flag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Sequence


def grouped_advantages(rewards: Sequence[float], std_normalize: bool = True, eps: float = 1e-6) -> List[float]:
    """A_i = (R_i - mean) / (std + eps) over one group; (R_i - mean) when std_normalize is off."""
    n = len(rewards)
    if n == 0:
        return []
    mean = sum(rewards) / n
    centred = [r - mean for r in rewards]
    if not std_normalize:
        return centred
    # Population std, as GRPO implementations use for a group of samples of one prompt.
    std = math.sqrt(sum(c * c for c in centred) / n)
    return [c / (std + eps) for c in centred]


@dataclass
class FilterCounts:
    zero_variance_groups: int = 0
    zero_variance_samples: int = 0
    format_error_samples: int = 0
    no_answer_samples: int = 0
    infrastructure_failure_samples: int = 0  # cut short by a tool or expert that stayed down
    kept_samples: int = 0
    total_samples: int = 0

    def as_dict(self) -> Dict[str, int]:
        return dict(self.__dict__)


@dataclass
class GroupResult:
    advantages: List[float]
    keep: List[bool]
    counts: FilterCounts = field(default_factory=FilterCounts)
    zero_variance: bool = False


def advantages_with_filters(
    rewards: Sequence[float],
    format_error: Sequence[bool],
    has_answer: Sequence[bool],
    *,
    std_normalize: bool = True,
    eps: float = 1e-6,
    filter_zero_variance: bool = True,
    filter_format_errors: bool = False,
    filter_no_answer: bool = False,
    counts: FilterCounts | None = None,
) -> GroupResult:
    """Advantages of one group plus which samples the learner trains on; counts accumulate."""
    counts = counts if counts is not None else FilterCounts()
    n = len(rewards)
    adv = grouped_advantages(rewards, std_normalize, eps)
    keep = [True] * n
    counts.total_samples += n
    zero_var = n > 0 and max(rewards) - min(rewards) <= 1e-12
    if zero_var:
        counts.zero_variance_groups += 1
        counts.zero_variance_samples += n
        if filter_zero_variance:
            keep = [False] * n
    for i in range(n):
        if format_error[i]:
            counts.format_error_samples += 1
            if filter_format_errors:
                keep[i] = False
        if not has_answer[i]:
            counts.no_answer_samples += 1
            if filter_no_answer:
                keep[i] = False
    counts.kept_samples += sum(keep)
    return GroupResult(adv, keep, counts, zero_var)

"""Grouped advantages: GRPO's, or Dr.GRPO's without std normalisation (the step's filters are in
`orchestra_ray.grpo.scoring`). Plain lists in, plain lists out.
"""

from __future__ import annotations

import math
from typing import List, Sequence


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

"""The typed data of a step: a `Sample` is one episode, a `TrainBatch` what the learner trains on.

A rollout worker returns Samples (`episode.episode_record`); scoring (`orchestra_ray.grpo.scoring`)
sets their reward, advantage, filter flags and staleness; each is written as one Parquet row
(`Sample.row`, in `orchestra_ray.rollout.trajectory`'s schema). The learner and the reference model
receive only the `TrainBatch` of the kept samples: tokens, masks, log-probs and advantages, none of
the tool calls or metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Sequence

# Fields that are not Parquet columns: the episode's generated-token count and its share of the
# worker's wall time are step metrics and benchmark figures, not trajectory data.
_NOT_COLUMNS = ("generated_tokens", "rollout_seconds")


@dataclass(slots=True)  # slots: a misspelt field is an error, not a new attribute
class Sample:
    # ids: a group is the samples of one task_id; episode_id = <task_id>#<sample>, the ledger's key
    task_id: str = ""
    question_id: str = ""
    sample: int = 0
    episode_id: str = ""
    family: str = ""
    toolset: str = ""
    preference_profile: str = ""
    preference: Dict[str, float] = field(default_factory=dict)  # P: metric -> weight
    weight_version: int = -1  # the policy version that generated the episode
    # the episode in tokens; loss mask 1 = a policy token, with its log-prob under weight_version
    token_ids: List[int] = field(default_factory=list)
    loss_mask: List[int] = field(default_factory=list)
    rollout_logprobs: List[float] = field(default_factory=list)
    prompt_len: int = 0
    turns: int = 0
    generated_tokens: int = 0
    finish_reason: str = ""
    tool_calls: List[Dict[str, Any]] = field(default_factory=list)  # trajectory.CALL_TYPE's fields
    format_errors: List[str] = field(default_factory=list)  # kinds, one per bad turn
    final_answer: str = ""
    answer_source: str = ""  # the expert slot relayed, "text", or "" for no answer
    outcome: bool = False
    metrics: Dict[str, float] = field(default_factory=dict)  # M: calls:<slot>, outcome, cost, latency
    rollout_seconds: Dict[str, float] = field(default_factory=dict)  # its share of the worker's batch, by stage
    # set by scoring (an evaluation sets reward, advantage and kept; the rest stay None there)
    reward: Optional[float] = None
    advantage: Optional[float] = None
    kept: Optional[bool] = None  # trained on
    zero_variance: Optional[bool] = None
    has_format_error: Optional[bool] = None
    no_answer: Optional[bool] = None
    learner_version: Optional[int] = None  # the learner's version when the step trained
    staleness: Optional[int] = None  # learner_version - weight_version

    def row(self) -> Dict[str, Any]:
        """This sample's Parquet row, every column of TRAJECTORY_SCHEMA but run_id and step (the
        maps as lists of pairs, as pyarrow takes them)."""
        row = {name: getattr(self, name) for name in _COLUMNS}
        row["metrics"] = list(self.metrics.items())
        row["preference"] = list(self.preference.items())
        return row


_COLUMNS = tuple(f.name for f in fields(Sample) if f.name not in _NOT_COLUMNS)


@dataclass(frozen=True)
class TrainBatch:
    """Per kept sample, in the step's order: token ids, loss mask, rollout log-probs, advantage."""

    token_ids: List[List[int]]
    loss_masks: List[List[int]]
    rollout_logprobs: List[List[float]]
    advantages: List[float]

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> "TrainBatch":
        return cls([s.token_ids for s in samples], [s.loss_mask for s in samples],
                   [s.rollout_logprobs for s in samples], [s.advantage for s in samples])

    def __len__(self) -> int:
        return len(self.advantages)

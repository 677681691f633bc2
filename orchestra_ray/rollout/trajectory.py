"""The trajectory schema: one Parquet row per sample (`Sample.row`), written by the driver once per step.

Columns
  run_id, step, task_id, question_id, sample   ids (a group is the samples of one task_id)
  episode_id                                   <task_id>#<sample>: unique within the step (the ledger's key)
  family, toolset                              task family (frames, domain, arithmetic), tools shown
  weight_version                               policy version that generated the sample
  token_ids, loss_mask, rollout_logprobs       the episode in tokens; mask 1 = policy token
  prompt_len, turns, finish_reason             shape of the episode
  tool_calls                                   list of {turn, name, arguments, expert, input_tokens,
                                               output_tokens, cost, latency, ok, error, error_kind}
  format_errors                                kinds of format error, one per bad turn
  final_answer, answer_source, outcome         answer text, relayed slot or "text", correct?
  metrics, preference_profile, preference      M and P (map metric -> value)
  reward, advantage                            the scalar reward and the grouped advantage
  kept, zero_variance, has_format_error, no_answer   filter flags; kept = trained on
  learner_version, staleness                   learner's weight version when the step trained, and
                                               learner_version - weight_version (null in evaluations)
"""

from __future__ import annotations

from typing import List, Sequence

import pyarrow as pa

from orchestra_ray.rollout.calls import CALL_TYPE  # tool_calls' items: CallRecord's fields
from orchestra_ray.rollout.sample import Sample

TRAJECTORY_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("step", pa.int32()),
        ("task_id", pa.string()),
        ("question_id", pa.string()),
        ("sample", pa.int32()),
        ("episode_id", pa.string()),
        ("family", pa.string()),
        ("toolset", pa.string()),
        ("weight_version", pa.int64()),
        ("token_ids", pa.list_(pa.int32())),
        ("loss_mask", pa.list_(pa.int8())),
        ("rollout_logprobs", pa.list_(pa.float32())),
        ("prompt_len", pa.int32()),
        ("turns", pa.int32()),
        ("finish_reason", pa.string()),
        ("tool_calls", pa.list_(CALL_TYPE)),
        ("format_errors", pa.list_(pa.string())),
        ("final_answer", pa.string()),
        ("answer_source", pa.string()),
        ("outcome", pa.bool_()),
        ("metrics", pa.map_(pa.string(), pa.float64())),
        ("preference_profile", pa.string()),
        ("preference", pa.map_(pa.string(), pa.float64())),
        ("reward", pa.float64()),
        ("advantage", pa.float64()),
        ("kept", pa.bool_()),
        ("zero_variance", pa.bool_()),
        ("has_format_error", pa.bool_()),
        ("no_answer", pa.bool_()),
        ("learner_version", pa.int64()),
        ("staleness", pa.int32()),
    ]
)


def trajectory_rows(run_id: str, step: int, samples: Sequence[Sample]) -> pa.Table:
    """One row per sample, in order (`Sample.row`)."""
    rows: List[dict] = [{"run_id": run_id, "step": step, **s.row()} for s in samples]
    return pa.Table.from_pylist(rows, schema=TRAJECTORY_SCHEMA)

"""The record of one tool or expert call of an episode, and its Arrow type (`CALL_TYPE`, the items of
the trajectory's `tool_calls` column), derived from the record's fields so the two cannot drift."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import pyarrow as pa

# A field's Arrow type by its annotation, unless its metadata names one (the turn is an int32, as the
# trajectory's other per-episode counts).
_ARROW = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "str": pa.string()}


@dataclass
class CallRecord:
    turn: int = field(metadata={"arrow": pa.int32()})
    name: str
    arguments: str  # JSON
    expert: str  # the slot billed or relayed; "" for other tools
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latency: float = 0.0
    ok: bool = True
    error: str = ""
    error_kind: str = ""  # orchestra_ray.rollout.failures: infrastructure or data ("" when ok)


CALL_TYPE = pa.struct([(f.name, f.metadata["arrow"] if "arrow" in f.metadata else _ARROW[f.type]) for f in fields(CallRecord)])

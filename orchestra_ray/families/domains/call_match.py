"""How close a domain episode's calls came to the gold actions, position by position.

Success is judged by the final database state alone; this says why an episode failed: the wrong
function, or the right function with an argument that was not copied from the request (an id, an
amount). The i-th function call is compared with the i-th gold action; answers are not actions.
Plain data in, fractions out.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, Mapping, Sequence, Tuple

from orchestra_ray.rollout.sample import Sample

ANSWER = "answer"


def _arguments(raw: str) -> Dict[str, Any]:
    """A call record's arguments (JSON text); anything but a JSON object matches no value."""
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def call_match(calls: Sequence[Mapping[str, Any]], gold: Sequence[Tuple[str, Mapping[str, Any]]]) -> Tuple[int, int, int, int]:
    """(gold actions, of them called by name at their position, gold argument values, of them
    matched exactly by the call at that position)."""
    made = [c for c in calls if c.get("name") != ANSWER]
    actions = [(n, a) for n, a in gold if n != ANSWER]
    names = values = 0
    n_values = sum(len(a) for _, a in actions)
    for i, (name, args) in enumerate(actions):
        if i >= len(made) or made[i].get("name") != name:
            continue
        names += 1
        got = _arguments(made[i].get("arguments"))
        values += sum(1 for k, v in args.items() if k in got and got[k] == v)
    return len(actions), names, n_values, values


def summarise_call_match(samples: Iterable[Sample], gold: Mapping[str, Sequence[Tuple[str, Mapping[str, Any]]]]) -> Dict[str, float]:
    """Over episodes with gold actions: the share of gold actions whose function was called at its
    position, and the share of gold argument values the calls matched."""
    totals = [0, 0, 0, 0]
    for s in samples:
        if s.question_id in gold:
            for i, v in enumerate(call_match(s.tool_calls, gold[s.question_id])):
                totals[i] += v
    return {
        "function_match": totals[1] / totals[0] if totals[0] else 0.0,
        "argument_match": totals[3] / totals[2] if totals[2] else 0.0,
    }

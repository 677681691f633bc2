"""Warm-start demonstrations: a family's demonstration calls (`TaskFamily.demonstration`) laid out
as a scripted episode, each call's observation got by running it for real (through the tool router),
so the observations are the ones the policy will see.

FRAMES: a demonstration asks one expert and relays its answer. Which one is the demonstrator's
habit: the "God model" one the paper criticises (always the strongest, most expensive expert), or
the choice a prompted model makes from the system prompt alone (`listed_choice`). Neither knows
how often each expert is right on the data, so whatever the policy gains on that is learned by RL,
not copied. Other families: a reference solution (the gold actions of a domain task, the program of
an arithmetic problem).
"""

from __future__ import annotations

import math
import random
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from orchestra_ray.rollout.chat import ChatFormat, SlotCard, tool_call_text
from orchestra_ray.grpo.preferences import COST, LATENCY, OUTCOME, calls_metric


def scripted_demo(
    chat: ChatFormat, system: str, user: str, calls: Sequence[Tuple[str, Dict]], observe: Callable[[str, Dict], str]
) -> dict:
    """Token ids and loss mask of a scripted episode: each call but the last is followed by its
    observation; the last call (the answer) ends the episode. Only the policy's tokens are trained."""
    ids = chat.prompt_ids(system, user)
    mask = [0] * len(ids)
    for k, (name, args) in enumerate(calls):
        t = chat.encode(tool_call_text(name, args))
        ids.extend(t)
        mask.extend([1] * len(t))
        if k < len(calls) - 1:
            obs = chat.observation_ids(observe(name, args))
            ids.extend(obs)
            mask.extend([0] * len(obs))
    return {"token_ids": ids, "loss_mask": mask}


def _spread(values: Sequence[float]) -> List[float]:
    lo, hi = min(values), max(values)
    return [0.0 if hi == lo else (v - lo) / (hi - lo) for v in values]


def listed_scores(cards: Sequence[SlotCard], strongest: str, weights: Dict[str, float]) -> List[float]:
    """How well each slot suits a preference by what the system prompt lists: the outcome weight
    goes to the strongest expert, the cost weight to the lowest listed price (input + output per
    million), the latency weight to the lowest typical latency (each min-max scaled over the slots),
    and a signed calls:<slot> weight to that slot."""
    price = _spread([c.input_price + c.output_price for c in cards])
    latency = _spread([c.typical_latency_s for c in cards])
    return [
        weights.get(OUTCOME, 0.0) * (c.name == strongest)
        + weights.get(COST, 0.0) * (1.0 - price[i])
        + weights.get(LATENCY, 0.0) * (1.0 - latency[i])
        + weights.get(calls_metric(c.name), 0.0)
        for i, c in enumerate(cards)
    ]


def listed_choice(cards: Sequence[SlotCard], strongest: str, weights: Dict[str, float],
                  temperature: float = 0.0, rng: Optional[random.Random] = None) -> str:
    """The slot a preference picks by `listed_scores`: the best (ties to the earlier slot) at
    temperature 0, else a draw from softmax(scores / temperature), so the demonstrations leave RL
    the near-best experts to explore instead of a single habit."""
    scores = listed_scores(cards, strongest, weights)
    if temperature <= 0:
        return cards[max(range(len(cards)), key=lambda i: (scores[i], -i))].name
    top = max(scores)
    odds = [math.exp((x - top) / temperature) for x in scores]
    return (rng or random.Random()).choices([c.name for c in cards], weights=odds)[0]


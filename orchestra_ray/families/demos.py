"""Warm-start demonstrations: a family's demonstration calls (`TaskFamily.demonstration`) laid out
as a scripted episode, each call's observation got by running it for real (through the tool router),
so the observations are the ones the policy will see.

FRAMES: a demonstration asks one expert and relays its answer. Which one is the demonstrator's
habit: the "God model" one the paper criticises (always the strongest, most expensive expert), or
the choice a prompted model makes from the system prompt alone (`listed_choice`). Or it reads: the
"cascade" demonstrator asks experts in the order the system prompt suggests for the preference
(`cascade_order`), escalates to the next when the answer it reads says the expert does not know
(`says_unknown`), and relays the first real answer. These know nothing of how often each expert is
right on the data; "best-cascade" (`FramesFamily.best_order`) reads the same way in the order that
earned the most reward on the training split's recorded answers, so what each expert is worth
there is demonstrated, though never which expert is right on a question. Other families: a
reference solution (the gold actions of a domain task, the program of an arithmetic problem).
"""

from __future__ import annotations

import math
import random
import re
from typing import Callable, Dict, Generator, List, Optional, Sequence, Tuple, Union

from orchestra_ray.rollout.chat import ChatFormat, SlotCard, tool_call_text
from orchestra_ray.grpo.preferences import COST, LATENCY, OUTCOME, calls_metric


Call = Tuple[str, Dict]
# A demonstration that reads: yields each call, is sent the call's observation, and ends with "answer".
Reading = Generator[Call, str, None]


def scripted_demo(chat: ChatFormat, system: str, user: str, calls: Union[Sequence[Call], Reading],
                  observe: Callable[[str, Dict], str]) -> dict:
    """Token ids and loss mask of a scripted episode: each call but the last is followed by its
    observation; the last call (the answer) ends the episode. `calls` is a list, or a generator
    that decides each next call from the observation it is sent (its `answer` call ends it). Only
    the policy's tokens are trained."""
    ids = chat.prompt_ids(system, user)
    mask = [0] * len(ids)
    reading = not isinstance(calls, Sequence)
    k, (name, args) = 0, next(calls) if reading else calls[0]
    while True:
        t = chat.encode(tool_call_text(name, args))
        ids.extend(t)
        mask.extend([1] * len(t))
        if (name == "answer") if reading else k == len(calls) - 1:
            return {"token_ids": ids, "loss_mask": mask}
        text = observe(name, args)
        obs = chat.observation_ids(text)
        ids.extend(obs)
        mask.extend([0] * len(obs))
        k += 1
        name, args = calls.send(text) if reading else calls[k]


_UNKNOWN = re.compile(
    r"\b(i (don't|do not) know|not sure|(don't|do not|doesn't|does not) have (enough|sufficient|access|the)"
    r"|(cannot|can't|unable to|not able to) (determine|identify|find|verify|answer|confirm|provide)"
    r"|(insufficient|not enough) information|please provide|may i (look|search|browse)|could you (provide|clarify|share))")


def says_unknown(text: str) -> bool:
    """Whether an answer's end says the expert does not know (or asks for what it lacks) rather
    than answering: what a reader of the answer sees, the demonstrator's reason to escalate."""
    return bool(_UNKNOWN.search(text.replace("\u2019", "'").lower()[-400:]))


def cascade_order(cards: Sequence[SlotCard], strongest: str, weights: Dict[str, float], temperature: float = 0.0,
                  rng: Optional[random.Random] = None) -> List[str]:
    """Every slot, best first by `listed_scores` (ties to the earlier slot) at temperature 0, else
    drawn one after another from softmax(scores / temperature) over the slots left."""
    scores = dict(zip((c.name for c in cards), listed_scores(cards, strongest, weights)))
    left = [c.name for c in cards]
    order: List[str] = []
    while left:
        if temperature <= 0:
            pick = max(left, key=lambda s: (scores[s], -left.index(s)))
        else:
            top = max(scores[s] for s in left)
            pick = (rng or random.Random()).choices(left, weights=[math.exp((scores[s] - top) / temperature) for s in left])[0]
        order.append(pick)
        left.remove(pick)
    return order


def cascade(order: Sequence[str], max_calls: int) -> Reading:
    """Asks the experts of `order` in turn until one answers (at most `max_calls`), then relays it."""
    asked = order[0]
    for asked in order[:max_calls]:
        text = yield ("call_expert", {"expert": asked})
        if not says_unknown(text):
            break
    yield ("answer", {"expert": asked})


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


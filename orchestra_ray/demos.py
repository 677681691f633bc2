"""Warm-start demonstrations.

FRAMES: the "God model" habit the paper criticises. Every demonstration asks the strongest (most
expensive) expert and relays its answer, so any saving the policy makes later is learned by RL, not
copied. Other families: a reference solution (the gold actions of a domain task, the program of an
arithmetic problem), executed for real so the observations are the ones the policy will see.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

from orchestra_ray.chat import ChatFormat, tool_call_text
from orchestra_ray.experts import ExpertRequest, ReplayExpert
from orchestra_ray.task import Task


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


def god_model_demo(chat: ChatFormat, system: str, user: str, task: Task, expert: ReplayExpert, max_response_chars: int) -> dict:
    """call_expert(strongest) -> its answer -> answer(expert=strongest)."""
    slot = expert.slot

    def observe(name: str, args: Dict) -> str:
        resp = expert.respond(ExpertRequest(task.question_id, [{"role": "user", "content": task.question}]))
        return f"{slot}: {resp.text[:max_response_chars]}"

    return scripted_demo(chat, system, user, [("call_expert", {"expert": slot}), ("answer", {"expert": slot})], observe)

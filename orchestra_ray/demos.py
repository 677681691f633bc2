"""Warm-start demonstrations: the "God model" habit the paper criticises. Every demonstration
asks the strongest (most expensive) expert and relays its answer, so any saving the policy makes
later is learned by RL, not copied."""

from __future__ import annotations

from orchestra_ray.chat import ChatFormat, tool_call_text
from orchestra_ray.experts import ExpertRequest, ReplayExpert
from orchestra_ray.task import Task


def god_model_demo(chat: ChatFormat, system: str, user: str, task: Task, expert: ReplayExpert, max_response_chars: int) -> dict:
    """Token ids and loss mask of: call_expert(strongest) -> its answer -> answer(expert=strongest)."""
    ids = chat.prompt_ids(system, user)
    mask = [0] * len(ids)

    def policy(text: str) -> None:
        t = chat.encode(text)
        ids.extend(t)
        mask.extend([1] * len(t))

    def env(t: list) -> None:
        ids.extend(t)
        mask.extend([0] * len(t))

    slot = expert.slot
    policy(tool_call_text("call_expert", {"expert": slot}))
    resp = expert.respond(ExpertRequest(task.question_id, [{"role": "user", "content": task.question}]))
    env(chat.observation_ids(f"{slot}: {resp.text[:max_response_chars]}"))
    policy(tool_call_text("answer", {"expert": slot}))
    return {"token_ids": ids, "loss_mask": mask}

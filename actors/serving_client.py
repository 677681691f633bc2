"""The rollout loop's `ToolClient` for served requests: several requests' episodes run in one loop,
so each expert call is traced back to its request to apply that request's cost budget, and an
expert that does not answer in time is skipped for that call instead of holding the batch."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import ray

from actors.tool_client import RayToolClient
from orchestra_ray.rollout.episode import Episode
from orchestra_ray.rollout.tool_router import ToolOutcome
from orchestra_ray.experts.base import ExpertError, ExpertRequest, ExpertResponse
from orchestra_ray.rollout.failures import DATA, INFRASTRUCTURE, classify_exception

BUDGET_REACHED = "max_cost"


@dataclass
class Budget:
    question_id: str
    max_cost: Optional[float]
    episode: Episode
    spent: float = 0.0


class ServingClient:
    """Expert requests arrive named by the episode's task key (the loop names them by
    `Task.question_id`); the key is mapped back to the question id the experts answer for."""

    def __init__(self, tools: RayToolClient, timeout_s: float):
        self.tools, self.timeout_s = tools, timeout_s
        self.budgets: Dict[str, Budget] = {}

    def register(self, key: str, question_id: str, max_cost: Optional[float], episode: Episode) -> None:
        self.budgets[key] = Budget(question_id, max_cost, episode)

    def respond_many(self, requests: Sequence[Tuple[str, ExpertRequest]]) -> List[Union[ExpertResponse, ExpertError]]:
        out: List[Union[ExpertResponse, ExpertError, None]] = [None] * len(requests)
        inflight = []
        for i, (slot, req) in enumerate(requests):
            b = self.budgets[req.task_id]
            if b.max_cost is not None and b.spent >= b.max_cost:
                # The request has spent its budget: no paid call starts, and the episode ends here
                # (the loop records the refused call; the answer is what the episode already has).
                b.episode.done, b.episode.finish_reason = True, BUDGET_REACHED
                out[i] = ExpertError(f"max_cost ${b.max_cost:g} reached (spent ${b.spent:.6f}): call refused", DATA)
                continue
            real = ExpertRequest(b.question_id, req.messages, req.max_output_tokens)
            inflight.append((i, slot, b, self.tools.experts.handles[slot].respond.remote(real)))
        deadline = time.monotonic() + self.timeout_s
        for i, slot, b, ref in inflight:
            try:
                res = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except ray.exceptions.GetTimeoutError:
                ray.cancel(ref)
                res = ExpertError(f"expert '{slot}' did not answer within {self.timeout_s:g} s", INFRASTRUCTURE)
            except ray.exceptions.RayError as exc:
                res = ExpertError(f"expert '{slot}' failed: {type(exc).__name__}", classify_exception(exc))
            if isinstance(res, ExpertResponse):
                b.spent += res.cost
            out[i] = res
        return out

    def run_tools(self, calls: Sequence[Tuple[str, Dict[str, Any]]]) -> List[ToolOutcome]:
        # Basic tools are free (cost 0), so they need no budget.
        return self.tools.run_tools(calls)

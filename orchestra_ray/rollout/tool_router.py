"""The tool router: each tool call, by name, to the back-end that runs it, and back as a call record
and the observation the policy reads. One router serves the episode loop and the warm start's
demonstrations, so both see the same observations, costs and errors.

    call_expert, answer(expert=...)   experts (`ExpertClient.respond_many`), billed per token
    run_python, search                basic tools (`ToolClient.run_tools`), all of a turn's at once
    any other name                    the episode's state (a domain's functions on its database copy)

The back-ends arrive as clients (Ray actors behind `actors.tool_client.RayToolClient`, or objects in
this process), so the router knows nothing of Ray.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple, Union

from orchestra_ray.experts.base import ExpertError, ExpertRequest, ExpertResponse
from orchestra_ray.families.family import EpisodeState
from orchestra_ray.rollout.calls import CallRecord
from orchestra_ray.rollout.expert_view import expert_view
from orchestra_ray.rollout.failures import DATA

EXPERT_TOOLS = ("call_expert", "answer")
BASIC_TOOLS = ("run_python", "search")
ERROR_CHARS = 300  # of an error message kept in the record


@dataclass(frozen=True)
class ToolOutcome:
    """What a basic tool returned: the observation text, and what the call cost."""

    text: str
    ok: bool = True
    error: str = ""
    cost: float = 0.0
    latency: float = 0.0
    error_kind: str = ""  # orchestra_ray.rollout.failures: infrastructure or data ("" when ok)


class ExpertClient(Protocol):
    def respond_many(self, requests: Sequence[Tuple[str, ExpertRequest]]) -> List[Union[ExpertResponse, ExpertError]]: ...


class ToolClient(ExpertClient, Protocol):
    def run_tools(self, calls: Sequence[Tuple[str, Dict[str, Any]]]) -> List[ToolOutcome]: ...


@dataclass(frozen=True)
class RoutedCall:
    """A call to run for an episode: its tool and arguments, the task, and the episode's state."""

    name: str
    arguments: Dict[str, Any]
    task: Any  # orchestra_ray.families.task.Task
    state: Optional[EpisodeState] = None


@dataclass
class Routed:
    record: CallRecord
    observation: str  # what the policy reads next ("" after an expert's answer, which ends the episode)
    response: Optional[ExpertResponse] = None  # an expert's, when it answered


def expert_request(task: Any) -> ExpertRequest:
    """What an expert is asked: the task's question, keyed by its question id."""
    return ExpertRequest(task_id=task.question_id, messages=[{"role": "user", "content": task.question}])


class ToolRouter:
    def __init__(self, experts: ExpertClient, tools: ToolClient, max_response_chars: int, state_call_latency_s: float):
        self.experts, self.tools = experts, tools
        self.max_response_chars = max_response_chars
        self.state_call_latency_s = state_call_latency_s  # modelled: a domain function is a simulated API

    def run(self, turn: int, calls: Sequence[RoutedCall]) -> List[Routed]:
        """Every call of one turn, in order: state calls first (each on its own episode's state), then
        the experts together, then the basic tools together."""
        out: List[Optional[Routed]] = [None] * len(calls)
        experts, basic = [], []
        for i, c in enumerate(calls):
            if c.name in EXPERT_TOOLS:
                experts.append(i)
            elif c.name in BASIC_TOOLS:
                basic.append(i)
            else:
                out[i] = self._state_call(turn, c)
        responses = self.experts.respond_many([(calls[i].arguments["expert"], expert_request(calls[i].task))
                                               for i in experts]) if experts else []
        for i, res in zip(experts, responses):
            out[i] = self._expert(turn, calls[i], res)
        outcomes = self.tools.run_tools([(calls[i].name, calls[i].arguments) for i in basic]) if basic else []
        for i, res in zip(basic, outcomes):
            c = calls[i]
            rec = CallRecord(turn, c.name, json.dumps(c.arguments), "", cost=res.cost, latency=res.latency, ok=res.ok,
                             error=res.error[:ERROR_CHARS], error_kind=res.error_kind or ("" if res.ok else DATA))
            out[i] = Routed(rec, res.text[: self.max_response_chars])
        return out

    def _expert(self, turn: int, c: RoutedCall, res: Union[ExpertResponse, Exception]) -> Routed:
        slot = c.arguments["expert"]
        rec = CallRecord(turn, c.name, json.dumps(c.arguments), slot)
        if isinstance(res, Exception):
            rec.ok, rec.error, rec.error_kind = False, str(res)[:ERROR_CHARS], getattr(res, "kind", DATA)
            return Routed(rec, f"error: {rec.error}")
        rec.input_tokens, rec.output_tokens = res.input_tokens, res.output_tokens
        rec.cost, rec.latency = res.cost, res.latency
        observation = "" if c.name == "answer" else f"{slot}: {expert_view(res.text, self.max_response_chars)}"
        return Routed(rec, observation, res)

    def _state_call(self, turn: int, c: RoutedCall) -> Routed:
        """A function of the episode's state; a refused call changes nothing."""
        rec = CallRecord(turn, c.name, json.dumps(c.arguments), "", latency=self.state_call_latency_s)
        if c.state is None:
            rec.ok, rec.error, rec.error_kind = False, f"tool '{c.name}' needs a domain database and this task has none", DATA
            return Routed(rec, f"error: {rec.error}")
        try:
            return Routed(rec, c.state.call(c.name, c.arguments)[: self.max_response_chars])
        except Exception as exc:  # DomainToolError, or a domain function's bug: data for the episode
            rec.ok, rec.error, rec.error_kind = False, str(exc)[:ERROR_CHARS], DATA
            return Routed(rec, f"error: {rec.error}")

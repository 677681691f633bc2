"""The multi-turn orchestration loop: generate -> parse <tool_call> -> run the tool -> append the
observation -> generate again, until an answer or the turn limit. One implementation, used by the
rollout workers in training and in evaluation.

Three kinds of tools: experts (`call_expert`, billed per token), basic tools such as the code
interpreter and search (reached through `ToolClient.run_tools`, all of a turn's calls at once), and
a domain's functions, run on the episode's own database (`Episode.env`). Remote tools are reached
through `ToolClient`, so the loop itself knows nothing of Ray.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

from orchestra_ray.rollout.chat import ChatFormat
from orchestra_ray.policy.engine import Engine
from orchestra_ray.experts.base import ExpertError, ExpertRequest, ExpertResponse
from orchestra_ray.rollout.failures import DATA
from orchestra_ray.families.grading import judge_free_text, judge_number
from orchestra_ray.grpo.ledger import episode_id
from orchestra_ray.rollout.parsing import FormatError, ToolCall, parse_tool_calls
from orchestra_ray.grpo.preferences import COST, LATENCY, OUTCOME, calls_metric
from orchestra_ray.families.task import ARITHMETIC, DOMAIN, Task
from orchestra_ray.tools.spec import ToolSpec


BASIC_TOOLS = ("run_python", "search")


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


class DomainState(Protocol):
    """An episode's private copy of a domain database (see orchestra_ray.families.domains)."""

    def call(self, name: str, arguments: Dict[str, Any]) -> str: ...

    def state_hash(self) -> str: ...


@dataclass(frozen=True)
class EpisodeLimits:
    max_turns: int = 4
    max_new_tokens: int = 48
    max_total_tokens: int = 1536
    max_response_chars: int = 300
    max_output_chars: int = 8192
    domain_call_latency_s: float = 0.05  # modelled: a domain function is a simulated API


@dataclass
class CallRecord:
    turn: int
    name: str
    arguments: str  # JSON
    expert: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latency: float = 0.0
    ok: bool = True
    error: str = ""
    error_kind: str = ""  # orchestra_ray.rollout.failures: infrastructure or data ("" when ok)


@dataclass
class Episode:
    task: Task
    sample: int
    token_ids: List[int]
    prompt_len: int
    loss_mask: List[int] = field(default_factory=list)
    logprobs: List[float] = field(default_factory=list)
    calls: List[CallRecord] = field(default_factory=list)
    format_errors: List[str] = field(default_factory=list)
    consulted: Dict[str, ExpertResponse] = field(default_factory=dict)
    turns: int = 0
    generated_tokens: int = 0
    done: bool = False
    finish_reason: str = ""
    answer: str = ""
    answer_source: str = ""  # expert slot relayed, or "text"
    outcome: bool = False
    weight_version: int = -1
    env: Optional[DomainState] = None  # domain tasks only

    def __post_init__(self):
        if not self.loss_mask:
            self.loss_mask = [0] * len(self.token_ids)
            self.logprobs = [0.0] * len(self.token_ids)

    def append(self, ids: Sequence[int], logprobs: Optional[Sequence[float]] = None) -> None:
        """Policy tokens come with log-probs (loss mask 1); template and tool tokens without (mask 0)."""
        self.token_ids.extend(ids)
        if logprobs is None:
            self.loss_mask.extend([0] * len(ids))
            self.logprobs.extend([0.0] * len(ids))
        else:
            self.loss_mask.extend([1] * len(ids))
            self.logprobs.extend(logprobs)

    @property
    def has_answer(self) -> bool:
        return bool(self.answer_source)

    @property
    def cost(self) -> float:
        return sum(c.cost for c in self.calls)

    @property
    def latency(self) -> float:
        return sum(c.latency for c in self.calls)

    def metrics(self, slots: Sequence[str]) -> Dict[str, float]:
        m = {calls_metric(s): 0.0 for s in slots}
        for c in self.calls:
            if c.ok and c.expert and c.input_tokens > 0:  # billed calls; relaying a consulted expert is free
                m[calls_metric(c.expert)] = m.get(calls_metric(c.expert), 0.0) + 1.0
            elif c.ok and c.name in BASIC_TOOLS:
                m[calls_metric(c.name)] = m.get(calls_metric(c.name), 0.0) + 1.0
        m[OUTCOME] = 1.0 if self.outcome else 0.0
        m[COST] = self.cost
        m[LATENCY] = self.latency
        return m


def _request(task: Task) -> ExpertRequest:
    return ExpertRequest(task_id=task.question_id, messages=[{"role": "user", "content": task.question}])


def _correct(resp: ExpertResponse, task: Task) -> bool:
    """A replayed answer keeps its recorded grade; a live expert's answer is judged like free text."""
    if resp.grade is not None:
        return resp.grade == "A"
    return _judge_text(resp.text, task, None)


def _judge_text(text: str, task: Task, env: Optional[DomainState]) -> bool:
    """A domain task succeeds when the database ends in the gold state (what was said does not
    matter, as in tau2-bench); an arithmetic task by numeric match; FRAMES by normalised match."""
    if task.family == DOMAIN:
        return env is not None and env.state_hash() == task.gold
    if task.family == ARITHMETIC:
        return judge_number(text, task.gold)
    return judge_free_text(text, task.gold)


def _finish(ep: Episode, source: str, answer: str, correct: bool) -> None:
    ep.answer_source, ep.answer, ep.outcome = source, answer, correct
    ep.done, ep.finish_reason = True, "answer"


def run_episodes(
    engine: Engine,
    chat: ChatFormat,
    episodes: List[Episode],
    tools: Union[Sequence[ToolSpec], Mapping[str, Sequence[ToolSpec]]],
    experts: ToolClient,
    limits: EpisodeLimits,
    temperature: float,
) -> List[Episode]:
    """Run all episodes to the end, batching the live ones into one generate call per turn. `tools`
    is one tool list for all, or a list per toolset (`Task.toolset`)."""
    for turn in range(limits.max_turns):
        live = [e for e in episodes if not e.done]
        if not live:
            break
        gens = engine.generate(
            [e.token_ids for e in live],
            max_new_tokens=limits.max_new_tokens,
            temperature=temperature,
            stop_token_ids=[chat.end_of_turn_id],
        )
        pending: List[Tuple[Episode, ToolCall, str]] = []
        basic: List[Tuple[int, Episode, ToolCall]] = []
        observations: Dict[int, str] = {}
        for i, (ep, gen) in enumerate(zip(live, gens)):
            ep.turns += 1
            ep.generated_tokens += len(gen.token_ids)
            ep.append(gen.token_ids, gen.logprobs)
            if gen.finish_reason != "stop":
                ep.append([chat.end_of_turn_id])  # close the cut-off turn; not the policy's token
            text = chat.decode(gen.token_ids)
            toolset = tools[ep.task.toolset] if isinstance(tools, Mapping) else tools
            parsed = parse_tool_calls(text, toolset, max_calls=1, max_chars=limits.max_output_chars)
            if not parsed.ok:
                ep.format_errors.append(parsed.error.kind)
                observations[i] = f"error: {parsed.error.message}"
                continue
            call = parsed.calls[0]
            if call.name == "answer" and "text" in call.arguments:
                _finish(ep, "text", call.arguments["text"], _judge_text(call.arguments["text"], ep.task, ep.env))
                ep.calls.append(CallRecord(turn, "answer", json.dumps(call.arguments), ""))
            elif call.name == "answer" and call.arguments["expert"] in ep.consulted:
                slot = call.arguments["expert"]
                resp = ep.consulted[slot]
                ep.calls.append(CallRecord(turn, "answer", json.dumps(call.arguments), slot))
                _finish(ep, slot, resp.text, _correct(resp, ep.task))
            elif call.name in ("answer", "call_expert"):
                pending.append((ep, call, call.arguments["expert"]))
                observations[i] = ""
            elif call.name in BASIC_TOOLS:
                basic.append((i, ep, call))
            else:
                observations[i] = _domain_call(ep, call, turn, limits)
        results = experts.respond_many([(slot, _request(ep.task)) for ep, _, slot in pending]) if pending else []
        index = {id(e): i for i, e in enumerate(live)}
        for (ep, call, slot), res in zip(pending, results):
            rec = CallRecord(turn, call.name, json.dumps(call.arguments), slot)
            if isinstance(res, Exception):
                rec.ok, rec.error, rec.error_kind = False, str(res)[:300], getattr(res, "kind", DATA)
                ep.calls.append(rec)
                observations[index[id(ep)]] = f"error: {rec.error}"
                continue
            rec.input_tokens, rec.output_tokens = res.input_tokens, res.output_tokens
            rec.cost, rec.latency = res.cost, res.latency
            ep.calls.append(rec)
            if call.name == "answer":
                _finish(ep, slot, res.text, _correct(res, ep.task))
            else:
                ep.consulted[slot] = res
                observations[index[id(ep)]] = f"{slot}: {res.text[: limits.max_response_chars]}"
        outs = experts.run_tools([(c.name, c.arguments) for _, _, c in basic]) if basic else []
        for (i, ep, call), out in zip(basic, outs):
            ep.calls.append(CallRecord(turn, call.name, json.dumps(call.arguments), "", cost=out.cost,
                                       latency=out.latency, ok=out.ok, error=out.error[:300],
                                       error_kind=out.error_kind or ("" if out.ok else DATA)))
            observations[i] = out.text[: limits.max_response_chars]
        for i, ep in enumerate(live):
            if ep.done:
                continue
            ep.append(chat.observation_ids(observations.get(i, "")))
            if len(ep.token_ids) + limits.max_new_tokens > limits.max_total_tokens:
                ep.done, ep.finish_reason = True, "max_tokens"
    for ep in episodes:
        if not ep.done:
            ep.done, ep.finish_reason = True, "max_turns"
    return episodes


def _domain_call(ep: Episode, call: ToolCall, turn: int, limits: EpisodeLimits) -> str:
    """Run a domain function on the episode's database; a refused call changes nothing."""
    rec = CallRecord(turn, call.name, json.dumps(call.arguments), "", latency=limits.domain_call_latency_s)
    ep.calls.append(rec)
    if ep.env is None:
        rec.ok, rec.error, rec.error_kind = False, f"tool '{call.name}' needs a domain database and this task has none", DATA
        return f"error: {rec.error}"
    try:
        return ep.env.call(call.name, call.arguments)[: limits.max_response_chars]
    except Exception as exc:  # DomainToolError, or a domain function's bug: data for the episode
        rec.ok, rec.error, rec.error_kind = False, str(exc)[:300], DATA
        return f"error: {rec.error}"


def new_episodes(chat: ChatFormat, system: str, task: Task, user: str, n: int) -> List[Episode]:
    prompt = chat.prompt_ids(system, user)
    return [Episode(task=task, sample=k, token_ids=list(prompt), prompt_len=len(prompt)) for k in range(n)]


def episode_record(ep: Episode, slots: Sequence[str]) -> dict:
    """Plain-data record of a finished episode (what a rollout worker returns to the driver)."""
    return {
        "task_id": ep.task.task_id,
        "question_id": ep.task.question_id,
        "sample": ep.sample,
        "episode_id": episode_id(ep.task.task_id, ep.sample),
        "weight_version": ep.weight_version,
        "token_ids": ep.token_ids,
        "loss_mask": ep.loss_mask,
        "rollout_logprobs": ep.logprobs,
        "prompt_len": ep.prompt_len,
        "turns": ep.turns,
        "generated_tokens": ep.generated_tokens,
        "finish_reason": ep.finish_reason,
        "tool_calls": [dict(c.__dict__) for c in ep.calls],
        "format_errors": list(ep.format_errors),
        "final_answer": ep.answer,
        "answer_source": ep.answer_source,
        "outcome": ep.outcome,
        "metrics": ep.metrics(slots),
        "family": ep.task.family,
        "toolset": ep.task.toolset,
        "preference_profile": ep.task.preference.profile,
        "preference": dict(ep.task.preference.weights),
    }

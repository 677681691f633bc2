"""The multi-turn orchestration loop: generate -> parse <tool_call> -> run the tool -> append the
observation -> generate again, until an answer or the turn limit. One implementation, used by the
rollout workers in training and in evaluation.

Tool calls go through the tool router (`orchestra_ray.rollout.tool_router`: experts, basic tools
through `ToolClient`, a domain's functions on the episode's own database, `Episode.env`), so the loop
itself knows nothing of Ray; answers are judged by the task's family (`TaskFamily.judge`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

from orchestra_ray.config import OrchestraConfig, RolloutConfig, ToolsConfig, ZooConfig
from orchestra_ray.rollout.chat import ChatFormat
from orchestra_ray.policy.engine import Engine
from orchestra_ray.experts.base import ExpertResponse
from orchestra_ray.families.family import EpisodeState
from orchestra_ray.families.registry import family_type
from orchestra_ray.grpo.ledger import episode_id
from orchestra_ray.rollout.calls import CallRecord
from orchestra_ray.rollout.parsing import ToolCall, parse_tool_calls
from orchestra_ray.rollout.sample import Sample
from orchestra_ray.grpo.preferences import COST, LATENCY, OUTCOME, calls_metric
from orchestra_ray.families.task import Task
from orchestra_ray.rollout.tool_router import BASIC_TOOLS, RoutedCall, ToolClient, ToolRouter
from orchestra_ray.tools.spec import ToolSpec


@dataclass(frozen=True)
class EpisodeLimits:
    """What bounds an episode. Built from a run's config by `episode_limits`; the defaults are the
    config's own (tests and tools build limits by hand)."""

    max_turns: int = RolloutConfig.max_turns
    max_new_tokens: int = RolloutConfig.max_new_tokens
    max_total_tokens: int = RolloutConfig.max_total_tokens
    max_response_chars: int = ZooConfig.max_response_chars
    max_output_chars: int = 8192  # of one policy turn the parser reads
    domain_call_latency_s: float = ToolsConfig.domain_call_latency_s


def episode_limits(cfg: OrchestraConfig, max_turns: Optional[int] = None) -> EpisodeLimits:
    """The episode limits of a run (`max_turns` in place of rollout.max_turns where a caller lowers it)."""
    r = cfg.rollout
    return EpisodeLimits(r.max_turns if max_turns is None else max_turns, r.max_new_tokens, r.max_total_tokens,
                         cfg.zoo.max_response_chars, domain_call_latency_s=cfg.tools.domain_call_latency_s)


class EpisodeEvents(Protocol):
    """What an episode reports as it runs (a served request streams it): called from the thread that
    runs the loop, so an implementation hands the events on and returns at once."""

    def on_tokens(self, ep: "Episode", turn: int, token_ids: Sequence[int]) -> None:
        """The policy's tokens of the turn being generated, so far (a longer list each time)."""

    def on_call(self, ep: "Episode", record: CallRecord) -> None:
        """A tool or expert call (or the answer) the episode has just made."""


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
    env: Optional[EpisodeState] = None  # the family's (TaskFamily.new_state): a domain task's database
    events: Optional[EpisodeEvents] = field(default=None, repr=False, compare=False)  # reported as they happen

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


def _judge(answer: str, task: Task, state: Optional[EpisodeState]) -> bool:
    return family_type(task.family).judge(answer, task, state)


def _correct(resp: ExpertResponse, task: Task) -> bool:
    """A replayed answer keeps its recorded grade; a live expert's answer is judged as the task's
    family judges an answer, without the episode's state (the expert did not act on it)."""
    if resp.grade is not None:
        return resp.grade == "A"
    return _judge(resp.text, task, None)


def _record(ep: Episode, record: CallRecord) -> None:
    ep.calls.append(record)
    if ep.events is not None:
        ep.events.on_call(ep, record)


def _token_sink(live: List[Episode], turn: int) -> Optional[Callable[[int, int], None]]:
    """The engine's per-token callback for the episodes that report events (None when none does)."""
    turn_ids = {i: [] for i, ep in enumerate(live) if ep.events is not None}
    if not turn_ids:
        return None

    def on_token(i: int, token: int) -> None:
        ids = turn_ids.get(i)
        if ids is not None:
            ids.append(token)
            live[i].events.on_tokens(live[i], turn, ids)

    return on_token


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
    deadline: Optional[float] = None,
) -> List[Episode]:
    """Run all episodes to the end, batching the live ones into one generate call per turn. `tools`
    is one tool list for all, or a list per toolset (`Task.toolset`); `experts` serves the experts
    and the basic tools. Past `deadline` (time.monotonic()) no new turn starts: the live episodes
    end there (finish reason "deadline"), as a request that timed out must stop its work. An episode
    with `events` reports its policy tokens and its calls as they happen."""
    router = ToolRouter(experts, experts, limits.max_response_chars, limits.domain_call_latency_s)
    # An engine that keeps each episode's KV cache between turns prefills only the new tokens.
    keyed = getattr(engine, "keeps_kv_cache", False)
    for turn in range(limits.max_turns):
        live = [e for e in episodes if not e.done]
        if not live:
            break
        if deadline is not None and time.monotonic() >= deadline:
            for ep in live:
                ep.done, ep.finish_reason = True, "deadline"
            break
        on_token = _token_sink(live, turn)
        gens = engine.generate(
            [e.token_ids for e in live],
            max_new_tokens=limits.max_new_tokens,
            temperature=temperature,
            stop_token_ids=[chat.end_of_turn_id],
            **({} if on_token is None else {"on_token": on_token}),  # engines without events need not take it
            **({"sequence_ids": [id(e) for e in live]} if keyed else {}),
        )
        routed: List[Tuple[int, Episode, ToolCall]] = []
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
                _finish(ep, "text", call.arguments["text"], _judge(call.arguments["text"], ep.task, ep.env))
                _record(ep, CallRecord(turn, "answer", json.dumps(call.arguments), ""))
            elif call.name == "answer" and call.arguments["expert"] in ep.consulted:
                slot = call.arguments["expert"]
                resp = ep.consulted[slot]
                _record(ep, CallRecord(turn, "answer", json.dumps(call.arguments), slot))
                _finish(ep, slot, resp.text, _correct(resp, ep.task))
            else:
                routed.append((i, ep, call))
        results = router.run(turn, [RoutedCall(call.name, call.arguments, ep.task, ep.env) for _, ep, call in routed])
        for (i, ep, call), res in zip(routed, results):
            _record(ep, res.record)
            if res.response is not None and call.name == "answer":
                _finish(ep, res.record.expert, res.response.text, _correct(res.response, ep.task))
                continue
            if res.response is not None:
                ep.consulted[res.record.expert] = res.response
            observations[i] = res.observation
        for i, ep in enumerate(live):
            if ep.done:
                continue
            ep.append(chat.observation_ids(observations.get(i, "")))
            if len(ep.token_ids) + limits.max_new_tokens > limits.max_total_tokens:
                ep.done, ep.finish_reason = True, "max_tokens"
    if keyed:
        engine.end_sequences([id(e) for e in episodes])
    for ep in episodes:
        if not ep.done:
            ep.done, ep.finish_reason = True, "max_turns"
    return episodes


def new_episodes(chat: ChatFormat, system: str, task: Task, user: str, n: int) -> List[Episode]:
    prompt = chat.prompt_ids(system, user)
    return [Episode(task=task, sample=k, token_ids=list(prompt), prompt_len=len(prompt)) for k in range(n)]


def episode_record(ep: Episode, slots: Sequence[str]) -> Sample:
    """The Sample of a finished episode (what a rollout worker returns to the driver)."""
    return Sample(
        task_id=ep.task.task_id,
        question_id=ep.task.question_id,
        sample=ep.sample,
        episode_id=episode_id(ep.task.task_id, ep.sample),
        weight_version=ep.weight_version,
        token_ids=ep.token_ids,
        loss_mask=ep.loss_mask,
        rollout_logprobs=ep.logprobs,
        prompt_len=ep.prompt_len,
        turns=ep.turns,
        generated_tokens=ep.generated_tokens,
        finish_reason=ep.finish_reason,
        tool_calls=[dict(c.__dict__) for c in ep.calls],
        format_errors=list(ep.format_errors),
        final_answer=ep.answer,
        answer_source=ep.answer_source,
        outcome=ep.outcome,
        metrics=ep.metrics(slots),
        family=ep.task.family,
        toolset=ep.task.toolset,
        preference_profile=ep.task.preference.profile,
        preference=dict(ep.task.preference.weights),
    )

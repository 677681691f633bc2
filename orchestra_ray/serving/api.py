"""The served orchestrator's HTTP API, without the server: an OpenAI chat-completion request with
the orchestration's own fields is checked and turned into an `OrchestrationRequest`; a finished
episode is turned into the completion, whose `orchestration` field is the trace.

Extra request fields (the `openai` client sends them with `extra_body`):
    preference       a profile name ("cost-first", "avoid:<expert>", ...) or a vector {metric: weight}
    question_id      the FRAMES question id the replay experts answer for (else matched by its text)
    allowed_tools    only these tools (expert slots, basic tools) may be called
    forbidden_tools  these may not
    max_cost         USD; no paid call starts once the request has spent this much
    max_turns        policy turns, at most the server's serving.max_turns
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from orchestra_ray.rollout.calls import CallRecord
from orchestra_ray.rollout.episode import Episode
from orchestra_ray.grpo.preferences import (CALLS_PREFIX, PreferenceError, PreferenceVector, Weights, metric_names,
                                            profile_vector)

CUSTOM_PROFILE = "custom"
CUSTOM_INSTRUCTION = "Weigh the metrics as P says."
ANSWER = "answer"
# Why an episode ended without the policy's own answer, as the trace reports it.
LIMITS = {"max_turns": "max_turns", "max_tokens": "max_total_tokens", "max_cost": "max_cost"}


class RequestError(ValueError):
    """A malformed request: an HTTP status and a message naming the field (`param`)."""

    def __init__(self, message: str, param: Optional[str] = None, status: int = 400, code: Optional[str] = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code

    def body(self) -> Dict[str, Any]:
        kind = {400: "invalid_request_error", 404: "not_found_error"}.get(self.status, "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ApiSpec:
    """What the ingress checks requests against."""

    model_name: str
    slots: Tuple[str, ...]
    basic_tools: Tuple[str, ...]  # basic tools the served toolset has (e.g. search)
    questions: Mapping[str, Tuple[str, str]]  # known question id -> (text, gold answer)
    default_profile: str
    max_turns: int
    temperature: float
    max_question_chars: int = 16_000
    own_profiles: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # preferences.weights

    @property
    def tools(self) -> Tuple[str, ...]:
        return self.slots + self.basic_tools


@dataclass(frozen=True)
class OrchestrationRequest:
    request_id: str
    question: str
    question_id: str
    known: bool  # the question is in the data set: its outcome can be judged
    gold: str
    preference: PreferenceVector
    tools: Tuple[str, ...]  # the tools this request may call
    max_cost: Optional[float]
    max_turns: int
    temperature: float
    stream: bool
    received_at: float = 0.0  # time.time() at the ingress: the request's time-out counts from here


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise RequestError(f"{where} must be a string or a list of text parts", where)


def _question(body: Dict[str, Any]) -> str:
    """The last user message: the orchestrator answers one question, with its own system prompt."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", "messages")
    question = None
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with 'role' and 'content'", f"messages[{i}]")
        text = _text(m.get("content"), f"messages[{i}].content")
        if m["role"] == "user":
            question = text
    if question is None or not question.strip():
        raise RequestError("'messages' must end the conversation with a non-empty user message (the question)", "messages")
    return question.strip()


def _number(body: Dict[str, Any], key: str) -> Optional[float]:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"'{key}' must be a finite number", key)
    return float(value)


def parse_preference(value: Any, slots: Sequence[str], default: str, own: Weights = None) -> PreferenceVector:
    """A profile name, or an explicit vector {metric: weight} over the run's metrics (missing ones 0)."""
    if value is None:
        value = default
    if isinstance(value, str):
        try:
            return profile_vector(value, slots, own)
        except PreferenceError as exc:
            raise RequestError(str(exc), "preference") from None
    if not isinstance(value, dict) or not value:
        raise RequestError("'preference' must be a profile name or a non-empty object {metric: weight}", "preference")
    known = metric_names(slots)
    weights = {m: 0.0 for m in known}
    for key, w in value.items():
        if key not in weights:
            raise RequestError(f"'preference' has unknown metric '{str(key)[:64]}' (known: {', '.join(known)})", f"preference.{key}")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise RequestError(f"'preference.{key}' must be a finite number", f"preference.{key}")
        if not key.startswith(CALLS_PREFIX) and w < 0:
            raise RequestError(f"'preference.{key}' must not be negative (only calls:<expert> weights are signed)", f"preference.{key}")
        weights[key] = float(w)
    if not any(weights.values()):
        raise RequestError("'preference' must give some metric a non-zero weight", "preference")
    return PreferenceVector(CUSTOM_PROFILE, weights, CUSTOM_INSTRUCTION)


def _tool_list(body: Dict[str, Any], key: str, known: Sequence[str]) -> Optional[List[str]]:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise RequestError(f"'{key}' must be a list of tool names", key)
    for i, t in enumerate(value):
        if t not in known:
            raise RequestError(f"'{key}[{i}]': unknown tool '{t[:64]}' (known: {', '.join(known)})", f"{key}[{i}]")
    return value


MAX_DEPTH = 32  # of a request's JSON: an OpenAI request nests 5 levels; deeper is not a request


def check_depth(body: Any) -> None:
    """RequestError naming where `body` nests deeper than MAX_DEPTH (walked without recursion)."""
    stack = [(body, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise RequestError(f"the request nests deeper than {MAX_DEPTH} levels at '{path[:80]}'", path.split("[")[0].split(".")[0] or None)
        if isinstance(node, dict):
            stack.extend((v, depth + 1, f"{path}.{k}" if path else str(k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, depth + 1, f"{path}[{i}]") for i, v in enumerate(node))


def parse_json(raw: bytes) -> Any:
    """The body as JSON; RequestError for text that is not JSON or nests too deep to parse."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise RequestError(f"the request nests deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise RequestError("the request body is not valid JSON") from None


def parse_request(body: Any, spec: ApiSpec) -> OrchestrationRequest:
    """The checked request; RequestError names the first field that is wrong."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    check_depth(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("'model' is required and must be a string", "model")
    if model != spec.model_name:
        raise RequestError(f"the model '{model[:64]}' does not exist; this server serves '{spec.model_name}'", "model", 404, "model_not_found")
    question = _question(body)
    if len(question) > spec.max_question_chars:
        raise RequestError(f"the question has {len(question)} characters; this server takes at most "
                           f"{spec.max_question_chars} (serving.max_question_chars)", "messages", 400, "question_too_long")
    if body.get("n", 1) != 1:
        raise RequestError("only n=1 is supported", "n")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be true or false", "stream")
    preference = parse_preference(body.get("preference"), spec.slots, spec.default_profile, spec.own_profiles)
    qid = body.get("question_id")
    if qid is not None:
        if not isinstance(qid, str) or qid not in spec.questions:
            raise RequestError(f"'question_id': unknown question '{str(qid)[:64]}'", "question_id")
        known = True
    else:
        qid = next((q for q, (text, _) in spec.questions.items() if text.strip() == question), None)
        known = qid is not None
        if qid is None:  # a question of no data set: only live experts can answer it
            qid = "adhoc-" + hashlib.sha256(question.encode("utf-8", "replace")).hexdigest()[:16]
    allowed = _tool_list(body, "allowed_tools", spec.tools)
    forbidden = _tool_list(body, "forbidden_tools", spec.tools) or []
    tools = tuple(t for t in (spec.tools if allowed is None else allowed) if t not in forbidden)
    max_cost = _number(body, "max_cost")
    if max_cost is not None and max_cost < 0:
        raise RequestError("'max_cost' must not be negative", "max_cost")
    max_turns = body.get("max_turns", spec.max_turns)
    if isinstance(max_turns, bool) or not isinstance(max_turns, int) or not 1 <= max_turns <= spec.max_turns:
        raise RequestError(f"'max_turns' must be an integer from 1 to {spec.max_turns}", "max_turns")
    temperature = _number(body, "temperature")
    temperature = spec.temperature if temperature is None else temperature
    if not 0 <= temperature <= 2:
        raise RequestError("'temperature' must be in [0, 2]", "temperature")
    gold = spec.questions[qid][1] if known else ""
    return OrchestrationRequest(f"chatcmpl-{uuid.uuid4().hex}", question, qid, known, gold, preference, tools,
                                max_cost, max_turns, temperature, stream)


def _fallback(ep: Episode) -> None:
    """An episode stopped by a limit answers with the last expert it consulted, if any."""
    if ep.has_answer or not ep.consulted:
        return
    slot = next(c.expert for c in reversed(ep.calls) if c.ok and c.expert in ep.consulted)
    resp = ep.consulted[slot]
    ep.answer, ep.answer_source = resp.text, slot
    ep.outcome = resp.grade == "A" if resp.grade is not None else False


def call_trace(c: CallRecord) -> Dict[str, Any]:
    """One call as the trace reports it."""
    return {
        "turn": c.turn, "tool": c.name, "expert": c.expert or None, "arguments": c.arguments,
        "input_tokens": c.input_tokens, "output_tokens": c.output_tokens, "cost": c.cost, "latency": c.latency,
        "ok": c.ok, "error": c.error or None, "error_kind": c.error_kind or None,
    }


def orchestration_trace(ep: Episode, req: OrchestrationRequest) -> Dict[str, Any]:
    """What the request cost and which tools it used, call by call; plain data."""
    limit = LIMITS.get(ep.finish_reason) if ep.finish_reason != ANSWER else None
    _fallback(ep)
    calls = [call_trace(c) for c in ep.calls]
    return {
        "question_id": req.question_id,
        "known_question": req.known,
        "preference": {"profile": req.preference.profile, "weights": dict(req.preference.weights)},
        "tools": list(req.tools),
        "calls": calls,
        "experts_called": [c.expert for c in ep.calls if c.expert and c.ok and c.input_tokens > 0],
        "total_cost": sum(c["cost"] for c in calls),
        "total_latency": sum(c["latency"] for c in calls),
        "turns": ep.turns,
        "finish_reason": ep.finish_reason,
        "limit_reached": limit,
        "answer_source": ep.answer_source or None,
        "outcome": ep.outcome if req.known else None,
        "format_errors": list(ep.format_errors),
        "policy_tokens": {"prompt": ep.prompt_len, "generated": ep.generated_tokens},
    }


def completion_body(req: OrchestrationRequest, model_name: str, trace: Dict[str, Any], answer: str) -> Dict[str, Any]:
    prompt, generated = trace["policy_tokens"]["prompt"], trace["policy_tokens"]["generated"]
    return {
        "id": req.request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                     "finish_reason": "length" if trace["limit_reached"] else "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated},
        "orchestration": trace,
    }


def chunk_base(req: OrchestrationRequest, model_name: str) -> Dict[str, Any]:
    return {"id": req.request_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model_name}


def delta_chunk(base: Dict[str, Any], delta: Dict[str, Any], finish_reason: Optional[str] = None, **extra) -> Dict[str, Any]:
    return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}


def stream_chunk(base: Dict[str, Any], item: Dict[str, Any], body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The chat.completion.chunk of one stream item (orchestra_ray.serving.stream): a call
    (`orchestration_call`, as the trace has it), a piece of the answer, or the end (`body`: the
    whole completion) with the finish reason, usage and the whole trace; an end whose streamed
    pieces were not the answer (the policy began an answer call it did not give) carries the
    answer itself as `answer`."""
    if "call" in item:
        return delta_chunk(base, {}, orchestration_call=item["call"])
    if "content" in item:
        return delta_chunk(base, {"content": item["content"]})
    extra = {} if item["end"].get("answer") is None else {"answer": item["end"]["answer"]}
    return delta_chunk(base, {}, body["choices"][0]["finish_reason"], usage=body["usage"],
                       orchestration=body["orchestration"], **extra)

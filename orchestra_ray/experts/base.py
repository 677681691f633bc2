"""Expert backends behind one interface: a request (messages and limits) in, a response (text,
tokens, cost, latency) out. The replay backend answers with what a real model recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

from orchestra_ray.families.frames import RecordedResponse
from orchestra_ray.experts.pricing import PriceTable


class ExpertError(RuntimeError):
    """The expert could not answer (missing record, endpoint failure); `kind` says whose fault it
    is (orchestra_ray.rollout.failures: infrastructure or data)."""

    def __init__(self, message: str, kind: str = "data"):
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):  # keeps `kind` when Ray carries the error between processes
        return (ExpertError, (str(self), self.kind))


@dataclass(frozen=True)
class ExpertRequest:
    task_id: str  # the replay backend keys its records on this
    messages: List[Dict[str, str]]
    max_output_tokens: Optional[int] = None


@dataclass(frozen=True)
class ExpertResponse:
    slot: str
    text: str
    input_tokens: int
    output_tokens: int
    cost: float
    latency: float
    grade: Optional[str] = None  # replay only: the recorded grade of this answer
    meta: Dict[str, str] = field(default_factory=dict)


def estimate_tokens(text: str) -> int:
    """About four characters a token, for English text, when no tokenizer of the expert is at hand."""
    return max(1, (len(text) + 3) // 4)


class ReplayExpert:
    """Answers from a recorded arm of the FRAMES replay data set."""

    def __init__(self, slot: str, records: Dict[str, RecordedResponse], prices: PriceTable, input_overhead: int):
        self.slot = slot
        self.records = records
        self.prices = prices
        self.input_overhead = input_overhead

    def respond(self, request: ExpertRequest) -> ExpertResponse:
        rec = self.records.get(request.task_id)
        if rec is None:
            raise ExpertError(f"expert '{self.slot}' has no recorded answer for question {request.task_id}")
        prompt = "".join(m.get("content", "") for m in request.messages)
        in_tok = estimate_tokens(prompt) + self.input_overhead
        out_tok = rec.output_tokens
        if request.max_output_tokens is not None:
            out_tok = min(out_tok, request.max_output_tokens)
        return ExpertResponse(
            slot=self.slot,
            text=rec.text,
            input_tokens=in_tok,
            output_tokens=out_tok,
            cost=self.prices.cost(self.slot, in_tok, out_tok),
            latency=self.prices.latency(self.slot, out_tok),
            grade=rec.grade,
        )


class InProcessExperts:
    """Experts called in this process, one request after another (the warm start's replay experts):
    a failed call comes back as its `ExpertError`, as from the expert actors."""

    def __init__(self, experts: Dict[str, ReplayExpert]):
        self.experts = experts

    def respond_many(self, requests: List[Tuple[str, ExpertRequest]]) -> List[Union[ExpertResponse, ExpertError]]:
        out: List[Union[ExpertResponse, ExpertError]] = []
        for slot, request in requests:
            try:
                out.append(self.experts[slot].respond(request))
            except ExpertError as exc:
                out.append(exc)
        return out

"""The chat format (ChatML, as Qwen3 uses) in token space, and the orchestrator's prompts.

Rollouts are token-in/token-out: the policy's tokens are kept exactly as generated, and the
template pieces between turns are encoded on their own, so the tokens trained on are the tokens
sampled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import List, Sequence

from orchestra_ray.grpo.preferences import PreferenceVector
from orchestra_ray.tools.spec import ToolSpec

IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE = "<tool_response>", "</tool_response>"


@dataclass(frozen=True)
class SlotCard:
    """What the system prompt tells the policy about one expert slot."""

    name: str
    description: str
    input_price: float
    output_price: float
    typical_latency_s: float


def system_prompt(slots: Sequence[SlotCard], tools: Sequence[ToolSpec]) -> str:
    lines = [
        "You are an orchestrator. Answer the user's question by calling tools: consult expert models, "
        "then give the final answer. Call exactly one tool per turn as "
        '<tool_call>{"name": ..., "arguments": {...}}</tool_call>.',
        "Experts (price per million input / output tokens, typical latency):",
    ]
    for s in slots:
        lines.append(
            f"- {s.name}: {s.description} ${s.input_price:.2f} / ${s.output_price:.2f}, about {s.typical_latency_s:.0f} s."
        )
    lines.append("<tools>")
    lines.extend(json.dumps(t.openai_schema(), separators=(",", ":")) for t in tools)
    lines.append("</tools>")
    return "\n".join(lines)


def task_prompt(intro: str, tools: Sequence[ToolSpec]) -> str:
    """System prompt of a task family without experts: what the job is, and its tools."""
    lines = [
        f"You are an orchestrator. {intro} Call exactly one tool per turn as "
        '<tool_call>{"name": ..., "arguments": {...}}</tool_call>.',
        "<tools>",
    ]
    lines.extend(json.dumps(t.openai_schema(), separators=(",", ":")) for t in tools)
    lines.append("</tools>")
    return "\n".join(lines)


def user_message(question: str, preference: PreferenceVector) -> str:
    return f"Question: {question.strip()}\n{preference.as_text()}"


def tool_call_text(name: str, arguments: dict) -> str:
    """The assistant text of one tool call, as the demonstrations write it."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>{body}</tool_call>{IM_END}"


def tool_exchange(text: str) -> str:
    """A tool's output as the next user turn, followed by the opening of the next assistant turn."""
    return f"\n{IM_START}user\n{TOOL_RESPONSE_OPEN}\n{text}\n{TOOL_RESPONSE_CLOSE}{IM_END}\n{IM_START}assistant\n"


class ChatFormat:
    """Encodes the template pieces around policy turns with a Hugging Face tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        ids = tokenizer.convert_tokens_to_ids([IM_START, IM_END])
        if any(i is None or i == tokenizer.unk_token_id for i in ids):
            raise ValueError("tokenizer lacks the ChatML special tokens <|im_start|> / <|im_end|>")
        self.end_of_turn_id = ids[1]

    def encode(self, text: str) -> List[int]:
        # Policy output can smuggle lone surrogates (JSON "\ud800") into error messages.
        clean = text.encode("utf-8", "replace").decode("utf-8")
        return self.tokenizer.encode(clean, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def prompt_ids(self, system: str, user: str) -> List[int]:
        return self.encode(
            f"{IM_START}system\n{system}{IM_END}\n{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n"
        )

    def observation_ids(self, text: str) -> List[int]:
        return self.encode(tool_exchange(text))

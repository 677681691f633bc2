"""The chat format (ChatML, as Qwen3 uses) in token space, and the orchestrator's prompts.

Rollouts are token-in/token-out: the policy's tokens are kept exactly as generated, and the
template pieces between turns are encoded on their own, so the tokens trained on are the tokens
sampled.

Text from outside the policy (a user's question, a tool's or an expert's output) is encoded as
plain text: a chat token written in it (`<|im_end|>`, `<|im_start|>`, `<tool_call>`, ...) becomes
the characters it is spelt with, never the token, so such text cannot end a turn, open one or
forge a tool call in the policy's context.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import List, Sequence

from orchestra_ray.grpo.preferences import PreferenceVector
from orchestra_ray.tools.spec import ToolSpec

IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
# Tags of the chat's structure that tokenizers add as tokens without flagging them special (Qwen3's
# tool and thinking tags); every special token, and every added `<|...|>` token, is a marker too.
STRUCTURE_TAGS = ("<tool_call>", "</tool_call>", TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE, "<think>", "</think>")


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
        # The tokens untrusted text must not produce: special ones and the structure's tags (other
        # added tokens, such as the tiny tokenizer's expert names, are words)
        vocab = tokenizer.get_added_vocab()
        special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
        control = lambda t: t in special or t in STRUCTURE_TAGS or (t.startswith("<|") and t.endswith("|>"))  # Qwen's <|fim_*|>, <|file_sep|>, ...
        markers = sorted((t for t in vocab if control(t)), key=len, reverse=True)
        self.marker_ids = {vocab[t] for t in markers}
        self._markers = re.compile("|".join(re.escape(t) for t in markers)) if markers else None

    def encode(self, text: str) -> List[int]:
        """Trusted text (the template, the system prompt): chat tokens in it are the tokens."""
        # Policy output can smuggle lone surrogates (JSON "\ud800") into error messages.
        clean = text.encode("utf-8", "replace").decode("utf-8")
        return self.tokenizer.encode(clean, add_special_tokens=False)

    def encode_untrusted(self, text: str) -> List[int]:
        """Plain text: a chat token spelt in it is encoded as its first character and the rest
        apart, which the token no longer matches; a rest that still yields a marker is encoded
        character by character."""
        clean = text.encode("utf-8", "replace").decode("utf-8")
        if self._markers is None or not self._markers.search(clean):
            return self.encode(clean)
        ids: List[int] = []
        at = 0
        for m in self._markers.finditer(clean):
            ids += self.encode(clean[at:m.start()]) + self.encode(m.group()[0]) + self._plain(m.group()[1:])
            at = m.end()
        return ids + self.encode(clean[at:])

    def _plain(self, piece: str) -> List[int]:
        ids = self.encode(piece)
        if self.marker_ids.isdisjoint(ids):
            return ids
        return [i for ch in piece for i in self.encode(ch)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def prompt_ids(self, system: str, user: str) -> List[int]:
        """The system prompt (trusted) and the user's message (plain text), up to the assistant's turn."""
        return (self.encode(f"{IM_START}system\n{system}{IM_END}\n{IM_START}user\n") + self.encode_untrusted(user)
                + self.encode(f"{IM_END}\n{IM_START}assistant\n"))

    def observation_ids(self, text: str) -> List[int]:
        """A tool's or an expert's output (plain text) as the next user turn, as `tool_exchange` writes it."""
        head, tail = tool_exchange("\0").split("\0")
        return self.encode(head) + self.encode_untrusted(text) + self.encode(tail)

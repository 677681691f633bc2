"""Turn policy text into tool calls, in the Qwen3/Hermes convention:

    <tool_call>{"name": "call_expert", "arguments": {"expert": "gpt-5-mini"}}</tool_call>

Anything malformed is a `FormatError` returned with the result, never an exception: a policy's bad
output is data to score, and no worker should die of it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from orchestra_ray.tools.spec import ToolSpec, one_line, validate_arguments

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Dict[str, Any]


@dataclass(frozen=True)
class FormatError:
    kind: str  # too_long | no_tool_call | unclosed | nested | too_many_calls | bad_json | bad_shape | unknown_tool | bad_arguments
    message: str


@dataclass
class ParseResult:
    calls: List[ToolCall] = field(default_factory=list)
    error: Optional[FormatError] = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _fail(kind: str, message: str) -> ParseResult:
    # Messages quote the policy's text back to it; lone surrogates ("\ud800" in JSON) are not text.
    return ParseResult([], FormatError(kind, one_line(message)))


def _strip_think(text: str) -> Optional[str]:
    """`text` without its <think>...</think> blocks, or None when one is not closed. One pass: a
    lazy regex rescans to the end for every unclosed opening, quadratic in a flood of <think> tags."""
    parts: List[str] = []
    pos = 0
    while True:
        start = text.find(THINK_OPEN, pos)
        if start < 0:
            parts.append(text[pos:])
            return "".join(parts)
        end = text.find(THINK_CLOSE, start + len(THINK_OPEN))
        if end < 0:
            return None
        parts.append(text[pos:start])
        pos = end + len(THINK_CLOSE)


def parse_tool_calls(
    text: str, tools: Sequence[ToolSpec], *, max_calls: int = 1, max_chars: int = 8192
) -> ParseResult:
    if not isinstance(text, str):
        return _fail("bad_shape", "policy output is not text")
    if len(text) > max_chars:
        return _fail("too_long", f"output has {len(text)} characters, limit is {max_chars}")
    body = _strip_think(text)
    if body is None or THINK_OPEN in body:
        return _fail("unclosed", f"{THINK_OPEN} block is not closed")
    by_name = {t.name: t for t in tools}
    calls: List[ToolCall] = []
    pos = 0
    while True:
        start = body.find(TOOL_CALL_OPEN, pos)
        if start < 0:
            if TOOL_CALL_CLOSE in body[pos:]:
                return _fail("unclosed", f"{TOOL_CALL_CLOSE} without {TOOL_CALL_OPEN}")
            break
        end = body.find(TOOL_CALL_CLOSE, start)
        if end < 0:
            return _fail("unclosed", f"{TOOL_CALL_OPEN} is not closed")
        inner = body[start + len(TOOL_CALL_OPEN) : end]
        if TOOL_CALL_OPEN in inner:
            return _fail("nested", f"{TOOL_CALL_OPEN} inside another tool call")
        pos = end + len(TOOL_CALL_CLOSE)
        if len(calls) >= max_calls:
            return _fail("too_many_calls", f"more than {max_calls} tool call(s) in one turn")
        try:
            obj = json.loads(inner)
        except (ValueError, RecursionError) as exc:
            return _fail("bad_json", f"tool call is not valid JSON: {str(exc)[:120]}")
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return _fail("bad_shape", 'tool call must be a JSON object with a string "name"')
        extra = set(obj) - {"name", "arguments"}
        if extra:
            return _fail("bad_shape", f"tool call has unexpected field '{sorted(extra)[0][:64]}'")
        spec = by_name.get(obj["name"])
        if spec is None:
            known = ", ".join(by_name)
            return _fail("unknown_tool", f"unknown tool '{obj['name'][:64]}' (known: {known})")
        args = obj.get("arguments", {})
        problem = validate_arguments(spec, args)
        if problem:
            return _fail("bad_arguments", problem)
        calls.append(ToolCall(spec.name, args))
    if not calls:
        return _fail("no_tool_call", f"no {TOOL_CALL_OPEN}...{TOOL_CALL_CLOSE} in the output")
    return ParseResult(calls)


# The opening of an `answer` call with free text, up to the text's first character.
_ANSWER_OPEN = re.compile(r'\s*\{\s*"name"\s*:\s*"answer"\s*,\s*"arguments"\s*:\s*\{\s*"text"\s*:\s*"')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def partial_answer(text: str) -> Optional[str]:
    """The text of the `answer` call a policy turn still being generated has begun, as far as it is
    written (escapes decoded; an escape or character not yet whole is left for later), or None when
    the turn is not writing one. What streams the answer as it is generated: the call itself counts
    only once the whole turn parses."""
    body = _strip_think(text)
    start = -1 if body is None else body.find(TOOL_CALL_OPEN)
    if start < 0:
        return None
    m = _ANSWER_OPEN.match(body, start + len(TOOL_CALL_OPEN))
    if m is None:
        return None
    out: List[str] = []
    i, end = m.end(), len(body)
    while i < end:
        ch = body[i]
        if ch == '"' or ord(ch) < 0x20 or (ch == "\ufffd" and i == end - 1):  # the end, bad JSON, a cut character
            break
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 < end and body[i + 1] in _ESCAPES:
            out.append(_ESCAPES[body[i + 1]])
            i += 2
            continue
        # \uXXXX, a high surrogate with its low one: decoded together
        size = 12 if body[i + 2 : i + 4].upper() in ("D8", "D9", "DA", "DB") else 6
        if i + size > end:
            break
        try:
            out.append(json.loads(f'"{body[i : i + size]}"'))
        except ValueError:
            break
        i += size
    return "".join(out)

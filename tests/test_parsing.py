"""Parsing the policy's tool calls: every error kind, and a seeded fuzz test (parse never raises)."""

from __future__ import annotations

import json
import random

import pytest

from orchestra_ray.rollout.parsing import FormatError, ParseResult, ToolCall, parse_tool_calls
from orchestra_ray.tools.spec import expert_tools, validate_arguments

SLOTS = ["claude-sonnet-4", "gpt-5-mini", "grok-3-mini", "qwen3-8b"]
TOOLS = expert_tools(SLOTS)
MAX_CHARS = 4096
# The kinds FormatError documents.
KINDS = {
    "too_long",
    "no_tool_call",
    "unclosed",
    "nested",
    "too_many_calls",
    "bad_json",
    "bad_shape",
    "unknown_tool",
    "bad_arguments",
}


def parse(text, max_calls=1, max_chars=MAX_CHARS):
    return parse_tool_calls(text, TOOLS, max_calls=max_calls, max_chars=max_chars)


def call(name, arguments=None, **extra):
    obj = {"name": name}
    if arguments is not None:
        obj["arguments"] = arguments
    obj.update(extra)
    return f"<tool_call>{json.dumps(obj)}</tool_call>"


def assert_error(res, kind, *fragments):
    assert isinstance(res, ParseResult)
    assert not res.ok
    assert res.calls == []
    assert isinstance(res.error, FormatError)
    assert res.error.kind == kind, res.error
    for f in fragments:
        assert f in res.error.message, res.error.message


# ---------------------------------------------------------------------------------------------
# valid calls


def test_valid_call_expert():
    res = parse(call("call_expert", {"expert": "gpt-5-mini"}))
    assert res.ok and res.error is None
    assert res.calls == [ToolCall("call_expert", {"expert": "gpt-5-mini"})]


@pytest.mark.parametrize("args", [{"expert": "qwen3-8b"}, {"text": "Paris"}, {"text": ""}])
def test_valid_answer(args):
    res = parse(call("answer", args))
    assert res.ok
    assert res.calls == [ToolCall("answer", args)]


def test_think_block_before_call_is_tolerated():
    text = "<think>The cheap model is enough.\nMaybe <tool_call> later? {not json}</think>\n" + call(
        "call_expert", {"expert": "grok-3-mini"}
    )
    res = parse(text)
    assert res.ok, res.error
    assert res.calls[0].arguments == {"expert": "grok-3-mini"}


def test_surrounding_text_and_whitespace_tolerated():
    text = "I will ask.\n<tool_call>\n  {\"name\": \"answer\", \"arguments\": {\"text\": \"42\"}}\n</tool_call>\n"
    res = parse(text)
    assert res.ok
    assert res.calls == [ToolCall("answer", {"text": "42"})]


def test_several_calls_allowed_when_max_calls_allows():
    text = call("call_expert", {"expert": "gpt-5-mini"}) + call("answer", {"expert": "gpt-5-mini"})
    res = parse(text, max_calls=2)
    assert res.ok
    assert [c.name for c in res.calls] == ["call_expert", "answer"]


# ---------------------------------------------------------------------------------------------
# every error kind


def test_malformed_json():
    assert_error(parse('<tool_call>{"name": "call_expert", "arguments": {"expert": }</tool_call>'), "bad_json")
    assert_error(parse("<tool_call>{'name': 'answer'}</tool_call>"), "bad_json")
    assert_error(parse("<tool_call></tool_call>"), "bad_json")


@pytest.mark.parametrize(
    "inner",
    ['"call_expert"', "[1, 2]", "42", "null", '{"arguments": {}}', '{"name": 7}', '{"name": null, "arguments": {}}'],
)
def test_not_an_object_with_a_string_name(inner):
    assert_error(parse(f"<tool_call>{inner}</tool_call>"), "bad_shape")


def test_unexpected_top_level_field():
    assert_error(parse(call("answer", {"text": "x"}, id="c1")), "bad_shape", "id")


def test_unknown_tool():
    assert_error(parse(call("search_web", {"query": "x"})), "unknown_tool", "search_web", "call_expert")


def test_missing_required_argument():
    assert_error(parse(call("call_expert", {})), "bad_arguments", "expert")
    # no "arguments" field at all: treated as {} and so also missing the expert
    assert_error(parse(call("call_expert")), "bad_arguments", "expert")


def test_extra_argument():
    assert_error(parse(call("call_expert", {"expert": "qwen3-8b", "budget": 3})), "bad_arguments", "budget")


@pytest.mark.parametrize("value", [3, 1.5, True, None, ["qwen3-8b"], {"slot": "qwen3-8b"}])
def test_wrong_argument_type(value):
    assert_error(parse(call("call_expert", {"expert": value})), "bad_arguments", "expert", "string")


def test_wrong_type_for_text_answer():
    assert_error(parse(call("answer", {"text": 1945})), "bad_arguments", "text")


@pytest.mark.parametrize("name", ["gpt-4o", "GPT-5-MINI", "", "qwen3-8b "])
def test_enum_violation(name):
    assert_error(parse(call("call_expert", {"expert": name})), "bad_arguments", "expert")
    assert_error(parse(call("answer", {"expert": name})), "bad_arguments", "expert")


def test_answer_with_both_expert_and_text_is_exclusive():
    assert_error(parse(call("answer", {"expert": "gpt-5-mini", "text": "Paris"})), "bad_arguments", "exactly one")


def test_answer_with_neither_expert_nor_text():
    assert_error(parse(call("answer", {})), "bad_arguments", "exactly one")


@pytest.mark.parametrize("arguments", ['"gpt-5-mini"', "[]", "7", "null"])
def test_non_object_arguments(arguments):
    text = f'<tool_call>{{"name": "call_expert", "arguments": {arguments}}}</tool_call>'
    assert_error(parse(text), "bad_arguments", "JSON object")


def test_several_calls_where_one_is_allowed():
    text = call("call_expert", {"expert": "gpt-5-mini"}) + "\n" + call("call_expert", {"expert": "qwen3-8b"})
    assert_error(parse(text, max_calls=1), "too_many_calls")
    three = text + call("answer", {"text": "x"})
    assert_error(parse(three, max_calls=2), "too_many_calls")


def test_nested_tool_call():
    inner = call("call_expert", {"expert": "gpt-5-mini"})
    assert_error(parse(f"<tool_call>{inner}</tool_call>"), "nested")
    assert_error(parse("<tool_call><tool_call>{}</tool_call>"), "nested")


def test_unclosed_tag():
    assert_error(parse('<tool_call>{"name": "call_expert", "arguments": {"expert": "gpt-5-mini"}}'), "unclosed")
    assert_error(parse('{"name": "answer"}</tool_call>'), "unclosed")
    valid = call("call_expert", {"expert": "gpt-5-mini"})
    assert_error(parse(valid + "</tool_call>", max_calls=2), "unclosed")
    assert_error(parse(valid + "<tool_call>", max_calls=2), "unclosed")


def test_unclosed_think():
    assert_error(parse("<think>hmm " + call("call_expert", {"expert": "gpt-5-mini"})), "unclosed", "think")


def test_no_tool_call():
    assert_error(parse("The answer is Paris."), "no_tool_call")
    assert_error(parse(""), "no_tool_call")
    assert_error(parse("<think>only thinking</think>"), "no_tool_call")
    # a call inside the think block does not count
    assert_error(parse("<think>" + call("answer", {"text": "x"}) + "</think>"), "no_tool_call")


def test_text_too_long():
    body = call("answer", {"text": "a" * 100})
    assert parse(body, max_chars=len(body)).ok
    assert_error(parse(body, max_chars=len(body) - 1), "too_long", str(len(body)), str(len(body) - 1))
    assert_error(parse("x" * (MAX_CHARS + 1)), "too_long")


def test_non_text_input():
    for bad in (None, b"<tool_call>{}</tool_call>", 42, ["<tool_call>"]):
        assert_error(parse(bad), "bad_shape")


def test_deeply_nested_json_is_bad_json_not_recursion_error():
    assert_error(parse("<tool_call>" + "[" * 5000 + "</tool_call>", max_chars=10_000), "bad_json")
    deep = '{"name": "answer", "arguments": {"text": ' + "[" * 3000 + "]" * 3000 + "}}"
    res = parse(f"<tool_call>{deep}</tool_call>", max_chars=20_000)
    assert not res.ok and res.error.kind in {"bad_json", "bad_arguments"}


def test_huge_integer_is_bad_json():
    # Python refuses to convert ints of more than 4300 digits (a ValueError inside json.loads)
    text = '<tool_call>{"name": "answer", "arguments": {"text": ' + "9" * 5000 + "}}</tool_call>"
    res = parse(text, max_chars=10_000)
    assert not res.ok and res.error.kind in {"bad_json", "bad_arguments"}


# ---------------------------------------------------------------------------------------------
# fuzz: the parser never raises, and its result is always well formed

_UNICODE = [
    "\u200f",  # RTL mark
    "\u202e",  # RTL override
    "\u200b",  # zero-width space
    "\ufeff",  # BOM
    "\x00",  # NUL
    "\u2028",  # line separator
    "😀",
    "👩‍👩‍👧‍👦",  # ZWJ sequence
    "🇫🇷",
    "\U0010ffff",
    "é",
    "e\u0301",
    "中文",
    "\\u0000",
    "\\ud83d\\ude00",  # escaped surrogate pair: valid JSON
    "\\ud800",  # escaped lone surrogate: valid JSON, odd string
    "\\",
    '"',
    "\n",
    "\t",
    "\r\n",
]
_FRAGMENTS = [
    "<tool_call>",
    "</tool_call>",
    "<think>",
    "</think>",
    "<tool_call><tool_call>",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    '"name"',
    '"arguments"',
    "null",
    "true",
    "NaN",
    "-Infinity",
    "1e999",
    "-0",
    '"call_expert"',
    '"answer"',
]


def _valid_call(rng: random.Random) -> str:
    choice = rng.randrange(3)
    if choice == 0:
        obj = {"name": "call_expert", "arguments": {"expert": rng.choice(SLOTS)}}
    elif choice == 1:
        obj = {"name": "answer", "arguments": {"expert": rng.choice(SLOTS)}}
    else:
        obj = {"name": "answer", "arguments": {"text": rng.choice(["Paris", "1945", "", "I don't know"])}}
    return f"<tool_call>{json.dumps(obj, ensure_ascii=rng.random() < 0.5)}</tool_call>"


def _odd_json_value(rng: random.Random, depth: int = 0):
    r = rng.randrange(10)
    if r == 0 or depth > 3:
        return rng.choice([None, True, False, 0, -1, 1.5, 10**30, float("inf"), float("nan")])
    if r == 1:
        return rng.choice(SLOTS) + rng.choice(["", " ", "x", "\u200f"])
    if r == 2:
        return "".join(rng.choice(_UNICODE) for _ in range(rng.randint(0, 8)))
    if r == 3:
        return "A" * rng.choice([0, 1, 100, 3000, 5000])
    if r == 4:
        return [_odd_json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if r == 5:
        return {rng.choice(["expert", "text", "x", ""]): _odd_json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    if r == 6:
        return rng.randint(-(10**6), 10**6)
    if r == 7:
        return {"expert": rng.choice(SLOTS), "text": "both"}
    if r == 8:
        return rng.choice(["call_expert", "answer", "Answer", "call_expert\x00"])
    return {"expert": _odd_json_value(rng, depth + 1)}


def _structured_case(rng: random.Random) -> str:
    """A JSON object with odd content in a <tool_call>: non-dict arguments, numbers for names..."""
    obj = {}
    if rng.random() < 0.9:
        obj["name"] = rng.choice(["call_expert", "answer", 7, 3.5, None, ["answer"], {"n": 1}, "", "x" * 200, _odd_json_value(rng)])
    if rng.random() < 0.85:
        obj["arguments"] = _odd_json_value(rng)
    if rng.random() < 0.1:
        obj[rng.choice(["id", "type", "", "\x00"])] = _odd_json_value(rng)
    top = obj if rng.random() < 0.9 else _odd_json_value(rng)
    try:
        inner = json.dumps(top, ensure_ascii=rng.random() < 0.5, allow_nan=True)
    except (ValueError, TypeError):
        inner = "{}"
    return f"<tool_call>{inner}</tool_call>"


def _mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        if op == 0 and text:  # random truncation
            text = text[: rng.randrange(len(text) + 1)]
        elif op == 1 and text:  # random character flips
            chars = list(text)
            for _ in range(rng.randint(1, 5)):
                i = rng.randrange(len(chars))
                chars[i] = chr(ord(chars[i]) ^ (1 << rng.randrange(7)))
            text = "".join(chars)
        elif op == 2:  # insert unicode edge cases / fragments
            i = rng.randrange(len(text) + 1)
            ins = rng.choice(_UNICODE + _FRAGMENTS)
            text = text[:i] + ins * rng.randint(1, 3) + text[i:]
        elif op == 3:  # deep nesting
            depth = rng.choice([10, 500, 1000, 1500, 5000])
            opener = rng.choice(["[", "{", '{"a":', '{"name": "answer", "arguments": {"text": ['])
            text = "<tool_call>" + opener * depth + rng.choice(["", "]" * depth, "}" * depth]) + "</tool_call>"
        elif op == 4:  # duplicate a call
            text = text + rng.choice(["", "\n", " "]) + text
        elif op == 5:  # wrap in think, possibly unbalanced
            text = rng.choice(["<think>", "<think>x</think>", "</think>", ""]) + text + rng.choice(["</think>", "", "<think>"])
        elif op == 6 and text:  # delete a slice
            i = rng.randrange(len(text))
            j = rng.randrange(i, len(text) + 1)
            text = text[:i] + text[j:]
        elif op == 7:  # huge argument string, around the length limit
            n = rng.choice([MAX_CHARS - 60, MAX_CHARS, MAX_CHARS + 1, 3 * MAX_CHARS])
            text = '<tool_call>{"name": "answer", "arguments": {"text": "' + "x" * n + '"}}</tool_call>'
        elif op == 8:  # random bytes decoded leniently, or random code points
            if rng.random() < 0.5:
                raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
                piece = raw.decode("utf-8", errors=rng.choice(["replace", "ignore", "surrogateescape"]))
            else:
                piece = "".join(chr(rng.choice([rng.randrange(0x20), rng.randrange(0xD800), rng.randrange(0xE000, 0x110000)])) for _ in range(rng.randint(1, 20)))
            i = rng.randrange(len(text) + 1)
            text = text[:i] + piece + text[i:]
    return text


def _fuzz_cases(seed: int, n: int):
    rng = random.Random(seed)
    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 0:
            yield _mutate(rng, _valid_call(rng))
        elif kind == 1:
            yield _structured_case(rng)
        elif kind == 2:
            yield _mutate(rng, _structured_case(rng))
        else:
            pre = rng.choice(["", "<think>plan</think>", "Sure. ", "\u200f"])
            yield _mutate(rng, pre + _valid_call(rng) + rng.choice(["", _valid_call(rng), "\x00"]))


def _check_result(text: str, res, max_calls: int):
    assert isinstance(res, ParseResult), repr(text[:200])
    if res.error is None:
        assert res.ok
        assert 1 <= len(res.calls) <= max_calls
        by_name = {t.name: t for t in TOOLS}
        for c in res.calls:
            assert isinstance(c, ToolCall)
            assert c.name in by_name
            assert validate_arguments(by_name[c.name], c.arguments) is None
    else:
        assert not res.ok
        assert res.calls == []
        assert isinstance(res.error, FormatError)
        assert res.error.kind in KINDS, (res.error, repr(text[:200]))
        assert isinstance(res.error.message, str) and res.error.message
        # messages go back to the policy as an observation: bounded whatever the input
        assert len(res.error.message) < 600, res.error.message[:200]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fuzz_parse_never_raises(seed):
    n = 1200  # 3 seeds x 1200 = 3600 cases
    kinds = set()
    oks = 0
    for i, text in enumerate(_fuzz_cases(seed, n)):
        max_calls = 1 if len(text) % 3 else 2
        # a larger limit for every third case, so that '[' * 5000 and huge arguments reach json.loads
        max_chars = MAX_CHARS if i % 3 else 5 * MAX_CHARS
        try:
            res = parse_tool_calls(text, TOOLS, max_calls=max_calls, max_chars=max_chars)
        except Exception as exc:  # pragma: no cover - the assertion message is the point
            pytest.fail(f"parse_tool_calls raised {type(exc).__name__}: {exc!s:.200} on input {text[:300]!r}")
        _check_result(text, res, max_calls)
        assert (res.error is not None and res.error.kind == "too_long") == (len(text) > max_chars)
        if res.ok:
            oks += 1
        else:
            kinds.add(res.error.kind)
        # deterministic
        assert parse_tool_calls(text, TOOLS, max_calls=max_calls, max_chars=max_chars) == res
    # the generator really reaches the parser's branches (not only the length check)
    assert KINDS - {"no_tool_call", "nested", "too_many_calls"} <= kinds, kinds
    assert len(kinds) >= 8, kinds
    assert oks > 0


def test_fuzz_valid_calls_survive_noise_outside_the_tags():
    rng = random.Random(7)
    for _ in range(300):
        c = _valid_call(rng)
        noise = lambda: "".join(rng.choice(_UNICODE[:13] + ["word", " ", ".", "{", "}"]) for _ in range(rng.randint(0, 10)))  # noqa: E731
        text = noise() + "<think>" + noise() + "</think>" + noise() + c + noise()
        res = parse(text)
        assert res.ok, (res.error, text)
        expected = json.loads(c[len("<tool_call>") : -len("</tool_call>")])
        assert res.calls == [ToolCall(expected["name"], expected["arguments"])]


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": "\\ud800"}</tool_call>',  # unknown_tool message
        '<tool_call>{"name": "call_expert", "arguments": {"\\udfff": 1}}</tool_call>',  # extra argument
        '<tool_call>{"name": "answer", "\\ud800": 1}</tool_call>',  # extra top-level field
    ],
)
def test_lone_surrogate_escape_is_parsed_without_raising(text):
    # A JSON escape such as "\ud800" (six ASCII characters a policy can emit) decodes to a lone
    # surrogate. The parser must not raise; it reports the documented error kind.
    res = parse(text)
    assert not res.ok and res.error.kind in {"unknown_tool", "bad_arguments", "bad_shape"}


def test_error_message_is_encodable_text_for_lone_surrogate_names():
    res = parse('<tool_call>{"name": "\\ud800"}</tool_call>')
    res.error.message.encode("utf-8")

"""Bad policy output from every side: a seeded generator of malformed tool calls (invalid JSON,
unknown tools, wrong argument types, missing and extra arguments, megabyte strings, 10,000-deep
nesting, huge integers, nested and unbalanced tags, several calls per turn, unicode edge cases, empty
output) fed to the parser under every toolset a run has, then through the real multi-turn loop: the
run's own toolsets (pipelines.families), the tiny tokenizer's chat format, the FRAMES replay experts,
the SQLite domain environments, the bubblewrap sandbox and a BM25 search index. Nothing may raise;
every bad turn is a format error or an error observation on the trajectory; refused domain calls
leave the database as it was."""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from dataclasses import replace
from typing import Dict, Iterator, List, Sequence, Tuple

import pyarrow.parquet as pq
import pytest

from orchestra_ray.rollout.chat import IM_END, IM_START, TOOL_RESPONSE_CLOSE, TOOL_RESPONSE_OPEN, ChatFormat, tool_call_text
from orchestra_ray.config_load import load_config
from orchestra_ray.families.domains import DomainToolError
from orchestra_ray.families.domains.database import Database
from orchestra_ray.policy.engine import Generation
from orchestra_ray.rollout.episode import EpisodeLimits, episode_record, new_episodes, run_episodes
from orchestra_ray.rollout.tool_router import ToolOutcome
from orchestra_ray.experts.base import InProcessExperts
from orchestra_ray.rollout.failures import DATA
from orchestra_ray.rollout.parsing import FormatError, ParseResult, parse_tool_calls
from orchestra_ray.grpo.preferences import profile_vector
from orchestra_ray.tools.sandbox import CodeResult, run_code
from orchestra_ray.tools.settings import SandboxConfig
from orchestra_ray.tools.search import build_index, format_hits
from orchestra_ray.tools.settings import SearchConfig
from orchestra_ray.families.task import ARITHMETIC, DOMAIN, FRAMES, make_task
from orchestra_ray.policy.tiny_model import train_tokenizer
from orchestra_ray.tools.spec import ToolSpec, validate_arguments
from orchestra_ray.rollout.trajectory import trajectory_rows
from search_corpus import write_corpus

SEED = 20240611
OUTPUTS_PER_TOOLSET = 1100
MAX_TURNS = 4
TASKS_PER_TOOLSET = 5  # each asked of many samples, as a GRPO group is
KINDS = {"too_long", "no_tool_call", "unclosed", "nested", "too_many_calls", "bad_json", "bad_shape", "unknown_tool",
         "bad_arguments"}
SANDBOX = SandboxConfig(timeout_s=3.0, cpu_seconds=2)
# Room for a turn past the rollout's output limit (8192 characters), so that the loop's own length
# check is reached; a megabyte output is cut to this many tokens, as an engine cuts a generation.
LIMITS = EpisodeLimits(max_turns=MAX_TURNS, max_new_tokens=9_000, max_total_tokens=10**7)

# ------------------------------------------------------------------------------------------ pieces

UNICODE = [
    "\ud800", "\udfff", "\udc80",  # lone surrogates
    "\u200f", "\u202e", "\u2066", "\u061c",  # RTL marks, overrides and isolates
    "\x00", "\x1b[2J", "\x7f", "\x08",  # NUL, an escape sequence, DEL, backspace
    "e\u0301", "\u0301", "Z" + "\u0336\u0301\u0302\u0327" * 40,  # combining characters
    "😀", "👩\u200d👩\u200d👧\u200d👦", "🇫🇷", "\U0010ffff", "\U000e0001",  # emoji, ZWJ, flags, tags
    "\ufeff", "\u200b", "\u2028", "\u2029", "\u0085", "\uffff", "\ufffd", "中文", "\u3000", "\u00a0",
]
JSON_ESCAPES = ["\\ud800", "\\udfff", "\\ud83d", "\\ud83d\\ude00", "\\u0000", "\\u202e", "\\u0085", "\\\\", '\\"']
TAGS = ["<tool_call>", "</tool_call>", "<think>", "</think>", "<tool_response>", "</tool_response>", IM_END,
        "<|im_start|>", "<|endoftext|>"]
HOSTILE_STRINGS = ["", " ", "\x00", "'; DROP TABLE customers; --", "%s%s%n", "${jndi:ldap://x}", "../../etc/passwd",
                   "a" * 3000, "\u202eevil", "NULL", "None", "0", "-1", "1e999", "C1234\x00", "\n\n", "<tool_call>"]
ODD_VALUES = [0, -1, 1, 3.5, -0.0, 10**30, -(10**30), True, False, None, [], ["x"], [[["x"]]], {}, {"a": "b"},
              {"nested": {"deeper": ["x", {"k": None}]}}, "", float("inf"), float("nan")]
OTHER_NAMES = ["search_web", "python", "Run_Python", "ANSWER", "answer ", " answer", "answer\u200f", "answer\x00",
               "call-expert", "callExpert", "", "tool_call", "functions.answer", "__import__", "\ud800", "answer\u0301",
               "x" * 5000]


def _json(obj, rng: random.Random) -> str:
    return json.dumps(obj, ensure_ascii=rng.random() < 0.5, allow_nan=True)


def _wrap(body: str) -> str:
    return f"<tool_call>{body}</tool_call>"


def _surrogateescaped(rng: random.Random) -> str:
    raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 24)))
    return raw.decode("utf-8", errors="surrogateescape")


class Toolbox:
    """One toolset and plausible values for its arguments (ids taken from the domain's database)."""

    def __init__(self, name: str, tools: Sequence[ToolSpec], db_bytes: bytes = b""):
        self.name, self.tools = name, list(tools)
        self.pools: Dict[str, List] = {}
        if db_bytes:
            for rows in Database.from_bytes(db_bytes).dump().values():
                for row in rows:
                    for col, value in row.items():
                        if isinstance(value, str):
                            self.pools.setdefault(col, []).append(value)
        self.pools.setdefault("query", ["volcano lava", "chess opening", "tax return", "bread"])
        self.pools.setdefault("code", ["print(2 + 3)", "print(sum(range(10)))"])
        self.pools.setdefault("text", ["Paris", "42", "Done.", ""])

    def value(self, rng: random.Random, key: str, schema: Dict):
        if "enum" in schema:
            return rng.choice(schema["enum"])
        if schema.get("type") == "integer":
            return rng.randint(schema.get("minimum", 1), min(schema.get("maximum", 5), schema.get("minimum", 1) + 20))
        pool = self.pools.get("account_id" if key.endswith("_account") else key)
        return rng.choice(pool) if pool else rng.choice(["x", "Oslo", "R1000", "2025-01-01"])

    def valid_call(self, rng: random.Random, spec: ToolSpec = None) -> Dict:
        spec = spec or rng.choice(self.tools)
        props = spec.parameters.get("properties", {})
        keys = [rng.choice(list(spec.exclusive))] if spec.exclusive else list(props)
        return {"name": spec.name, "arguments": {k: self.value(rng, k, props[k]) for k in keys}}


# ------------------------------------------------------------------------------ the malformations


def bad_json(rng, box):
    text = _json(box.valid_call(rng), rng)
    op = rng.randrange(9)
    if op == 0:
        text = text[: rng.randrange(len(text))]
    elif op == 1:
        text = text.replace('"', "'")
    elif op == 2:
        text = text[:-1] + ",}"
    elif op == 3:
        text = text.replace("{", "{name: ", 1)
    elif op == 4:
        text = text.replace('"', "", 1)
    elif op == 5:
        text = '{"name": "answer", "arguments": {"text": None}}' if rng.random() < 0.5 else "{'name': 'answer', True}"
    elif op == 6:
        text = "// a comment\n" + text
    elif op == 7:
        text = text + text
    else:  # a stray character at either end of the object
        i = rng.choice([0, len(text) - 1])
        text = text[:i] + rng.choice(["}", "]", ":", ",", '"', "\\", "\\x41", "\\u12"]) + text[i:]
    return _wrap(text)


def unknown_tool(rng, box):
    call = box.valid_call(rng)
    call["name"] = rng.choice(OTHER_NAMES + [t.name.upper() for t in box.tools] + ["book_flight", "get_forecast",
                                                                                    "call_expert", "run_python", "search"])
    return _wrap(_json(call, rng))


def wrong_type(rng, box):
    spec = rng.choice([t for t in box.tools if t.parameters.get("properties")])
    call = box.valid_call(rng, spec)
    key = rng.choice(list(spec.parameters["properties"]))
    value = rng.choice([v for v in ODD_VALUES if not isinstance(v, str)])
    if spec.parameters["properties"][key].get("type") == "integer" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # an integer would not be wrong here
    call["arguments"][key] = value
    if spec.exclusive:
        call["arguments"] = {key: value}
    return _wrap(_json(call, rng))


def missing_or_extra(rng, box):
    call = box.valid_call(rng)
    op = rng.randrange(5)
    if op == 0 and call["arguments"]:
        del call["arguments"][rng.choice(list(call["arguments"]))]
    elif op == 1:
        del call["arguments"]
    elif op == 2:
        call["arguments"][rng.choice(["extra", "", "\x00", "EXPERT", "k", "Text", "code ", "\ud800"])] = "x"
    elif op == 3:
        call[rng.choice(["id", "type", "function", "\u200f"])] = "call_1"
    else:
        call["arguments"] = rng.choice(["text", ["a"], 7, None, True, '{"text": "x"}'])
    return _wrap(_json(call, rng))


def bad_shape(rng, box):
    return _wrap(rng.choice([_json(box.valid_call(rng)["name"], rng), "[1, 2]", "42", "null", "true", '"answer"',
                             '{"name": 7}', '{"name": null}', '{"name": ["answer"]}', '{"name": {"n": "answer"}}',
                             '{"arguments": {}}', "[" + _json(box.valid_call(rng), rng) + "]", "{}"]))


def huge(rng, box):
    op = rng.randrange(8)
    call = box.valid_call(rng)
    key = rng.choice(list(call["arguments"]) or ["text"])
    if op == 0:  # a megabyte string where a short one is expected
        call["arguments"][key] = rng.choice(["x", "é", "😀", "\x00"]) * (1 << 20)
        return _wrap(_json(call, rng))
    if op == 1:  # 10,000 nested lists
        depth = rng.choice([10_000, 2_000, 999])
        return _wrap(_json(call, rng)[:-2] + f', "deep": {"[" * depth}{"]" * depth}}}}}')
    if op == 2:  # an integer of 5,000 digits (Python refuses to convert it) or one that fits
        digits = rng.choice([5_000, 4_000, 30])
        return _wrap(f'{{"name": "{call["name"]}", "arguments": {{"{key}": {"9" * digits}}}}}')
    if op == 3:
        return _wrap(f'{{"name": "{call["name"]}", "arguments": {{"{key}": {rng.choice(["1e999", "-1e999", "NaN", "Infinity", "-0"])}}}}}')
    if op == 4:  # nested objects, 10,000 deep
        depth = rng.choice([10_000, 900])
        return _wrap('{"name": "answer", "arguments": ' + '{"a": ' * depth + "1" + "}" * depth + "}")
    if op == 5:  # ten thousand arguments
        call["arguments"] = {f"k{i}": i for i in range(10_000)}
        return _wrap(_json(call, rng))
    if op == 6:  # a megabyte of whitespace around a valid call
        return " " * (1 << 20) + _wrap(_json(call, rng))
    return _wrap(_json(call, rng)) * rng.choice([100, 5_000])


def tags(rng, box):
    body = _json(box.valid_call(rng), rng)
    return rng.choice([
        f"<tool_call><tool_call>{body}</tool_call></tool_call>",
        f"<tool_call>{body}", f"{body}</tool_call>", f"</tool_call>{body}<tool_call>",
        f"<tool_call>{body}</tool_call></tool_call>", f"<tool_call>{body}</tool_call><tool_call>",
        f"<think>{_wrap(body)}", f"<think>{_wrap(body)}</think>", f"</think>{_wrap(body)}<think>",
        f"<tool_call><think>{body}</think></tool_call>",
        _wrap('{"name": "answer", "arguments": {"text": "</tool_call>"}}'),
        _wrap('{"name": "answer", "arguments": {"text": "<tool_call>"}}'),
        "<tool_call>" * rng.randint(2, 50) + body + "</tool_call>" * rng.randint(0, 50),
        "<think>" * rng.randint(2, 500) + _wrap(body),
        "".join(rng.choice(TAGS) for _ in range(rng.randint(1, 40))),
    ])


def template_tokens(rng, box):
    """A call among the chat template's tokens or after a think block with <think> in it: the parser
    reads past them."""
    body = _wrap(_json(box.valid_call(rng), rng))
    return rng.choice([f"<tool_response>{body}</tool_response>", f"{IM_END}{body}", f"<|im_start|>user\n{body}",
                       f"<|endoftext|>{body}{IM_END}{IM_END}", f"<think><think>x</think>{body}"])


def several(rng, box):
    calls = [_wrap(_json(box.valid_call(rng), rng)) for _ in range(rng.randint(2, 6))]
    return rng.choice(["", "\n", " then ", IM_END]).join(calls)


def unicode(rng, box):
    call = box.valid_call(rng)
    text = _json(call, rng)
    op = rng.randrange(5)
    if op == 0:  # inside a string value (JSON stays valid; the call may be valid too)
        key = rng.choice(list(call["arguments"]) or ["text"])
        call["arguments"][key] = str(call["arguments"].get(key, "")) + "".join(rng.choice(UNICODE) for _ in range(rng.randint(1, 4)))
        return _wrap(_json(call, rng))
    if op == 1:  # a JSON escape of a lone surrogate, NUL or RTL override in a value or a name
        esc = rng.choice(JSON_ESCAPES)
        return _wrap(text.replace('": "', f'": "{esc}', 1) if rng.random() < 0.5 else text.replace('"name": "', f'"name": "{esc}', 1))
    if op == 2:  # raw edge characters anywhere, structure included
        i = rng.randrange(len(text) + 1)
        return _wrap(text[:i] + rng.choice(UNICODE) + text[i:])
    if op == 3:  # invalid UTF-8 decoded with surrogateescape
        i = rng.randrange(len(text) + 1)
        return _wrap(text[:i] + _surrogateescaped(rng) + text[i:])
    return rng.choice(UNICODE) + _wrap(text) + rng.choice(UNICODE)


def empty(rng, box):
    return rng.choice(["", " ", "\n", "\t\t", "\r\n", "\u3000", "\u00a0", "\u200b", "\ufeff", " \n \t ", "\x00",
                       "<think></think>", "<think>\n</think>\n"])


def prose(rng, box):
    body = _json(box.valid_call(rng), rng)
    return rng.choice([f"The answer is {body}", f"```json\n{body}\n```", f"<tool call>{body}</tool call>",
                       f"<TOOL_CALL>{body}</TOOL_CALL>", f"<tool_call >{body}</tool_call >", "I don't know.",
                       f"<function={box.tools[0].name}>{{}}</function>"])


def hostile_values(rng, box):
    """A well-formed call with hostile values: what reaches the tools themselves."""
    spec = rng.choice(box.tools)
    call = box.valid_call(rng, spec)
    for key, schema in spec.parameters.get("properties", {}).items():
        if key not in call["arguments"] or rng.random() < 0.4:
            continue
        if schema.get("type") == "integer":
            low, high = schema.get("minimum", 1), schema.get("maximum", 10**6)
            call["arguments"][key] = rng.choice([low - 1, low, high, high + 1, 0, -1, 10**18, -(10**18)])
        elif key == "code":
            call["arguments"][key] = rng.choice(["print('\\x00')", "import os; os._exit(3)", "raise SystemExit('bye')",
                                                 "print('\u202e' * 5000)", "1/0", "\x00", "", "print(" * 200])
        elif "enum" not in schema:
            call["arguments"][key] = rng.choice(HOSTILE_STRINGS)
    return _wrap(_json(call, rng)) + (IM_END if rng.random() < 0.5 else "")


GENERATORS = [(bad_json, 12), (unknown_tool, 8), (wrong_type, 14), (missing_or_extra, 12), (bad_shape, 6), (huge, 1),
              (tags, 10), (template_tokens, 2), (several, 6), (unicode, 16), (empty, 4), (prose, 5), (hostile_values, 6)]


def outputs(seed: int, box: Toolbox, n: int) -> Iterator[Tuple[str, str]]:
    """(category, policy text), seeded; each category at least once whatever n."""
    rng = random.Random(f"{seed}-{box.name}")
    funcs, weights = zip(*GENERATORS)
    for i in range(n):
        f = funcs[i] if i < len(funcs) else rng.choices(funcs, weights)[0]
        yield f.__name__, f(rng, box)


# ---------------------------------------------------------------------------------------- set-up


class ScriptedPolicy:
    """An engine playing each episode's scripted outputs in order: text as the tiny tokenizer's ids,
    or now and then random token ids (what a sampling policy can emit, special tokens included)."""

    def __init__(self, chat: ChatFormat, scripts: Dict[int, List[str]], vocab: int, seed: int):
        self.chat, self.scripts, self.vocab = chat, scripts, vocab
        self.rng = random.Random(seed)
        self.turns: Dict[int, int] = {}
        self.played: List[Tuple[int, List[int]]] = []  # (episode key, ids) in order

    def generate(self, prompts, *, max_new_tokens, temperature, stop_token_ids):
        out = []
        for p in prompts:
            key = id(p)  # the loop hands each episode's own token list
            turn = self.turns.get(key, 0)
            self.turns[key] = turn + 1
            if self.rng.random() < 0.03:
                ids = [self.rng.randrange(self.vocab) for _ in range(self.rng.randint(0, 200))]
            else:  # the cut text still fills max_new_tokens (a token is a few characters at most)
                ids = self.chat.encode(self.scripts[key][turn][: 4 * max_new_tokens])
            ids = ids[:max_new_tokens]
            self.played.append((key, ids))
            out.append(Generation(ids, [-0.5] * len(ids), "stop" if ids and ids[-1] in stop_token_ids else "length"))
        return out


class LocalTools(InProcessExperts):
    """What the rollout worker reaches through RayToolClient, in-process: the replay experts, the
    sandboxed interpreter and the search index."""

    def __init__(self, experts, index):
        super().__init__(experts)
        self.index = index
        self.sandbox: Dict[str, CodeResult] = {}  # by program: each distinct one runs once

    def run_tools(self, calls):
        out = []
        for name, args in calls:
            if name == "run_python":
                if args["code"] not in self.sandbox:
                    self.sandbox[args["code"]] = run_code(args["code"], SANDBOX)
                res = self.sandbox[args["code"]]
                out.append(ToolOutcome(res.observation(SANDBOX.max_output_chars), ok=res.ok, error=res.error,
                                       latency=res.wall_s, error_kind="" if res.ok else DATA))
                continue
            k = args.get("k")
            try:  # the search actor's contract: ValueError for a query it cannot answer
                text = format_hits(self.index.search(args["query"], 3 if k is None else k), 300)
            except ValueError as exc:
                out.append(ToolOutcome(f"error: {exc}", ok=False, error=str(exc), error_kind=DATA))
                continue
            out.append(ToolOutcome(text))
        return out


@pytest.fixture(scope="module")
def world(frames_dir, tmp_path_factory):
    from pipelines.families import load_families
    from pipelines.zoo import load_zoo

    corpus = write_corpus(str(tmp_path_factory.mktemp("corpus")))
    cfg = load_config(None, [
        f"data.path={frames_dir}", "zoo.strongest=cheap",
        "zoo.experts=[{name: cheap, arm: grok-3-mini_low_effort, input_price: 0.3, output_price: 0.5},"
        "{name: strong, arm: claude-sonnet4_budget4096, input_price: 3.0, output_price: 15.0}]",
        "families.weights={frames: 1.0, domain: 1.0, arithmetic: 1.0}", "families.domain.tasks_per_domain=2",
        "families.arithmetic.problems=10", f"tools.search.corpus={corpus}",
    ])
    zoo = load_zoo(cfg)
    fam = load_families(cfg, zoo)
    index = build_index(SearchConfig(corpus=corpus, cache_dir=str(tmp_path_factory.mktemp("cache"))))
    boxes = []
    for name, (_, tools) in fam.toolsets.items():
        dom = fam.domains.get(name.split(":", 1)[1]) if name.startswith("domain:") else None
        boxes.append(Toolbox(name, tools, dom.db_bytes if dom else b""))
    texts = [prompt for prompt, _ in fam.toolsets.values()] + [tool_call_text("answer", {"text": "x"})] * 20
    chat = ChatFormat(train_tokenizer(texts, 400, zoo.slots))
    return cfg, zoo, fam, index, boxes, chat


@pytest.fixture(scope="module")
def corpus_of_outputs(world):
    _, _, _, _, boxes, _ = world
    return {box.name: list(outputs(SEED, box, OUTPUTS_PER_TOOLSET)) for box in boxes}


def _check_result(res, tools: Sequence[ToolSpec]):
    assert isinstance(res, ParseResult)
    if res.ok:
        by_name = {t.name: t for t in tools}
        assert len(res.calls) == 1 and validate_arguments(by_name[res.calls[0].name], res.calls[0].arguments) is None
        return
    assert res.calls == [] and isinstance(res.error, FormatError) and res.error.kind in KINDS
    msg = res.error.message
    assert isinstance(msg, str) and 0 < len(msg) < 600 and len(msg.splitlines()) == 1, repr(msg[:300])
    msg.encode("utf-8")  # goes back to the policy as text


# ---------------------------------------------------------------------------------------- parsing


def test_toolsets_cover_every_family(world):
    _, _, fam, _, boxes, _ = world
    assert {b.name for b in boxes} == {FRAMES, ARITHMETIC, "domain:airline", "domain:retail", "domain:bank", "domain:weather"}
    assert {"search", "call_expert"} <= {t.name for t in fam.toolsets[FRAMES][1]}


def test_parser_under_every_toolset_never_raises(world, corpus_of_outputs):
    _, _, _, _, boxes, _ = world
    t0 = time.monotonic()
    every = [(cat, text) for texts in corpus_of_outputs.values() for cat, text in texts]
    categories = Counter(cat for cat, _ in every)
    assert set(categories) == {f.__name__ for f, _ in GENERATORS}
    kinds, refused, parsed = Counter(), 0, 0
    own = {text: box.name for box in boxes for _, text in corpus_of_outputs[box.name]}
    malformed = 0  # refused under their own toolset at the rollout's limit
    for box in boxes:
        for cat, text in every:
            # The rollout limit, then one high enough that megabyte arguments reach the JSON decoder.
            for max_chars in (8192, 4 << 20):
                try:
                    res = parse_tool_calls(text, box.tools, max_calls=1, max_chars=max_chars)
                except Exception as exc:  # the assertion message is the point
                    pytest.fail(f"parse_tool_calls raised {type(exc).__name__}: {str(exc)[:200]} on {cat} {text[:200]!r}")
                parsed += 1
                _check_result(res, box.tools)
                if not res.ok:
                    refused += 1
                    kinds[res.error.kind] += 1
                    malformed += max_chars == 8192 and own[text] == box.name
    elapsed = time.monotonic() - t0
    print(f"\nfuzz/parse: {len(every)} outputs x {len(boxes)} toolsets x 2 limits = {parsed} parses, "
          f"{refused} format errors ({malformed} outputs malformed under their own toolset), {elapsed:.1f}s; "
          f"kinds {dict(kinds)}; categories {dict(categories)}")
    assert len(every) >= 5000 and malformed >= 5000
    assert kinds.keys() == KINDS, kinds  # every documented error kind is reached


def test_malformed_categories_are_refused(world, corpus_of_outputs):
    """Categories that can never be a single valid call are always a format error, under any toolset."""
    _, _, _, _, boxes, _ = world
    always_bad = {"bad_json", "wrong_type", "bad_shape", "tags", "several", "empty", "prose"}
    for box in boxes:
        for cat, text in corpus_of_outputs[box.name]:
            if cat in always_bad:
                res = parse_tool_calls(text, box.tools, max_calls=1)
                assert not res.ok, (cat, text[:200])


@pytest.mark.parametrize("text", [
    '<tool_call>{"name": "answer", "arguments": {"text": "\\ud800"}}</tool_call>',
    '<tool_call>{"name": "answer", "arguments": {"text": "ok\\udfff"}}</tool_call>',
])
def test_lone_surrogate_in_an_argument_is_a_bad_argument(text):
    from orchestra_ray.tools.spec import text_answer_tool

    res = parse_tool_calls(text, [text_answer_tool("answer")])
    assert not res.ok and res.error.kind == "bad_arguments"
    assert "'text'" in res.error.message and "answer" in res.error.message


def test_think_blocks_are_stripped_in_linear_time():
    from orchestra_ray.tools.spec import text_answer_tool

    t0 = time.monotonic()
    res = parse_tool_calls("<think>" * 300_000, [text_answer_tool("answer")], max_chars=4 << 20)
    assert res.error.kind == "unclosed" and time.monotonic() - t0 < 2.0


def test_integer_bounds_of_a_tool_are_checked():
    from orchestra_ray.tools.spec import search_tool

    for k in (0, -3):
        text = f'<tool_call>{{"name": "search", "arguments": {{"query": "x", "k": {k}}}}}</tool_call>'
        res = parse_tool_calls(text, [search_tool()])
        assert res.error.kind == "bad_arguments" and "'k'" in res.error.message and ">= 1" in res.error.message


# ------------------------------------------------------------------------ the real dispatch path


def _observations(chat: ChatFormat, ep) -> List[str]:
    """Each tool response the loop appended, in order: the template and tool tokens (loss mask 0)
    after the prompt, split at each response's opening."""
    runs, cur = [], []
    for tok, m in zip(ep.token_ids[ep.prompt_len:], ep.loss_mask[ep.prompt_len:]):
        if m == 0:
            cur.append(tok)
        elif cur:
            runs.append(cur)
            cur = []
    runs.append(cur)
    opening = f"{IM_START}user\n{TOOL_RESPONSE_OPEN}\n"
    out = []
    for ids in runs:
        for piece in chat.decode(ids).split(opening)[1:]:
            out.append(piece[: piece.rindex(f"\n{TOOL_RESPONSE_CLOSE}")])
    return out


def _tasks(zoo, fam, box_name: str, n: int):
    pref = profile_vector("balanced", zoo.slots)
    if box_name == FRAMES:
        pool = zoo.train
    elif box_name == ARITHMETIC:
        pool = fam.train[ARITHMETIC]
    else:
        pool = [p for p in fam.train[DOMAIN] + fam.heldout[DOMAIN] if p.toolset == box_name]
    return [make_task(f"fuzz-{box_name}-{i}", pool[i % len(pool)], pref) for i in range(n)]


def test_dispatch_records_every_bad_turn_and_never_raises(world, corpus_of_outputs, tmp_path):
    cfg, zoo, fam, index, boxes, chat = world
    tools = {box.name: box.tools for box in boxes}
    client = LocalTools(zoo.experts, index)
    t0 = time.monotonic()
    played = format_errors = refused_domain = error_obs = 0
    episodes_all = []
    for box in boxes:
        texts = [t for _, t in corpus_of_outputs[box.name]]
        n = math.ceil(len(texts) / MAX_TURNS)
        eps = []
        for task in _tasks(zoo, fam, box.name, TASKS_PER_TOOLSET):
            eps.extend(new_episodes(chat, fam.toolsets[box.name][0], task, "Please help.", math.ceil(n / TASKS_PER_TOOLSET)))
        scripts = {}
        for i, ep in enumerate(eps):
            if box.name.startswith("domain:"):
                ep.env = fam.domains[box.name.split(":", 1)[1]].new_env()
            scripts[id(ep.token_ids)] = (texts[i * MAX_TURNS:(i + 1) * MAX_TURNS] + [""] * MAX_TURNS)[:MAX_TURNS]
        engine = ScriptedPolicy(chat, scripts, len(chat.tokenizer), seed=SEED)
        try:
            run_episodes(engine, chat, eps, tools, client, LIMITS, temperature=1.0)
        except Exception as exc:
            pytest.fail(f"run_episodes raised {type(exc).__name__} under toolset {box.name}: {str(exc)[:300]}")
        played += len(engine.played)
        by_ep: Dict[int, List[List[int]]] = {}
        for key, ids in engine.played:
            by_ep.setdefault(key, []).append(ids)
        for ep in eps:
            assert ep.done and ep.finish_reason in ("answer", "max_turns", "max_tokens"), ep.finish_reason
            gens = by_ep[id(ep.token_ids)]
            assert ep.turns == len(gens) == len(ep.format_errors) + len(ep.calls)
            expected_errors = []
            obs = _observations(chat, ep)
            assert len(obs) == ep.turns - (ep.finish_reason == "answer")
            call_i = 0
            for turn, ids in enumerate(gens):
                res = parse_tool_calls(chat.decode(ids), box.tools, max_calls=1, max_chars=LIMITS.max_output_chars)
                if not res.ok:
                    expected_errors.append(res.error.kind)
                    assert obs[turn].startswith("error: "), (obs[turn][:200], ep.format_errors)
                    error_obs += 1
                    continue
                rec = ep.calls[call_i]
                call_i += 1
                assert rec.turn == turn and rec.name == res.calls[0].name
                if not rec.ok:
                    assert rec.error and rec.error_kind
                    if box.name.startswith("domain:"):
                        refused_domain += 1
                        assert obs[turn].startswith("error: "), obs[turn][:200]
                        error_obs += 1
            assert ep.format_errors == expected_errors
            format_errors += len(ep.format_errors)
            if ep.env is not None and any(rec.name != "answer" for rec in ep.calls):
                # The database is what the accepted calls alone make of it: refused calls changed nothing.
                replay = fam.domains[box.name.split(":", 1)[1]].new_env()
                for rec in ep.calls:
                    if rec.ok and rec.name != "answer":
                        replay.call(rec.name, json.loads(rec.arguments))
                assert replay.state_hash() == ep.env.state_hash()
        episodes_all.extend(eps)
    # The driver's side: each episode's record becomes a trajectory row in Parquet.
    records = [replace(episode_record(ep, zoo.slots), reward=0.0, advantage=0.0, kept=True, zero_variance=False,
                       has_format_error=bool(ep.format_errors), no_answer=not ep.has_answer) for ep in episodes_all]
    pq.write_table(trajectory_rows("fuzz", 0, records), str(tmp_path / "trajectory.parquet"))
    elapsed = time.monotonic() - t0
    print(f"\nfuzz/dispatch: {played} generations in {len(episodes_all)} episodes, {format_errors} format errors, "
          f"{refused_domain} refused domain calls, {error_obs} error observations, "
          f"{len(client.sandbox)} programs run in the sandbox, {elapsed:.1f}s")
    assert played >= 5000 and format_errors >= 5000
    assert refused_domain > 0 and len(client.sandbox) > 0


def test_domain_functions_refuse_only_with_domain_tool_error(world, corpus_of_outputs):
    """Every call the parser lets through reaches the domain, which answers or refuses, one line,
    and a refusal leaves the database unchanged."""
    _, _, fam, _, boxes, _ = world
    answered = refused = 0
    for box in boxes:
        if not box.name.startswith("domain:"):
            continue
        dom = fam.domains[box.name.split(":", 1)[1]]
        for cat, text in corpus_of_outputs[box.name]:
            res = parse_tool_calls(text, box.tools, max_calls=1, max_chars=4 << 20)
            if not res.ok or res.calls[0].name == "answer":
                continue
            env = dom.new_env()
            before = env.state_hash()
            try:
                env.call(res.calls[0].name, res.calls[0].arguments)
                answered += 1
            except DomainToolError as exc:
                refused += 1
                assert env.state_hash() == before
                assert len(str(exc).splitlines()) == 1, str(exc)[:300]
            except Exception as exc:
                pytest.fail(f"{box.name}.{res.calls[0].name} raised {type(exc).__name__}: {str(exc)[:200]} ({cat})")
        # Names and arguments the schema refuses reach env.call too when a caller skips the parser.
        env = dom.new_env()
        before = env.state_hash()
        for name, args in [(None, {}), (7, {}), ("nope", {}), (dom.tool_names[0], None), (dom.tool_names[0], []),
                           (dom.tool_names[0], {"\ud800": 1}), (dom.tool_names[0], "x")]:
            with pytest.raises(DomainToolError):
                env.call(name, args)
        assert env.state_hash() == before
    assert answered > 0 and refused > 0


# ----------------------------------------------------------------------------------- the sandbox


@pytest.mark.parametrize("code, fragment", [
    (None, "must be a string"), (42, "must be a string"), (b"print(1)", "must be a string"),
    (["print(1)"], "must be a string"), ({"code": "x"}, "must be a string"),
    ("print(1)\x00", "NUL"), ("x = 1\n" * 200_000, "characters"), ("#" + "x" * (1 << 20), "characters"),
])
def test_hostile_code_values_are_error_results(code, fragment):
    res = run_code(code, SANDBOX)
    assert not res.ok and res.exit_code is None and fragment in res.error, res.error
    assert res.error.startswith("code ") and len(res.error.splitlines()) == 1
    assert res.observation(4000).startswith("error: code ")


def test_odd_but_valid_code_runs():
    res = run_code("print('\u202e\u0301😀', '\ud800')", SANDBOX)  # a lone surrogate is written as '?'
    assert res.ok, res.observation(2000)
    assert res.stdout.startswith("\u202e\u0301😀")

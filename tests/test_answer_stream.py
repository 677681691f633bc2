"""A served episode as it happens (`orchestra_ray.serving.stream`): the engine reports each token as
it is generated, the loop reports each call when it is made, and the answer's text streams while
the policy writes it, its pieces adding up to the answer."""

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from orchestra_ray.policy.engine import HFEngine
from orchestra_ray.rollout.chat import tool_call_text
from orchestra_ray.rollout.episode import EpisodeLimits, new_episodes, run_episodes
from orchestra_ray.rollout.parsing import partial_answer
from orchestra_ray.serving.stream import EpisodeStream
from orchestra_ray.tools.spec import expert_tools
from tests import test_episode
from tests.test_episode import SLOTS, LocalExperts, ScriptedEngine

setup = test_episode.setup  # the scripted loop's fixture: its tokenizer, replay experts and task


def test_hf_engine_reports_each_token_of_each_prompt_up_to_its_stop(uneven_policy):
    model = AutoModelForCausalLM.from_pretrained(uneven_policy, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(uneven_policy)
    engine = HFEngine(model, tok.pad_token_id, max_batch_size=1)  # two batches: indices count across them
    prompts = [tok.encode("The Seine flows"), tok.encode("user: assistant: Which")]
    free = engine.generate(prompts, max_new_tokens=10, temperature=0.0, stop_token_ids=[])
    stop = free[0].token_ids[3]
    seen = {0: [], 1: []}
    gens = engine.generate(prompts, max_new_tokens=10, temperature=0.0, stop_token_ids=[stop],
                           on_token=lambda i, t: seen[i].append(t))
    assert gens[0].finish_reason == "stop" and gens[0].token_ids[-1] == stop
    assert [seen[0], seen[1]] == [g.token_ids for g in gens]


def test_partial_answer_is_always_a_prefix_of_the_answer():
    text = 'Paris, "the capital" \\ café 😀\nend'
    for ascii_only in (True, False):
        full = "<think>plan</think>" + f'<tool_call>{json.dumps({"name": "answer", "arguments": {"text": text}}, ensure_ascii=ascii_only)}</tool_call>'
        pieces = [p for p in (partial_answer(full[:k]) for k in range(len(full) + 1)) if p is not None]
        assert pieces[-1] == text and all(text.startswith(p) for p in pieces) and len(set(pieces)) > 10
    assert partial_answer(tool_call_text("call_expert", {"expert": "cheap"})) is None
    assert partial_answer(tool_call_text("answer", {"expert": "cheap"})) is None
    assert partial_answer('<think>{"name": "answer", "arguments": {"text": "no') is None


class TokenEngine(ScriptedEngine):
    """The scripted policy, reporting its tokens one by one as an engine that streams does."""

    def generate(self, prompts, *, max_new_tokens, temperature, stop_token_ids, on_token=None):
        gens = super().generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, stop_token_ids=stop_token_ids)
        for i, g in enumerate(gens):
            for t in g.token_ids:
                self.events.append(("token", i, t))
                on_token(i, t)
        return gens


def stream(setup, script, max_new_tokens=400):
    chat, experts, task, _ = setup
    (ep,) = new_episodes(chat, "system", task, "user", 1)
    items = []
    engine = TokenEngine(chat, [script])
    engine.events = items
    ep.events = EpisodeStream(chat, items.append)
    run_episodes(engine, chat, [ep], expert_tools(list(SLOTS)), LocalExperts(experts),
                 EpisodeLimits(max_turns=3, max_new_tokens=max_new_tokens), temperature=1.0)
    items += ep.events.end({"calls": len(ep.calls)}, ep.answer)
    return ep, items


def test_a_text_answer_streams_while_the_policy_writes_it(setup):
    answer = "The Seine flows through Paris and into the English Channel."
    ep, items = stream(setup, [tool_call_text("call_expert", {"expert": "cheap"}), tool_call_text("answer", {"text": answer})])
    kinds = [next(iter(x)) if isinstance(x, dict) else x[0] for x in items]
    pieces = [x["content"] for x in items if isinstance(x, dict) and "content" in x]
    assert ep.answer == answer and "".join(pieces) == answer and len(pieces) > 3
    # The consulted expert's call comes first; the answer's pieces come between the tokens of the
    # turn that writes it, before the answer call itself is recorded; the end comes last.
    first_piece, answer_call = kinds.index("content"), max(i for i, k in enumerate(kinds) if k == "call")
    assert kinds.index("call") < first_piece < answer_call and "token" in kinds[first_piece:answer_call]
    assert [x["call"]["tool"] for x in items if "call" in x] == ["call_expert", "answer"]
    assert items[-1] == {"end": {"trace": {"calls": 2}, "answer": None}}


def test_an_answer_the_policy_abandons_is_replaced_at_the_end(setup):
    cut = tool_call_text("answer", {"text": "a long first answer that the turn's token limit cuts off before it closes"})
    ep, items = stream(setup, [cut, tool_call_text("answer", {"expert": "cheap"})], max_new_tokens=70)
    assert ep.answer_source == "cheap" and ep.format_errors
    sent = "".join(x["content"] for x in items if isinstance(x, dict) and "content" in x)
    assert sent and not ep.answer.startswith(sent)
    assert items[-1]["end"]["answer"] == ep.answer  # the client learns the answer that counts

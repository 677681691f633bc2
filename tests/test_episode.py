"""The multi-turn loop without Ray: billing of consult/relay, free-text answers, format errors,
loss masks and turn limits. The engine is scripted (it replays given policy texts as tokens), the
experts are the real replay experts on the FRAMES data."""

import pytest

from orchestra_ray.rollout.chat import ChatFormat, tool_call_text
from orchestra_ray.policy.engine import Generation
from orchestra_ray.rollout.episode import EpisodeLimits, new_episodes, run_episodes
from orchestra_ray.experts.base import ExpertError, ReplayExpert
from orchestra_ray.families.frames import load_questions, load_responses
from orchestra_ray.grpo.preferences import profile_vector
from orchestra_ray.experts.pricing import ExpertPrice, PriceTable
from orchestra_ray.families.task import Task
from orchestra_ray.policy.tiny_model import train_tokenizer
from orchestra_ray.tools.spec import expert_tools

SLOTS = {"strong": "claude-sonnet4_budget4096", "cheap": "grok-3-mini_low_effort"}


class ScriptedEngine:
    """Plays back one policy text per turn for each episode, as token ids with log-prob -1."""

    def __init__(self, chat, scripts):
        self.chat, self.scripts, self.turn = chat, scripts, 0

    def generate(self, prompts, *, max_new_tokens, temperature, stop_token_ids):
        out = []
        for i, _ in enumerate(prompts):
            ids = self.chat.encode(self.scripts[i][self.turn])[:max_new_tokens]
            out.append(Generation(ids, [-1.0] * len(ids), "stop" if ids and ids[-1] in stop_token_ids else "length"))
        self.turn += 1
        return out


class LocalExperts:
    def __init__(self, experts):
        self.experts = experts
        self.calls = []

    def respond_many(self, requests):
        out = []
        for slot, req in requests:
            self.calls.append(slot)
            try:
                out.append(self.experts[slot].respond(req))
            except ExpertError as exc:
                out.append(exc)
        return out


@pytest.fixture(scope="module")
def setup(frames_dir):
    tok = train_tokenizer(["hello world", tool_call_text("answer", {"text": "x"})] * 20, 400, list(SLOTS))
    chat = ChatFormat(tok)
    responses = load_responses(frames_dir, list(SLOTS.values()))
    prices = PriceTable({"strong": ExpertPrice(3.0, 15.0, 60, 1.5), "cheap": ExpertPrice(0.3, 0.5, 120, 0.5)})
    experts = {s: ReplayExpert(s, responses[arm], prices, 40) for s, arm in SLOTS.items()}
    q = next(q for q in load_questions(frames_dir) if all(q.question_id in responses[a] for a in SLOTS.values()))
    task = Task("t0", q.question_id, q.problem, q.answer, profile_vector("balanced", list(SLOTS)))
    return chat, experts, task, responses


def run(setup, scripts, max_turns=3):
    chat, experts, task, _ = setup
    eps = new_episodes(chat, "system", task, "user", len(scripts))
    client = LocalExperts(experts)
    run_episodes(ScriptedEngine(chat, scripts), chat, eps, expert_tools(list(SLOTS)), client,
                 EpisodeLimits(max_turns=max_turns, max_new_tokens=64), temperature=1.0)
    return eps, client


def test_consult_then_relay_bills_the_expert_once(setup):
    _, _, task, responses = setup
    eps, client = run(setup, [[tool_call_text("call_expert", {"expert": "cheap"}), tool_call_text("answer", {"expert": "cheap"})]])
    ep = eps[0]
    assert client.calls == ["cheap"]  # relaying a consulted expert costs nothing more
    assert ep.done and ep.finish_reason == "answer" and ep.answer_source == "cheap"
    assert ep.outcome == (responses[SLOTS["cheap"]][task.question_id].grade == "A")
    m = ep.metrics(list(SLOTS))
    assert m["calls:cheap"] == 1 and m["calls:strong"] == 0 and m["cost"] > 0


def test_answer_through_an_unconsulted_expert_bills_it(setup):
    eps, client = run(setup, [[tool_call_text("answer", {"expert": "strong"})]])
    assert client.calls == ["strong"] and eps[0].turns == 1 and eps[0].metrics(list(SLOTS))["calls:strong"] == 1


def test_free_text_answer_is_judged_against_gold(setup):
    _, _, task, _ = setup
    eps, client = run(setup, [[tool_call_text("answer", {"text": task.gold})], [tool_call_text("answer", {"text": "surely not it"})]])
    assert client.calls == []
    assert eps[0].outcome is True and eps[1].outcome is False
    assert eps[0].cost == 0.0


def test_format_error_is_recorded_and_answered_with_an_error_observation(setup):
    chat = setup[0]
    eps, _ = run(setup, [["<tool_call>{not json</tool_call><|im_end|>", tool_call_text("answer", {"expert": "cheap"})]])
    ep = eps[0]
    assert ep.format_errors == ["bad_json"] and ep.answer_source == "cheap"
    text = chat.decode(ep.token_ids[ep.prompt_len:])
    assert "error: tool call is not valid JSON" in text
    # Loss mask: 1 exactly on the policy's own tokens, 0 on the prompt and on tool/template tokens.
    policy_tokens = sum(len(chat.encode(t)) for t in ["<tool_call>{not json</tool_call><|im_end|>", tool_call_text("answer", {"expert": "cheap"})])
    assert sum(ep.loss_mask) == policy_tokens
    assert all(m == 0 for m in ep.loss_mask[: ep.prompt_len])
    assert len(ep.token_ids) == len(ep.loss_mask) == len(ep.logprobs)
    assert all(lp == 0.0 for lp, m in zip(ep.logprobs, ep.loss_mask) if m == 0)


def test_turn_limit_ends_an_episode_without_answer(setup):
    call = tool_call_text("call_expert", {"expert": "cheap"})
    eps, client = run(setup, [[call, call]], max_turns=2)
    assert eps[0].finish_reason == "max_turns" and not eps[0].has_answer and eps[0].outcome is False
    assert client.calls == ["cheap", "cheap"]


class LiveLikeExpert:
    """An expert with no recorded grade, as a live endpoint answers."""

    def __init__(self, text):
        self.text = text

    def respond(self, request):
        from orchestra_ray.experts.base import ExpertResponse

        return ExpertResponse("cheap", self.text, 10, 2, 1e-6, 0.1, grade=None)


@pytest.mark.parametrize("right", [True, False])
def test_live_expert_answer_is_judged_against_gold(setup, right):
    chat, experts, task, _ = setup
    live = dict(experts, cheap=LiveLikeExpert(task.gold if right else "no idea"))
    eps = new_episodes(chat, "system", task, "user", 1)
    run_episodes(ScriptedEngine(chat, [[tool_call_text("answer", {"expert": "cheap"})]]), chat, eps,
                 expert_tools(list(SLOTS)), LocalExperts(live), EpisodeLimits(max_turns=1, max_new_tokens=64), 1.0)
    assert eps[0].answer_source == "cheap" and eps[0].outcome is right


def test_past_its_deadline_no_new_turn_starts(setup):
    """A served request that timed out stops its work: the loop starts no turn past the deadline."""
    import time

    chat, experts, task, _ = setup
    call = tool_call_text("call_expert", {"expert": "cheap"})
    eps = new_episodes(chat, "system", task, "user", 1)
    client = LocalExperts(experts)
    engine = ScriptedEngine(chat, [[call] * 5])
    run_episodes(engine, chat, eps, expert_tools(list(SLOTS)), client, EpisodeLimits(max_turns=5, max_new_tokens=64),
                 temperature=1.0, deadline=time.monotonic() - 1)
    assert eps[0].finish_reason == "deadline" and eps[0].turns == 0 and engine.turn == 0 and client.calls == []

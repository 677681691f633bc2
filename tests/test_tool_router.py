"""The tool router without Ray: each call by name to its back-end (experts, basic tools, the
episode's state), in one order, with the records and observations the episode loop and the warm
start read; the episode limits built from the config; the call record's Arrow type."""

import pyarrow as pa
import pytest

from orchestra_ray.config import OrchestraConfig
from orchestra_ray.experts.base import ExpertError, ExpertResponse, InProcessExperts
from orchestra_ray.families.task import Task
from orchestra_ray.grpo.preferences import profile_vector
from orchestra_ray.rollout.calls import CALL_TYPE, CallRecord
from orchestra_ray.rollout.episode import EpisodeLimits, episode_limits
from orchestra_ray.rollout.tool_router import RoutedCall, ToolOutcome, ToolRouter

TASK = Task("t0", "q0", "What is it?", "gold", profile_vector("balanced", ["cheap"]))


class Expert:
    def __init__(self, text, fail=False):
        self.text, self.fail, self.asked = text, fail, []

    def respond(self, request):
        self.asked.append(request)
        if self.fail:
            raise ExpertError("no record", "data")
        return ExpertResponse("cheap", self.text, 12, 3, 0.5, 1.5, grade="A")


class Tools:
    def __init__(self, log):
        self.log = log

    def run_tools(self, calls):
        self.log.append(("tools", [n for n, _ in calls]))
        return [ToolOutcome("x" * 50, latency=0.25) if n == "run_python" else
                ToolOutcome("error: index down", ok=False, error="index down " + "e" * 400) for n, _ in calls]


class State:
    def __init__(self, log):
        self.log = log

    def call(self, name, arguments):
        self.log.append(("state", name))
        if name == "refused":
            raise ValueError("not allowed")
        return "y" * 50


def router(log, experts):
    class LoggedExperts(InProcessExperts):
        def respond_many(self, requests):
            log.append(("experts", [s for s, _ in requests]))
            return super().respond_many(requests)

    return ToolRouter(LoggedExperts(experts), Tools(log), max_response_chars=20, state_call_latency_s=0.05)


def test_each_call_goes_to_its_back_end_state_calls_first_then_experts_then_basic_tools():
    log = []
    expert = Expert("Looking at " + "the clues " * 5 + "Answer: Paris")  # 74 characters
    state = State(log)
    calls = [RoutedCall("run_python", {"code": "print(1)"}, TASK), RoutedCall("call_expert", {"expert": "cheap"}, TASK),
             RoutedCall("get_user", {"id": "u1"}, TASK, state), RoutedCall("search", {"query": "q"}, TASK),
             RoutedCall("answer", {"expert": "cheap"}, TASK), RoutedCall("refused", {}, TASK, state),
             RoutedCall("get_user", {"id": "u1"}, TASK)]
    out = router(log, {"cheap": expert}).run(3, calls)
    assert log == [("state", "get_user"), ("state", "refused"), ("experts", ["cheap", "cheap"]), ("tools", ["run_python", "search"])]
    assert expert.asked[0].task_id == "q0" and expert.asked[0].messages == [{"role": "user", "content": "What is it?"}]
    code, consult, fn, search, answer, refused, stateless = out
    assert all(r.record.turn == 3 for r in out)
    assert code.observation == "x" * 20 and code.record.latency == 0.25 and code.record.ok
    # the answer's start and its end (where it concludes), 20 characters in all
    assert consult.observation == "cheap: Looki ... wer: Paris" and consult.response.text.startswith("Looking")
    assert (consult.record.expert, consult.record.input_tokens, consult.record.output_tokens, consult.record.cost,
            consult.record.latency) == ("cheap", 12, 3, 0.5, 1.5)
    assert answer.observation == "" and answer.response is not None  # the answer ends the episode
    # a function's result is cut at the limit
    assert fn.observation == "y" * 20 and fn.record.latency == 0.05 and fn.record.arguments == '{"id": "u1"}'
    assert search.observation == "error: index down"[:20] and not search.record.ok
    assert search.record.error == ("index down " + "e" * 400)[:300] and search.record.error_kind == "data"
    assert refused.observation == "error: not allowed" and refused.record.error_kind == "data"
    assert stateless.observation == "error: tool 'get_user' needs a domain database and this task has none"


def test_a_failed_expert_is_an_error_observation_with_its_kind():
    out = router([], {"cheap": Expert("", fail=True)}).run(0, [RoutedCall("call_expert", {"expert": "cheap"}, TASK)])[0]
    assert out.observation == "error: no record" and out.response is None
    assert (out.record.ok, out.record.error, out.record.error_kind, out.record.cost) == (False, "no record", "data", 0.0)


def test_episode_limits_come_from_the_config_and_share_its_defaults():
    cfg = OrchestraConfig()
    assert episode_limits(cfg) == EpisodeLimits()
    cfg.rollout.max_turns, cfg.zoo.max_response_chars, cfg.tools.domain_call_latency_s = 7, 99, 0.5
    got = episode_limits(cfg, max_turns=2)
    assert (got.max_turns, got.max_new_tokens, got.max_response_chars, got.domain_call_latency_s) == (2, 48, 99, 0.5)
    assert episode_limits(cfg).max_turns == 7


def test_the_call_record_is_the_trajectory_column_type():
    assert CALL_TYPE.equals(pa.struct([
        ("turn", pa.int32()), ("name", pa.string()), ("arguments", pa.string()), ("expert", pa.string()),
        ("input_tokens", pa.int64()), ("output_tokens", pa.int64()), ("cost", pa.float64()), ("latency", pa.float64()),
        ("ok", pa.bool_()), ("error", pa.string()), ("error_kind", pa.string()),
    ]))
    row = dict(CallRecord(1, "search", "{}", "").__dict__)
    assert pa.array([row], type=CALL_TYPE).to_pylist() == [row]


@pytest.mark.parametrize("n", [0, 2])
def test_in_process_experts_answer_in_order(n):
    experts = {"a": Expert("A"), "b": Expert("B", fail=True)}
    got = InProcessExperts(experts).respond_many([("a", None), ("b", None)] * n)
    assert [type(g).__name__ for g in got] == ["ExpertResponse", "ExpertError"] * n

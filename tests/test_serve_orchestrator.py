"""A trained orchestrator served on Ray Serve: a short quickstart run is trained, its checkpoint is
deployed with its replay zoo on a real local Ray cluster, and the endpoint is called on loopback
with the official `openai` client (answer and trace, preferences, budgets, tool restrictions,
4xx answers, an expert that is gone). ORCHESTRA_RAY_SERVE_CHECKPOINT names another checkpoint
(e.g. a full quickstart run's) to serve instead of training one."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

import openai
import pytest
import ray

from orchestra_ray.experts.base import ExpertRequest
from pipelines.cli import main
from pipelines.serve import serving_config, start_serving
from pipelines.zoo import load_zoo

HELDOUT = 50


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, frames_dir):
    given = os.environ.get("ORCHESTRA_RAY_SERVE_CHECKPOINT")
    if given:
        return given
    root = tmp_path_factory.mktemp("runs")
    assert main([
        "train", "quickstart", f"data.path={frames_dir}", "data.max_train_questions=40",
        f"data.max_heldout_questions={HELDOUT}", f"run.root={root}", "run.name=sv",
        f"policy.cache_dir={tmp_path_factory.mktemp('cache')}", "policy.tiny.pretrain_steps=60",
        "rollout.tasks_per_step=4", "rollout.group_size=4", "rollout.max_turns=3", "warm_start.examples=16",
        "trainer.steps=2", "trainer.checkpoint_every=1", "eval.enabled=false", "cluster.include_dashboard=false",
    ]) == 0
    return os.path.join(root, "sv")


@pytest.fixture(scope="module")
def served(checkpoint, frames_dir):
    ckpt, _, cfg, scfg = serving_config(checkpoint, None, [f"data.path={frames_dir}", "serving.port=0",
                                                           "serving.request_timeout_s=60", "serving.expert_timeout_s=10"])
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        s = start_serving(ckpt, cfg, scfg)
        yield s, cfg, load_zoo(cfg)
        s.shutdown()
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0].base_url, api_key="unused", max_retries=0, timeout=90)


def ask(client, served, question, **extra):
    out = client.chat.completions.create(model=served[0].model_name, messages=[{"role": "user", "content": question.problem}],
                                         extra_body=extra)
    return out, out.model_extra["orchestration"]


def recorded(zoo, slot, q):
    return zoo.experts[slot].respond(ExpertRequest(q.question_id, [{"role": "user", "content": q.problem}]))


def test_openai_client_gets_the_answer_and_the_trace_of_a_frames_question(served, client):
    s, cfg, zoo = served
    assert s.base_url.startswith("http://127.0.0.1:")
    assert [m.id for m in client.models.list().data] == [s.model_name]
    with urllib.request.urlopen(s.base_url[: -len("/v1")] + "/healthz", timeout=30) as r:
        assert json.loads(r.read())["status"] == "ok"
    q = zoo.heldout[0]
    out, trace = ask(client, served, q, preference="accuracy-first", question_id=q.question_id)
    assert out.model == s.model_name and trace["question_id"] == q.question_id and trace["known_question"]
    assert trace["preference"]["profile"] == "accuracy-first"
    billed = [c for c in trace["calls"] if c["expert"] and c["ok"] and c["input_tokens"] > 0]
    assert billed, f"the policy called no expert: {trace}"
    assert trace["experts_called"] == [c["expert"] for c in billed]
    for c in billed:  # each call's tokens and cost are the replay expert's for this question
        want = recorded(zoo, c["expert"], q)
        assert (c["input_tokens"], c["output_tokens"]) == (want.input_tokens, want.output_tokens)
        assert c["cost"] == pytest.approx(want.cost) and c["latency"] == pytest.approx(want.latency)
    assert trace["total_cost"] == pytest.approx(sum(c["cost"] for c in trace["calls"])) and trace["total_cost"] > 0
    assert 0 < trace["wall_s"] < 90
    if trace["answer_source"] in zoo.slots:
        assert out.choices[0].message.content == recorded(zoo, trace["answer_source"], q).text
        assert trace["outcome"] == (recorded(zoo, trace["answer_source"], q).grade == "A")
    assert out.usage.prompt_tokens > 0 and out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    # Without question_id the question is found by its text; the same greedy episode follows.
    again, trace2 = ask(client, served, q, preference="accuracy-first")
    assert trace2["question_id"] == q.question_id and again.choices[0].message.content == out.choices[0].message.content


def post(served, body: bytes):
    req = urllib.request.Request(f"{served[0].base_url}/chat/completions", data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("fields, param, words", [
    ({"preference": "thrifty"}, "preference", "thrifty"),
    ({"preference": {"cost": -1}}, "preference.cost", "negative"),
    ({"preference": {"speed": 1}}, "preference.speed", "speed"),
    ({"max_cost": -0.5}, "max_cost", "negative"),
    ({"max_cost": "cheap"}, "max_cost", "number"),
    ({"max_turns": 0}, "max_turns", "max_turns"),
    ({"allowed_tools": ["gpt-9"]}, "allowed_tools[0]", "gpt-9"),
    ({"forbidden_tools": ["qwen3-8b", "calculator"]}, "forbidden_tools[1]", "calculator"),
    ({"question_id": "no-such-question"}, "question_id", "no-such-question"),
    ({"messages": []}, "messages", "messages"),
    ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content", "string"),
])
def test_malformed_requests_get_a_4xx_naming_the_field(served, fields, param, words):
    s, _, zoo = served
    body = {"model": s.model_name, "messages": [{"role": "user", "content": zoo.heldout[0].problem}], **fields}
    status, out = post(served, json.dumps(body).encode())
    assert status == 400 and out["error"]["param"] == param and words in out["error"]["message"], out


def test_bad_json_and_unknown_model_then_the_server_keeps_serving(served, client):
    s, _, zoo = served
    status, out = post(served, b"{not json")
    assert status == 400 and "JSON" in out["error"]["message"]
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-7", messages=[{"role": "user", "content": "hi"}])
    assert "gpt-7" in info.value.message and s.model_name in info.value.message
    out, trace = ask(client, served, zoo.heldout[1])
    assert isinstance(out.choices[0].message.content, str) and trace["preference"]["profile"] == "balanced"


def _nested(depth):
    value = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def test_oversized_or_deeply_nested_requests_get_4xx_before_any_work(served, client):
    s, _, zoo = served
    base = {"model": s.model_name, "messages": [{"role": "user", "content": zoo.heldout[0].problem}]}
    status, out = post(served, b"[" * 200_000 + b"]" * 200_000)  # too deep for Python's JSON parser
    assert status == 400 and "nests deeper" in out["error"]["message"], out
    status, out = post(served, json.dumps({**base, "preference": _nested(60)}).encode())
    assert status == 400 and out["error"]["param"] == "preference" and "nests deeper" in out["error"]["message"], out
    status, out = post(served, json.dumps({**base, "padding": "x" * (2 << 20)}).encode())
    assert status == 413 and out["error"]["code"] == "request_too_large", out
    long_question = {**base, "messages": [{"role": "user", "content": "why? " * 10_000}]}
    t0 = time.monotonic()
    status, out = post(served, json.dumps(long_question).encode())
    assert status == 400 and out["error"]["code"] == "question_too_long" and time.monotonic() - t0 < 5, out
    out, trace = ask(client, served, zoo.heldout[2])  # and the server goes on serving
    assert isinstance(out.choices[0].message.content, str)


def test_budgets_end_the_episode_with_what_it_has_and_say_so(served, client):
    _, _, zoo = served
    q = zoo.heldout[2]
    _, nothing = ask(client, served, q, question_id=q.question_id, max_cost=0)
    assert nothing["total_cost"] == 0 and not nothing["experts_called"]
    refused = [c for c in nothing["calls"] if c["expert"] and not c["ok"]]
    assert all("max_cost" in c["error"] for c in refused)
    if refused:
        assert nothing["limit_reached"] == "max_cost" and nothing["finish_reason"] == "max_cost"
    # A budget smaller than any call: the first paid call is the last one.
    out, one = ask(client, served, q, question_id=q.question_id, max_cost=1e-9, max_turns=3)
    assert len(one["experts_called"]) <= 1
    assert one["total_cost"] == pytest.approx(sum(c["cost"] for c in one["calls"]))
    if one["limit_reached"] == "max_cost" and one["experts_called"]:
        assert one["answer_source"] == one["experts_called"][0]
        assert out.choices[0].message.content == recorded(zoo, one["answer_source"], q).text
        assert out.choices[0].finish_reason == "length"
    out, short = ask(client, served, q, question_id=q.question_id, max_turns=1)
    assert short["turns"] == 1
    if short["finish_reason"] != "answer":
        assert short["limit_reached"] == "max_turns" and out.choices[0].finish_reason == "length"
        if short["experts_called"]:  # answered with the expert it had consulted
            assert out.choices[0].message.content == recorded(zoo, short["experts_called"][-1], q).text


def test_tool_restrictions_are_enforced(served, client):
    _, cfg, zoo = served
    strongest = cfg.zoo.strongest
    for q in zoo.heldout[3:6]:
        _, t = ask(client, served, q, question_id=q.question_id, forbidden_tools=[strongest])
        assert strongest not in t["experts_called"] and strongest not in t["tools"]
        assert all(c["expert"] != strongest or not c["ok"] for c in t["calls"])
        _, t = ask(client, served, q, question_id=q.question_id, allowed_tools=["qwen3-8b"])
        assert set(t["experts_called"]) <= {"qwen3-8b"} and t["tools"] == ["qwen3-8b"]


def test_streaming_sends_the_trace_then_the_answer(served, client):
    s, _, zoo = served
    q = zoo.heldout[0]
    out, whole = ask(client, served, q, question_id=q.question_id, preference="accuracy-first")
    chunks = list(client.chat.completions.create(model=s.model_name, messages=[{"role": "user", "content": q.problem}],
                                                 stream=True, extra_body={"question_id": q.question_id, "preference": "accuracy-first"}))
    calls = [c.model_extra["orchestration_call"] for c in chunks if (c.model_extra or {}).get("orchestration_call")]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = chunks[-1].model_extra["orchestration"]
    assert calls == whole["calls"] and final["total_cost"] == whole["total_cost"]
    assert text == out.choices[0].message.content and chunks[-1].choices[0].finish_reason == out.choices[0].finish_reason


def test_streaming_sends_each_call_as_it_happens(served, checkpoint, frames_dir):
    """The warm-start policy consults an expert before it answers, over several turns: streamed, a
    call reaches the client while later turns are still being generated, and the streamed answer
    is the non-streamed one. Served as a second application beside the first."""
    _, run_dir, _, _ = serving_config(checkpoint, None, [f"data.path={frames_dir}"])
    warm = os.path.join(run_dir, "checkpoints", "warm_start")
    if not os.path.isdir(warm):
        # Only a checkpoint given from outside (ORCHESTRA_RAY_SERVE_CHECKPOINT) can lack its run's warm
        # start; the fixture's own run always has one.
        pytest.skip(f"{run_dir} has no warm-start checkpoint to serve as the multi-turn policy")
    ckpt, _, cfg, scfg = serving_config(warm, None, [f"data.path={frames_dir}", "serving.app_name=warm",
                                                     "serving.route_prefix=/warm", "serving.request_timeout_s=60"])
    w = start_serving(ckpt, cfg, scfg)
    try:
        c = openai.OpenAI(base_url=w.base_url, api_key="unused", max_retries=0, timeout=90)
        msgs = lambda q: [{"role": "user", "content": q.problem}]  # noqa: E731
        # The longest episode of a few questions: a call, then at least one more turn.
        whole = [(c.chat.completions.create(model=w.model_name, messages=msgs(q), extra_body={"question_id": q.question_id}), q)
                 for q in served[2].heldout[:6]]
        out, q = max(whole, key=lambda oq: oq[0].model_extra["orchestration"]["turns"])
        trace = out.model_extra["orchestration"]
        assert trace["turns"] >= 2 and trace["calls"][0]["turn"] < trace["turns"] - 1, trace
        t0, arrivals = time.perf_counter(), []
        for chunk in c.chat.completions.create(model=w.model_name, messages=msgs(q), stream=True,
                                               extra_body={"question_id": q.question_id}):
            arrivals.append((time.perf_counter() - t0, chunk))
    finally:
        w.shutdown()
    chunks = [ch for _, ch in arrivals]
    call_at = [t for t, ch in arrivals if (ch.model_extra or {}).get("orchestration_call")]
    answer_at = [t for t, ch in arrivals if ch.choices and ch.choices[0].delta.content]
    total = arrivals[-1][0]
    assert [ch.model_extra["orchestration_call"] for ch in chunks if (ch.model_extra or {}).get("orchestration_call")] == trace["calls"]
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == out.choices[0].message.content != ""
    assert chunks[-1].choices[0].finish_reason == out.choices[0].finish_reason
    assert chunks[-1].model_extra["orchestration"]["calls"] == trace["calls"]
    # Sent as the episode goes, not gathered at its end: the first call arrives while the later
    # turns (a fair part of the whole request) are still being generated.
    assert answer_at[-1] - call_at[0] > 0.2 * total, (call_at, answer_at, total)


def test_serve_command_checks_its_settings_before_starting(checkpoint, capsys):
    def error_lines():  # the cluster of the other tests may log to this process's stderr too
        return [line for line in capsys.readouterr().err.splitlines() if line.startswith("orchestra-ray:")]

    assert main(["serve", checkpoint, "serving.port=70000"]) == 2
    (err,) = error_lines()
    assert "'serving.port'" in err and "65535" in err
    assert main(["serve", checkpoint, "serving.replicas=2"]) == 2
    (err,) = error_lines()
    assert "unknown config key 'serving.replicas'" in err
    assert main(["serve", checkpoint, "serving.default_profile=thrifty", "serving.max_batch_size=0"]) == 2
    (err,) = error_lines()
    assert "'serving.max_batch_size'" in err


def test_an_expert_that_is_gone_is_skipped_and_the_request_completes(served, client):
    s, cfg, zoo = served
    strongest = cfg.zoo.strongest
    ray.kill(s.workers.experts[strongest], no_restart=True)
    q = zoo.heldout[0]
    t0 = time.monotonic()
    out, trace = ask(client, served, q, question_id=q.question_id, preference="accuracy-first")
    assert time.monotonic() - t0 < 60
    failed = [c for c in trace["calls"] if c["expert"] == strongest]
    assert all(not c["ok"] and c["error_kind"] == "infrastructure" for c in failed)
    assert trace["total_cost"] == pytest.approx(sum(c["cost"] for c in trace["calls"]))
    with urllib.request.urlopen(s.base_url[: -len("/v1")] + "/healthz", timeout=30) as r:
        assert json.loads(r.read())["status"] == "ok"

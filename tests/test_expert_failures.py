"""Live experts failing during real training: one "openai" slot whose endpoint answers 503, another
whose endpoint never answers. Each is made the strongest slot in turn, so the warm start's God-model
demonstrations teach the policy to call it. The client retries each call, the step completes, and
the failures are kept as data: on the trajectory's tool calls (error_kind "infrastructure", the
message naming the cause) and counted in the step's metrics. The evaluations run through the same
failing experts and complete as well."""

import asyncio
import json
import os
import threading
import time
from collections import Counter

import pyarrow.parquet as pq
import pytest
from starlette.responses import JSONResponse

from orchestra_ray.families.frames import load_questions
from pipelines.cli import main

from loopback_server import chat_server

# Each slot keeps its name and recorded arm (the warm start and the evaluation anchors replay it);
# only its backend goes live. Retry counts differ so that each slot's own setting is seen at work.
UNAVAILABLE = {"index": 0, "slot": "claude-sonnet-4", "model": "always-503", "timeout_s": 1, "max_retries": 2}
SILENT = {"index": 1, "slot": "gpt-5-mini", "model": "never-answers", "timeout_s": 1, "max_retries": 1}
SILENCE_S = 20  # far past the client's timeout; the handler gives up sooner when the server stops

REQUESTS = []  # (model, question text) of every request the endpoint received
STOPPING = threading.Event()


async def completions(request):
    body = await request.json()
    REQUESTS.append((body["model"], body["messages"][-1]["content"]))
    if body["model"] == UNAVAILABLE["model"]:
        return JSONResponse({"error": {"message": "overloaded", "type": "server_error"}}, status_code=503)
    if body["model"] == SILENT["model"]:
        deadline = time.monotonic() + SILENCE_S
        while not STOPPING.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return JSONResponse({"error": {"message": "gave up"}}, status_code=504)
    return JSONResponse({"error": {"message": f"unknown model {body['model']}"}}, status_code=404)


@pytest.fixture(scope="module")
def endpoint():
    with chat_server(completions) as url:
        yield url
        STOPPING.set()  # releases the handlers still holding a silent request, so the server stops at once


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    # One cache for the session: the tiny base policy is keyed by its config and corpus.
    return tmp_path_factory.getbasetemp() / "policy-cache"


def live_slot(s, url):
    k = f"zoo.experts.{s['index']}"
    return [f"{k}.backend=openai", f"{k}.model={s['model']}", f"{k}.base_url={url}",
            f"{k}.timeout_s={s['timeout_s']}", f"{k}.max_retries={s['max_retries']}"]


@pytest.fixture(scope="module", params=[UNAVAILABLE, SILENT], ids=["503", "timeout"])
def run(request, endpoint, cache, tmp_path_factory, frames_dir):
    failing = request.param
    root = tmp_path_factory.mktemp("runs")
    before = len(REQUESTS)
    args = [
        f"data.path={frames_dir}",
        "data.max_train_questions=48",
        "data.max_heldout_questions=1",
        f"run.root={root}",
        "run.name=failing",
        f"policy.cache_dir={cache}",
        "policy.tiny.pretrain_steps=200",
        "cluster.include_dashboard=false",
        "rollout.num_workers=2",
        "rollout.tasks_per_step=2",
        "rollout.group_size=2",
        "rollout.max_turns=2",
        "rollout.max_new_tokens=32",
        "warm_start.examples=32",
        "warm_start.epochs=2",
        "warm_start.batch_size=8",
        "warm_start.lr=1e-3",
        "warm_start.demonstrator=strongest",
        "trainer.steps=1",
        "trainer.lr=1e-3",
        "reward.filter_zero_variance=false",
        "eval.bootstrap_samples=100",
        f"zoo.strongest={failing['slot']}",
        *live_slot(UNAVAILABLE, endpoint),
        *live_slot(SILENT, endpoint),
    ]
    assert main(["train", *args]) == 0
    return failing, os.path.join(root, "failing"), REQUESTS[before:]


def calls_of(run_dir):
    rows = pq.read_table(os.path.join(run_dir, "trajectories", "step_000001.parquet")).to_pylist()
    return rows, [(r["question_id"], c) for r in rows for c in r["tool_calls"]]


def test_step_completes_with_the_failed_calls_on_the_trajectory(run):
    failing, run_dir, _ = run
    rows, calls = calls_of(run_dir)
    assert len(rows) == 4  # 2 tasks x 2 samples: no episode was lost to the failures
    failed = [c for _, c in calls if c["expert"] == failing["slot"]]
    assert failed, f"the policy never called the strongest slot {failing['slot']}"
    cause = "HTTP 503" if failing is UNAVAILABLE else "timed out"
    for c in failed:
        assert not c["ok"] and c["error_kind"] == "infrastructure"
        assert failing["slot"] in c["error"] and cause in c["error"], c["error"]
        assert c["cost"] == 0 and c["output_tokens"] == 0  # nothing answered, nothing billed
    # The failure came back to the policy as an observation: no episode relays an answer from that slot.
    for r in rows:
        if any(c["expert"] == failing["slot"] for c in r["tool_calls"]):
            assert r["answer_source"] != failing["slot"]


def test_each_failed_call_was_retried_by_the_client(run, frames_dir):
    failing, run_dir, requests = run
    text = {q.question_id: q.problem for q in load_questions(frames_dir)}
    _, calls = calls_of(run_dir)
    for s in (UNAVAILABLE, SILENT):
        made = Counter(text[q] for q, c in calls if c["expert"] == s["slot"])
        seen = Counter(question for model, question in requests if model == s["model"] and question in made)
        # Every call is the first try plus max_retries retries, each a request the endpoint saw.
        assert seen == {q: n * (1 + s["max_retries"]) for q, n in made.items()}
    assert sum(1 for model, _ in requests if model == failing["model"]) > 1 + failing["max_retries"]


def test_step_metrics_count_the_failures_by_kind(run):
    failing, run_dir, _ = run
    _, calls = calls_of(run_dir)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        (metrics,) = [json.loads(line) for line in f if line.strip()]
    expected = {k: sum(1 for _, c in calls if c["error_kind"] == k) for k in ("infrastructure", "data")}
    assert metrics["tool_failures"] == expected
    assert expected["infrastructure"] >= sum(1 for _, c in calls if c["expert"] == failing["slot"]) > 0
    assert metrics["ledger"]["failed_attempts"] == 0  # the episodes themselves were never lost
    # Episodes hurt by the dead endpoint are on record but not trained on.
    rows, _ = calls_of(run_dir)
    hurt = [r for r in rows if any(c["error_kind"] == "infrastructure" for c in r["tool_calls"])]
    assert hurt and not any(r["kept"] for r in hurt)
    assert 0 <= metrics["filters"]["infrastructure_failure_samples"] <= len(hurt)  # others may be filtered already


def test_evaluations_complete_through_the_failing_expert(run, frames_dir):
    failing, run_dir, requests = run
    text = {q.question_id: q.problem for q in load_questions(frames_dir)}
    for label in ("warm_start", "final"):
        with open(os.path.join(run_dir, "eval", f"{label}.json")) as f:
            result = json.load(f)
        (heldout,) = result["per_question_reward"]  # the one held-out question, under every profile
    # The held-out question was put to the failing slot during the evaluations too.
    assert (failing["model"], text[heldout]) in requests
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["steps"] == 1 and "reward_difference" in summary

"""The OpenAI-compatible expert against a real HTTP server on loopback: usage and cost from the
response, retries on 429 and 5xx, a clear ExpertError when the endpoint keeps failing or is slow."""

import socket
import time

import pytest
from starlette.responses import JSONResponse

from orchestra_ray.experts.base import ExpertError, ExpertRequest
from orchestra_ray.errors import ConfigError
from orchestra_ray.experts.openai_expert import OpenAIExpert, token_limit_param
from orchestra_ray.experts.pricing import ExpertPrice, PriceTable

from loopback_server import chat_server

STATE = {"fail_first": 0, "status": 429, "calls": 0, "delay": 0.0, "seen": []}


async def completions(request):
    body = await request.json()
    STATE["calls"] += 1
    STATE["seen"].append(body)
    if STATE["delay"]:
        time.sleep(STATE["delay"])
    if STATE["calls"] <= STATE["fail_first"]:
        return JSONResponse({"error": {"message": "busy", "type": "rate_limit"}}, status_code=STATE["status"])
    return JSONResponse({
        "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Paris"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    })


@pytest.fixture(scope="module")
def server():
    with chat_server(completions) as url:
        yield url


@pytest.fixture(autouse=True)
def reset():
    STATE.update(fail_first=0, status=429, calls=0, delay=0.0, seen=[])


PRICES = PriceTable({"gen": ExpertPrice(1.0, 4.0, 100, 0.1)})
REQ = ExpertRequest("q1", [{"role": "user", "content": "Capital of France?"}], max_output_tokens=16)


def expert(url, **kw):
    return OpenAIExpert("gen", "test-model", url, PRICES, **kw)


def test_answer_usage_and_cost_come_from_the_response(server):
    r = expert(server).respond(REQ)
    assert r.text == "Paris" and r.input_tokens == 12 and r.output_tokens == 3
    assert r.cost == pytest.approx((12 * 1.0 + 3 * 4.0) / 1e6)
    assert r.latency > 0 and r.grade is None
    assert STATE["seen"][0]["max_tokens"] == 16 and STATE["seen"][0]["model"] == "test-model"


@pytest.mark.parametrize("model", ["gpt-5-mini", "o4-mini", "openai/o3"])
def test_reasoning_models_get_the_limit_as_max_completion_tokens(server, model):
    # OpenAI answers HTTP 400 to max_tokens for these models.
    OpenAIExpert("gen", model, server, PRICES).respond(REQ)
    assert STATE["seen"][0]["max_completion_tokens"] == 16 and "max_tokens" not in STATE["seen"][0]


def test_the_limit_field_can_be_set_and_a_bad_one_is_named(server):
    OpenAIExpert("gen", "Qwen/Qwen3-8B", server, PRICES, limit_param="max_completion_tokens").respond(REQ)
    assert STATE["seen"][0]["max_completion_tokens"] == 16
    assert token_limit_param("Qwen/Qwen3-8B") == "max_tokens" and token_limit_param("gpt-4o") == "max_tokens"
    with pytest.raises(ConfigError, match="max_tokens, max_completion_tokens, got 'max_new_tokens'"):
        token_limit_param("gpt-5", "max_new_tokens")


@pytest.mark.parametrize("status", [429, 503])
def test_retries_with_backoff_then_succeeds(server, status):
    STATE.update(fail_first=2, status=status)
    r = expert(server, max_retries=3).respond(REQ)
    assert r.text == "Paris" and STATE["calls"] == 3


def test_persistent_failure_is_a_clear_expert_error(server):
    STATE.update(fail_first=100, status=500)
    with pytest.raises(ExpertError, match="HTTP 500"):
        expert(server, max_retries=1).respond(REQ)
    assert STATE["calls"] == 2  # the first try and one retry, then it gives up


def test_slow_endpoint_times_out_instead_of_hanging(server):
    STATE.update(delay=1.0)
    t0 = time.monotonic()
    with pytest.raises(ExpertError, match="timed out"):
        expert(server, timeout_s=0.3, max_retries=0).respond(REQ)
    assert time.monotonic() - t0 < 1.0


def test_unreachable_endpoint_names_the_expert():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ExpertError, match="gen"):
        expert(f"http://127.0.0.1:{port}/v1", max_retries=0, timeout_s=2).respond(REQ)

"""API keys of "openai" expert slots: read only from the environment variable the slot names, sent to
the endpoint, and absent from every response, error, repr and config message, even when the
endpoint echoes a rejected key back. A real HTTP server on loopback checks the key it is sent."""

from __future__ import annotations

import os
import traceback

import pytest
import ray
from starlette.responses import JSONResponse

from actors.experts import ExpertsSpec, make_expert, start_experts
from orchestra_ray.config import ExpertSlotConfig
from orchestra_ray.config_load import load_config
from orchestra_ray.errors import ConfigError
from orchestra_ray.experts.base import ExpertError, ExpertRequest, ExpertResponse
from orchestra_ray.experts.pricing import ExpertPrice

from loopback_server import chat_server

KEY = "sk-test-4f9c2e7a1b8d6053"  # what the server accepts
WRONG = "sk-test-0000deadbeef9999"  # set in another variable: the server rejects it
GOOD_VAR, WRONG_VAR, UNSET_VAR = "ORCH_TEST_GOOD_KEY", "ORCH_TEST_WRONG_KEY", "ORCH_TEST_UNSET_KEY"
REQ = ExpertRequest("q1", [{"role": "user", "content": "Capital of France?"}])
PRICE = ExpertPrice(1.0, 4.0, 100.0, 0.1)
SEEN = []


async def completions(request):
    auth = request.headers.get("authorization", "")
    SEEN.append(auth)
    if auth != f"Bearer {KEY}":
        # As some providers do, the rejected key is quoted back in the error body.
        presented = auth.removeprefix("Bearer ")
        return JSONResponse({"error": {"message": f"Incorrect API key provided: {presented}", "type": "invalid_request_error",
                                       "code": "invalid_api_key"}}, status_code=401)
    body = await request.json()
    return JSONResponse({
        "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Paris"}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    })


@pytest.fixture(scope="module")
def server():
    with chat_server(completions) as url:
        yield url


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    SEEN.clear()
    monkeypatch.setenv(GOOD_VAR, KEY)
    monkeypatch.setenv(WRONG_VAR, WRONG)
    monkeypatch.delenv(UNSET_VAR, raising=False)


def slot(url: str, var: str, name: str = "hosted") -> ExpertSlotConfig:
    return ExpertSlotConfig(name=name, backend="openai", model="gpt-test", base_url=url, api_key_env=var,
                            input_price=1.0, output_price=4.0, max_retries=0, timeout_s=10)


def no_key_in(*texts: str) -> None:
    for t in texts:
        assert KEY not in t and WRONG not in t, t


def test_key_comes_from_the_named_variable(server):
    expert = make_expert(slot(server, GOOD_VAR), PRICE, "", 0)
    r = expert.respond(REQ)
    assert isinstance(r, ExpertResponse) and r.text == "Paris"
    assert SEEN == [f"Bearer {KEY}"]  # the endpoint received the variable's value
    assert r.cost == pytest.approx((9 * 1.0 + 2 * 4.0) / 1e6)
    no_key_in(repr(r), str(r.meta), repr(expert), str(expert))
    assert GOOD_VAR in repr(expert)  # the variable's name is what a log may show


def test_rejected_key_is_not_echoed_in_the_error(server):
    expert = make_expert(slot(server, WRONG_VAR), PRICE, "", 0)
    with pytest.raises(ExpertError) as info:
        expert.respond(REQ)
    msg = str(info.value)
    assert "HTTP 401" in msg and "hosted" in msg and "[redacted]" in msg
    assert SEEN == [f"Bearer {WRONG}"]
    # Nor in the traceback a log handler would print: the client's exception is not chained.
    no_key_in(msg, repr(info.value), "".join(traceback.format_exception(info.value)))
    assert info.value.__cause__ is None and info.value.__context__ is None


@pytest.mark.parametrize("value", [None, ""])
def test_missing_variable_is_named_not_guessed(server, monkeypatch, value):
    if value is not None:
        monkeypatch.setenv(UNSET_VAR, value)
    with pytest.raises(ConfigError) as info:
        make_expert(slot(server, UNSET_VAR), PRICE, "", 0)
    assert UNSET_VAR in str(info.value) and "\n" not in str(info.value)
    assert SEEN == []  # nothing was sent without a key


def test_config_has_no_place_for_a_key(tmp_path, frames_dir):
    def error(line: str) -> str:
        p = tmp_path / "keys.yaml"
        p.write_text("zoo:\n  strongest: hosted\n  experts:\n    - name: hosted\n      backend: openai\n      model: gpt-5-mini\n"
                     f"      base_url: https://api.example.com/v1\n{line}\n")
        with pytest.raises(ConfigError) as info:
            load_config(str(p), [f"data.path={frames_dir}"])
        return str(info.value)

    msg = error(f"      api_key: {KEY}")
    assert "api_key" in msg
    no_key_in(msg)
    msg = error(f"      api_key_env: {KEY}")  # a key pasted where the variable's name belongs
    assert "zoo.experts.0.api_key_env" in msg
    no_key_in(msg)


@pytest.fixture(scope="module")
def cluster():
    # Workers of a local cluster inherit the driver's environment as it is at ray.init.
    saved = {v: os.environ.get(v) for v in (GOOD_VAR, WRONG_VAR, UNSET_VAR)}
    os.environ.update({GOOD_VAR: KEY, WRONG_VAR: WRONG})
    os.environ.pop(UNSET_VAR, None)
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
    for var, value in saved.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def zoo_config(tmp_path, frames_dir, url: str, slots) -> object:
    lines = ["zoo:", f"  strongest: {slots[0][0]}", "  experts:"]
    for name, var in slots:
        lines += [f"    - name: {name}", "      backend: openai", "      model: gpt-test", f"      base_url: {url}",
                  f"      api_key_env: {var}", "      input_price: 1.0", "      output_price: 4.0", "      max_retries: 0"]
    p = tmp_path / "zoo.yaml"
    p.write_text("\n".join(lines) + "\n")
    return load_config(str(p), [f"data.path={frames_dir}"])


def test_expert_actors_use_the_key_and_keep_it(cluster, server, tmp_path, frames_dir):
    cfg = zoo_config(tmp_path, frames_dir, server, [("good", GOOD_VAR), ("wrong", WRONG_VAR)])
    handles = start_experts(ExpertsSpec.from_config(cfg, frames_dir))
    try:
        ok = ray.get(handles["good"].respond.remote(REQ))
        assert isinstance(ok, ExpertResponse) and ok.text == "Paris" and ok.latency > 0
        err = ray.get(handles["wrong"].respond.remote(REQ))
        assert isinstance(err, ExpertError) and "HTTP 401" in str(err)
        described = ray.get([h.describe.remote() for h in handles.values()])
        no_key_in(repr(ok), str(err), repr(err), *described)
        assert SEEN == [f"Bearer {KEY}", f"Bearer {WRONG}"]
    finally:
        for h in handles.values():
            ray.kill(h)


def test_unset_variable_stops_the_start_with_its_name(cluster, server, tmp_path, frames_dir):
    cfg = zoo_config(tmp_path, frames_dir, server, [("good", GOOD_VAR), ("unset", UNSET_VAR)])
    with pytest.raises(ConfigError) as info:
        start_experts(ExpertsSpec.from_config(cfg, frames_dir))
    msg = str(info.value)
    assert UNSET_VAR in msg and "'unset'" in msg and "\n" not in msg
    no_key_in(msg)

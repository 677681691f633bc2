"""A local Hugging Face model as an expert on Ray Serve: the tiny model is built on disk, deployed
behind the OpenAI-compatible API on a real local Ray cluster, and called with the official `openai`
client and through the expert actor the rollout loop uses (token usage, cost at the YAML's prices,
measured latency, 4xx answers to bad requests, autoscaling bounds)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest
import ray
from ray import serve
from ray.serve.schema import ServeInstanceDetails

from actors.experts import HEAD_NODE_RESOURCE, ExpertActor, ExpertsSpec, start_experts
from actors.serve_expert import deploy_chat_model
from orchestra_ray.config import ServeConfig, TinyModelConfig
from orchestra_ray.config_load import load_config
from orchestra_ray.errors import ConfigError
from orchestra_ray.experts.base import ExpertError, ExpertRequest, ExpertResponse
from orchestra_ray.experts.pricing import PriceTable
from orchestra_ray.policy.tiny_model import build_tiny_policy

SLOT = "tiny-chat"
CONTEXT = 256  # the tiny model's context: small, so an over-long prompt is cheap to send
QUESTION = [{"role": "user", "content": "Which river flows through Paris?"}]

CONFIG = """\
zoo:
  strongest: {slot}
  experts:
    - name: {slot}
      backend: serve
      model: {model}
      description: a tiny local model on Ray Serve.
      input_price: 2.0
      output_price: 8.0
      max_output_tokens: 12
      timeout_s: 30
      max_retries: 0
      serve:
        num_cpus: 0.5
        min_replicas: 1
        max_replicas: 2
        target_ongoing_requests: 1.5
        max_new_tokens: 24
"""


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    corpus = ["The Seine flows through Paris.", "user: assistant: Which river? The Seine."] * 20
    cfg = TinyModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=16, max_position_embeddings=CONTEXT, pretrain_steps=0)
    return build_tiny_policy(cfg, corpus, str(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def cfg(model_dir, frames_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "serve.yaml"
    path.write_text(CONFIG.format(slot=SLOT, model=model_dir))
    return load_config(str(path), [f"data.path={frames_dir}"])


@pytest.fixture(scope="module")
def base_url(cluster, cfg):
    slot = cfg.zoo.experts[0]
    return deploy_chat_model(slot.name, slot.model, slot.serve, host="127.0.0.1")


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)


def prompt_tokens(tokenizer, messages) -> int:
    # The tiny tokenizer has no chat template: the server writes one "role: content" line a message.
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    return len(tokenizer.encode(text, add_special_tokens=False))


def check_completion(out, tokenizer, max_tokens: int) -> None:
    text = out.choices[0].message.content
    assert isinstance(text, str) and text.strip()
    u = out.usage
    assert u.prompt_tokens == prompt_tokens(tokenizer, QUESTION) > 0
    assert 0 < u.completion_tokens <= max_tokens and u.total_tokens == u.prompt_tokens + u.completion_tokens
    # Re-encoding the decoded text never takes more tokens than were generated.
    assert len(tokenizer.encode(text, add_special_tokens=False)) <= u.completion_tokens
    if out.choices[0].finish_reason == "length":
        assert u.completion_tokens == max_tokens


def test_openai_client_gets_text_and_usage(client, tokenizer, base_url):
    assert base_url.startswith("http://127.0.0.1:") and base_url.endswith(f"/experts/{SLOT}/v1")
    assert [m.id for m in client.models.list().data] == [SLOT]
    out = client.chat.completions.create(model=SLOT, messages=QUESTION, max_tokens=10, temperature=0)
    check_completion(out, tokenizer, 10)
    assert out.model == SLOT and out.choices[0].finish_reason in ("stop", "length")
    # Greedy decoding is deterministic: the same request gets the same answer.
    again = client.chat.completions.create(model=SLOT, messages=QUESTION, max_tokens=10, temperature=0)
    assert again.choices[0].message.content == out.choices[0].message.content


def test_server_caps_answer_length(client, tokenizer):
    out = client.chat.completions.create(model=SLOT, messages=QUESTION, max_tokens=1000, temperature=0)
    check_completion(out, tokenizer, 24)  # serve.max_new_tokens


def test_expert_actor_bills_yaml_prices_and_measures_latency(cfg, base_url, tokenizer, frames_dir):
    handles = start_experts(ExpertsSpec.from_config(cfg, frames_dir))
    try:
        r = ray.get(handles[SLOT].respond.remote(ExpertRequest("q1", QUESTION)))
        assert isinstance(r, ExpertResponse), r
        assert r.slot == SLOT and r.text.strip() and r.grade is None
        assert r.input_tokens == prompt_tokens(tokenizer, QUESTION)
        assert 0 < r.output_tokens <= 12  # the slot's max_output_tokens
        assert r.cost == pytest.approx((r.input_tokens * 2.0 + r.output_tokens * 8.0) / 1e6)
        assert r.latency > 0  # measured wall time, not the replay model's
        assert r.meta["model"] == SLOT
        # A request's own limit is passed through.
        short = ray.get(handles[SLOT].respond.remote(ExpertRequest("q1", QUESTION, max_output_tokens=2)))
        assert 0 < short.output_tokens <= 2
    finally:
        for h in handles.values():
            ray.kill(h)


def test_actor_on_the_head_node_with_override_prices(cfg, base_url):
    slot = cfg.zoo.experts[0]
    price = PriceTable.from_slots(cfg.zoo.experts).prices[SLOT]
    assert (price.input_per_million, price.output_per_million) == (2.0, 8.0)
    actor = ExpertActor.options(resources={HEAD_NODE_RESOURCE: 0.001}).remote(slot, price, "", 0, base_url)
    try:
        assert ray.get(actor.ready.remote())
        # An empty conversation is the caller's mistake: returned as an error, the actor lives on.
        bad = ray.get(actor.respond.remote(ExpertRequest("q1", [])))
        assert isinstance(bad, ExpertError) and "HTTP 400" in str(bad) and "messages" in str(bad)
        good = ray.get(actor.respond.remote(ExpertRequest("q1", QUESTION)))
        assert isinstance(good, ExpertResponse) and good.cost > 0
    finally:
        ray.kill(actor)


def test_bad_requests_get_clear_4xx_and_the_server_keeps_serving(client, base_url, tokenizer):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-7", messages=QUESTION)
    assert "gpt-7" in info.value.message and SLOT in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=SLOT, messages=[])
    assert "messages" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=SLOT, messages=[{"role": "wizard", "content": "hi"}])
    assert "role" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=SLOT, messages=QUESTION, temperature=5)
    assert "temperature" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=SLOT, messages=[{"role": "user", "content": "Paris " * CONTEXT}], max_tokens=4)
    assert "context" in info.value.message
    raw = urllib.request.Request(f"{base_url}/chat/completions", data=b"{not json", headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(raw, timeout=30)
    assert info.value.code == 400 and "JSON" in json.loads(info.value.read())["error"]["message"]
    # Still serving, on the same replica count.
    out = client.chat.completions.create(model=SLOT, messages=QUESTION, max_tokens=5, temperature=0)
    check_completion(out, tokenizer, 5)


def test_autoscaling_bounds_and_resources_are_applied(base_url):
    details = ServeInstanceDetails(**serve.context._get_global_client().get_serve_details())
    deployment = details.applications[SLOT].deployments[f"{SLOT}-chat"]
    scaling = deployment.deployment_config.autoscaling_config
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (1, 2)
    assert scaling["target_ongoing_requests"] == 1.5
    assert deployment.deployment_config.ray_actor_options.num_cpus == 0.5
    app = serve.status().applications[SLOT]
    assert app.status == "RUNNING"
    assert app.deployments[f"{SLOT}-chat"].replica_states.get("RUNNING") == 1  # min_replicas while idle


def load(model_dir, tmp_path, frames_dir, *overrides: str):
    p = tmp_path / "serve.yaml"
    p.write_text(CONFIG.format(slot=SLOT, model=model_dir))
    return load_config(str(p), [f"data.path={frames_dir}", *overrides])


def test_replica_that_cannot_fit_is_a_config_error(model_dir, tmp_path, frames_dir, base_url):
    # Serve would wait forever for a GPU this cluster does not have.
    needs_gpu = load(model_dir, tmp_path, frames_dir, "zoo.experts.0.serve.num_gpus=1")
    with pytest.raises(ConfigError, match=r"zoo\.experts\.0\.serve\.num_gpus.*cluster has 0"):
        start_experts(ExpertsSpec.from_config(needs_gpu, frames_dir))


def test_model_that_cannot_load_is_a_one_line_error(tmp_path, client, tokenizer):
    with pytest.raises(ExpertError) as info:
        deploy_chat_model("broken", str(tmp_path / "no-model-here"), ServeConfig(num_cpus=0.25))
    msg = str(info.value)
    assert "\n" not in msg and "broken" in msg and "no-model-here" in msg
    serve.delete("broken")
    out = client.chat.completions.create(model=SLOT, messages=QUESTION, max_tokens=3, temperature=0)
    check_completion(out, tokenizer, 3)


@pytest.mark.parametrize("override, key", [
    ("zoo.experts.0.base_url=http://elsewhere/v1", "zoo.experts.0.base_url"),
    ("zoo.experts.0.serve.max_replicas=0", "zoo.experts.0.serve.max_replicas"),
    ("zoo.experts.0.serve.route_prefix=no-slash", "zoo.experts.0.serve.route_prefix"),
    ("zoo.experts.0.backend=vllm", "zoo.experts.0.backend"),
])
def test_slot_keys_are_checked_before_anything_starts(model_dir, tmp_path, frames_dir, override, key):
    with pytest.raises(ConfigError) as info:
        load(model_dir, tmp_path, frames_dir, override)
    assert key in str(info.value) and "\n" not in str(info.value)


def test_pipeline_needs_a_stand_in_arm_for_a_live_slot(model_dir, tmp_path, frames_dir):
    from pipelines.zoo import load_zoo

    with pytest.raises(ConfigError, match=r"zoo\.experts\.0\.arm"):
        load_zoo(load(model_dir, tmp_path, frames_dir))
    zoo = load_zoo(load(model_dir, tmp_path, frames_dir, "zoo.experts.0.arm=Qwen3-8B_no_think", "data.max_train_questions=4"))
    assert zoo.slots == [SLOT] and "$2.00 / $8.00" in zoo.system_prompt  # the slot's own rates

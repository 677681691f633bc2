"""LoRA on a real local Ray cluster: the learner's step equals the same step taken by hand on a peft
model, the weights it publishes (what a rollout worker loads) are base + scaled B A, and its
checkpoint holds a merged policy `from_pretrained` loads and an adapter peft loads."""

import os

import numpy as np
import pytest
import ray
import torch

from actors.common import ActorResources
from actors.learner import LearnerSpec
from actors.learner_group import start_learner
from actors.weight_transport import start_weight_store
from orchestra_ray.config import LoraConfig, TrainerConfig
from orchestra_ray.grpo.policy_update import grpo_update
from orchestra_ray.policy.engine import HFEngine
from orchestra_ray.policy.lora import apply_lora, load_adapter
from orchestra_ray.policy.tiny_model import load_policy

from test_learner_group import make_batch, published

LORA = LoraConfig(rank=4, alpha=8.0, target_modules=["q_proj", "v_proj", "up_proj"])
HYPER = dict(clip_low=0.2, clip_high=0.28, kl_coef=0.0, max_grad_norm=1.0, epochs=1, mini_batches=1, micro_batch_size=2)


@pytest.fixture(scope="module")
def policy(local_ray, uneven_policy):
    return uneven_policy


def merged_by_hand(model):
    """W + alpha/r * B @ A for each adapted projection of a peft-injected model, under base names."""
    out = {k.replace(".base_layer.", "."): v.detach().clone() for k, v in model.state_dict().items() if ".lora_" not in k}
    for name, m in model.named_modules():
        if hasattr(m, "lora_A") and "default" in m.lora_A:
            out[name + ".weight"] += m.scaling["default"] * (m.lora_B["default"].weight @ m.lora_A["default"].weight).detach()
    return out


def test_a_lora_step_is_peft_s_and_publishes_merged_weights(policy, tmp_path):
    t = TrainerConfig(lr=1e-2, num_cpus=0.5, torch_threads=1, lora=LORA,
                      **{k: v for k, v in HYPER.items() if k not in ("clip_low", "clip_high", "kl_coef")},
                      clip_low=0.2, clip_high=0.28, kl_coef=0.0)
    store = start_weight_store()
    learner = start_learner(LearnerSpec(policy, t, "float32", "cpu", 0, ActorResources(0.5)), store)
    assert ray.get(learner.publish.remote()) == 0
    base = load_policy(policy)[0].state_dict()
    _, v0 = published(store)
    assert set(v0) <= set(base) and "model.layers.0.self_attn.q_proj.weight" in v0  # the base model's names
    for k, v in v0.items():  # B starts at zero: version 0 is the base policy
        np.testing.assert_array_equal(v, base[k].numpy(), err_msg=k)
    start = str(tmp_path / "v0")
    ray.get(learner.save.remote(start, False))

    batch = make_batch(5, n=6, vocab=250)
    stats = ray.get(learner.train_step.remote(batch, None, 1.0))
    _, v1 = published(store)

    # The same step by hand: the base policy, the learner's initial adapter, peft, the GRPO update.
    model = apply_lora(load_policy(policy)[0], LORA.rank, LORA.alpha, LORA.dropout, LORA.target_modules)
    model.load_state_dict(load_adapter(os.path.join(start, "adapter")), strict=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert 0 < sum(p.numel() for p in trainable) < sum(p.numel() for p in model.parameters()) / 5
    want = grpo_update(model, torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0), batch, None, temperature=1.0, **HYPER)
    assert stats["loss"] == pytest.approx(want["loss"], rel=1e-6)
    assert stats["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-5)
    merged_sd = merged_by_hand(model)
    changed = 0
    for k, v in v1.items():
        np.testing.assert_allclose(v, merged_sd[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
        changed += not np.array_equal(v, v0[k])
    assert changed >= 2 * 3  # the adapted projections of both layers moved, the rest did not
    assert all(np.array_equal(v1[k], v0[k]) for k in v1 if not any(m in k for m in LORA.target_modules))

    # What a rollout worker loads is the merged policy; the checkpoint reloads as the same.
    engine = HFEngine(load_policy(policy)[0], pad_token_id=0)
    engine.load_weights(v1)
    path = str(tmp_path / "v1")
    ray.get(learner.save.remote(path))
    hf = load_policy(os.path.join(path, "policy"))[0].state_dict()
    for k, v in v1.items():
        np.testing.assert_array_equal(hf[k].numpy(), v, err_msg=k)
        np.testing.assert_array_equal(engine.model.state_dict()[k].numpy(), v, err_msg=k)
    import peft

    again = peft.PeftModel.from_pretrained(load_policy(policy)[0], os.path.join(path, "adapter")).merge_and_unload()
    for k, v in v1.items():
        np.testing.assert_allclose(again.state_dict()[k].detach().numpy(), v, rtol=1e-5, atol=1e-6, err_msg=k)

    # A new learner resumes from the checkpoint: same version, same merged weights.
    resumed_store = start_weight_store()
    resumed = start_learner(LearnerSpec(policy, t, "float32", "cpu", 0, ActorResources(0.5)), resumed_store)
    assert ray.get(resumed.restore.remote(path)) == 1
    _, again_v1 = published(resumed_store)
    for k, v in v1.items():
        np.testing.assert_array_equal(again_v1[k], v, err_msg=k)


def test_lora_on_two_ranks_is_lora_on_one(policy, tmp_path):
    """Adapters applied before sharding: a trained adapter (a policy-only checkpoint, as the warm
    start writes) restored on one rank and on two gives the same merged weights, and the same next
    step (float64, 1e-6 relative)."""
    from test_learner_group import assert_close, assert_stats_close, spec

    trained = start_learner(spec(policy, 1, lora=LORA), start_weight_store())
    ray.get(trained.publish.remote())
    ray.get(trained.train_step.remote(make_batch(6), None, 1.0))  # B moves away from zero
    path = str(tmp_path / "adapter-only")
    ray.get(trained.save.remote(path, False))
    stores = [start_weight_store(), start_weight_store()]
    one = start_learner(spec(policy, 1, lora=LORA), stores[0])
    two = start_learner(spec(policy, 2, lora=LORA), stores[1])
    assert ray.get([one.restore.remote(path), two.restore.remote(path)]) == [0, 0]
    base = load_policy(policy, "float64")[0].state_dict()
    w1, w2 = published(stores[0])[1], published(stores[1])[1]
    assert not np.allclose(w1["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"].numpy())
    assert_close(w1, w2, "a trained adapter restored on one rank and on two")
    batch = make_batch(7)
    stats = ray.get([one.train_step.remote(batch, None, 1.0), two.train_step.remote(batch, None, 1.0)])
    assert_stats_close(*stats)
    assert_close(published(stores[0])[1], published(stores[1])[1], "a LoRA step on one rank and on two")


def test_adapter_publishing_sends_the_factors_an_engine_applies_as_the_merged_policy(policy, tmp_path):
    """trainer.lora.publish=adapter: a version is the adapter's factors alone (a fraction of the
    model's bytes; one rank and two publish the same), an engine with peft's adapters that loads
    them computes what the merged weights compute, and the adapter folder written for an engine that
    loads adapters from a path (vLLM) merges to those weights."""
    from dataclasses import replace

    import peft

    from orchestra_ray.policy.lora import write_adapter
    from test_learner_group import assert_close, spec

    adapter = replace(LORA, publish="adapter")
    trained = start_learner(spec(policy, 1, lora=adapter), start_weight_store())
    ray.get(trained.publish.remote())
    ray.get(trained.train_step.remote(make_batch(8), None, 1.0))  # B moves away from zero
    path = str(tmp_path / "adapter")
    ray.get(trained.save.remote(path, False))
    stores = [start_weight_store() for _ in range(3)]
    two = start_learner(spec(policy, 2, lora=adapter), stores[0])
    merged = start_learner(spec(policy, 1, lora=LORA), stores[1])
    one = start_learner(spec(policy, 1, lora=adapter), stores[2])
    assert ray.get([two.restore.remote(path), merged.restore.remote(path), one.restore.remote(path)]) == [0, 0, 0]
    factors, factors_two, weights = published(stores[2])[1], published(stores[0])[1], published(stores[1])[1]
    assert factors and all(".lora_A." in k or ".lora_B." in k for k in factors)
    assert sum(v.nbytes for v in factors.values()) < sum(v.nbytes for v in weights.values()) / 10
    assert_close(factors, factors_two, "the factors published by one rank and by two")

    base = load_policy(policy, "float64")[0]
    with_adapters = HFEngine(apply_lora(load_policy(policy, "float64")[0], LORA.rank, LORA.alpha, 0.0, LORA.target_modules), 0)
    with_adapters.load_weights(factors)
    plain = HFEngine(base, 0)
    plain.load_weights(weights)
    ids = torch.tensor([make_batch(9).token_ids[0]])
    with torch.no_grad():
        # versions travel in float32: the merge rounds there, the adapters' forward does not
        torch.testing.assert_close(with_adapters.model(ids).logits, plain.model(ids).logits, rtol=1e-5, atol=1e-6)

    folder = str(tmp_path / "for-vllm")
    write_adapter(factors, LORA.rank, LORA.alpha, LORA.target_modules, folder)
    again = peft.PeftModel.from_pretrained(load_policy(policy, "float64")[0], folder).merge_and_unload().state_dict()
    assert_close({k: again[k].numpy() for k in weights}, weights, "the adapter folder merged by peft")

"""The actors' specs are made from the config, and `Workers` starts them in the order the runs rely on
(checked with the starters replaced: no Ray cluster)."""

import dataclasses

import pytest

import pipelines.workers as workers_module
from actors.experts import ExpertsSpec
from actors.learner import LearnerSpec
from actors.reference_model import ReferenceSpec
from actors.rollout_worker import RolloutSpec
from orchestra_ray.config_load import load_config
from orchestra_ray.families.task import ARITHMETIC, FRAMES
from pipelines.families import Families
from pipelines.workers import Workers


def config(*overrides):
    return load_config("pipelines/configs/quickstart.yaml", ["trainer.resources={trainer: 1}", *overrides])


def test_specs_are_made_from_the_config():
    cfg = config("trainer.num_cpus=1.5", "rollout.num_cpus_per_worker=0.25", "rollout.resources={rollout: 1}")
    learner = LearnerSpec.from_config(cfg, "policy")
    assert (learner.policy_path, learner.seed, learner.trainer) == ("policy", cfg.run.seed, cfg.trainer)
    assert learner.resources.options() == {"num_cpus": 1.5, "num_gpus": 0.0, "resources": {"trainer": 1}}
    cfg.trainer.lr = 1.0  # the spec keeps the config as it was when made
    assert learner.trainer.lr != 1.0
    ref = ReferenceSpec.from_config(cfg, "warm")
    assert (ref.torch_threads, ref.micro_batch_size) == (cfg.trainer.torch_threads, cfg.trainer.micro_batch_size)
    assert ref.resources == learner.resources
    rollout = RolloutSpec.from_config(cfg, "policy", {}, ["a", "b"], {})
    assert rollout.slots == ("a", "b") and rollout.limits.max_turns == cfg.rollout.max_turns
    assert rollout.resources.options() == {"num_cpus": 0.25, "num_gpus": 0.0, "resources": {"rollout": 1}}
    assert rollout.share_prompt_prefill and rollout.preallocate_kv_cache
    plain = RolloutSpec.from_config(config("rollout.preallocate_kv_cache=false", "rollout.share_prompt_prefill=false"),
                                    "policy", {}, [], {})
    assert not plain.preallocate_kv_cache and not plain.share_prompt_prefill
    experts = ExpertsSpec.from_config(cfg, "data")
    assert experts.data_path.endswith("/data") and [s.name for s in experts.slots] == [s.name for s in cfg.zoo.experts]
    with pytest.raises(dataclasses.FrozenInstanceError):
        learner.policy_path = "other"


def test_rollout_engines_can_serve_in_their_own_dtype():
    """rollout.dtype=bfloat16 beside float32 learner weights: the spec says so, and an engine of
    that dtype loads a float32 version cast (as a rollout worker loads each version)."""
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from orchestra_ray.errors import ConfigError
    from orchestra_ray.policy.engine import HFEngine

    assert RolloutSpec.from_config(config("rollout.dtype=bfloat16"), "p", {}, [], {}).dtype == "bfloat16"
    assert RolloutSpec.from_config(config(), "p", {}, [], {}).dtype == "float32"
    with pytest.raises(ConfigError, match="rollout.dtype"):
        config("rollout.dtype=int8")
    cfg = AutoConfig.for_model("qwen3", vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                               num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    engine = HFEngine(AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16), 0, share_weights=True)
    version = {k: v.float().numpy() + 0.5 for k, v in AutoModelForCausalLM.from_config(cfg).state_dict().items()}
    engine.load_weights(version)
    for k, v in engine.model.state_dict().items():
        assert v.dtype == torch.bfloat16 and torch.equal(v, torch.from_numpy(np.ascontiguousarray(version[k])).to(torch.bfloat16))


@pytest.fixture
def started(monkeypatch):
    """Starters that record what they were asked to start, in order."""
    log = []

    def starter(name):
        def start(*args, **kwargs):
            log.append(name)
            return name
        return start

    for name in ("start_weight_store", "start_experts", "start_code_pool", "start_search_actor", "start_learner",
                 "start_reference"):
        monkeypatch.setattr(workers_module, name, starter(name))
    monkeypatch.setattr(workers_module, "RolloutPool", starter("RolloutPool"))
    monkeypatch.setattr(Workers, "wait_experts", starter("wait_experts"))
    return log


def test_workers_start_in_order_and_tools_only_when_needed(started):
    cfg = config()
    cfg.tools.search.corpus = "corpus.jsonl"  # the search actor is never built here: no file needed
    Workers(cfg, Families(train={FRAMES: [], ARITHMETIC: []}), ["a"]).start("policy")
    assert started == ["start_weight_store", "start_experts", "start_code_pool", "start_search_actor", "RolloutPool",
                       "wait_experts", "start_learner"]
    started.clear()
    Workers(config(), Families(train={FRAMES: []}), ["a"]).start_rollout("policy")
    assert started == ["start_weight_store", "start_experts", "RolloutPool", "wait_experts"]


def test_no_reference_model_when_kl_coef_is_zero(started):
    w = Workers(config("trainer.kl_coef=0"), Families(), ["a"])
    w.start_reference("warm")
    assert started == [] and w.reference is None and w.handles() == []
    w = Workers(config("trainer.kl_coef=0.01"), Families(), ["a"])
    w.start_reference("warm")
    assert started == ["start_reference"] and w.handles() == ["start_reference"]

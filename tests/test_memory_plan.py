"""The memory plan: counts that match the models they describe, and a run refused before any actor
starts when it cannot fit (no Ray, no weights: configs only)."""

import json
import os

import pytest
import torch

from orchestra_ray.config_load import load_config
from orchestra_ray.policy.memory_plan import GB, Layout, ModelShape, plan
from pipelines.cli import _config_path, main
from orchestra_ray.config import MODEL_CONFIGS
from pipelines.plan import layout, model_config

QUICKSTART = _config_path("quickstart")
SHIPPED = sorted(f for f in os.listdir(MODEL_CONFIGS) if f.endswith(".json"))
# The paper's policy, full-parameter, on 80 GB GPUs (as the production overlay, one learner).
QWEN3_8B = ["mixed", "policy.model=Qwen/Qwen3-8B", "policy.device=cuda", "policy.dtype=float32",
            "trainer.gradient_checkpointing=true", "trainer.micro_batch_size=1",
            "rollout.max_turns=50", "rollout.max_new_tokens=1024", "rollout.max_total_tokens=12288",
            "rollout.max_batch_size=8", "plan.gpu_memory_gb=80", "plan.host_memory_gb=192"]


def _meta_model(config: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))


@pytest.mark.parametrize("name", SHIPPED)
def test_parameter_count_is_the_models(name):
    with open(os.path.join(MODEL_CONFIGS, name)) as f:
        config = json.load(f)
    lm = _meta_model(config)
    assert ModelShape.from_config(config).parameters() == sum(p.numel() for p in lm.parameters())


def test_lora_parameter_count_is_pefts():
    from orchestra_ray.policy.lora import apply_lora

    config = load_config(QUICKSTART, [])
    shape_cfg = model_config(config)  # the tiny policy's widths
    lm = apply_lora(_meta_model(shape_cfg), 8, 16.0, 0.0, ["q_proj", "v_proj", "down_proj"])
    trained = sum(p.numel() for p in lm.parameters() if p.requires_grad)
    assert ModelShape.from_config(shape_cfg).lora_parameters(8, ["q_proj", "v_proj", "down_proj"]) == trained


def test_a_group_shards_the_training_state():
    shape = ModelShape.from_config(json.load(open(os.path.join(MODEL_CONFIGS, "Qwen__Qwen3-8B.json"))))
    parts = lambda n: {i.part: i.bytes for i in plan(shape, Layout(num_learners=n, learner_device="cuda")).items}
    one, eight = parts(1), parts(8)
    for part in ("parameters", "gradients", "AdamW state (2 moments)"):
        assert eight[part] == pytest.approx(one[part] / 8)
    # 16 bytes per parameter in float32 (weights, gradients, two moments): the ~130 GB that needs a group
    assert sum(one[p] for p in ("parameters", "gradients", "AdamW state (2 moments)")) == pytest.approx(131e9, rel=0.01)


def test_plan_refuses_qwen3_8b_full_parameter_on_one_80gb_gpu(capsys):
    assert main(["plan", *QWEN3_8B]) == 1
    out, err = capsys.readouterr()
    assert "8.19B parameters" in out and "does not fit" in out
    assert "learner rank" in err and "> 80.0 GB of one GPU" in err
    assert "trainer.num_learners" in err and "trainer.lora.rank" in err


@pytest.mark.parametrize("fix", [["trainer.lora.rank=16", "policy.dtype=bfloat16"],
                                 ["trainer.num_learners=8", "trainer.mixed_precision=bfloat16"]], ids=["lora", "learner-group-of-8"])
def test_plan_accepts_qwen3_8b_with_lora_or_a_group_of_8(fix, capsys):
    assert main(["plan", *QWEN3_8B, *fix]) == 0
    assert capsys.readouterr().out.rstrip().endswith("fits")


def test_train_refuses_what_cannot_fit_before_any_actor_starts(tmp_path, capsys):
    import ray

    code = main(["train", "quickstart", f"run.root={tmp_path}", "plan.host_memory_gb=1"])
    err = capsys.readouterr().err
    assert code == 2 and "this config cannot fit" in err and "GB of host memory" in err
    assert not ray.is_initialized() and not os.listdir(tmp_path), "nothing started, no run directory"


def test_a_model_without_a_config_is_named():
    cfg = load_config(QUICKSTART, ["policy.model=acme/unknown-model"])
    with pytest.raises(Exception, match="policy.model=acme/unknown-model.*plan.model_config"):
        model_config(cfg)


def test_the_layout_reads_the_run_config():
    cfg = load_config(QUICKSTART, ["trainer.num_learners=2", "trainer.lora.rank=4", "trainer.kl_coef=0",
                             "rollout.max_turns=3", "rollout.max_new_tokens=10"])
    lay = layout(cfg, host=24 * GB)
    assert (lay.num_learners, lay.lora_rank, lay.reference, lay.policy_tokens) == (2, 4, False, 30)

"""The run's memory plan from its config: which model, what goes where, how much memory each device
has; `orchestra-ray plan` prints it and `train` refuses a config that cannot fit before any actor
starts (orchestra_ray/policy/memory_plan.py has the counts)."""

from __future__ import annotations

import json
import os
from typing import Dict, Optional

from orchestra_ray.config import MODEL_CONFIGS, OrchestraConfig
from orchestra_ray.errors import ConfigError
from orchestra_ray.policy import pretrained
from orchestra_ray.policy.memory_plan import GB, Layout, ModelShape, Plan, plan, table


class ModelConfigMissing(ConfigError):
    """The policy's config.json is not on this machine: no plan can be made (a run starts without one)."""


def model_config(cfg: OrchestraConfig) -> Dict:
    """The policy's HF config as a dict, with no download: plan.model_config, the tiny model's
    widths, a local model folder, a config the package ships, or the Hugging Face cache."""
    p = cfg.policy
    if cfg.plan.model_config:
        return _read_json(cfg.plan.model_config, "plan.model_config")
    if p.model == "tiny":
        t = p.tiny
        return {"model_type": "qwen3", "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
                "intermediate_size": t.intermediate_size, "num_hidden_layers": t.num_hidden_layers,
                "num_attention_heads": t.num_attention_heads, "num_key_value_heads": t.num_key_value_heads,
                "head_dim": t.head_dim, "tie_word_embeddings": True}
    local = os.path.join(p.model, "config.json")
    if os.path.isfile(local):
        return _read_json(local, "policy.model")
    shipped = os.path.join(MODEL_CONFIGS, (pretrained.hf_config_id(p.model) or p.model).replace("/", "__") + ".json")
    if os.path.isfile(shipped):
        return _read_json(shipped, "policy.model")
    try:  # no download here: a plan must not wait on a network
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(p.model, local_files_only=True).to_dict()
    except Exception:
        raise ModelConfigMissing(f"policy.model={p.model}: its config.json is neither a local folder, one this package ships "
                          f"({', '.join(sorted(f[:-5].replace('__', '/') for f in os.listdir(MODEL_CONFIGS) if f.endswith('.json')))}) "
                          f"nor in the Hugging Face cache; give plan.model_config=PATH/config.json") from None


def _read_json(path: str, key: str) -> Dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{key}: {path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}: {path} is not a JSON model config ({exc})") from None


def device_memory(cfg: OrchestraConfig, address: Optional[str] = None) -> tuple:
    """(GPU bytes, host bytes): as configured, else what this machine shows where it is the one
    that runs the actors (an embedded cluster; a GPU the driver sees, read through nvidia-smi so
    that the driver holds no CUDA context on it)."""
    gpu = cfg.plan.gpu_memory_gb * GB if cfg.plan.gpu_memory_gb else None
    host = cfg.plan.host_memory_gb * GB if cfg.plan.host_memory_gb else None
    if gpu is None and cfg.policy.device.startswith("cuda"):
        gpu = _nvidia_smi_bytes()
    embedded = address is None and cfg.cluster.address is None and not os.environ.get("RAY_ADDRESS")
    if host is None and embedded:
        import psutil

        host = float(psutil.virtual_memory().total)
    return gpu, host


def _nvidia_smi_bytes() -> Optional[float]:
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
        return float(out.stdout.split()[0]) * 2**20 if out.returncode == 0 and out.stdout.split() else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def layout(cfg: OrchestraConfig, gpu: Optional[float] = None, host: Optional[float] = None) -> Layout:
    t, r, p = cfg.trainer, cfg.rollout, cfg.policy
    device = "cuda" if p.device.startswith("cuda") else "cpu"
    workers = max(r.num_workers, r.autoscale.max_workers if r.autoscale.enabled else 0)
    return Layout(
        num_learners=t.num_learners, learner_device=device, param_dtype=p.dtype,
        compute_dtype="bfloat16" if t.mixed_precision == "bfloat16" else p.dtype,
        cpu_offload=t.cpu_offload, gradient_checkpointing=t.gradient_checkpointing,
        micro_batch_size=t.micro_batch_size, max_tokens_per_micro_batch=t.max_tokens_per_micro_batch, seq_len=r.max_total_tokens,
        policy_tokens=min(r.max_total_tokens, r.max_turns * r.max_new_tokens),
        lora_rank=t.lora.rank, lora_targets=tuple(t.lora.target_modules), reference=t.kl_coef > 0,
        engine=p.engine, engine_dtype=r.dtype or p.dtype, rollout_device=device, rollout_workers=workers, engine_batch=r.max_batch_size,
        engine_memory_fraction=float(dict(p.vllm).get("gpu_memory_utilization", 0.9)), gpu_bytes=gpu, host_bytes=host)


def run_plan(cfg: OrchestraConfig, address: Optional[str] = None) -> Plan:
    gpu, host = device_memory(cfg, address)
    config = model_config(cfg)
    try:
        return plan(ModelShape.from_config(config), layout(cfg, gpu, host))
    except (ValueError, TypeError, KeyError, ZeroDivisionError, AttributeError) as exc:
        raise ConfigError(f"memory plan: the model config is not a decoder's ({type(exc).__name__}: {exc})") from None


def refusal(p: Plan) -> str:
    """The one line a run that cannot fit stops with."""
    return (f"this config cannot fit: {'; '.join(p.problems)}; change {', '.join(p.advice)} "
            f"(`orchestra-ray plan` prints the plan; plan.enforce=false starts anyway)")


def check_plan(cfg: OrchestraConfig, note=print, address: Optional[str] = None) -> Optional[Plan]:
    """Before any actor starts: refuse (ConfigError) a config that cannot fit, unless plan.enforce is
    off (then a plan that cannot be made, or does not fit, is a line and the run starts)."""
    try:
        p = run_plan(cfg, address)
    except ModelConfigMissing as exc:  # nothing to plan with: the run downloads the model itself
        note(f"memory plan: not made, {exc}")
        return None
    except ConfigError as exc:
        if cfg.plan.enforce:
            raise
        note(f"memory plan: {exc}; starting anyway (plan.enforce=false)")
        return None
    if not p.fits:
        if cfg.plan.enforce:
            raise ConfigError(refusal(p))
        note(f"memory plan: {refusal(p)}; starting anyway (plan.enforce=false)")
    return p


__all__ = ["check_plan", "layout", "model_config", "refusal", "run_plan", "table"]

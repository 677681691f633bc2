"""Structured run configuration (OmegaConf dataclasses) and its validation.

Every key a run reads is declared here, so an unknown key or a wrong type is caught by OmegaConf
before any actor starts, and `validate` adds the checks a type cannot express.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from orchestra_ray.preferences import PreferenceError, profile_vector


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the key or file."""


@dataclass
class RunConfig:
    root: str = "runs"
    name: Optional[str] = None  # default: <config name>-<timestamp>
    seed: int = 0


@dataclass
class ClusterConfig:
    address: Optional[str] = None  # None: embedded local cluster (or RAY_ADDRESS if set)
    num_cpus: Optional[int] = None  # embedded cluster only; None sizes it to the machine
    namespace: str = "orchestra-ray"


@dataclass
class DataConfig:
    path: str = "${oc.env:ORCHESTRA_RAY_FRAMES,../shared/data/frames_replay}"
    heldout_fraction: float = 0.2
    max_train_questions: Optional[int] = None
    max_heldout_questions: Optional[int] = None


@dataclass
class ExpertSlotConfig:
    name: str = "???"  # slot name the policy uses
    arm: str = "???"  # recorded arm that answers for this slot
    description: str = ""
    input_price: float = 0.0  # USD per 1M input tokens
    output_price: float = 0.0  # USD per 1M output tokens
    output_tokens_per_s: float = 100.0
    time_to_first_token_s: float = 0.5


@dataclass
class ZooConfig:
    experts: List[ExpertSlotConfig] = field(default_factory=list)
    strongest: str = "???"  # the slot the warm-start demonstrations always ask
    input_tokens_overhead: int = 40  # instructions sent with each question, in tokens
    max_response_chars: int = 300  # expert text shown to the policy is cut here


@dataclass
class TinyModelConfig:
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    max_position_embeddings: int = 2048
    seed: int = 0
    # Language-model pre-training on the project's own text, so the base model knows the tool-call
    # syntax and every expert's name before the warm start (a real base model knows far more).
    pretrain_steps: int = 300
    pretrain_seq_len: int = 128
    pretrain_batch_size: int = 16
    pretrain_lr: float = 3e-3


@dataclass
class PolicyConfig:
    model: str = "tiny"  # "tiny": build the project's tiny Qwen3; else a HF model id or path
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    cache_dir: str = ".cache/orchestra-ray"
    dtype: str = "float32"
    device: str = "cpu"


@dataclass
class RolloutConfig:
    num_workers: int = 2
    group_size: int = 8
    tasks_per_step: int = 16
    max_turns: int = 4
    max_new_tokens: int = 48  # per policy turn
    max_total_tokens: int = 1536  # per episode, prompt included
    temperature: float = 1.0
    max_batch_size: int = 64  # sequences per generate call
    num_cpus_per_worker: float = 0.5
    num_gpus_per_worker: float = 0.0
    torch_threads: int = 1


@dataclass
class RewardConfig:
    std_normalize: bool = True  # False: Dr.GRPO advantages (R - mean)
    eps: float = 1e-6
    filter_zero_variance: bool = True
    filter_format_errors: bool = False
    filter_no_answer: bool = False


@dataclass
class PreferenceConfig:
    train_profiles: List[str] = field(
        default_factory=lambda: ["balanced", "accuracy-first", "cost-first", "latency-first"]
    )
    eval_profiles: List[str] = field(default_factory=lambda: ["balanced", "accuracy-first", "cost-first"])


@dataclass
class TrainerConfig:
    steps: int = 30
    lr: float = 1e-6
    weight_decay: float = 0.0
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 1e-4
    max_grad_norm: float = 1.0
    epochs: int = 1  # passes over each step's batch
    mini_batches: int = 1  # optimizer steps per pass
    micro_batch_size: int = 16  # sequences per forward pass (memory bound)
    checkpoint_every: int = 10
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    torch_threads: int = 2


@dataclass
class WarmStartConfig:
    enabled: bool = True
    examples: int = 256
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 16


@dataclass
class EvalConfig:
    enabled: bool = True
    temperature: float = 0.0  # 0: greedy
    bootstrap_samples: int = 2000


@dataclass
class OrchestraConfig:
    run: RunConfig = field(default_factory=RunConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    zoo: ZooConfig = field(default_factory=ZooConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    preferences: PreferenceConfig = field(default_factory=PreferenceConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _explain(exc: OmegaConfBaseException, source: str) -> str:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or ""
    if not key and source.startswith("override '"):
        key = source[len("override '") :].split("=")[0]
    msg = str(exc).splitlines()[0]
    if isinstance(exc, ConfigKeyError):
        return f"unknown config key '{key}' in {source}"
    if isinstance(exc, ValidationError):
        return f"wrong type for config key '{key}' in {source}: {msg}"
    return f"invalid config in {source} at '{key}': {msg}"


def load_config(path: Optional[str] = None, overrides: Optional[List[str]] = None) -> OrchestraConfig:
    """Merge the schema, a YAML file and dotted `key=value` overrides; raise ConfigError on any problem."""
    cfg = OmegaConf.structured(OrchestraConfig)
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file not found: {path}")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        except OmegaConfBaseException as exc:
            raise ConfigError(_explain(exc, path)) from None
        except Exception as exc:  # YAML syntax errors
            raise ConfigError(f"cannot parse config file {path}: {str(exc).splitlines()[0]}") from None
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as exc:
            raise ConfigError(_explain(exc, f"override '{item}'")) from None
        except TypeError:
            # from_dotlist reads `a.0.b` as a dict key; set list elements in place instead.
            key, _, value = item.partition("=")
            try:
                OmegaConf.update(cfg, key, OmegaConf.from_dotlist([f"v={value}"]).v, merge=True)
            except OmegaConfBaseException as exc:
                raise ConfigError(_explain(exc, f"override '{item}'")) from None
    try:
        OmegaConf.resolve(cfg)
        missing = sorted(OmegaConf.missing_keys(cfg))
    except OmegaConfBaseException as exc:
        raise ConfigError(_explain(exc, path or "config")) from None
    if missing:
        raise ConfigError(f"missing value for config key '{missing[0]}'")
    obj = OmegaConf.to_object(cfg)
    validate(obj)
    return obj


def _require(ok: bool, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"invalid value for config key '{key}': {why}")


def validate(cfg: OrchestraConfig) -> None:
    """Checks that a type cannot express; each failure names its key."""
    r, t = cfg.rollout, cfg.trainer
    _require(r.group_size >= 2, "rollout.group_size", "GRPO needs at least 2 samples per task")
    _require(r.tasks_per_step >= 1, "rollout.tasks_per_step", "must be at least 1")
    _require(r.num_workers >= 1, "rollout.num_workers", "must be at least 1")
    _require(r.max_turns >= 1, "rollout.max_turns", "must be at least 1")
    _require(r.max_new_tokens >= 1, "rollout.max_new_tokens", "must be at least 1")
    _require(r.temperature >= 0, "rollout.temperature", "must not be negative")
    _require(t.lr > 0, "trainer.lr", "must be positive")
    _require(t.steps >= 0, "trainer.steps", "must not be negative")
    _require(0 <= t.clip_low < 1, "trainer.clip_low", "must be in [0, 1)")
    _require(t.clip_high >= 0, "trainer.clip_high", "must not be negative")
    _require(t.kl_coef >= 0, "trainer.kl_coef", "must not be negative")
    _require(t.mini_batches >= 1, "trainer.mini_batches", "must be at least 1")
    _require(t.micro_batch_size >= 1, "trainer.micro_batch_size", "must be at least 1")
    _require(t.checkpoint_every >= 1, "trainer.checkpoint_every", "must be at least 1")
    _require(
        (r.tasks_per_step * r.group_size) % t.mini_batches == 0,
        "trainer.mini_batches",
        "must divide rollout.tasks_per_step * rollout.group_size",
    )
    _require(0 < cfg.data.heldout_fraction < 1, "data.heldout_fraction", "must be in (0, 1)")
    _require(cfg.warm_start.lr > 0, "warm_start.lr", "must be positive")
    names = [e.name for e in cfg.zoo.experts]
    _require(len(names) >= 1, "zoo.experts", "the zoo needs at least one expert")
    _require(len(set(names)) == len(names), "zoo.experts", f"slot names repeat: {names}")
    for i, e in enumerate(cfg.zoo.experts):
        _require(e.input_price >= 0 and e.output_price >= 0, f"zoo.experts.{i}", "prices must not be negative")
        _require(e.output_tokens_per_s > 0, f"zoo.experts.{i}.output_tokens_per_s", "must be positive")
    _require(cfg.zoo.strongest in names, "zoo.strongest", f"'{cfg.zoo.strongest}' is not a slot of zoo.experts")
    # Profiles are parsed here so that a typo fails before the cluster starts.
    for key in ("train_profiles", "eval_profiles"):
        profiles = getattr(cfg.preferences, key)
        _require(len(profiles) >= 1, f"preferences.{key}", "needs at least one profile")
        for p in profiles:
            try:
                profile_vector(p, names)
            except PreferenceError as exc:
                raise ConfigError(f"invalid value for config key 'preferences.{key}': {exc}") from None

"""Reading a run configuration: the schema (`config.py`), a YAML file (with the files it `extends`)
and dotted `key=value` overrides merged, then the checks a type cannot express; every problem a
`ConfigError` naming its key or file. Also the config's paths, made absolute for a run to record."""

from __future__ import annotations

import math
import os
import re
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from orchestra_ray.config import (DEMONSTRATORS, DOMAIN_NAMES, EXPERT_BACKENDS, FAMILIES, MIXED_PRECISION,
                                  PLACEMENT_STRATEGIES, TOKEN_LIMIT_PARAMS, WEIGHT_TRANSPORTS, ExpertSlotConfig, FamiliesConfig,
                                  OrchestraConfig, ToolsConfig, serve_route_prefix)
from orchestra_ray.errors import ConfigError
from orchestra_ray.grpo.preferences import PreferenceError, check_weights, profile_vector
from orchestra_ray.tools.settings import validate_sandbox_config, validate_search_config
from orchestra_ray.tracking.settings import validate_logging_config


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


def _yaml_layers(path: str, seen: tuple = ()) -> list:
    """The YAML file and, first, the files it `extends` (a path relative to it), base first."""
    if path in seen:
        raise ConfigError(f"config file {path} extends itself (through {' -> '.join(seen)})")
    layer = OmegaConf.load(path)
    base = layer.pop("extends", None) if hasattr(layer, "pop") else None
    if base is None:
        return [layer]
    base_path = os.path.join(os.path.dirname(path), str(base))
    if not os.path.isfile(base_path):
        raise ConfigError(f"config file {path} extends {base}, which is not found at {base_path}")
    return _yaml_layers(base_path, seen + (path,)) + [layer]


def load_config(path: Optional[str] = None, overrides: Optional[List[str]] = None) -> OrchestraConfig:
    """Merge the schema, a YAML file and dotted `key=value` overrides; raise ConfigError on any problem."""
    cfg = OmegaConf.structured(OrchestraConfig)
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file not found: {path}")
        try:
            for layer in _yaml_layers(path):
                cfg = OmegaConf.merge(cfg, layer)
        except ConfigError:
            raise
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


def path_keys(cfg: OrchestraConfig) -> List[Tuple[str, str]]:
    """(key, value) of every config key that names a file or directory on this machine."""
    t, p = cfg.tools, cfg.policy
    paths: List[Tuple[str, str]] = [
        ("run.root", cfg.run.root), ("data.path", cfg.data.path), ("policy.cache_dir", p.cache_dir),
        ("tools.search.corpus", t.search.corpus), ("tools.search.cache_dir", t.search.cache_dir),
        ("tools.sandbox.python", t.sandbox.python),
    ]
    if cfg.logging.tensorboard.dir:
        paths.append(("logging.tensorboard.dir", cfg.logging.tensorboard.dir))
    if os.sep in t.sandbox.bwrap:  # a bare name is looked up on PATH
        paths.append(("tools.sandbox.bwrap", t.sandbox.bwrap))
    # Model fields hold a hub id or a local path; only a path that exists here is a path.
    if p.model != "tiny" and os.path.exists(p.model):
        paths.append(("policy.model", p.model))
    for i, e in enumerate(cfg.zoo.experts):
        if e.backend == "serve" and e.model and os.path.exists(e.model):
            paths.append((f"zoo.experts.{i}.model", e.model))
    return paths


def relative_paths(cfg: OrchestraConfig) -> Dict[str, str]:
    """Each path key whose value is relative, with its absolute value from this directory."""
    return {key: os.path.abspath(value) for key, value in path_keys(cfg) if value and not os.path.isabs(value)}


def make_paths_absolute(cfg: OrchestraConfig) -> OrchestraConfig:
    """Resolve every relative path key against this directory, so that the config a run records
    (and `orchestra-ray eval RUN` reads back) means the same from any directory."""
    for key, value in relative_paths(cfg).items():
        *parents, last = key.split(".")
        node: Any = cfg
        for part in parents:
            node = node[int(part)] if part.isdigit() else getattr(node, part)
        setattr(node, last, value)
    return cfg


def _require(ok: bool, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"invalid value for config key '{key}': {why}")


_ROUTE = re.compile(r"^/[A-Za-z0-9._~/-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _validate_slot(e: ExpertSlotConfig, key: str) -> None:
    _require(e.backend in EXPERT_BACKENDS, f"{key}.backend", f"'{e.backend}' is not one of {', '.join(EXPERT_BACKENDS)}")
    for price in ("input_price", "output_price"):
        value = getattr(e, price)
        _require(value is None or value >= 0, f"{key}.{price}", "must not be negative")
    _require(e.output_tokens_per_s > 0, f"{key}.output_tokens_per_s", "must be positive")
    _require(e.time_to_first_token_s >= 0, f"{key}.time_to_first_token_s", "must not be negative")
    if e.backend == "replay":
        _require(bool(e.arm), f"{key}.arm", "a replay slot needs the recorded arm that answers for it")
        return
    _require(bool(e.model), f"{key}.model", f"a '{e.backend}' slot needs the model it calls")
    _require(e.timeout_s > 0, f"{key}.timeout_s", "must be positive")
    _require(e.max_retries >= 0, f"{key}.max_retries", "must not be negative")
    _require(e.max_output_tokens is None or e.max_output_tokens >= 1, f"{key}.max_output_tokens", "must be at least 1")
    # The value is not echoed: a key pasted here by mistake must not reach a log.
    _require(e.api_key_env is None or bool(_ENV_NAME.match(e.api_key_env)), f"{key}.api_key_env",
             "must be the name of an environment variable (letters, digits, _), not the key itself")
    if e.backend == "openai":
        _require(e.token_limit_param in (None, *TOKEN_LIMIT_PARAMS), f"{key}.token_limit_param",
                 f"must be one of {', '.join(TOKEN_LIMIT_PARAMS)}, got {e.token_limit_param!r}")
        _require(bool(e.base_url), f"{key}.base_url", "an 'openai' slot needs the endpoint's base URL")
        _require(str(e.base_url).startswith(("http://", "https://")), f"{key}.base_url", "must start with http:// or https://")
        return
    _require(e.base_url is None, f"{key}.base_url", "a 'serve' slot is called at its own deployment's URL; leave it unset")
    s, sk = e.serve, f"{key}.serve"
    _require(s.num_cpus >= 0, f"{sk}.num_cpus", "must not be negative")
    _require(s.num_gpus >= 0, f"{sk}.num_gpus", "must not be negative")
    _require(s.min_replicas >= 1, f"{sk}.min_replicas", "must be at least 1 (a replica loads the model before the first call)")
    _require(s.max_replicas >= s.min_replicas, f"{sk}.max_replicas", "must be at least serve.min_replicas")
    _require(s.target_ongoing_requests > 0, f"{sk}.target_ongoing_requests", "must be positive")
    _require(s.max_new_tokens >= 1, f"{sk}.max_new_tokens", "must be at least 1")
    route = serve_route_prefix(e.name, e.serve)
    _require(bool(_ROUTE.match(route)) and (route == "/" or not route.endswith("/")), f"{sk}.route_prefix",
             f"'{route}' must start with '/', not end with '/', and use only letters, digits and . _ ~ - /")


# Float keys where infinity means something (stated in the key's comment in config.py); every other
# number of the config must be finite: `inf` or `1e400` as a temperature, a price or a back-off
# would only break a run later (a lost batch never re-issued, non-finite weights written).
INFINITY_ALLOWED = {"trainer.clip_high": "no upper clip of the ratio"}


def _numbers(node: Any, key: str = ""):
    """(dotted key, value) of every float below `node` (dataclasses, dicts, lists)."""
    if isinstance(node, float):
        yield key, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _numbers(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _numbers(v, f"{key}.{i}")
    elif hasattr(node, "__dataclass_fields__"):
        for k in node.__dataclass_fields__:
            yield from _numbers(getattr(node, k), f"{key}.{k}" if key else k)


def _validate_finite(cfg: OrchestraConfig) -> None:
    for key, value in _numbers(cfg):
        if math.isnan(value) or (math.isinf(value) and not (value > 0 and key in INFINITY_ALLOWED)):
            _require(False, key, f"must be a finite number, got {value}")


def check_run_root(root: str) -> None:
    """Before a run writes: run.root is a directory, or can be made one (its nearest existing
    ancestor is a writable directory)."""
    here = os.path.abspath(root or ".")
    while not os.path.exists(here):
        here = os.path.dirname(here)
    _require(os.path.isdir(here), "run.root", f"{here} is a file, not a directory" + ("" if here == os.path.abspath(root)
                                                                                       else f" (on the way to {root})"))
    _require(os.access(here, os.W_OK | os.X_OK), "run.root", f"{here} is not writable")


def validate(cfg: OrchestraConfig) -> None:
    """Checks that a type cannot express; each failure names its key."""
    _validate_finite(cfg)
    r, t = cfg.rollout, cfg.trainer
    _require(cfg.policy.engine in ("hf", "vllm"), "policy.engine", f"'{cfg.policy.engine}' is not an engine (hf or vllm)")
    _require(cfg.policy.tiny.pretrain_windows in ("packed", "document"), "policy.tiny.pretrain_windows",
             f"'{cfg.policy.tiny.pretrain_windows}' is not a window choice (packed or document)")
    _require(r.group_size >= 2, "rollout.group_size", "GRPO needs at least 2 samples per task")
    _require(r.tasks_per_step >= 1, "rollout.tasks_per_step", "must be at least 1")
    _require(r.num_workers >= 1, "rollout.num_workers", "must be at least 1")
    _require(r.max_turns >= 1, "rollout.max_turns", "must be at least 1")
    _require(r.max_new_tokens >= 1, "rollout.max_new_tokens", "must be at least 1")
    _require(r.temperature >= 0, "rollout.temperature", "must not be negative")
    _require(r.max_batch_retries >= 0, "rollout.max_batch_retries", "must not be negative")
    _require(r.retry_backoff_s >= 0, "rollout.retry_backoff_s", "must not be negative")
    _require(r.max_staleness >= 0, "rollout.max_staleness", "must not be negative (0: synchronous)")
    _require(r.batch_timeout_s >= 0, "rollout.batch_timeout_s", "must not be negative (0: no limit)")
    a = r.autoscale
    if a.enabled:
        _require(a.min_workers >= 1, "rollout.autoscale.min_workers", "must be at least 1")
        _require(a.max_workers >= a.min_workers, "rollout.autoscale.max_workers", "must be at least rollout.autoscale.min_workers")
        _require(a.min_workers <= r.num_workers <= a.max_workers, "rollout.num_workers",
                 f"the starting size {r.num_workers} must lie within rollout.autoscale.min_workers..max_workers")
        _require(a.groups_per_worker >= 1, "rollout.autoscale.groups_per_worker", "must be at least 1")
        _require(a.idle_timeout_s >= 0, "rollout.autoscale.idle_timeout_s", "must not be negative")
    for key, res in (("rollout.resources", r.resources), ("trainer.resources", t.resources)):
        for name, amount in res.items():
            _require(name not in ("CPU", "GPU", "memory"), f"{key}.{name}", "set CPUs and GPUs with their own keys")
            _require(amount > 0, f"{key}.{name}", "must be positive")
    _require(t.lr > 0, "trainer.lr", "must be positive")
    _require(t.steps >= 0, "trainer.steps", "must not be negative")
    _require(0 <= t.clip_low < 1, "trainer.clip_low", "must be in [0, 1)")
    _require(t.clip_high >= 0, "trainer.clip_high", "must not be negative")
    _require(t.kl_coef >= 0, "trainer.kl_coef", "must not be negative")
    _require(t.mini_batches >= 1, "trainer.mini_batches", "must be at least 1")
    _require(t.micro_batch_size >= 1, "trainer.micro_batch_size", "must be at least 1")
    _require(t.max_tokens_per_micro_batch >= 0, "trainer.max_tokens_per_micro_batch",
             f"must not be negative (0: padded micro-batches of trainer.micro_batch_size), got {t.max_tokens_per_micro_batch}")
    _require(t.checkpoint_every >= 1, "trainer.checkpoint_every", "must be at least 1")
    _require(t.placement_strategy in PLACEMENT_STRATEGIES, "trainer.placement_strategy",
             f"must be one of {', '.join(PLACEMENT_STRATEGIES)}, got {t.placement_strategy!r}")
    _require(t.mixed_precision in MIXED_PRECISION, "trainer.mixed_precision",
             f"must be one of {', '.join(MIXED_PRECISION)}, got {t.mixed_precision!r}")
    for key, dtype in (("policy.dtype", cfg.policy.dtype), ("rollout.dtype", r.dtype or cfg.policy.dtype)):
        _require(dtype in ("float32", "bfloat16", "float16", "float64"), key,
                 f"must be float32, bfloat16, float16 or float64, got {dtype!r}")
    _require(cfg.weights.transport in WEIGHT_TRANSPORTS, "weights.transport",
             f"must be one of {', '.join(WEIGHT_TRANSPORTS)}, got {cfg.weights.transport!r}")
    lo = t.lora
    _require(lo.rank >= 0, "trainer.lora.rank", f"must not be negative (0: full-parameter training), got {lo.rank}")
    if lo.rank > 0:
        _require(0 < lo.alpha < float("inf"), "trainer.lora.alpha", f"must be a positive finite number, got {lo.alpha}")
        _require(0 <= lo.dropout < 1, "trainer.lora.dropout", f"must be in [0, 1), got {lo.dropout}")
        _require(len(lo.target_modules) > 0, "trainer.lora.target_modules", "needs at least one module name (q_proj, ...)")
    _require(lo.publish in ("merged", "adapter"), "trainer.lora.publish", f"must be merged or adapter, got {lo.publish!r}")
    _require(lo.publish == "merged" or lo.rank > 0, "trainer.lora.publish",
             "adapter needs LoRA training (trainer.lora.rank > 0)")
    if t.num_learners == 1:  # these shape a sharded learner: one learner would silently ignore them
        _require(not t.cpu_offload, "trainer.cpu_offload", "offloads a sharded learner's state: set trainer.num_learners >= 2")
        _require(t.mixed_precision == "none", "trainer.mixed_precision",
                 "is the compute dtype of a sharded learner: set trainer.num_learners >= 2 (one learner computes in policy.dtype)")
    else:
        _require(t.num_cpus > 0 or t.num_gpus > 0, "trainer.num_cpus",
                 "a learner rank needs CPUs or GPUs to place (trainer.num_cpus or trainer.num_gpus above 0)")
        _require(t.num_gpus == int(t.num_gpus), "trainer.num_gpus",
                 f"must be a whole number with trainer.num_learners > 1 (NCCL takes one process per GPU), got {t.num_gpus}")
    _require(
        (r.tasks_per_step * r.group_size) % t.mini_batches == 0,
        "trainer.mini_batches",
        "must divide rollout.tasks_per_step * rollout.group_size",
    )
    _require(0 < cfg.data.heldout_fraction < 1, "data.heldout_fraction", "must be in (0, 1)")
    _require(cfg.warm_start.lr > 0, "warm_start.lr", "must be positive")
    _require(cfg.warm_start.demonstrator in DEMONSTRATORS, "warm_start.demonstrator",
             f"must be one of {', '.join(DEMONSTRATORS)}, got {cfg.warm_start.demonstrator!r}")
    _require(math.isfinite(cfg.warm_start.demonstrator_temperature) and cfg.warm_start.demonstrator_temperature >= 0,
             "warm_start.demonstrator_temperature", "must be a finite number >= 0")
    _require(0 <= cfg.warm_start.multi_call_share < 1, "warm_start.multi_call_share",
             f"must be in [0, 1), got {cfg.warm_start.multi_call_share}")
    _validate_ranges(cfg)
    names = [e.name for e in cfg.zoo.experts]
    _require(len(names) >= 1, "zoo.experts", "the zoo needs at least one expert")
    _require(len(set(names)) == len(names), "zoo.experts", f"slot names repeat: {names}")
    routes = set()
    for i, e in enumerate(cfg.zoo.experts):
        _validate_slot(e, f"zoo.experts.{i}")
        if e.backend == "serve":
            route = serve_route_prefix(e.name, e.serve)
            _require(route not in routes, f"zoo.experts.{i}.serve.route_prefix", f"'{route}' is used by another slot")
            routes.add(route)
    from orchestra_ray.experts.pricing import PriceTable

    PriceTable.from_slots(cfg.zoo.experts)  # a model without a known price fails here, before any actor
    _require(cfg.zoo.strongest in names, "zoo.strongest", f"'{cfg.zoo.strongest}' is not a slot of zoo.experts")
    _validate_families(cfg.families)
    for name, n in cfg.warm_start.family_examples.items():
        key = f"warm_start.family_examples.{name}"
        _require(name in FAMILIES, key, f"unknown task family (known: {', '.join(FAMILIES)})")
        _require(isinstance(n, int) and not isinstance(n, bool) and n >= 0, key, f"must be a non-negative integer, got {n!r}")
    _validate_tools(cfg.tools)
    try:
        validate_logging_config(cfg.logging)
    except ValueError as exc:
        raise ConfigError(f"invalid config: {exc}") from None
    # Profiles are parsed here so that a typo fails before the cluster starts.
    own = cfg.preferences.weights
    for p, w in own.items():
        try:
            check_weights(p, w, names)
        except PreferenceError as exc:
            raise ConfigError(f"invalid value for config key 'preferences.weights.{p}': {exc}") from None
    for key in ("train_profiles", "eval_profiles"):
        profiles = getattr(cfg.preferences, key)
        _require(len(profiles) >= 1, f"preferences.{key}", "needs at least one profile")
        for p in profiles:
            try:
                profile_vector(p, names, own)
            except PreferenceError as exc:
                raise ConfigError(f"invalid value for config key 'preferences.{key}': {exc}") from None


# Counts, sizes and rates outside these bounds would only fail deep inside a worker, or train nothing.
_AT_LEAST_ONE = ("trainer.num_learners", "rollout.max_total_tokens", "rollout.max_batch_size", "rollout.torch_threads", "trainer.epochs",
                 "rollout.kv_cache_max_tokens",
                 "trainer.torch_threads", "warm_start.epochs", "warm_start.batch_size", "eval.bootstrap_samples",
                 "zoo.max_response_chars", "policy.tiny.vocab_size", "policy.tiny.hidden_size",
                 "policy.tiny.intermediate_size", "policy.tiny.num_hidden_layers", "policy.tiny.num_attention_heads",
                 "policy.tiny.num_key_value_heads", "policy.tiny.head_dim", "policy.tiny.max_position_embeddings",
                 "policy.tiny.pretrain_seq_len", "policy.tiny.pretrain_batch_size", "cluster.num_cpus",
                 "data.max_train_questions", "data.max_heldout_questions")  # unset (null): no cap
_NOT_NEGATIVE = ("policy.tiny.pretrain_steps", "families.domain.lookup_repeats", "warm_start.examples", "zoo.input_tokens_overhead",
                 "rollout.num_cpus_per_worker", "rollout.num_gpus_per_worker", "trainer.num_cpus", "trainer.num_gpus",
                 "trainer.weight_decay", "reward.eps", "eval.temperature")
_FINITE_POSITIVE = ("trainer.lr", "warm_start.lr", "policy.tiny.pretrain_lr", "trainer.max_grad_norm",
                    "trainer.collective_timeout_s", "trainer.publish_bucket_mb", "weights.bucket_mb", "weights.timeout_s")


def _validate_ranges(cfg: OrchestraConfig) -> None:
    for keys, ok, why in ((_AT_LEAST_ONE, lambda v: v >= 1, "must be at least 1"),
                          (_NOT_NEGATIVE, lambda v: v >= 0, "must not be negative"),
                          (_FINITE_POSITIVE, lambda v: 0 < v < float("inf"), "must be a positive finite number")):
        for key in keys:
            value = cfg
            for part in key.split("."):
                value = getattr(value, part)
            _require(value is None or ok(value), key, f"{why}, got {value}")


def _validate_families(f: FamiliesConfig) -> None:
    for name, w in f.weights.items():
        _require(name in FAMILIES, f"families.weights.{name}", f"unknown task family (known: {', '.join(FAMILIES)})")
        _require(w >= 0, f"families.weights.{name}", "must not be negative")
    _require(sum(f.weights.values()) > 0, "families.weights", "at least one family needs a positive weight")
    _require(f.max_heldout >= 0, "families.max_heldout", "must not be negative")
    _require(f.arithmetic.problems >= 2, "families.arithmetic.problems", "must be at least 2")
    _require(f.domain.tasks_per_domain >= 1, "families.domain.tasks_per_domain", "must be at least 1")
    for name in f.domain.names:
        _require(name in DOMAIN_NAMES, "families.domain.names", f"unknown domain '{name}' (known: {', '.join(DOMAIN_NAMES)})")


def _validate_tools(t: ToolsConfig) -> None:
    try:
        validate_sandbox_config(t.sandbox, t.code_pool)
        validate_search_config(t.search)
    except ValueError as exc:
        raise ConfigError(f"invalid config: tools.{str(exc).removeprefix('tools.')}") from None
    _require(t.domain_call_latency_s >= 0, "tools.domain_call_latency_s", "must not be negative")

"""Settings of a served orchestrator (`orchestra-ray serve`), given as `serving.<key>=<value>`
overrides next to the run's own config, and their validation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from orchestra_ray.errors import ConfigError

PREFIX = "serving."


@dataclass
class ServingConfig:
    # HTTP ingress: loopback unless a user opens it on purpose; port 0 takes a free port.
    host: str = "127.0.0.1"
    port: int = 8000
    route_prefix: str = "/"
    app_name: str = "orchestrator"
    model_name: Optional[str] = None  # default: <run name>/<checkpoint name>
    # The policy deployment: each replica holds a copy of the policy and batches requests together.
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 32.0  # autoscaling adds a replica above this load per replica
    max_ongoing_requests: int = 256
    max_batch_size: int = 32  # requests whose episodes share one generate call per turn
    batch_wait_timeout_s: float = 0.01
    torch_threads: int = 1
    ingress_num_cpus: float = 0.1
    # Per-request defaults and bounds.
    default_profile: str = "balanced"
    max_turns: Optional[int] = None  # default and upper bound of a request's max_turns: rollout.max_turns
    temperature: float = 0.0  # inference mode: greedy unless a request asks otherwise
    request_timeout_s: float = 120.0  # a request is answered (504) by then, and its episode stopped
    max_body_bytes: int = 1 << 20  # a larger request body is refused (413) before it is read whole
    max_question_chars: int = 16_000  # a longer question is refused (400) before any work
    expert_timeout_s: float = 60.0  # an expert that has not answered by then is skipped for that call


def split_overrides(overrides: List[str]) -> tuple:
    """(run config overrides, serving overrides without their prefix)."""
    run = [o for o in overrides if not o.startswith(PREFIX)]
    serving = [o[len(PREFIX):] for o in overrides if o.startswith(PREFIX)]
    return run, serving


def _require(ok: bool, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"invalid value for config key '{PREFIX}{key}': {why}")


def load_serving_config(overrides: List[str], run_max_turns: int) -> ServingConfig:
    """Defaults merged with `key=value` overrides (prefix already removed); ConfigError names the key."""
    cfg = OmegaConf.structured(ServingConfig)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{PREFIX}{item}' is not of the form key=value")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except ConfigKeyError:
            raise ConfigError(f"unknown config key '{PREFIX}{item.split('=')[0]}'") from None
        except OmegaConfBaseException as exc:
            raise ConfigError(f"wrong type for config key '{PREFIX}{item.split('=')[0]}': {str(exc).splitlines()[0]}") from None
    s: ServingConfig = OmegaConf.to_object(cfg)
    if s.max_turns is None:
        s.max_turns = run_max_turns
    _require(0 <= s.port <= 65535, "port", "must be between 0 and 65535")
    _require(s.route_prefix.startswith("/") and (s.route_prefix == "/" or not s.route_prefix.endswith("/")),
             "route_prefix", f"'{s.route_prefix}' must start with '/' and not end with '/'")
    _require(bool(s.app_name), "app_name", "must not be empty")
    _require(s.model_name is None or bool(s.model_name), "model_name", "must not be empty")
    _require(s.num_cpus >= 0, "num_cpus", "must not be negative")
    _require(s.num_gpus >= 0, "num_gpus", "must not be negative")
    _require(s.ingress_num_cpus >= 0, "ingress_num_cpus", "must not be negative")
    _require(s.min_replicas >= 1, "min_replicas", "must be at least 1 (a replica loads the policy before the first request)")
    _require(s.max_replicas >= s.min_replicas, "max_replicas", "must be at least serving.min_replicas")
    _require(s.target_ongoing_requests > 0, "target_ongoing_requests", "must be positive")
    _require(s.max_ongoing_requests >= 1, "max_ongoing_requests", "must be at least 1")
    _require(1 <= s.max_batch_size <= s.max_ongoing_requests, "max_batch_size",
             "must be between 1 and serving.max_ongoing_requests")
    _require(s.batch_wait_timeout_s >= 0, "batch_wait_timeout_s", "must not be negative")
    _require(s.torch_threads >= 1, "torch_threads", "must be at least 1")
    _require(s.max_turns >= 1, "max_turns", "must be at least 1")
    _require(0 <= s.temperature <= 2, "temperature", "must be in [0, 2]")
    _require(s.max_body_bytes >= 1024, "max_body_bytes", "must be at least 1024")
    _require(s.max_question_chars >= 1, "max_question_chars", "must be at least 1")
    for key in ("request_timeout_s", "expert_timeout_s"):
        value = getattr(s, key)
        _require(math.isfinite(value) and value > 0, key, "must be a positive number of seconds")
    return s

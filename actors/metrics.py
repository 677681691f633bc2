"""Run metrics exported through `ray.util.metrics` to the Ray dashboard and Prometheus.

Ray prefixes every exported name with `ray_`, so `orchestra_reward` is scraped as
`ray_orchestra_reward`; the Grafana dashboard in clusters/grafana/ queries those names.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

from ray.util import metrics as ray_metrics

# name -> (kind, description, tag keys). Histograms share the boundaries below.
CATALOGUE: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "orchestra_reward": ("gauge", "mean orchestration reward of the step's samples", ("family",)),
    "orchestra_accuracy": ("gauge", "share of the step's samples with a correct outcome", ("family",)),
    "orchestra_cost_per_task": ("histogram", "cost of one episode in USD (experts' tokens x prices)", ()),
    "orchestra_latency_seconds": ("histogram", "wall-clock latency of one episode's tool and expert calls", ()),
    "orchestra_tool_call_share": ("gauge", "share of the step's tool calls that went to this tool", ("tool",)),
    "orchestra_format_error_rate": ("gauge", "share of the step's samples with a policy format error", ()),
    "orchestra_rollout_tokens_per_second": ("gauge", "policy tokens generated per second of rollout", ()),
    "orchestra_learner_step_seconds": ("histogram", "wall-clock time of one learner update", ()),
    "orchestra_weight_sync_seconds": ("histogram", "time for a rollout worker to load a new weight version", ()),
    "orchestra_weight_version_lag": ("gauge", "learner version minus the oldest version that generated the step", ()),
    "orchestra_sandbox_failures": ("counter", "sandboxed code calls that failed (timeout, limit, crash)", ("reason",)),
    "orchestra_expert_errors": ("counter", "expert calls that returned an error", ("expert",)),
    "orchestra_steps": ("counter", "GRPO steps completed", ()),
    "orchestra_rollout_workers": ("gauge", "rollout workers alive in the pool", ()),
}

SECONDS_BOUNDARIES = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
COST_BOUNDARIES = [1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.5, 1, 5]

_made: Dict[str, object] = {}


def metric(name: str):
    """The process-local metric object of `name` (created on first use, as Ray requires per process)."""
    if name not in _made:
        kind, description, tags = CATALOGUE[name]
        if kind == "counter":
            _made[name] = ray_metrics.Counter(name, description=description, tag_keys=tags)
        elif kind == "gauge":
            _made[name] = ray_metrics.Gauge(name, description=description, tag_keys=tags)
        else:
            bounds = COST_BOUNDARIES if "cost" in name else SECONDS_BOUNDARIES
            _made[name] = ray_metrics.Histogram(name, description=description, boundaries=bounds, tag_keys=tags)
    return _made[name]


def record(name: str, value: float, tags: Optional[Mapping[str, str]] = None) -> None:
    """Sets a gauge, observes a histogram or increments a counter by `value`."""
    m = metric(name)
    kind = CATALOGUE[name][0]
    tags = dict(tags) if tags else None
    if kind == "counter":
        m.inc(value, tags=tags)
    elif kind == "gauge":
        m.set(value, tags=tags)
    else:
        m.observe(value, tags=tags)


def record_step(metrics: Mapping, records, learner_version: int) -> None:
    """Exports one GRPO step: its means as gauges, each episode's cost and latency as histogram
    observations, the tool-call share per tool, and the weight-version lag of its rollouts."""
    from orchestra_ray.evaluation import summarise_families, tool_share
    from orchestra_ray.preferences import COST, LATENCY

    record("orchestra_steps", 1)
    record("orchestra_reward", metrics["reward"], {"family": "all"})
    record("orchestra_accuracy", metrics["accuracy"], {"family": "all"})
    for family, s in summarise_families(records, "reward").items():
        record("orchestra_reward", s["reward"], {"family": family})
        record("orchestra_accuracy", s["accuracy"], {"family": family})
    for g in records:
        record("orchestra_cost_per_task", g["metrics"][COST])
        record("orchestra_latency_seconds", g["metrics"][LATENCY])
    for tool, share in tool_share(records).items():
        record("orchestra_tool_call_share", share, {"tool": tool})
    record("orchestra_format_error_rate", metrics["format_error_rate"])
    record("orchestra_rollout_tokens_per_second", metrics["tokens_per_s"])
    record("orchestra_learner_step_seconds", metrics["learn_s"])
    record("orchestra_weight_version_lag", learner_version - min(g["weight_version"] for g in records))

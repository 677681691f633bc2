"""Run metrics exported through `ray.util.metrics` to the Ray dashboard and Prometheus.

Ray prefixes every exported name with `ray_`, so `orchestra_reward` is scraped as
`ray_orchestra_reward`; the Grafana dashboard in clusters/grafana/ queries those names.
"""

from __future__ import annotations

import threading
import time
from typing import Dict, Mapping, Optional, Tuple

import ray
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
# (gauge name, sorted tags) -> last value; re-set by the refresher below.
_gauges: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float] = {}
_gauges_session: Optional[Tuple[str, str]] = None
_gauges_lock = threading.Lock()
_refresher: Optional[threading.Thread] = None


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
        _keep_gauge(name, float(value), tags)
    else:
        m.observe(value, tags=tags)


def _session() -> Optional[Tuple[str, str]]:
    """The Ray node and job this process reports to, or None when it is not connected."""
    if not ray.is_initialized():
        return None
    ctx = ray.get_runtime_context()
    return ctx.get_node_id(), ctx.get_job_id()


def _keep_gauge(name: str, value: float, tags: Optional[Mapping[str, str]]) -> None:
    global _gauges_session, _refresher
    session = _session()
    with _gauges_lock:
        if session != _gauges_session:  # a new cluster or job: the old values are not its own
            _gauges.clear()
            _gauges_session = session
        _gauges[(name, tuple(sorted((tags or {}).items())))] = value
        if _refresher is None:
            _refresher = threading.Thread(target=_refresh_gauges, name="orchestra-gauge-refresh", daemon=True)
            _refresher.start()


def refresh_period_s() -> float:
    """How often each gauge's last value is set again: every 5 s, or every half export interval
    where Ray's is shorter.

    Ray drops a gauge series that its process has not set for a while (measured on Ray 2.60: about
    20 s after the last set, whatever `metrics_report_interval_ms`), so a value set once per step,
    minutes apart, would vanish from Prometheus and the dashboard between steps. Setting it again
    keeps it there for as long as its process lives; it ages out when the process dies."""
    return min(5.0, max(ray._config.metrics_report_interval_ms(), 1000) / 2000.0)


def _refresh_gauges() -> None:
    global _gauges_session
    while True:
        time.sleep(refresh_period_s())
        session = _session()
        with _gauges_lock:
            if session is None or session != _gauges_session:  # shut down or reconnected: stop reporting
                _gauges.clear()
                _gauges_session = session
                continue
            kept = list(_gauges.items())
        for (name, tags), value in kept:
            metric(name).set(value, tags=dict(tags) or None)


def record_step(metrics: Mapping, samples, learner_version: int) -> None:
    """Exports one GRPO step: its means as gauges, each episode's cost and latency as histogram
    observations, the tool-call share per tool, and the weight-version lag of its rollouts."""
    from orchestra_ray.reports.evaluation import summarise_families, tool_share
    from orchestra_ray.grpo.preferences import COST, LATENCY

    record("orchestra_steps", 1)
    record("orchestra_reward", metrics["reward"], {"family": "all"})
    record("orchestra_accuracy", metrics["accuracy"], {"family": "all"})
    for family, s in summarise_families(samples).items():
        record("orchestra_reward", s["reward"], {"family": family})
        record("orchestra_accuracy", s["accuracy"], {"family": family})
    for g in samples:
        record("orchestra_cost_per_task", g.metrics[COST])
        record("orchestra_latency_seconds", g.metrics[LATENCY])
    for tool, share in tool_share(g.tool_calls for g in samples).items():
        record("orchestra_tool_call_share", share, {"tool": tool})
    record("orchestra_format_error_rate", metrics["format_error_rate"])
    record("orchestra_rollout_tokens_per_second", metrics["tokens_per_s"])
    record("orchestra_learner_step_seconds", metrics["learn_s"])
    record("orchestra_weight_version_lag", learner_version - min(g.weight_version for g in samples))

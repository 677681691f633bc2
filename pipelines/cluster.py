"""Connecting to Ray: an embedded local cluster sized to the machine, or an existing one."""

from __future__ import annotations

import os
from typing import Optional

import ray

from orchestra_ray.config import OrchestraConfig
from orchestra_ray.errors import ConfigError


def connect(cfg: OrchestraConfig, address: Optional[str] = None) -> str:
    """Joins `address` (or cfg.cluster.address, or RAY_ADDRESS); otherwise starts a local cluster."""
    address = address or cfg.cluster.address or os.environ.get("RAY_ADDRESS")
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}}
    if address:
        ray.init(address=address, namespace=cfg.cluster.namespace, runtime_env=env, log_to_driver=True)
        url = dashboard_url()
        return f"joined Ray cluster at {address}" + (f"; dashboard: {url}" if url else "")
    c = cfg.cluster
    extra = {"_metrics_export_port": c.metrics_export_port} if c.metrics_export_port else {}
    if c.dashboard_port:
        extra["dashboard_port"] = c.dashboard_port
    ray.init(
        # "local": a new cluster even when another one runs on this machine (without it Ray joins
        # the last cluster started here and refuses num_cpus).
        address="local",
        num_cpus=c.num_cpus or os.cpu_count(),
        namespace=c.namespace,
        runtime_env=env,
        include_dashboard=c.include_dashboard,
        dashboard_host=c.dashboard_host,
        log_to_driver=True,
        configure_logging=True,
        logging_level="WARNING",
        **extra,
    )
    url = dashboard_url()
    return f"started a local Ray cluster ({int(ray.cluster_resources().get('CPU', 0))} CPUs)" + (f"; dashboard: {url}" if url else "")


def dashboard_url() -> str:
    """The connected cluster's dashboard as an http URL, or "" when it runs without one."""
    from ray._private.worker import get_dashboard_url  # no public accessor once ray.init has returned

    try:
        url = get_dashboard_url() or ""
    except Exception:  # the GCS has no dashboard address: the cluster runs without a dashboard
        url = ""
    return f"http://{url}" if url and not url.startswith("http") else url


def check_placement(cfg: OrchestraConfig) -> None:
    """Fail before starting actors when the cluster can never host them all at once."""
    total = ray.cluster_resources()
    r, t = cfg.rollout, cfg.trainer
    tools = _tool_cpus(cfg)
    # Actors asking for a custom resource go to the nodes that carry it, which an autoscaler may
    # add later: only those placed on today's CPUs and GPUs are counted.
    workers = 0 if r.resources else r.num_workers
    learners = 0 if t.resources else 2  # learner + reference
    need_cpu = workers * r.num_cpus_per_worker + learners * t.num_cpus + tools
    need_gpu = workers * r.num_gpus_per_worker + learners * t.num_gpus
    if need_cpu > total.get("CPU", 0) + 1e-9:
        raise ConfigError(
            f"invalid value for config key 'rollout.num_workers': {r.num_workers} workers x "
            f"{r.num_cpus_per_worker} CPU + learner and reference + {tools:g} for tool workers "
            f"(tools.code_pool, tools.search) need {need_cpu:g} CPUs, the cluster has {total.get('CPU', 0):g}"
        )
    if need_gpu > total.get("GPU", 0) + 1e-9:
        raise ConfigError(
            f"invalid value for config key 'rollout.num_gpus_per_worker': the run needs {need_gpu:g} GPUs, "
            f"the cluster has {total.get('GPU', 0):g}"
        )


def _tool_cpus(cfg: OrchestraConfig) -> float:
    """CPUs the tool actors hold from the start: the warm code workers and the search actor."""
    t = cfg.tools
    code = cfg.families.weights.get("arithmetic", 0) > 0 and not t.code_pool.resources
    cpus = t.code_pool.min_workers * t.code_pool.num_cpus if code else 0.0
    return cpus + (t.search.num_cpus if t.search.corpus else 0.0)

"""Run metrics on Prometheus: an embedded cluster with a fixed metrics export port trains two GRPO
steps, a sandboxed call fails and an expert errors on the same cluster, and the node's Prometheus
endpoint then serves every metric of the catalogue with values."""

import re
import time
import urllib.request

import pytest
import ray

from actors.code_interpreter import start_code_pool
from actors.experts import ExpertsSpec, start_experts
from actors.metrics import CATALOGUE
from orchestra_ray.config_load import load_config
from orchestra_ray.experts.base import ExpertError, ExpertRequest
from orchestra_ray.tools.settings import CodePoolConfig, SandboxConfig
from pipelines.cluster import connect
from pipelines.families import load_families
from pipelines.progress import Progress
from pipelines.train import new_run_dir, train
from pipelines.zoo import load_zoo

from ports import free_port
from test_e2e_grpo import overrides


def exported_name(name: str) -> str:
    return "ray_" + name


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def samples(text: str, name: str):
    """(labels, value) of every sample of a metric (a histogram's: its _count series)."""
    out = []
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(_total|_count)?(\{{[^}}]*\}})?\s+(\S+)$", line)
        if m:
            out.append((m.group(2) or "", float(m.group(3))))
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, frames_dir):
    port, dash = free_port(), free_port()
    root, cache = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("cache")
    args = overrides(frames_dir, root, cache) + [
        f"cluster.metrics_export_port={port}", f"cluster.dashboard_port={dash}", "cluster.num_cpus=2",
        "eval.enabled=false", "run.name=metrics",
    ]
    cfg = load_config("pipelines/configs/quickstart.yaml", args)
    zoo = load_zoo(cfg)
    families = load_families(cfg, zoo)
    note = connect(cfg)
    try:
        summary = train(cfg, zoo, new_run_dir(cfg, "quickstart"), Progress(), families=families)
        # Faults on the same cluster, through the real components: a program that fails in the
        # sandbox, and an expert asked about a question it has no recorded answer for.
        pool = start_code_pool(SandboxConfig(), CodePoolConfig(min_workers=1, max_workers=1, num_cpus=0))
        assert not ray.get(pool.execute.remote("raise SystemExit(3)")).ok
        experts = start_experts(ExpertsSpec.from_config(cfg))
        name = cfg.zoo.experts[0].name
        answer = ray.get(experts[name].respond.remote(ExpertRequest(task_id="no-such-question", messages=[])))
        assert isinstance(answer, ExpertError)
        yield port, note, summary
    finally:
        ray.shutdown()


def test_every_catalogued_metric_is_exported_with_values(cluster):
    port, _, summary = cluster
    assert summary["steps"] == 2
    deadline, missing = time.time() + 90, list(CATALOGUE)
    while missing and time.time() < deadline:
        text = scrape(port)
        missing = [n for n in CATALOGUE if not samples(text, exported_name(n))]
        if missing:
            time.sleep(3)
    assert not missing, f"not on the Prometheus endpoint after 90s: {missing}"
    text = scrape(port)
    steps = samples(text, exported_name("orchestra_steps"))
    assert sum(v for _, v in steps) == 2
    shares = samples(text, exported_name("orchestra_tool_call_share"))
    assert any('tool="' in labels for labels, _ in shares)
    assert all(0 <= v <= 1 for _, v in shares)
    costs = samples(text, exported_name("orchestra_cost_per_task"))
    assert sum(v for _, v in costs) >= 2 * 4 * 4  # an observation per episode: 2 steps x 4 tasks x 4 samples
    failures = samples(text, exported_name("orchestra_sandbox_failures"))
    assert any('reason="exit"' in labels and v >= 1 for labels, v in failures)


def test_dashboard_on_loopback_and_in_the_summary(cluster):
    _, note, summary = cluster
    url = summary["dashboard_url"]
    assert url.startswith("http://127.0.0.1:"), url
    assert url in note
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200

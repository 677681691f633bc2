"""Gauges stay on the Prometheus endpoint between steps.

Ray drops a gauge series about 20 s after its process last set it; a run sets its gauges once per
step, minutes apart. An actor on a real local cluster sets a gauge once; the endpoint must serve
its value on every scrape for half a minute, serve a new value once set, and stop serving it once
the actor dies.
"""

from __future__ import annotations

import re
import time
import urllib.request

import pytest
import ray

from ports import free_port

NAME = "orchestra_reward"


def reward_values(port: int):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return [float(m.group(1)) for m in re.finditer(rf'^ray_{NAME}\{{[^}}]*family="probe"[^}}]*\}}\s+(\S+)$', text, re.M)]


@ray.remote(num_cpus=0)
class Stepper:
    def set_reward(self, value: float) -> None:
        from actors.metrics import record

        record(NAME, value, {"family": "probe"})


def wait_for(port: int, want, timeout: float = 30):
    deadline, seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        seen = reward_values(port)
        if want(seen):
            return seen
        time.sleep(0.5)
    raise AssertionError(f"the endpoint served {seen} for ray_{NAME}{{family=probe}} after {timeout}s")


@pytest.fixture(scope="module")
def port():
    port = free_port()
    ray.init(address="local", num_cpus=1, include_dashboard=False, _metrics_export_port=port,
             _system_config={"metrics_report_interval_ms": 1000})
    try:
        yield port
    finally:
        ray.shutdown()


def test_a_gauge_set_once_stays_until_reset_and_leaves_with_its_process(port):
    stepper = Stepper.remote()
    ray.get(stepper.set_reward.remote(0.25))
    wait_for(port, lambda v: v == [0.25])
    # Half a minute, scraped every half second: never missing, never another value.
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        assert reward_values(port) == [0.25], f"gone {time.monotonic() - t0:.1f}s after the first scrape"
        time.sleep(0.5)
    ray.get(stepper.set_reward.remote(0.75))
    wait_for(port, lambda v: v == [0.75])
    ray.kill(stepper)
    wait_for(port, lambda v: v == [], timeout=60)

"""The code-interpreter pool on a real local Ray cluster: it grows under concurrent calls, shrinks
back after idle_s, answers bad input and dead workers with error results, and refuses to start
with one line when the config is bad or bubblewrap is missing."""

from __future__ import annotations

import os
import time

import pytest
import ray

from actors.code_interpreter import CodeInterpreterPool, start_code_pool
from orchestra_ray.tools.settings import CodePoolConfig, SandboxConfig

SANDBOX = SandboxConfig(timeout_s=5.0, cpu_seconds=2)


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def wait_for(predicate, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def test_pool_grows_under_concurrent_calls_and_shrinks_when_idle():
    pool = start_code_pool(SANDBOX, CodePoolConfig(min_workers=1, max_workers=3, idle_s=1.0, num_cpus=0.25))
    try:
        assert ray.get(pool.stats.remote())["workers"] == 1
        refs = [pool.execute.remote(f"import time\ntime.sleep(1)\nprint({i})") for i in range(6)]
        peak = wait_for(lambda: ray.get(pool.stats.remote())["workers"] == 3, 10)
        assert peak, ray.get(pool.stats.remote())
        results = ray.get(refs)
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]
        assert all(r.ok for r in results)
        stats = ray.get(pool.stats.remote())
        assert (stats["grown"], stats["calls"], stats["errors"], stats["mode"]) == (2, 6, 0, "bwrap")

        # Idle beyond idle_s, the two extra workers are stopped; the warm one stays and still answers.
        shrunk = wait_for(lambda: ray.get(pool.stats.remote())["workers"] == 1, 10)
        assert shrunk, ray.get(pool.stats.remote())
        assert ray.get(pool.stats.remote())["shrunk"] == 2
        assert ray.get(pool.execute.remote("print(6*7)")).stdout == "42\n"
    finally:
        ray.kill(pool)


def test_non_string_code_is_an_error_result():
    pool = CodeInterpreterPool.remote(SANDBOX, CodePoolConfig(min_workers=1, max_workers=1))
    try:
        for code, kind in [(42, "int"), (None, "NoneType"), (["print(1)"], "list")]:
            res = ray.get(pool.execute.remote(code))
            assert not res.ok and res.error == f"code must be a string, got {kind}"
            assert res.observation(4000) == f"error: code must be a string, got {kind}"
        assert ray.get(pool.stats.remote())["errors"] == 3
        assert ray.get(pool.execute.remote("print(6*7)")).stdout == "42\n"
    finally:
        ray.kill(pool)


def test_a_worker_that_dies_is_replaced_and_the_call_answered_with_an_error(tmp_path):
    # Without bubblewrap (UNSAFE mode) the program can kill the worker process that started it,
    # and so can write down where its workspace was.
    unsafe = SandboxConfig(mode="none", timeout_s=5.0, cpu_seconds=2)
    pool = start_code_pool(unsafe, CodePoolConfig(min_workers=1, max_workers=2))
    note = tmp_path / "workspace.txt"
    try:
        res = ray.get(pool.execute.remote(
            f"import os, signal\nopen({str(note)!r}, 'w').write(os.getcwd())\nos.kill(os.getppid(), signal.SIGKILL)"))
        assert not res.ok and res.error.startswith("the code worker died during the call")
        assert ray.get(pool.execute.remote("print(6*7)")).stdout == "42\n"
        stats = ray.get(pool.stats.remote())
        assert stats["replaced"] == 1 and stats["workers"] == 1 and stats["mode"] == "none"
        # The dead worker could not remove its workspace; its replacement did.
        assert os.path.basename(note.read_text()).startswith("orchestra-sandbox-")
        assert not os.path.exists(note.read_text())
    finally:
        ray.kill(pool)


def test_missing_bwrap_stops_start_with_one_line_and_a_pool_started_anyway_answers_with_it():
    cfg = SandboxConfig(bwrap="/nonexistent/bwrap")
    with pytest.raises(ValueError) as err:
        start_code_pool(cfg, CodePoolConfig(min_workers=1, max_workers=1))
    assert "apt-get install bubblewrap" in str(err.value) and "\n" not in str(err.value)

    pool = CodeInterpreterPool.remote(cfg, CodePoolConfig(min_workers=1, max_workers=1))
    try:
        res = ray.get(pool.execute.remote("print(1)"))
        assert not res.ok and "apt-get install bubblewrap" in res.error
        assert "apt-get install bubblewrap" in ray.get(pool.stats.remote())["unavailable"]
    finally:
        ray.kill(pool)


def test_bad_pool_config_is_refused_before_any_actor_starts():
    with pytest.raises(ValueError, match=r"^tools.code_pool.min_workers \(3\) must not exceed tools.code_pool.max_workers \(2\)$"):
        start_code_pool(SANDBOX, CodePoolConfig(min_workers=3, max_workers=2))

"""Sandbox benchmark for `orchestra-ray bench sandbox`: a sandboxed code-tool call against a bare
subprocess running the same program, interleaved call by call, and calls per second through the
code-interpreter pool on the connected cluster (many calls in flight, as a rollout step issues them).

A sandboxed call is measured as a policy's tool call meets it: its sandbox was made in the
background after the call before (`tools.sandbox.prestart`), and each call starts `GAP_S` after
the one before and after that sandbox is ready (a generation between two tool calls takes longer).
Calls that make their sandbox on the spot (`prestart: false`) are measured beside them."""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import sys
import time
from typing import Dict, List

import ray

from orchestra_ray.tools import sandbox_start
from orchestra_ray.tools.sandbox import check_sandbox, run_code
from orchestra_ray.tools.settings import CodePoolConfig, SandboxConfig
from pipelines.bench.sandbox import GAP_S, PROGRAM, _checked


def run(calls: int = 20, pool_calls: int = 40, pool_workers: int = 2) -> Dict:
    from orchestra_ray.errors import ConfigError

    if min(calls, pool_calls, pool_workers) < 1:
        raise ConfigError(f"--calls, --pool-calls and --pool-workers must be >= 1, got {calls}, {pool_calls}, {pool_workers}")
    sandbox = SandboxConfig()
    problem = check_sandbox(sandbox)
    if problem:
        raise ConfigError(f"the sandbox cannot run here: {problem}")

    from actors.code_interpreter import start_code_pool

    def bare():
        subprocess.run([sys.executable, "-c", PROGRAM], check=True, capture_output=True)

    cold = dataclasses.replace(sandbox, prestart=False)

    def sandboxed():
        _checked(run_code(PROGRAM, sandbox))

    def sandboxed_cold():
        _checked(run_code(PROGRAM, cold))

    pool = start_code_pool(sandbox, CodePoolConfig(min_workers=pool_workers, max_workers=pool_workers))
    try:
        def pooled():
            _checked(ray.get(pool.execute.remote(PROGRAM)))

        variants = {"bare_subprocess": bare, "sandboxed": sandboxed, "sandboxed_cold": sandboxed_cold, "pool_call": pooled}
        times: Dict[str, List[float]] = {k: [] for k in variants}
        for fn in variants.values():  # warm the page cache and the pool's workers
            fn()
        for _ in range(calls):
            for name, fn in variants.items():
                sandbox_start.wait_prestarted(sandbox)
                time.sleep(GAP_S)
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for res in ray.get([pool.execute.remote(PROGRAM) for _ in range(pool_calls)]):
            _checked(res)
        burst_s = time.perf_counter() - t0
    finally:
        ray.kill(pool)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "benchmark": "sandbox", "program": PROGRAM, "calls": calls,
        "median_s": med,
        "latency_ratio": med["sandboxed"] / med["bare_subprocess"],
        "cold_latency_ratio": med["sandboxed_cold"] / med["bare_subprocess"],
        "pool_latency_ratio": med["pool_call"] / med["bare_subprocess"],
        "pool": {"workers": pool_workers, "calls": pool_calls, "seconds": burst_s, "calls_per_s": pool_calls / burst_s},
    }


def table(result: Dict) -> str:
    m, p = result["median_s"], result["pool"]
    return "\n".join([
        f"sandbox: median wall time of `{result['program']}` over {result['calls']} interleaved calls",
        f"  bare subprocess          {m['bare_subprocess']:.4f} s",
        f"  sandboxed (bubblewrap)   {m['sandboxed']:.4f} s  ratio {result['latency_ratio']:.2f}x  (its sandbox made after the call before)",
        f"  sandbox made on the spot {m['sandboxed_cold']:.4f} s  ratio {result['cold_latency_ratio']:.2f}x  (tools.sandbox.prestart=false)",
        f"  one call via the pool    {m['pool_call']:.4f} s  ratio {result['pool_latency_ratio']:.2f}x",
        f"pool throughput: {p['calls']} calls in flight, {p['workers']} worker(s): {p['calls_per_s']:.1f} calls/s",
    ])

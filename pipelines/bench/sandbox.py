"""What the sandbox costs: median wall time of `print(1)` run bare, through run_code without and with
bubblewrap, and through the code-interpreter pool on a local Ray cluster. Each call starts `GAP_S`
after the one before, once the sandbox prestarted for it is made (as a policy's tool call finds it).

    python -m pipelines.bench.sandbox [--calls N]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import time
from typing import Callable, List, Optional

from orchestra_ray.tools import sandbox_start
from orchestra_ray.tools.sandbox import check_sandbox, run_code
from orchestra_ray.tools.settings import CodePoolConfig, SandboxConfig

PROGRAM = "print(1)"
GAP_S = 0.05  # between two measured calls, all variants alike


def median_s(fn: Callable[[], None], calls: int, sandbox: Optional[SandboxConfig] = None) -> float:
    fn()  # warm the page cache and any lazy set-up
    times: List[float] = []
    for _ in range(calls):
        if sandbox is not None:
            sandbox_start.wait_prestarted(sandbox)
        time.sleep(GAP_S)
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _checked(res) -> None:
    if not res.ok or res.stdout != "1\n":
        raise RuntimeError(f"the benchmark program failed: {res.observation(500)}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="timed calls per variant (default 20)")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error(f"--calls must be >= 1, got {args.calls}")
    sandbox = SandboxConfig()
    problem = check_sandbox(sandbox)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1

    bare = median_s(lambda: subprocess.run([sys.executable, "-c", PROGRAM], check=True, capture_output=True), args.calls)
    unsandboxed = median_s(lambda: _checked(run_code(PROGRAM, dataclasses.replace(sandbox, mode="none"))), args.calls)
    sandboxed = median_s(lambda: _checked(run_code(PROGRAM, sandbox)), args.calls, sandbox)
    cold = dataclasses.replace(sandbox, prestart=False)
    on_the_spot = median_s(lambda: _checked(run_code(PROGRAM, cold)), args.calls)

    import ray

    from actors.code_interpreter import start_code_pool

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        pool = start_code_pool(sandbox, CodePoolConfig(min_workers=1, max_workers=1))
        pooled = median_s(lambda: _checked(ray.get(pool.execute.remote(PROGRAM))), args.calls)
    finally:
        ray.shutdown()

    print(f"median wall time of `{PROGRAM}` over {args.calls} calls")
    print(f"  bare `python -c`            {bare:.3f} s")
    print(f"  run_code, mode none         {unsandboxed:.3f} s  ({unsandboxed / bare:.1f}x)")
    print(f"  run_code, bwrap             {sandboxed:.3f} s  ({sandboxed / bare:.2f}x)")
    print(f"  run_code, bwrap, no prestart {on_the_spot:.3f} s  ({on_the_spot / bare:.2f}x)")
    print(f"  pool.execute, bwrap (Ray)   {pooled:.3f} s  ({pooled / bare:.1f}x)")
    print(f"bwrap overhead: median {sandboxed:.3f} s vs bare {bare:.3f} s = {sandboxed / bare:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The code interpreter as a pool of Ray tool workers.

A CodeWorker runs one sandboxed program at a time. The CodeInterpreterPool hands each call to an
idle worker, starts more workers (up to max_workers) while calls wait, stops those beyond
min_workers once idle for idle_s, and replaces a worker that died. Every call is answered with a
CodeResult: the policy's code, whatever it does, never raises into the rollout loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from typing import Any, Deque, Dict, List, Optional, Set

import ray

from actors.metrics import record
from orchestra_ray.tools.sandbox import (CodeResult, SandboxUnavailable, check_sandbox, failed,
                                         remove_stale_workspaces, run_code)
from orchestra_ray.tools.settings import SandboxConfig, plain_pool_config, plain_sandbox_config, validate_sandbox_config


@ray.remote(max_restarts=0)
class CodeWorker:
    """Runs programs in the sandbox of the node it lives on, which it checks once at start."""

    def __init__(self, cfg: SandboxConfig, index: int = 0):
        self.cfg, self.index = cfg, index
        remove_stale_workspaces()  # a worker killed during a call (it was replaced by us) left one
        self.unavailable = check_sandbox(cfg)

    def __repr__(self) -> str:  # the actor's name in the dashboard and in log prefixes
        return f"CodeWorker[{self.index}]"

    def ready(self) -> Optional[str]:
        """None when this node can run sandboxed code, else why not."""
        return self.unavailable

    def execute(self, code: Any) -> CodeResult:
        if self.unavailable:
            return failed(f"code interpreter unavailable: {self.unavailable}")
        try:
            return run_code(code, self.cfg)
        except SandboxUnavailable as exc:
            return failed(f"code interpreter unavailable: {exc}")
        except Exception as exc:  # a fault of the sandbox machinery is still an answer, not a crash
            return failed(f"sandbox failure ({type(exc).__name__}: {str(exc)[:200]})")


class _Slot:
    __slots__ = ("handle", "last_used")

    def __init__(self, handle: "ray.actor.ActorHandle"):
        self.handle, self.last_used = handle, time.monotonic()


@ray.remote(num_cpus=0, max_restarts=3)
class CodeInterpreterPool:
    """The policy's run_python tool: `execute(code)` answers with a CodeResult, never an exception."""

    def __init__(self, sandbox_cfg: Any, pool_cfg: Any):
        # Plain copies: the driver may pass omegaconf nodes.
        self.sandbox = plain_sandbox_config(sandbox_cfg)
        self.pool = plain_pool_config(pool_cfg)
        self.workers: List[_Slot] = []
        self.idle: List[_Slot] = []
        self.busy: Set[_Slot] = set()
        self.waiters: Deque[asyncio.Future] = collections.deque()
        self.counts = {"calls": 0, "errors": 0, "grown": 0, "shrunk": 0, "replaced": 0}
        self.starting = 0  # workers started on demand and not yet up
        self.unavailable: Optional[str] = None
        self._started: Optional[asyncio.Task] = None
        self._reaper: Optional[asyncio.Task] = None

    # ---- life cycle ---------------------------------------------------------------------------
    async def ready(self) -> Optional[str]:
        """Starts the warm workers; None when they can run sandboxed code, else the reason."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        await asyncio.shield(self._started)
        return self.unavailable

    async def _start(self) -> None:
        first = [self._spawn() for _ in range(max(1, self.pool.min_workers))]
        answers = await asyncio.gather(*(s.handle.ready.remote() for s in first), return_exceptions=True)
        for slot, ans in zip(first, answers):
            if isinstance(ans, BaseException):
                self.unavailable = self.unavailable or f"a code worker failed to start: {type(ans).__name__}"
                self._drop(slot)
                continue
            self.unavailable = self.unavailable or ans
            self._release(slot)
        self._reaper = asyncio.ensure_future(self._reap())

    def _spawn(self) -> _Slot:
        slot = _Slot(CodeWorker.options(num_cpus=self.pool.num_cpus, resources=dict(self.pool.resources)).remote(
            self.sandbox, len(self.workers) + self.counts["replaced"] + self.counts["shrunk"]))
        self.workers.append(slot)
        return slot

    def _grow(self) -> None:
        """Starts a worker that joins the pool once up; meanwhile a worker freed earlier serves
        the waiting call, so a burst never waits on a start it does not need."""
        self.starting += 1
        asyncio.ensure_future(self._join(self._spawn()))

    async def _join(self, slot: _Slot) -> None:
        try:
            problem = await slot.handle.ready.remote()
        except ray.exceptions.RayError as exc:
            problem = type(exc).__name__
        self.starting -= 1
        if problem is None:
            self._release(slot)
            return
        self._drop(slot)
        if not self.workers:  # nothing left to serve the waiting calls
            while self.waiters:
                fut = self.waiters.popleft()
                if not fut.done():
                    fut.set_result(None)

    def _drop(self, slot: _Slot) -> None:
        self.busy.discard(slot)
        for group in (self.workers, self.idle):
            if slot in group:
                group.remove(slot)
        with contextlib.suppress(Exception):  # already gone: nothing left to stop
            ray.kill(slot.handle)

    def _release(self, slot: _Slot) -> None:
        """A free worker goes to the longest-waiting call, else back to the idle list."""
        slot.last_used = time.monotonic()
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                self.busy.add(slot)
                fut.set_result(slot)
                return
        self.busy.discard(slot)
        self.idle.append(slot)

    async def _acquire(self) -> Optional[_Slot]:
        """A free worker, or None when no worker could be started."""
        if self.idle:
            slot = self.idle.pop()
            self.busy.add(slot)
            return slot
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        waiting = sum(not f.done() for f in self.waiters)
        if len(self.workers) < self.pool.max_workers and waiting > self.starting:
            self.counts["grown"] += 1
            self._grow()
        return await fut

    def _replace(self, slot: _Slot) -> None:
        """Drops a dead worker; a replacement starts when calls wait or the pool fell below min."""
        self._drop(slot)
        self.counts["replaced"] += 1
        if self.waiters or len(self.workers) < self.pool.min_workers:
            self._grow()

    async def _reap(self) -> None:
        period = min(1.0, self.pool.idle_s / 2)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for slot in sorted(self.idle, key=lambda s: s.last_used):
                if len(self.workers) <= self.pool.min_workers:
                    break
                if now - slot.last_used >= self.pool.idle_s:
                    self._drop(slot)
                    self.counts["shrunk"] += 1

    # ---- the tool -----------------------------------------------------------------------------
    async def execute(self, code: Any) -> CodeResult:
        self.counts["calls"] += 1
        res = await self._execute(code)
        if not res.ok:
            self.counts["errors"] += 1
            record("orchestra_sandbox_failures", 1, {"reason": res.failure_kind()})
        return res

    async def _execute(self, code: Any) -> CodeResult:
        if not isinstance(code, str):
            return failed(f"code must be a string, got {type(code).__name__}")
        if await self.ready():
            return failed(f"code interpreter unavailable: {self.unavailable}")
        t0 = time.monotonic()
        slot = await self._acquire()
        if slot is None:
            return failed("no code worker could be started", time.monotonic() - t0)
        try:
            res = await slot.handle.execute.remote(code)
        except ray.exceptions.RayActorError as exc:
            # Not retried: code that brought its worker down would bring the next one down too.
            self._replace(slot)
            return failed(f"the code worker died during the call ({type(exc).__name__}); it was replaced",
                          time.monotonic() - t0)
        except ray.exceptions.RayError as exc:
            self._release(slot)
            return failed(f"the call failed in Ray ({type(exc).__name__})", time.monotonic() - t0)
        self._release(slot)
        return res

    async def stats(self) -> Dict[str, Any]:
        await self.ready()
        return {"workers": len(self.workers), "busy": len(self.busy), "idle": len(self.idle), "starting": self.starting,
                "waiting": sum(not f.done() for f in self.waiters), **self.counts,
                "mode": self.sandbox.mode, "unavailable": self.unavailable}


def start_code_pool(sandbox_cfg: Any, pool_cfg: Any) -> "ray.actor.ActorHandle":
    """A CodeInterpreterPool with its warm workers up; ValueError with one line when the config is
    bad or the sandbox cannot run on this cluster (bubblewrap missing, namespaces refused)."""
    sandbox, pool = plain_sandbox_config(sandbox_cfg), plain_pool_config(pool_cfg)
    validate_sandbox_config(sandbox, pool)
    handle = CodeInterpreterPool.remote(sandbox, pool)
    problem = ray.get(handle.ready.remote())
    if problem:
        ray.kill(handle)
        raise ValueError(problem)
    return handle

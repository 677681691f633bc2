"""RolloutPool: the run's rollout workers, dispatched batch by batch and scaled with the queue.

A step's groups are cut into batches; each batch goes to whichever worker is free, so a worker that
joins mid-step (its node just added by the autoscaler) takes a share of what is left. With
autoscaling on, the pool asks for as many workers as the queue needs (groups_per_worker each, within
min/max); a worker asked for by resources no node has waits, pending, which is the demand Ray's
autoscaler answers with a new node. Workers beyond min_workers that stay idle past idle_timeout_s are
released, and the autoscaler then removes their idle nodes. Batch seeds depend on the batch, not
on the worker, so a step's samples do not depend on which worker drew them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import ray

from actors.metrics import record

logger = logging.getLogger(__name__)

PENDING_WARN_S = 60.0  # a step with no worker placed for this long says what it waits for


@dataclass
class _Member:
    index: int
    handle: "ray.actor.ActorHandle"
    ready_ref: Optional[ray.ObjectRef]  # None once the worker is up
    busy: bool = False
    last_used: float = field(default_factory=time.monotonic)

    @property
    def ready(self) -> bool:
        return self.ready_ref is None


class RolloutPool:
    def __init__(self, make_worker: Callable[[int], "ray.actor.ActorHandle"], num_workers: int, autoscale=None,
                 resources: Optional[Dict[str, float]] = None):
        self.make_worker, self.autoscale = make_worker, autoscale
        self.resources = dict(resources or {})
        self.members: Dict[int, _Member] = {}
        self.next_index = 0
        self.counts = {"added": 0, "released": 0}
        for _ in range(num_workers):
            self._add()

    @property
    def scaling(self) -> bool:
        return bool(self.autoscale is not None and self.autoscale.enabled)

    def size(self) -> Dict[str, int]:
        ready = sum(m.ready for m in self.members.values())
        return {"ready": ready, "pending": len(self.members) - ready}

    def wait_ready(self, n: int = 1, timeout_s: Optional[float] = None) -> int:
        """Blocks until at least n workers are up; returns how many are."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._poll(timeout=1.0) < n:
            if deadline is not None and time.monotonic() > deadline:
                break
        return self.size()["ready"]

    # ---- membership -------------------------------------------------------------------------
    def _add(self) -> _Member:
        handle = self.make_worker(self.next_index)
        m = _Member(self.next_index, handle, handle.ready.remote())
        self.members[m.index] = m
        self.next_index += 1
        self.counts["added"] += 1
        return m

    def _remove(self, m: _Member) -> None:
        del self.members[m.index]
        ray.kill(m.handle)
        self.counts["released"] += 1

    def _poll(self, timeout: float = 0.0) -> int:
        """Marks workers whose constructor finished as ready; returns the number ready."""
        waiting = {m.ready_ref: m for m in self.members.values() if not m.ready}
        if waiting:
            done, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=timeout)
            for ref in done:
                m = waiting[ref]
                ray.get(ref)  # a constructor that raised surfaces here, with its error
                m.ready_ref, m.last_used = None, time.monotonic()
        return sum(m.ready for m in self.members.values())

    def scale_for(self, groups: int) -> None:
        """Asks for the workers a queue of `groups` needs; drops pending requests it no longer needs."""
        if not self.scaling:
            return
        a = self.autoscale
        want = min(a.max_workers, max(a.min_workers, -(-groups // a.groups_per_worker)))
        for _ in range(want - len(self.members)):
            self._add()
        surplus = len(self.members) - want
        for m in sorted((m for m in self.members.values() if not m.ready), key=lambda m: -m.index):
            if surplus <= 0:
                break
            self._remove(m)
            surplus -= 1

    def release_idle(self) -> int:
        """Releases ready workers beyond min_workers idle for idle_timeout_s; returns how many."""
        if not self.scaling:
            return 0
        now, released = time.monotonic(), 0
        idle = sorted((m for m in self.members.values() if m.ready and not m.busy), key=lambda m: m.last_used)
        for m in idle:
            if len(self.members) <= self.autoscale.min_workers:
                break
            if now - m.last_used >= self.autoscale.idle_timeout_s:
                self._remove(m)
                released += 1
        return released

    # ---- work -------------------------------------------------------------------------------
    def _batches(self, tasks: Sequence) -> List[List]:
        if self.scaling:
            size = self.autoscale.groups_per_worker
        else:
            size = -(-len(tasks) // max(1, len(self.members)))
        return [list(tasks[i : i + size]) for i in range(0, len(tasks), max(1, size))]

    def run(self, tasks: Sequence, group_size: int, temperature: float, seed: int) -> List[dict]:
        """Every sample of every task, in task order, each batch generated by one worker."""
        self.release_idle()
        self.scale_for(len(tasks))
        queue = deque(enumerate(self._batches(tasks)))
        results: Dict[int, List[dict]] = {}
        inflight: Dict[ray.ObjectRef, tuple] = {}
        t0, warned = time.monotonic(), False
        while queue or inflight:
            self._poll()
            for m in self.members.values():
                if queue and m.ready and not m.busy:
                    i, batch = queue.popleft()
                    ref = m.handle.run_groups.remote(batch, group_size, temperature, seed * 1000 + i)
                    inflight[ref] = (m, i)
                    m.busy = True
            record("orchestra_rollout_workers", self.size()["ready"])
            waitables = list(inflight) + [m.ready_ref for m in self.members.values() if not m.ready]
            done, _ = ray.wait(waitables, num_returns=1, timeout=5.0)
            for ref in done:
                if ref in inflight:
                    m, i = inflight.pop(ref)
                    m.busy, m.last_used = False, time.monotonic()
                    results[i] = ray.get(ref)
            if not inflight and not warned and time.monotonic() - t0 > PENDING_WARN_S:
                warned = True
                logger.warning("no rollout worker placed after %.0fs: waiting for a node with %s (is the autoscaler on?)",
                               time.monotonic() - t0, self.resources or "free CPUs")
        self.release_idle()
        return [rec for i in sorted(results) for rec in results[i]]

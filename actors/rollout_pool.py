"""RolloutPool: the run's rollout workers, dispatched batch by batch and scaled with the queue.

A step's groups are cut into batches; each batch goes to whichever worker is free, so a worker that
joins mid-step (its node just added by the autoscaler) takes a share of what is left. With
autoscaling on, the pool asks for as many workers as the queue needs (groups_per_worker each, within
min/max); a worker asked for by resources no node has waits, pending, which is the demand Ray's
autoscaler answers with a new node. Workers beyond min_workers that stay idle past idle_timeout_s are
released, and the autoscaler then removes their idle nodes. Batch seeds depend on the batch, not
on the worker, so a step's samples do not depend on which worker drew them.

Supervision: a worker that dies (its process killed, its node lost) or hangs past batch_timeout_s
is replaced by a fresh one, and the batch it held is re-issued to a live worker after a backoff,
up to max_batch_retries times; partial output of a lost batch is never seen. Every episode goes
through the step's ledger, so the driver can prove each one was trained on exactly once.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import ray

from actors.metrics import record
from orchestra_ray.rollout.failures import INFRASTRUCTURE, StepFailed, classify_exception
from orchestra_ray.grpo.ledger import StepLedger, episode_id
from orchestra_ray.rollout.sample import Sample

logger = logging.getLogger(__name__)

PENDING_WARN_S = 60.0  # a step with no worker placed for this long says what it waits for


class RolloutsCancelled(RuntimeError):
    """The run stopped while rollouts ahead of the learner were still being generated."""


@dataclass
class _Member:
    index: int
    handle: "ray.actor.ActorHandle"
    ready_ref: Optional[ray.ObjectRef]  # None once the worker is up
    busy: bool = False
    last_used: float = field(default_factory=time.monotonic)
    pid: Optional[int] = None

    @property
    def ready(self) -> bool:
        return self.ready_ref is None


class RolloutPool:
    def __init__(self, make_worker: Callable[[int], "ray.actor.ActorHandle"], num_workers: int, autoscale=None,
                 resources: Optional[Dict[str, float]] = None, max_batch_retries: int = 3, retry_backoff_s: float = 1.0,
                 batch_timeout_s: float = 0.0, on_remove: Optional[Callable[["ray.actor.ActorHandle"], None]] = None):
        # on_remove: told of each worker released or replaced (it leaves the weight transport's group)
        self.make_worker, self.autoscale, self.on_remove = make_worker, autoscale, on_remove
        self.resources = dict(resources or {})
        self.max_batch_retries, self.retry_backoff_s, self.batch_timeout_s = max_batch_retries, retry_backoff_s, batch_timeout_s
        self.members: Dict[int, _Member] = {}
        self.next_index = 0
        self.counts = {"added": 0, "released": 0, "replaced": 0}
        self.cancelled = False
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

    def _remove(self, m: _Member, count: str = "released") -> None:
        del self.members[m.index]
        ray.kill(m.handle, no_restart=True)
        if self.on_remove is not None:
            self.on_remove(m.handle)
        self.counts[count] += 1

    def _replace(self, m: _Member) -> None:
        """A dead or hung worker makes way for a fresh one (which pulls the latest weights first)."""
        self._remove(m, "replaced")
        self._add()

    def busy_pids(self) -> List[int]:
        """Process ids of the workers generating right now (fault-injection tests kill them)."""
        return [m.pid for m in self.members.values() if m.busy and m.pid]

    def _poll(self, timeout: float = 0.0) -> int:
        """Marks workers whose constructor finished as ready; returns the number ready."""
        waiting = {m.ready_ref: m for m in self.members.values() if not m.ready}
        if waiting:
            done, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=timeout)
            for ref in done:
                m = waiting[ref]
                try:
                    m.pid = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    if classify_exception(exc) != INFRASTRUCTURE:
                        raise  # a constructor that raised: a bug or a bad config, not a lost node
                    logger.warning("rollout worker %d could not start (%s); starting another", m.index, type(exc).__name__)
                    self._replace(m)
                    continue
                m.ready_ref, m.last_used = None, time.monotonic()
        return sum(m.ready for m in self.members.values())

    def wanted(self, groups: int) -> int:
        """Workers a queue of `groups` needs, within the bounds."""
        a = self.autoscale
        return min(a.max_workers, max(a.min_workers, -(-groups // a.groups_per_worker)))

    def scale_for(self, groups: int) -> None:
        """Asks for the workers a queue of `groups` needs; drops pending requests it no longer needs."""
        if not self.scaling:
            return
        want = self.wanted(groups)
        for _ in range(want - len(self.members)):
            self._add()
        surplus = len(self.members) - want
        for m in sorted((m for m in self.members.values() if not m.ready), key=lambda m: -m.index):
            if surplus <= 0:
                break
            self._remove(m)
            surplus -= 1

    def release_idle(self, keep: int = 0) -> int:
        """Releases ready workers idle for idle_timeout_s beyond the larger of min_workers and `keep`
        (what the queue at hand needs: a worker idle between steps is not released to be asked
        for again); returns how many."""
        if not self.scaling:
            return 0
        now, released = time.monotonic(), 0
        floor = max(self.autoscale.min_workers, keep)
        idle = sorted((m for m in self.members.values() if m.ready and not m.busy), key=lambda m: m.last_used)
        for m in idle:
            if len(self.members) <= floor:
                break
            if now - m.last_used >= self.autoscale.idle_timeout_s:
                self._remove(m)
                released += 1
        return released

    # ---- work -------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Makes a `run` in progress (on another thread) stop at its next poll."""
        self.cancelled = True

    def _batches(self, tasks: Sequence) -> List[List]:
        if self.scaling:
            size = self.autoscale.groups_per_worker
        else:
            size = -(-len(tasks) // max(1, len(self.members)))
        return [list(tasks[i : i + size]) for i in range(0, len(tasks), max(1, size))]

    def run(self, tasks: Sequence, group_size: int, temperature: float, seed: int,
            ledger: Optional[StepLedger] = None) -> List[Sample]:
        """Every sample of every task, in task order, each batch generated by one worker; each
        episode is completed exactly once in `ledger` (a fresh one when not given)."""
        ledger = ledger if ledger is not None else StepLedger(step=-1)
        needed = self.wanted(len(tasks)) if self.scaling else 0
        self.release_idle(needed)
        self.scale_for(len(tasks))
        batches = self._batches(tasks)
        ids = {i: [episode_id(t.task_id, k) for t in batch for k in range(group_size)] for i, batch in enumerate(batches)}
        for i in ids:
            ledger.issue(ids[i])
        queue = deque((i, 0.0) for i in range(len(batches)))  # (batch, not before)
        attempts = {i: 0 for i in ids}
        results: Dict[int, List[Sample]] = {}
        inflight: Dict[ray.ObjectRef, tuple] = {}
        t0, warned = time.monotonic(), False
        while queue or inflight:
            if self.cancelled:
                raise RolloutsCancelled(f"step {ledger.step}: rollouts cancelled with {len(inflight)} batch(es) in flight")
            self._poll()
            now = time.monotonic()
            for m in list(self.members.values()):
                if queue and queue[0][1] <= now and m.ready and not m.busy:
                    i, _ = queue.popleft()
                    ref = m.handle.run_groups.remote(batches[i], group_size, temperature, seed * 1000 + i)
                    inflight[ref] = (m, i, now)
                    m.busy = True
            record("orchestra_rollout_workers", self.size()["ready"])
            waitables = list(inflight) + [m.ready_ref for m in self.members.values() if not m.ready]
            done, _ = ray.wait(waitables, num_returns=1, timeout=1.0) if waitables else ([], [])
            if not waitables:
                time.sleep(0.1)  # only batches waiting out a backoff
            for ref in done:
                if ref not in inflight:
                    continue
                m, i, _ = inflight.pop(ref)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    self._lost(m, i, ids[i], exc, attempts, queue, ledger)
                    continue
                m.busy, m.last_used = False, time.monotonic()
                first = ledger.complete(ids[i])
                results.setdefault(i, []).extend(rec for rec, new in zip(out, first) if new)
            if self.batch_timeout_s > 0:
                for ref, (m, i, started) in list(inflight.items()):
                    if time.monotonic() - started > self.batch_timeout_s:
                        del inflight[ref]
                        self._lost(m, i, ids[i], TimeoutError(f"batch ran past rollout.batch_timeout_s={self.batch_timeout_s}"),
                                   attempts, queue, ledger)
            if not inflight and not warned and time.monotonic() - t0 > PENDING_WARN_S:
                warned = True
                logger.warning("no rollout worker placed after %.0fs: %s", time.monotonic() - t0, self._pending_reason())
        self.release_idle(needed)
        return [rec for i in sorted(results) for rec in results[i]]

    def _pending_reason(self) -> str:
        """Why workers wait: no node has a resource they ask for (only an autoscaler can help), or
        the nodes that have it are busy (a busy laptop is not a missing autoscaler)."""
        total = ray.cluster_resources()
        missing = sorted(k for k, v in self.resources.items() if total.get(k, 0.0) < v)
        if missing:
            return f"no node has {', '.join(missing)}; a worker starts once an autoscaler adds such a node"
        return f"the nodes are busy; a worker starts when {self.resources or 'CPUs'} free up or an autoscaler adds a node"

    def _lost(self, m: _Member, i: int, ids: List[str], exc: BaseException, attempts: Dict[int, int], queue, ledger: StepLedger) -> None:
        """A batch lost with its worker: replace the worker, re-issue the batch after a backoff."""
        why = type(exc).__name__
        if classify_exception(exc) != INFRASTRUCTURE:
            raise exc  # the worker raised on its own: a bug, which retrying would only repeat
        ledger.fail(ids, why)
        if m.index in self.members:
            self._replace(m)
        attempts[i] += 1
        if attempts[i] > self.max_batch_retries:
            raise StepFailed(f"step {ledger.step}: a batch of {len(ids)} episodes was lost {attempts[i]} times "
                             f"(last: {why}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                             f"rollout.max_batch_retries={self.max_batch_retries} reached")
        logger.warning("rollout batch %d lost (%s); re-issuing it (attempt %d of %d)", i, why, attempts[i] + 1,
                       self.max_batch_retries + 1)
        ledger.reissue(ids)
        queue.append((i, time.monotonic() + self.retry_backoff_s * 2 ** (attempts[i] - 1)))

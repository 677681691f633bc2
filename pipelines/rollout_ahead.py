"""Rollouts ahead of the learner: the asynchronous mode of the GRPO loop.

With rollout.max_staleness = N > 0, the rollouts of steps k+1 .. k+N are generated while the learner
trains step k, one step after another on the same pool (a single background thread drives it, so
the pool never runs two steps at once). Step k+N is started only once step k is taken, i.e. after
the learner finished step k-1, so its samples are at most N weight versions behind the learner when
they are trained on: the bound holds by construction, and the driver still checks it per sample
(the stale filter of orchestra_ray.grpo.scoring). N = 0 is the synchronous loop: each step's rollouts start after the
previous update.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from orchestra_ray.families.task import Task
from orchestra_ray.grpo.ledger import StepLedger
from orchestra_ray.rollout.sample import Sample


@dataclass
class Collected:
    """What the collect stage hands to scoring (pipelines/step.py)."""

    samples: List[Sample]  # every sample of the step's groups, in task order
    ledger: StepLedger  # the step's; scoring closes it and checks the samples against it
    seconds: float  # wall time of the rollouts themselves


class RolloutAhead:
    def __init__(self, collect: Callable[[int, List[Task]], Collected], next_tasks: Callable[[int], List[Task]],
                 position: Callable[[], Any], depth: int, last_step: int, cancel: Optional[Callable[[], None]] = None):
        self.collect, self.next_tasks, self.position = collect, next_tasks, position
        self.depth, self.last_step, self.cancel = depth, last_step, cancel
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout-ahead") if depth > 0 else None
        # step -> (its rollouts, the data position after drawing its tasks)
        self.pending: Dict[int, Tuple[Future, Any]] = {}

    def _start(self, step: int) -> None:
        tasks = self.next_tasks(step)
        self.pending[step] = (self.executor.submit(self.collect, step, tasks), self.position())

    def take(self, step: int) -> Tuple[Collected, Any]:
        """Step `step`'s rollouts and the data position after its tasks (what a checkpoint taken
        after this step records); in asynchronous mode it then starts the steps after it."""
        if self.executor is None:
            tasks = self.next_tasks(step)
            position = self.position()
            return self.collect(step, tasks), position
        if step not in self.pending:  # the first step of a run, or of a resumed one
            self._start(step)
        future, position = self.pending.pop(step)
        for ahead in range(max([step, *self.pending]) + 1, min(step + self.depth, self.last_step) + 1):
            self._start(ahead)
        return future.result(), position

    def close(self) -> None:
        """Stops rollouts still ahead (a run that ends early, or fails) without waiting for them."""
        if self.executor is None:
            return
        for future, _ in self.pending.values():
            future.cancel()
        if self.pending and self.cancel is not None:
            self.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.pending.clear()

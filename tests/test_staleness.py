"""Staleness bound of asynchronous rollouts (plain data, no Ray): the per-sample check, and the
rollouts-ahead schedule against a simulated learner whose updates take random time."""

import random
import threading
import time

import pytest

from orchestra_ray.grpo.staleness import StalenessError, staleness, within_bound
from pipelines.rollout_ahead import Collected, RolloutAhead


def test_samples_beyond_the_bound_are_not_trained_on():
    assert within_bound([5, 4, 3, 2], learner_version=5, max_staleness=1) == [True, True, False, False]
    assert within_bound([5, 4, 3], learner_version=5, max_staleness=0) == [True, False, False]
    assert within_bound([3], learner_version=5, max_staleness=2) == [True]


def test_a_sample_newer_than_the_learner_is_an_error():
    assert staleness(4, 6) == 2
    with pytest.raises(StalenessError, match="version 7, newer than the learner's version 6"):
        staleness(7, 6)
    with pytest.raises(ValueError, match="max_staleness must not be negative"):
        within_bound([1], 1, -1)


class Learner:
    """Publishes version k after training step k; rollouts read the version when they start."""

    def __init__(self):
        self.version, self.lock = 0, threading.Lock()

    def train(self, rng):
        time.sleep(rng.uniform(0.0, 0.02))
        with self.lock:
            self.version += 1


def run_schedule(depth, steps, seed):
    rng = random.Random(seed)
    learner, drawn = Learner(), []
    started = {}

    def next_tasks(step):
        drawn.append(step)
        return [f"task-{step}"]

    def collect(step, tasks):
        with learner.lock:
            started[step] = learner.version
        time.sleep(rng.uniform(0.0, 0.02))
        return Collected([{"weight_version": started[step], "tasks": tasks}], {}, 0.0)

    ahead = RolloutAhead(collect, next_tasks, lambda: len(drawn), depth, steps)
    seen = []
    for step in range(1, steps + 1):
        got, position = ahead.take(step)
        assert got.samples[0]["tasks"] == [f"task-{step}"]
        # The checkpoint after this step records the data position after its own tasks, not after
        # the tasks drawn for the steps already running ahead.
        assert position == step
        seen.append(staleness(got.samples[0]["weight_version"], learner.version))
        learner.train(rng)
    ahead.close()
    assert drawn == list(range(1, steps + 1))  # no step drawn twice or beyond the last
    return seen


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_rollouts_ahead_never_exceed_the_bound(depth):
    for seed in range(5):
        seen = run_schedule(depth, steps=12, seed=seed)
        assert max(seen) <= depth
        if depth == 0:
            assert set(seen) == {0}  # synchronous: always the latest weights
        else:
            assert max(seen) >= 1  # rollouts really ran while the learner trained


def test_close_stops_rollouts_still_ahead():
    cancelled = []

    def collect(step, tasks):
        time.sleep(0.05)
        return Collected([], {}, 0.0)

    ahead = RolloutAhead(collect, lambda step: [], lambda: 0, 2, 10, cancel=lambda: cancelled.append(True))
    ahead.take(1)
    ahead.close()
    assert cancelled == [True] and ahead.pending == {}

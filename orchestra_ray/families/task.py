"""A task: one problem with its gold answer and the preference vector the user asks for.

Problems come in families (FRAMES questions answered by experts, function-calling domains checked by
database state, arithmetic/data problems for the code interpreter); the family decides how the
outcome is judged and the toolset which tools the policy sees.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple, Union

from orchestra_ray.families.frames import FRAMES, Question, is_heldout
from orchestra_ray.grpo.preferences import PreferenceVector, Weights, profile_vector


DOMAIN, ARITHMETIC = "domain", "arithmetic"


@dataclass(frozen=True)
class Problem:
    """A non-FRAMES problem: `answer` is the gold (a number, or a domain's gold database hash)."""

    question_id: str
    problem: str
    answer: str
    family: str
    toolset: str  # key of the tools and system prompt shown (a family, or "domain:<name>")


Source = Union[Question, Problem]


def family_of(q: Source) -> str:
    return getattr(q, "family", FRAMES)


def toolset_of(q: Source) -> str:
    return getattr(q, "toolset", FRAMES)


@dataclass(frozen=True)
class Task:
    task_id: str
    question_id: str
    question: str
    gold: str
    preference: PreferenceVector
    family: str = FRAMES
    toolset: str = FRAMES


def make_task(task_id: str, q: Source, preference: PreferenceVector) -> Task:
    return Task(task_id, q.question_id, q.problem, q.answer, preference, family_of(q), toolset_of(q))


class TaskSampler:
    """Draws (question, profile) tasks from the train split, epoch by epoch in a seeded order.

    Its position is (epoch, offset): saved in checkpoints so that a resumed run continues with the
    very next question.
    """

    def __init__(self, questions: Sequence[Source], profiles: Sequence[str], slots: Sequence[str], seed: Union[int, str],
                 own: Weights = None):
        self.questions = list(questions)
        self.profiles = list(profiles)
        self.slots = list(slots)
        self.own = own  # preferences.weights
        self.seed = seed
        self.epoch = 0
        self.offset = 0

    def _order(self, epoch: int) -> List[int]:
        order = list(range(len(self.questions)))
        random.Random(f"{self.seed}-{epoch}").shuffle(order)
        return order

    def _profile(self, epoch: int, index: int) -> str:
        return random.Random(f"{self.seed}-{epoch}-{index}-profile").choice(self.profiles)

    def next_tasks(self, n: int, step: int) -> List[Task]:
        tasks = []
        for i in range(n):
            if self.offset >= len(self.questions):
                self.epoch, self.offset = self.epoch + 1, 0
            q = self.questions[self._order(self.epoch)[self.offset]]
            pref = profile_vector(self._profile(self.epoch, self.offset), self.slots, self.own)
            tasks.append(make_task(f"s{step}-t{i}", q, pref))
            self.offset += 1
        return tasks

    @property
    def position(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def restore(self, position: Dict[str, int]) -> None:
        self.epoch, self.offset = int(position["epoch"]), int(position["offset"])


class MixedTaskSampler:
    """Draws each step's tasks from several families in fixed proportions (largest remainder), each
    family from its own seeded `TaskSampler`, so a resumed run continues every family in place."""

    def __init__(self, pools: Mapping[str, Sequence[Source]], weights: Mapping[str, float], profiles: Sequence[str],
                 slots: Sequence[str], seed: int, own: Weights = None):
        self.families = [f for f in pools if weights.get(f, 0) > 0]
        total = sum(weights[f] for f in self.families)
        self.shares = {f: weights[f] / total for f in self.families}
        self.samplers = {f: TaskSampler(pools[f], profiles, slots, f"{seed}-{f}" if f != FRAMES else seed, own)
                         for f in self.families}

    def counts(self, n: int) -> Dict[str, int]:
        exact = {f: n * s for f, s in self.shares.items()}
        out = {f: int(x) for f, x in exact.items()}
        for f in sorted(exact, key=lambda f: exact[f] - out[f], reverse=True)[: n - sum(out.values())]:
            out[f] += 1
        return out

    def next_tasks(self, n: int, step: int) -> List[Task]:
        tasks: List[Task] = []
        for f, k in self.counts(n).items():
            for t in self.samplers[f].next_tasks(k, step):
                tasks.append(Task(f"s{step}-t{len(tasks)}", *_fields(t)[1:]))
        return tasks

    @property
    def position(self) -> Dict[str, Dict[str, int]]:
        return {f: s.position for f, s in self.samplers.items()}

    def restore(self, position: Mapping[str, Mapping[str, int]]) -> None:
        for f, pos in position.items():
            if f in self.samplers:
                self.samplers[f].restore(pos)


def _fields(t: Task) -> Tuple:
    return (t.task_id, t.question_id, t.question, t.gold, t.preference, t.family, t.toolset)


def eval_tasks(questions: Sequence[Source], profiles: Sequence[str], slots: Sequence[str], own: Weights = None) -> List[Task]:
    """Every held-out problem under every evaluation profile."""
    return [make_task(f"eval-{p}-{q.question_id}", q, profile_vector(p, slots, own)) for p in profiles for q in questions]


def demo_tasks(questions: Sequence[Source], profiles: Sequence[str], slots: Sequence[str], n: int, seed: int,
               own: Weights = None) -> List[Task]:
    rng = random.Random(f"{seed}-demos")
    picks: List[Tuple[Source, str]] = [(rng.choice(list(questions)), rng.choice(list(profiles))) for _ in range(n)]
    return [make_task(f"demo-{i}", q, profile_vector(p, slots, own)) for i, (q, p) in enumerate(picks)]


def by_id_hash(problems: Sequence[Source]) -> List[Source]:
    """Ordered by a hash of the id, so that any first few keep a spread of domains and templates."""
    return sorted(problems, key=lambda p: hashlib.sha256(p.question_id.encode()).hexdigest())


def split_problems(problems: Sequence[Source], fraction: float, max_heldout: int) -> Tuple[List[Source], List[Source]]:
    """(train, held-out) of a generated family, by question id as FRAMES is split; the held-out
    problems in id-hash order, the first `max_heldout` of them when it is set."""
    train = [p for p in problems if not is_heldout(p.question_id, fraction)]
    heldout = by_id_hash([p for p in problems if is_heldout(p.question_id, fraction)])
    return train, heldout[:max_heldout] if max_heldout else heldout

"""A task: one question with its gold answer and the preference vector the user asks for."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from orchestra_ray.frames import Question
from orchestra_ray.preferences import PreferenceVector, profile_vector


@dataclass(frozen=True)
class Task:
    task_id: str
    question_id: str
    question: str
    gold: str
    preference: PreferenceVector


class TaskSampler:
    """Draws (question, profile) tasks from the train split, epoch by epoch in a seeded order.

    Its position is (epoch, offset): saved in checkpoints so that a resumed run continues with the
    very next question.
    """

    def __init__(self, questions: Sequence[Question], profiles: Sequence[str], slots: Sequence[str], seed: int):
        self.questions = list(questions)
        self.profiles = list(profiles)
        self.slots = list(slots)
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
            pref = profile_vector(self._profile(self.epoch, self.offset), self.slots)
            tasks.append(Task(f"s{step}-t{i}", q.question_id, q.problem, q.answer, pref))
            self.offset += 1
        return tasks

    @property
    def position(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def restore(self, position: Dict[str, int]) -> None:
        self.epoch, self.offset = int(position["epoch"]), int(position["offset"])


def eval_tasks(questions: Sequence[Question], profiles: Sequence[str], slots: Sequence[str]) -> List[Task]:
    """Every held-out question under every evaluation profile."""
    return [
        Task(f"eval-{p}-{q.question_id}", q.question_id, q.problem, q.answer, profile_vector(p, slots))
        for p in profiles
        for q in questions
    ]


def demo_tasks(questions: Sequence[Question], profiles: Sequence[str], slots: Sequence[str], n: int, seed: int) -> List[Task]:
    rng = random.Random(f"{seed}-demos")
    picks: List[Tuple[Question, str]] = [(rng.choice(list(questions)), rng.choice(list(profiles))) for _ in range(n)]
    return [Task(f"demo-{i}", q.question_id, q.problem, q.answer, profile_vector(p, slots)) for i, (q, p) in enumerate(picks)]

"""The task-family interface: one kind of problem as the rollout loop and the warm start see it.

A family answers four questions about a task of its own: which tools (and system prompt) it shows
the policy, what state a new episode starts from (a domain's private database copy, or none), how an
answer or end state is judged, and which calls demonstrate it in the warm start. Shaped after
SkyRL-gym's environments (classes registered by name, each making a fresh state per episode), while
the multi-turn loop itself stays in one place (`orchestra_ray.rollout.episode`) and the tool calls
go through one router (`orchestra_ray.rollout.tool_router`).

Families are registered in `orchestra_ray.families.registry`; a run loads those its config weighs.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Protocol, Sequence, Tuple

from orchestra_ray.tools.spec import ToolSpec

Call = Tuple[str, Dict[str, Any]]  # (tool name, arguments)
Toolset = Tuple[str, List[ToolSpec]]  # (system prompt, tools)


class EpisodeState(Protocol):
    """An episode's own state that tool calls act on (a domain database copy)."""

    def call(self, name: str, arguments: Dict[str, Any]) -> str: ...

    def state_hash(self) -> str: ...


class TaskFamily(ABC):
    """Tasks name their family (`Task.family`) and toolset (`Task.toolset`, a key of `toolsets`).

    `load` builds a run's family from the config; the instance holds what the rollout workers need
    (toolsets, episode states) and the reference solutions the warm start demonstrates."""

    name: ClassVar[str]
    # Loaded whatever the sampling weights, for a toolset drivers need beyond training (FRAMES': the
    # served orchestrator's); its problems are sampled only with a weight above 0.
    always_loaded: ClassVar[bool] = False

    def __init__(self, toolsets: Dict[str, Toolset], reference: Optional[Dict[str, List[Call]]] = None):
        self.toolsets = toolsets
        self.reference = reference or {}  # question id -> the calls that solve it

    @classmethod
    @abstractmethod
    def load(cls, cfg: Any, zoo: Any) -> "Loaded":
        """The family of a run (`cfg`: OrchestraConfig; `zoo`: the driver's replay zoo) with its
        train and held-out problems."""

    def toolset(self, task: Any) -> Toolset:
        return self.toolsets[task.toolset]

    def new_state(self, task: Any) -> Optional[EpisodeState]:
        """A fresh state for one episode of `task` (none unless the family's tools act on one)."""
        return None

    @classmethod
    @abstractmethod
    def judge(cls, answer: str, task: Any, state: Optional[EpisodeState]) -> bool:
        """Whether an episode that ends with `answer` (in `state`, when it has one) solved `task`."""

    def demonstration(self, task: Any, rng: random.Random) -> List[Call]:
        """The calls of a warm-start demonstration of `task`, answer last: its reference solution."""
        return self.reference[task.question_id]


@dataclass(frozen=True)
class Loaded:
    family: TaskFamily
    train: Sequence[Any]  # problems (orchestra_ray.families.task.Source)
    heldout: Sequence[Any]

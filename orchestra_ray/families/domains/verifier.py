"""Outcome check as in tau2-bench: replay actions into a fresh copy of the initial database and
compare the resulting state hash with the one the gold actions lead to.

A refused call is skipped, as a real agent's refused call changed nothing; so any path that ends in
the gold state passes, and reads never matter.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Sequence, Tuple, Union

from orchestra_ray.families.domains.environment import Domain, DomainEnv
from orchestra_ray.families.domains.functions import DomainToolError
from orchestra_ray.families.domains.tasks import Action, DomainTask

Call = Union[Action, Tuple[str, Any]]


def _as_action(call: Call) -> Tuple[str, Any]:
    if isinstance(call, Action):
        return call.name, call.arguments
    name, arguments = call
    return name, arguments


def replay(domain: Domain, task: DomainTask, actions: Iterable[Call]) -> Tuple[DomainEnv, List[str]]:
    """The env after `actions`, and the refusal message of every call that failed (in order)."""
    env = domain.new_env(task)
    errors: List[str] = []
    for call in actions:
        name, arguments = _as_action(call)
        try:
            env.call(name, arguments)
        except DomainToolError as exc:
            errors.append(f"{name}: {exc}")
    return env, errors


def gold_hash(domain: Domain, task: DomainTask) -> str:
    return replay(domain, task, task.gold_actions)[0].state_hash()


def verify(domain: Domain, task: DomainTask, actions: Sequence[Call]) -> bool:
    return replay(domain, task, actions)[0].state_hash() == gold_hash(domain, task)

"""Domain tasks and their tau2-bench file format.

A task is a request the user states in full (there is no user simulator, so `instruction` carries
every id, date and amount needed) and one gold action sequence; success is judged by the database
state the gold actions lead to, not by the calls themselves. On disk tasks are tau2-bench task
objects: our instruction travels as `ticket` (tau2's field for solo-agent tasks) next to the
structured `user_scenario.instructions`, so the files also load in tau2 tooling; files without a
ticket (public tau2 / ToolScale tasks) get an instruction built from the structured fields.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Union

from orchestra_ray.families.domains.environment import Domain
from orchestra_ray.errors import DataError


@dataclass(frozen=True)
class Action:
    name: str
    arguments: Dict[str, Any]


@dataclass
class DomainTask:
    task_id: str
    domain: str
    instruction: str
    gold_actions: List[Action]
    purpose: str = ""  # what the task exercises (tau2 description.purpose)
    user_instructions: Union[Dict[str, Any], str, None] = None  # tau2 user_scenario.instructions
    initial_actions: List[Action] = field(default_factory=list)  # tau2 initial_state.initialization_actions
    reward_basis: List[str] = field(default_factory=lambda: ["DB"])
    communicate_info: List[str] = field(default_factory=list)


def draft_task(domain: str, purpose: str, instruction: str, known_info: str, actions: List[Action]) -> DomainTask:
    """A generated task before it has an id (the generator numbers the ones it keeps)."""
    instructions = {
        "domain": domain,
        "reason_for_call": instruction,
        "known_info": known_info or None,
        "unknown_info": None,
        "task_instructions": "State the whole request at once; you know nothing beyond it.",
    }
    return DomainTask("", domain, instruction, list(actions), purpose, instructions)


def task_to_tau2(task: DomainTask) -> Dict[str, Any]:
    initial_state = None
    if task.initial_actions:
        initial_state = {
            "initialization_data": None,
            "initialization_actions": [
                {"env_type": "assistant", "func_name": a.name, "arguments": a.arguments} for a in task.initial_actions
            ],
            "message_history": None,
        }
    instructions = task.user_instructions
    if instructions is None:
        instructions = {"domain": task.domain, "reason_for_call": task.instruction, "known_info": None,
                        "unknown_info": None, "task_instructions": ""}
    return {
        "id": task.task_id,
        "description": {"purpose": task.purpose or None, "relevant_policies": None, "notes": None},
        "user_scenario": {"persona": None, "instructions": instructions},
        "ticket": task.instruction,
        "initial_state": initial_state,
        "evaluation_criteria": {
            "actions": [
                {"action_id": f"{task.task_id}_{i}", "requestor": "assistant", "name": a.name, "arguments": a.arguments, "info": None}
                for i, a in enumerate(task.gold_actions)
            ],
            "communicate_info": list(task.communicate_info),
            "nl_assertions": None,
            "reward_basis": list(task.reward_basis),
        },
        "annotations": None,
    }


def write_tau2_tasks(path: str, tasks: List[DomainTask]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump([task_to_tau2(t) for t in tasks], f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


class _Where:
    """Names the file, task index and field of a problem in one message."""

    def __init__(self, path: str, index: int):
        self.path, self.index = path, index

    def error(self, field_name: str, problem: str) -> DataError:
        return DataError(f"{self.path}: task {self.index}: field '{field_name}' {problem}")

    def get(self, obj: Any, key: str, field_name: str, types: tuple, optional: bool = False) -> Any:
        value = obj.get(key) if isinstance(obj, dict) else None
        if value is None:
            if optional:
                return None
            raise self.error(field_name, "is missing")
        if not isinstance(value, types) or isinstance(value, bool):
            names = " or ".join(t.__name__ for t in types)
            raise self.error(field_name, f"must be {names}, got {type(value).__name__}")
        return value


def _instruction(raw: Dict[str, Any], where: _Where) -> str:
    ticket = where.get(raw, "ticket", "ticket", (str,), optional=True)
    if ticket is not None and ticket.strip():
        return ticket
    scenario = where.get(raw, "user_scenario", "user_scenario", (dict,))
    instructions = where.get(scenario, "instructions", "user_scenario.instructions", (dict, str))
    if isinstance(instructions, str):
        return instructions.strip()
    base = "user_scenario.instructions."
    reason = where.get(instructions, "reason_for_call", base + "reason_for_call", (str,))
    known = where.get(instructions, "known_info", base + "known_info", (str,), optional=True)
    todo = where.get(instructions, "task_instructions", base + "task_instructions", (str,), optional=True)
    return "\n".join(p.strip() for p in (known, reason, todo) if p and p.strip())


def _action(raw: Any, field_name: str, domain: Domain, where: _Where, name_key: str = "name") -> Action:
    if not isinstance(raw, dict):
        raise where.error(field_name, f"must be an object, got {type(raw).__name__}")
    requestor = raw.get("requestor", raw.get("env_type")) or "assistant"
    if requestor != "assistant":
        raise where.error(field_name + (".requestor" if "requestor" in raw else ".env_type"),
                          f"is '{requestor}'; only assistant actions can be replayed on the domain database")
    name = where.get(raw, name_key, f"{field_name}.{name_key}", (str,))
    arguments = where.get(raw, "arguments", f"{field_name}.arguments", (dict,), optional=True) or {}
    fn = domain.function(name)
    if fn is None:
        raise where.error(f"{field_name}.{name_key}", f"names '{name}', not a function of domain {domain.name} ({', '.join(domain.tool_names)})")
    try:
        fn.check(arguments)
    except ValueError as exc:
        raise where.error(f"{field_name}.arguments", f"does not fit {name}: {exc}") from None
    return Action(name, arguments)


def task_from_tau2(raw: Any, domain: Domain, where: _Where) -> DomainTask:
    if not isinstance(raw, dict):
        raise DataError(f"{where.path}: task {where.index}: expected a task object, got {type(raw).__name__}")
    task_id = where.get(raw, "id", "id", (str, int))
    instruction = _instruction(raw, where)
    if not instruction:
        raise where.error("user_scenario.instructions", "is empty")
    criteria = where.get(raw, "evaluation_criteria", "evaluation_criteria", (dict,))
    # tau2 allows no actions: the task is then to change nothing (e.g. to refuse a request).
    actions = where.get(criteria, "actions", "evaluation_criteria.actions", (list,), optional=True) or []
    unknown = sorted({a["name"] for a in actions if isinstance(a, dict) and isinstance(a.get("name"), str)} - set(domain.tool_names))
    if unknown:
        raise where.error("evaluation_criteria.actions", f"calls {', '.join(repr(n) for n in unknown)}, not functions of domain "
                          f"{domain.name} (it has: {', '.join(domain.tool_names)})")
    gold = [_action(a, f"evaluation_criteria.actions[{j}]", domain, where) for j, a in enumerate(actions)]
    initial: List[Action] = []
    state = where.get(raw, "initial_state", "initial_state", (dict,), optional=True)
    if state is not None:
        if state.get("initialization_data") is not None:
            raise where.error("initial_state.initialization_data", "is not supported (state comes from the domain database)")
        init = where.get(state, "initialization_actions", "initial_state.initialization_actions", (list,), optional=True) or []
        initial = [_action(a, f"initial_state.initialization_actions[{j}]", domain, where, "func_name") for j, a in enumerate(init)]
    description = where.get(raw, "description", "description", (dict,), optional=True) or {}
    purpose = where.get(description, "purpose", "description.purpose", (str,), optional=True) or ""
    basis = where.get(criteria, "reward_basis", "evaluation_criteria.reward_basis", (list,), optional=True)
    communicate = where.get(criteria, "communicate_info", "evaluation_criteria.communicate_info", (list,), optional=True)
    scenario = raw.get("user_scenario") if isinstance(raw.get("user_scenario"), dict) else {}
    task = DomainTask(
        task_id=str(task_id),
        domain=domain.name,
        instruction=instruction,
        gold_actions=gold,
        purpose=purpose,
        user_instructions=scenario.get("instructions"),
        initial_actions=initial,
        reward_basis=[str(b) for b in basis] if basis is not None else ["DB"],
        communicate_info=[str(c) for c in communicate] if communicate is not None else [],
    )
    if initial:
        # Every replay starts with these, so one the domain refuses makes the task unusable.
        try:
            domain.new_env(task)
        except ValueError as exc:
            raise where.error("initial_state.initialization_actions", f"cannot be applied: {exc}") from None
    return task


def load_tau2_tasks(path: str, domain: Domain) -> List[DomainTask]:
    """Tasks of a tau2-format JSON file (a list of task objects) whose actions call `domain`'s functions."""
    if not os.path.isfile(path):
        raise DataError(f"task file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read task file {path}: {exc}") from None
    if not isinstance(raw, list):
        raise DataError(f"{path}: expected a JSON list of tasks, got {type(raw).__name__}")
    tasks: List[DomainTask] = []
    seen: Dict[str, int] = {}
    for i, item in enumerate(raw):
        task = task_from_tau2(item, domain, _Where(path, i))
        if task.task_id in seen:
            raise DataError(f"{path}: task {i}: field 'id' repeats '{task.task_id}' of task {seen[task.task_id]}")
        seen[task.task_id] = i
        tasks.append(task)
    return tasks

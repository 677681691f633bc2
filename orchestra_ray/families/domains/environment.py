"""A domain (its name, functions and initial database) and an episode's private copy of it.

`DomainEnv.call` is what the policy's tool calls reach: it answers compact JSON, and refuses an
unknown function, bad arguments or a broken business rule with `DomainToolError` after rolling the
call's transaction back, so a refused call leaves the database exactly as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from orchestra_ray.families.domains.database import Database
from orchestra_ray.families.domains.functions import DomainFunction, DomainToolError
from orchestra_ray.tools.spec import ToolSpec, one_line


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Domain:
    name: str
    description: str  # one line for a system prompt
    functions: Sequence[DomainFunction]
    db_bytes: bytes = field(repr=False)

    def __post_init__(self):
        self._by_name: Dict[str, DomainFunction] = {f.name: f for f in self.functions}
        if len(self._by_name) != len(self.functions):
            raise ValueError(f"domain {self.name} has two functions with the same name")

    @property
    def tools(self) -> List[ToolSpec]:
        return [f.spec for f in self.functions]

    @property
    def tool_names(self) -> List[str]:
        return [f.name for f in self.functions]

    def function(self, name: str) -> Optional[DomainFunction]:
        return self._by_name.get(name)

    def initial_db_bytes(self) -> bytes:
        return self.db_bytes

    def entity_keys(self) -> List[str]:
        """The ids of the database's entities (values of `*_id` and `*_no` columns), sorted: what
        requests name and function arguments must repeat exactly."""
        keys = set()
        for rows in Database.from_bytes(self.db_bytes).dump().values():
            for row in rows:
                keys.update(v for k, v in row.items() if isinstance(v, str) and k.endswith(("_id", "_no")))
        return sorted(keys)

    def initial_hash(self) -> str:
        return Database.from_bytes(self.db_bytes).state_hash()

    def new_env(self, task: Optional[Any] = None) -> "DomainEnv":
        """A fresh copy of the initial database; with a task (a `tasks.DomainTask`, which imports this
        module), its initial actions applied too."""
        env = DomainEnv(self)
        for action in task.initial_actions if task is not None else ():
            env.call(action.name, action.arguments)
        return env


class DomainEnv:
    def __init__(self, domain: Domain):
        self.domain = domain
        self.db = Database.from_bytes(domain.db_bytes)

    def call(self, name: str, arguments: Dict[str, Any]) -> str:
        fn = self.domain.function(name) if isinstance(name, str) else None
        if fn is None:
            known = ", ".join(self.domain.tool_names)
            raise DomainToolError(one_line(f"unknown function '{str(name)[:64]}'; {self.domain.name} has: {known}"))
        fn.check(arguments)
        with self.db.transaction():
            result = fn(self.db, arguments)
        return compact_json(result)

    def state_hash(self) -> str:
        return self.db.state_hash()

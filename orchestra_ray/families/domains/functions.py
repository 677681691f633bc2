"""Typed domain functions: a JSON schema the policy sees (a `ToolSpec`) and a handler on the database.

Every parameter is required and a plain string or integer, so a small policy can copy values from
the request. Integers carry a range, which the shared validator checks with types and enums, so
absurd values (which SQLite cannot even store) never reach a handler.
Handlers are module-level functions, so a domain pickles by reference when shipped to workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

from orchestra_ray.families.domains.database import Database
from orchestra_ray.tools.spec import ToolSpec, one_line, validate_arguments

Handler = Callable[..., Any]
# A parameter: (type, description) or (type, description, enum values or an (min, max) range).
Param = Union[Tuple[str, str], Tuple[str, str, Any]]

INT_RANGE = (0, 1_000_000)
MESSAGE_CHARS = 300


class DomainToolError(ValueError):
    """A call the domain refuses: unknown function, bad arguments or a broken business rule."""


@dataclass(frozen=True)
class DomainFunction:
    spec: ToolSpec
    handler: Handler
    writes: bool

    @property
    def name(self) -> str:
        return self.spec.name

    def check(self, arguments: Any) -> None:
        """Raise DomainToolError unless `arguments` fit the schema (types, enums, integer ranges)."""
        problem = validate_arguments(self.spec, arguments)
        if problem:
            raise DomainToolError(problem)

    def __call__(self, db: Database, arguments: Dict[str, Any]) -> Any:
        return self.handler(db, **arguments)


def domain_function(name: str, description: str, params: Dict[str, Param], handler: Handler, writes: bool) -> DomainFunction:
    properties: Dict[str, Any] = {}
    for key, (typ, desc, *extra) in params.items():
        prop: Dict[str, Any] = {"type": typ, "description": desc}
        limit: Optional[Any] = extra[0] if extra else None
        if typ == "integer":
            prop["minimum"], prop["maximum"] = limit if isinstance(limit, tuple) else INT_RANGE
        elif limit is not None:
            prop["enum"] = list(limit)
        properties[key] = prop
    spec = ToolSpec(
        name=name,
        description=description,
        parameters={"type": "object", "properties": properties, "required": list(params), "additionalProperties": False},
    )
    return DomainFunction(spec, handler, writes)


def fail(message: str) -> None:
    # Rules quote the caller's values (ids, emails): the refusal stays one bounded line whatever they hold.
    raise DomainToolError(one_line(message, MESSAGE_CHARS))

"""Every read-only call a domain's database can answer, with its result.

A real base model arrives having copied countless ids from one place in its context to another;
the tiny quickstart model has not, and learns to copy only the ids it was trained to write. Lookups
over the whole database (each row asked about through each read function whose parameters are its
columns) show every entity id in a request, then in the call's arguments and again in its result,
so pre-training on them makes copying an id a skill over all ids. They hold no generated task and
no write action.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List

from orchestra_ray.families.domains.database import Database
from orchestra_ray.families.domains.environment import Domain
from orchestra_ray.families.domains.functions import DomainToolError


@dataclass(frozen=True)
class Lookup:
    name: str
    arguments: Dict[str, Any]
    request: str  # the function's description with the values asked about, as a user would ask
    result: str


def lookup_calls(domain: Domain) -> List[Lookup]:
    """Each distinct read call the initial rows support, in a fixed order; calls the domain
    refuses (a rule, a type) are left out."""
    env = domain.new_env()
    tables = Database.from_bytes(domain.db_bytes).dump()
    calls: List[Lookup] = []
    seen = set()
    for fn in domain.functions:
        if fn.writes:
            continue
        params = list(fn.spec.parameters["properties"])
        for rows in tables.values():
            for row in rows:
                if not params or any(p not in row for p in params):
                    continue
                args = {p: row[p] for p in params}
                key = (fn.name, json.dumps(args, sort_keys=True))
                if key in seen:
                    continue
                seen.add(key)
                try:
                    result = env.call(fn.name, args)
                except DomainToolError:
                    continue
                asked = ", ".join(f"{p.replace('_', ' ')} {v}" for p, v in args.items())
                calls.append(Lookup(fn.name, args, f"{fn.spec.description} For {asked}.", result))
    return calls

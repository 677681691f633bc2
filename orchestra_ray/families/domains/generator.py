"""Offline domain generation: each domain's database is populated from the seed, task templates
draft requests with gold actions from that database, and the filters keep the valid ones.

Everything is a pure function of the seed: the same seed gives byte-identical databases and the
same tasks with the same ids on every machine, so the driver can regenerate them at startup
instead of shipping files.
"""

from __future__ import annotations

import random
from types import ModuleType
from typing import Dict, Iterator, List, Tuple

import orchestra_ray.families.domains.airline as airline
import orchestra_ray.families.domains.bank as bank
import orchestra_ray.families.domains.retail as retail
import orchestra_ray.families.domains.weather as weather
from orchestra_ray.families.domains.database import Database
from orchestra_ray.families.domains.entities import rng_for
from orchestra_ray.families.domains.environment import Domain
from orchestra_ray.families.domains.filters import filter_tasks
from orchestra_ray.families.domains.tasks import DomainTask

MODULES: Tuple[ModuleType, ...] = (airline, retail, bank, weather)
DOMAIN_NAMES: Tuple[str, ...] = tuple(m.NAME for m in MODULES)
# Drafts drawn per task asked for before giving up: the filters drop roughly a third, and a
# small database can run out of distinct end states.
MAX_DRAFTS_PER_TASK = 20


def build_domain(module: ModuleType, seed: int) -> Domain:
    db = Database.create(module.SCHEMA)
    with db.transaction():
        module.populate(db, rng_for(seed, module.NAME, "db"))
    return Domain(module.NAME, module.DESCRIPTION, list(module.FUNCTIONS), db.to_bytes())


def draft_stream(module: ModuleType, domain: Domain, seed: int, max_drafts: int) -> Iterator[DomainTask]:
    """Drafts from the domain's weighted templates, each drawn against the initial database."""
    rng = rng_for(seed, module.NAME, "tasks")
    view = Database.from_bytes(domain.db_bytes).dump()
    weights = [w for w, _ in module.TEMPLATES]
    templates = [t for _, t in module.TEMPLATES]
    for _ in range(max_drafts):
        template = rng.choices(templates, weights)[0]
        # Each draft gets its own generator, so a template's draws never shift the next draft's.
        yield template(view, random.Random(rng.getrandbits(64)))


def generate_domains(seed: int, tasks_per_domain: int) -> Tuple[Dict[str, Domain], Dict[str, List[DomainTask]], Dict[str, Dict[str, int]]]:
    """Domains by name, their kept tasks (ids `<domain>-0000`, ...) and each domain's filter counts.

    A domain yields fewer than `tasks_per_domain` tasks only when its drafts run out of distinct
    valid requests; `kept` in its counts says how many.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if isinstance(tasks_per_domain, bool) or not isinstance(tasks_per_domain, int) or tasks_per_domain < 0:
        raise ValueError(f"tasks_per_domain must be a non-negative integer, got {tasks_per_domain!r}")
    domains: Dict[str, Domain] = {}
    tasks: Dict[str, List[DomainTask]] = {}
    stats: Dict[str, Dict[str, int]] = {}
    for module in MODULES:
        domain = build_domain(module, seed)
        drafts = draft_stream(module, domain, seed, MAX_DRAFTS_PER_TASK * tasks_per_domain)
        domains[module.NAME], (tasks[module.NAME], stats[module.NAME]) = domain, filter_tasks(domain, drafts, tasks_per_domain)
    return domains, tasks, stats

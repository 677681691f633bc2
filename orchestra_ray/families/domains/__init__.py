"""ToolScale-style function-calling domains, generated offline on SQLite (no Ray).

Each domain is a database plus typed functions over it; each task a fully stated request with gold
actions, judged by the database state those actions lead to (tau2-bench's DB reward).
"""

from orchestra_ray.families.domains.environment import Domain, DomainEnv
from orchestra_ray.families.domains.filters import filter_tasks
from orchestra_ray.families.domains.functions import DomainToolError
from orchestra_ray.families.domains.generator import DOMAIN_NAMES, generate_domains
from orchestra_ray.families.domains.tasks import Action, DomainTask, load_tau2_tasks, write_tau2_tasks
from orchestra_ray.families.domains.verifier import gold_hash, verify

__all__ = [
    "Action",
    "DOMAIN_NAMES",
    "Domain",
    "DomainEnv",
    "DomainTask",
    "DomainToolError",
    "filter_tasks",
    "generate_domains",
    "gold_hash",
    "load_tau2_tasks",
    "verify",
    "write_tau2_tasks",
]

"""The generated-task filters of the ToolScale recipe: a task is kept only if its gold actions all
succeed on a fresh copy of the database, change that database, and reach an end state no kept
task already reaches (two such tasks are one problem to the outcome reward).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, Iterable, List, Optional, Tuple

from orchestra_ray.families.domains.environment import Domain
from orchestra_ray.families.domains.tasks import DomainTask
from orchestra_ray.families.domains.verifier import replay

STAT_KEYS = ("generated", "dropped_failing", "dropped_no_effect", "dropped_duplicate", "kept")


def task_id(domain: str, index: int) -> str:
    return f"{domain}-{index:04d}"


def filter_tasks(domain: Domain, drafts: Iterable[DomainTask], limit: Optional[int] = None) -> Tuple[List[DomainTask], Dict[str, int]]:
    """Kept drafts, numbered in order (`<domain>-0000`, ...), and how many each filter dropped.
    With `limit`, stops drawing drafts once that many are kept, so `drafts` may be endless."""
    stats = dict.fromkeys(STAT_KEYS, 0)
    kept: List[DomainTask] = []
    if limit is not None and limit <= 0:
        return kept, stats
    initial = domain.initial_hash()
    seen = set()
    for draft in drafts:
        stats["generated"] += 1
        env, errors = replay(domain, draft, draft.gold_actions)
        end = env.state_hash()
        if errors:
            stats["dropped_failing"] += 1
        elif end == (domain.new_env(draft).state_hash() if draft.initial_actions else initial):
            stats["dropped_no_effect"] += 1
        elif end in seen:
            stats["dropped_duplicate"] += 1
        else:
            seen.add(end)
            kept.append(replace(draft, task_id=task_id(domain.name, len(kept)), domain=domain.name))
            if limit is not None and len(kept) >= limit:
                break
    stats["kept"] = len(kept)
    return kept, stats

"""The episode ledger of a step: every episode issued, completed, lost and re-issued, by id.

A step trains on each completed episode exactly once. An episode lost with its worker is counted
as a failed attempt and re-issued; a second completion of the same episode (a straggler answering
after its re-issue) is discarded and counted. `close()` refuses a step whose books do not balance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Set


def episode_id(task_id: str, sample: int) -> str:
    return f"{task_id}#{sample}"


@dataclass
class StepLedger:
    step: int
    issued: Set[str] = field(default_factory=set)
    completed: Set[str] = field(default_factory=set)
    failed_attempts: int = 0  # episode attempts lost to an infrastructure failure
    reissued: int = 0  # episodes sent out again after such a loss
    duplicates_discarded: int = 0
    failures: Dict[str, int] = field(default_factory=dict)  # failure type -> count

    def issue(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        again = self.issued.intersection(ids)
        if again:
            raise ValueError(f"step {self.step}: episodes issued twice: {sorted(again)[:3]}")
        self.issued.update(ids)

    def fail(self, ids: Iterable[str], why: str) -> None:
        ids = list(ids)
        self.failed_attempts += len(ids)
        self.failures[why] = self.failures.get(why, 0) + 1

    def reissue(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        unknown = set(ids) - self.issued
        if unknown:
            raise ValueError(f"step {self.step}: re-issue of episodes never issued: {sorted(unknown)[:3]}")
        self.reissued += len(ids)

    def complete(self, ids: Iterable[str]) -> List[bool]:
        """Per id: True for its first completion (use it), False for a duplicate (discard it)."""
        accepted = []
        for i in ids:
            if i not in self.issued:
                raise ValueError(f"step {self.step}: completion of an episode never issued: {i}")
            first = i not in self.completed
            self.completed.add(i)
            self.duplicates_discarded += not first
            accepted.append(first)
        return accepted

    def close(self) -> Dict:
        missing = self.issued - self.completed
        if missing:
            raise ValueError(f"step {self.step}: {len(missing)} issued episodes never completed, e.g. {sorted(missing)[:3]}")
        return self.as_dict()

    def as_dict(self) -> Dict:
        return {"issued": len(self.issued), "completed": len(self.completed), "failed_attempts": self.failed_attempts,
                "reissued": self.reissued, "duplicates_discarded": self.duplicates_discarded,
                "failures": dict(sorted(self.failures.items()))}

"""Whether the policy orchestrates: how often it consults more than one expert, and whether a second
call depends on what the first returned. The first expert's recorded grading of the question says
which it was: "not attempted" (an abstention, such as "I don't know") or an answer, right or wrong.
A policy that reads escalates after abstentions more often than after answers; one that does not
read makes second calls at the same rate after both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional

from orchestra_ray.reports.baselines import ABSTAINED

EXPERT_CALL = "call_expert"


@dataclass
class Escalation:
    episodes: int = 0
    multi_call: int = 0  # episodes that consult two or more experts
    after_abstention: int = 0  # first expert abstained ...
    second_after_abstention: int = 0  # ... and a second expert was called
    after_answer: int = 0
    second_after_answer: int = 0

    @staticmethod
    def rate(k: int, n: int) -> Optional[float]:
        return k / n if n else None

    def row(self) -> Dict:
        return {"episodes": self.episodes, "multi_call": self.multi_call,
                "multi_call_share": self.rate(self.multi_call, self.episodes),
                "after_abstention": self.after_abstention, "second_after_abstention": self.second_after_abstention,
                "second_rate_after_abstention": self.rate(self.second_after_abstention, self.after_abstention),
                "after_answer": self.after_answer, "second_after_answer": self.second_after_answer,
                "second_rate_after_answer": self.rate(self.second_after_answer, self.after_answer)}


def escalation(records: Iterable[Mapping], grades: Mapping[str, Mapping[str, str]]) -> Dict[str, Dict]:
    """Per preference profile, from trajectory rows (`preference_profile`, `question_id`, `tool_calls`
    with `name` and `expert`) and each question's recorded grade per slot."""
    out: Dict[str, Escalation] = {}
    for r in records:
        e = out.setdefault(r["preference_profile"], Escalation())
        e.episodes += 1
        asked = []  # distinct experts, in the order first asked
        for c in r["tool_calls"]:
            if c["name"] == EXPERT_CALL and c["expert"] and c["expert"] not in asked:
                asked.append(c["expert"])
        e.multi_call += len(asked) >= 2
        if not asked:
            continue
        grade = grades.get(r["question_id"], {}).get(asked[0])
        if grade is None:
            continue
        if grade == ABSTAINED:
            e.after_abstention += 1
            e.second_after_abstention += len(asked) >= 2
        else:
            e.after_answer += 1
            e.second_after_answer += len(asked) >= 2
    return {p: e.row() for p, e in out.items()}

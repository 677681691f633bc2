"""The task families a run trains on, as the driver sees them: train and held-out problems per
family, the toolset (system prompt and tools) each problem is shown, the domains whose databases
the rollout workers copy per episode, and the reference solutions the warm start demonstrates.

FRAMES questions come from the replay zoo; domain tasks from the offline SQLite domain generator
(their gold is the database hash after the gold actions); arithmetic problems from their generator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

from orchestra_ray.families.arithmetic import generate_arithmetic
from orchestra_ray.rollout.chat import task_prompt
from orchestra_ray.config import OrchestraConfig
from orchestra_ray.errors import ConfigError
from orchestra_ray.families.frames import is_heldout
from orchestra_ray.families.task import ARITHMETIC, DOMAIN, FRAMES, Problem, Source
from orchestra_ray.tools.spec import ToolSpec, code_tool, expert_tools, search_tool, text_answer_tool
from pipelines.zoo import Zoo

Call = Tuple[str, Dict]


@dataclass
class Families:
    train: Dict[str, List[Source]] = field(default_factory=dict)
    heldout: Dict[str, List[Source]] = field(default_factory=dict)
    toolsets: Dict[str, Tuple[str, List[ToolSpec]]] = field(default_factory=dict)
    domains: Dict[str, object] = field(default_factory=dict)
    reference: Dict[str, List[Call]] = field(default_factory=dict)  # question id -> scripted calls

    @property
    def names(self) -> List[str]:
        return list(self.train)


def by_id_hash(problems: Sequence[Source]) -> List[Source]:
    """Ordered by a hash of the id, so that any first few keep a spread of domains and templates."""
    return sorted(problems, key=lambda p: hashlib.sha256(p.question_id.encode()).hexdigest())


def _split(problems: Sequence[Source], fraction: float, max_heldout: int) -> Tuple[List[Source], List[Source]]:
    train = [p for p in problems if not is_heldout(p.question_id, fraction)]
    heldout = by_id_hash([p for p in problems if is_heldout(p.question_id, fraction)])
    return train, heldout[:max_heldout] if max_heldout else heldout


def load_families(cfg: OrchestraConfig, zoo: Zoo) -> Families:
    fam = Families()
    weights = cfg.families.weights
    frames_tools = expert_tools(zoo.slots) + ([search_tool()] if cfg.tools.search.corpus else [])
    fam.toolsets[FRAMES] = (zoo.system_prompt, frames_tools)
    if weights.get(FRAMES, 0) > 0:
        fam.train[FRAMES], fam.heldout[FRAMES] = list(zoo.train), list(zoo.heldout)
    fraction, cap = cfg.data.heldout_fraction, cfg.families.max_heldout
    if weights.get(ARITHMETIC, 0) > 0:
        a = cfg.families.arithmetic
        tools = [code_tool(), text_answer_tool("Give the final answer and end.")]
        fam.toolsets[ARITHMETIC] = (task_prompt("Solve the user's problem: compute with tools, then answer.", tools), tools)
        problems = generate_arithmetic(a.problems, a.seed)
        for p in problems:
            fam.reference[p.problem.question_id] = [("run_python", {"code": p.code}), ("answer", {"text": p.problem.answer})]
        fam.train[ARITHMETIC], fam.heldout[ARITHMETIC] = _split([p.problem for p in problems], fraction, cap)
    if weights.get(DOMAIN, 0) > 0:
        from orchestra_ray.families.domains import generate_domains, gold_hash

        d = cfg.families.domain
        domains, tasks, _ = generate_domains(d.seed, d.tasks_per_domain)
        problems: List[Problem] = []
        for name in d.names:
            if name not in domains:
                raise ConfigError(f"invalid value for config key 'families.domain.names': unknown domain '{name}' (known: {', '.join(sorted(domains))})")
            dom = domains[name]
            tools = list(dom.tools) + [text_answer_tool("End the conversation once the request is carried out: tell the user what you did.")]
            intro = f"You are the {name} service agent. {dom.description} Carry out the user's request with the functions, then answer."
            fam.toolsets[f"domain:{name}"] = (task_prompt(intro, tools), tools)
            fam.domains[name] = dom
            for t in tasks[name]:
                fam.reference[t.task_id] = [(a.name, dict(a.arguments)) for a in t.gold_actions] + [("answer", {"text": "Done."})]
                problems.append(Problem(t.task_id, t.instruction, gold_hash(dom, t), DOMAIN, f"domain:{name}"))
        fam.train[DOMAIN], fam.heldout[DOMAIN] = _split(problems, fraction, cap)
    return fam

"""The function-calling domains as a task family: a toolset per domain ("domain:<name>"), a fresh
copy of the domain's database per episode, success judged by the database state the episode ends in
(what was said does not matter, as in tau2-bench), and the gold actions as demonstrations."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from orchestra_ray.errors import ConfigError
from orchestra_ray.families.domains.environment import Domain, DomainEnv
from orchestra_ray.families.domains.generator import generate_domains
from orchestra_ray.families.domains.verifier import gold_hash
from orchestra_ray.families.family import Call, EpisodeState, Loaded, TaskFamily, Toolset
from orchestra_ray.families.task import DOMAIN, Problem, split_problems
from orchestra_ray.rollout.chat import task_prompt
from orchestra_ray.tools.spec import text_answer_tool

TOOLSET_PREFIX = "domain:"


def domain_toolset(name: str) -> str:
    """The toolset key of a domain's tasks."""
    return TOOLSET_PREFIX + name


def toolset_domain(toolset: str) -> Optional[str]:
    """The domain a toolset key names, or None when it names none."""
    return toolset[len(TOOLSET_PREFIX):] if toolset.startswith(TOOLSET_PREFIX) else None


class DomainFamily(TaskFamily):
    name = DOMAIN

    def __init__(self, domains: Dict[str, Domain], toolsets: Dict[str, Toolset], reference: Dict[str, List[Call]]):
        super().__init__(toolsets, reference)
        self.domains = domains  # name -> Domain, whose database each episode copies

    @classmethod
    def load(cls, cfg: Any, zoo: Any) -> Loaded:
        d = cfg.families.domain
        generated, tasks, _ = generate_domains(d.seed, d.tasks_per_domain)
        domains: Dict[str, Domain] = {}
        toolsets: Dict[str, Toolset] = {}
        reference: Dict[str, List[Call]] = {}
        problems: List[Problem] = []
        for name in d.names:
            if name not in generated:
                raise ConfigError(f"invalid value for config key 'families.domain.names': unknown domain '{name}' (known: {', '.join(sorted(generated))})")
            dom = generated[name]
            tools = list(dom.tools) + [text_answer_tool("End the conversation once the request is carried out: tell the user what you did.")]
            intro = f"You are the {name} service agent. {dom.description} Carry out the user's request with the functions, then answer."
            toolsets[domain_toolset(name)] = (task_prompt(intro, tools), tools)
            domains[name] = dom
            for t in tasks[name]:
                reference[t.task_id] = [(a.name, dict(a.arguments)) for a in t.gold_actions] + [("answer", {"text": "Done."})]
                problems.append(Problem(t.task_id, t.instruction, gold_hash(dom, t), DOMAIN, domain_toolset(name)))
        train, heldout = split_problems(problems, cfg.data.heldout_fraction, cfg.families.max_heldout)
        return Loaded(cls(domains, toolsets, reference), train, heldout)

    def new_state(self, task: Any) -> DomainEnv:
        return self.domains[toolset_domain(task.toolset)].new_env()

    @classmethod
    def judge(cls, answer: str, task: Any, state: Optional[EpisodeState]) -> bool:
        # The gold is the hash of the database after the gold actions; an answer relayed without
        # the episode's state (an expert's) cannot be checked, so it is wrong.
        return state is not None and state.state_hash() == task.gold

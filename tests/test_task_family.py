"""The task-family interface without Ray: the registry, each family's judge, episode state and
demonstration, loading a run's families, and the warm start's demonstrations run through the router."""

import os
import random

import pytest

from orchestra_ray.config_load import load_config
from orchestra_ray.experts.base import InProcessExperts
from orchestra_ray.families.arithmetic import ArithmeticFamily
from orchestra_ray.families.demos import listed_choice, scripted_demo
from orchestra_ray.families.domains.family import DomainFamily, domain_toolset, toolset_domain
from orchestra_ray.families.frames import FramesFamily
from orchestra_ray.families.registry import FAMILIES, family_type
from orchestra_ray.families.task import ARITHMETIC, DOMAIN, FRAMES, Task, eval_tasks
from orchestra_ray.grpo.preferences import profile_vector
from orchestra_ray.policy.tiny_model import train_tokenizer
from orchestra_ray.rollout.chat import ChatFormat, SlotCard, tool_call_text, user_message
from orchestra_ray.rollout.tool_router import ToolRouter

QUICKSTART = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines", "configs", "quickstart.yaml")
SLOTS = ["big", "small"]
CARDS = [SlotCard("big", "", 3.0, 15.0, 30.0), SlotCard("small", "", 0.05, 0.2, 0.4)]


def task(gold, family=FRAMES, toolset=FRAMES, profile="balanced"):
    return Task("t", "q", "question?", gold, profile_vector(profile, SLOTS), family, toolset)


@pytest.fixture(scope="module")
def domains():
    cfg = load_config(QUICKSTART, ["families.domain.tasks_per_domain=2"])
    return DomainFamily.load(cfg, None)


def test_the_registry_lists_every_family_in_load_order():
    assert list(FAMILIES) == [FRAMES, ARITHMETIC, DOMAIN]
    # The config's schema names them too, without importing them (a config is read before any family loads).
    from orchestra_ray import config

    assert sorted(config.FAMILIES) == sorted(FAMILIES)
    assert family_type(DOMAIN) is DomainFamily
    with pytest.raises(ValueError, match="unknown task family 'nope'"):
        family_type("nope")


def test_each_family_judges_its_own_way():
    assert FramesFamily.judge("It is Paris.", task("Paris"), None) and not FramesFamily.judge("Lyon", task("Paris"), None)
    assert ArithmeticFamily.judge("The result is 4,812,185.", task("4812185", ARITHMETIC), None)
    assert not ArithmeticFamily.judge("41", task("42", ARITHMETIC), None)


def test_a_domain_episode_starts_from_a_fresh_database_and_is_judged_by_its_end_state(domains):
    family = domains.family
    assert set(family.toolsets) == {domain_toolset(n) for n in family.domains}
    t = next(p for p in domains.train if toolset_domain(p.toolset) == "bank")
    tk = eval_tasks([t], ["balanced"], SLOTS)[0]
    a, b = family.new_state(tk), family.new_state(tk)
    assert a is not b and a.state_hash() == family.domains["bank"].initial_hash()
    for name, args in family.demonstration(tk, random.Random(0))[:-1]:
        a.call(name, args)
    assert DomainFamily.judge("Done.", tk, a) and not DomainFamily.judge("Done.", tk, b)
    assert not DomainFamily.judge("Done.", tk, None)  # a relayed answer has no state to check
    assert toolset_domain(FRAMES) is None and toolset_domain(domain_toolset("bank")) == "bank"


def test_a_frames_demonstration_relays_the_demonstrators_expert():
    strongest = FramesFamily("sys", [], "big")
    assert strongest.demonstration(task("x"), random.Random(0)) == [("call_expert", {"expert": "big"}),
                                                                    ("answer", {"expert": "big"})]
    pref = FramesFamily("sys", [], "big", "preference", CARDS, 0.5)
    t = task("x", profile="cost-first")
    calls = [pref.demonstration(t, r)[0][1]["expert"] for r in [random.Random(3)] for _ in range(20)]
    expected = [listed_choice(CARDS, "big", t.preference.weights, 0.5, r) for r in [random.Random(3)] for _ in range(20)]
    assert calls == expected


def test_a_run_loads_its_weighted_families_and_always_the_frames_toolset(frames_dir):
    from pipelines.families import load_families
    from pipelines.zoo import load_zoo

    cfg = load_config(QUICKSTART, [f"data.path={frames_dir}", "families.weights={frames: 0.0, arithmetic: 1.0}", "families.arithmetic.problems=20"])
    fam = load_families(cfg, load_zoo(cfg))
    assert list(fam.by_name) == [FRAMES, ARITHMETIC] and fam.names == [ARITHMETIC] and fam.domains == {}
    assert list(fam.toolsets) == [FRAMES, ARITHMETIC] and len(fam.reference) == 20
    assert fam.reference[fam.train[ARITHMETIC][0].question_id][0][0] == "run_python"


class NoTools:
    def run_tools(self, calls):
        raise AssertionError("no basic tool in these demonstrations")


def test_warm_start_demonstrations_observe_through_the_router(domains):
    from pipelines.warm_start import observer

    family = domains.family
    texts = [p for p, _ in family.toolsets.values()] + [tool_call_text(n, a) for calls in family.reference.values() for n, a in calls]
    chat = ChatFormat(train_tokenizer(texts, 400, SLOTS))
    router = ToolRouter(InProcessExperts({}), NoTools(), max_response_chars=40, state_call_latency_s=0.05)
    for t in eval_tasks(domains.train[:4], ["balanced"], SLOTS):
        system, user, calls = family.toolset(t)[0], user_message(t.question, t.preference), family.demonstration(t, None)
        env = family.new_state(t)
        direct = scripted_demo(chat, system, user, calls, lambda n, a: env.call(n, a)[:40])
        assert scripted_demo(chat, system, user, calls, observer(router, t, family.new_state(t))) == direct
    # A failing call is observed as its error text, as a rollout would see it.
    assert observer(router, t, family.new_state(t))("cancel_everything", {}).startswith("error: unknown function 'cancel_everything'")

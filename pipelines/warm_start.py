"""The warm start: supervised fine-tuning on demonstrations before GRPO.

Each family demonstrates its own training problems (its share of `warm_start.examples`, or
`warm_start.family_examples[family]`): `TaskFamily.demonstration` gives the calls, and the tool
router runs each call but the last for real, as a rollout would, so a demonstration's observations
are the ones the policy will see (the zoo's replay experts in this process, the code interpreter
and search through their actors, a domain's functions on a fresh copy of its database).
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import ray

from orchestra_ray.config import OrchestraConfig, WarmStartConfig
from orchestra_ray.experts.base import InProcessExperts
from orchestra_ray.families.demos import scripted_demo
from orchestra_ray.families.family import EpisodeState
from orchestra_ray.families.task import Task, demo_tasks
from orchestra_ray.rollout.chat import ChatFormat, user_message
from orchestra_ray.rollout.episode import episode_limits
from orchestra_ray.rollout.tool_router import RoutedCall, ToolClient, ToolRouter
from pipelines.families import Families
from pipelines.zoo import Zoo


def observer(router: ToolRouter, task: Task, state: Optional[EpisodeState]):
    """Runs a demonstration's calls through `router`; what a call returns, its error text included,
    is what the demonstration observes, as in a rollout."""

    def observe(name: str, args: Dict[str, Any]) -> str:
        return router.run(0, [RoutedCall(name, args, task, state)])[0].observation

    return observe


def demonstrations(cfg: OrchestraConfig, zoo: Zoo, families: Families, chat: ChatFormat, shares: Mapping[str, int],
                   tools: ToolClient) -> List[dict]:
    """Token ids and loss masks of every demonstration, shuffled; `shares`: each family's share of
    warm_start.examples (the task sampler's proportions); `tools`: the basic tools' client."""
    limits = episode_limits(cfg)
    router = ToolRouter(InProcessExperts(zoo.experts), tools, limits.max_response_chars, limits.domain_call_latency_s)
    counts = {**shares, **cfg.warm_start.family_examples}
    rng = random.Random(cfg.run.seed)  # the demonstrators' draws, task after task
    demos = []
    for name, pool in families.train.items():
        family = families.by_name[name]

        def demonstrate(t: Task) -> dict:
            return scripted_demo(chat, family.toolset(t)[0], user_message(t.question, t.preference),
                                 family.demonstration(t, rng), observer(router, t, family.new_state(t)))

        n = counts.get(name, 0)
        drawn = demo_tasks(pool, cfg.preferences.train_profiles, zoo.slots, n, cfg.run.seed, cfg.preferences.weights)
        mine = [(t.preference.profile, demonstrate(t)) for t in drawn]
        share = cfg.warm_start.multi_call_share
        if share > 0 and n:
            more = demo_tasks(pool, cfg.preferences.train_profiles, zoo.slots, EXTRA_DRAWS * n, cfg.run.seed + 1,
                              cfg.preferences.weights)
            mine += multi_call_supplement(mine, ((t.preference.profile, t) for t in more), demonstrate, share)
        demos.extend(d for _, d in mine)
    random.Random(cfg.run.seed).shuffle(demos)
    return demos


EXTRA_DRAWS = 4  # further tasks drawn per demonstration, at most, to find the multi-call ones a share asks for


def calls_of(demo: dict) -> int:
    """How many calls a demonstration makes, its answer included: the runs of the policy's tokens."""
    mask = demo["loss_mask"]
    return sum(1 for i, m in enumerate(mask) if m and (i == 0 or not mask[i - 1]))


def multi_call_supplement(demos: List[Tuple[str, dict]], candidates: Iterable[Tuple[str, Task]],
                          demonstrate: Callable[[Task], dict], share: float) -> List[Tuple[str, dict]]:
    """Demonstrations of further tasks (`candidates`, by profile) that call more than once before
    answering, added per profile until they are `share` of that profile's demonstrations: a route
    rare in the data (escalating after the strongest expert says it does not know) is then seen
    often enough to be learnt. Profiles whose share is already met get none. Best effort: when the
    candidates run out the share may stay below `share`, and a question drawn twice is demonstrated
    twice (FRAMES has a few dozen training questions where claude-sonnet-4 says it does not know).
    Every candidate is demonstrated to learn how many calls it makes (for arithmetic, a sandboxed
    run), so the quickstart sets it for FRAMES-only runs."""
    total: Dict[str, int] = {}
    multi: Dict[str, int] = {}
    for profile, d in demos:
        total[profile] = total.get(profile, 0) + 1
        multi[profile] = multi.get(profile, 0) + (calls_of(d) > 2)
    added: List[Tuple[str, dict]] = []
    for profile, t in candidates:
        if profile not in total or multi[profile] >= share * total[profile]:
            continue
        d = demonstrate(t)
        if calls_of(d) > 2:
            added.append((profile, d))
            multi[profile] += 1
            total[profile] += 1
    return added


CHUNK_S = 1.0  # about this long per call of the learner: progress every second, one actor call's overhead


def fine_tune(learner, demos: List[dict], w: WarmStartConfig, seed: int, report: Callable[[int, int], None]) -> List[float]:
    """The learner's supervised stage, a chunk of batches per call (sized to take about CHUNK_S), so
    that the driver shows its progress through `report(done, total)`: the loss of each epoch."""
    total = ray.get(learner.warm_start_begin.remote(demos, w.epochs, w.batch_size, w.lr, seed))
    done, chunk = 0, 1
    report(done, total)
    while True:
        t0 = time.monotonic()
        losses = ray.get(learner.warm_start_run.remote(chunk))
        done = min(total, done + chunk)
        report(done, total)
        if losses is not None:
            return losses
        chunk = max(1, min(4 * chunk, int(chunk * CHUNK_S / max(time.monotonic() - t0, 1e-3))))


def run_warm_start(cfg: OrchestraConfig, zoo: Zoo, families: Families, shares: Mapping[str, int], learner, tools: ToolClient,
                   policy_path: str, report: Callable[[int, int], None] = lambda done, total: None) -> Tuple[List[float], int]:
    """Fine-tunes `learner` (its actor) on the demonstrations: the loss of each epoch, and how many
    demonstrations there were; `report(done, total)`: the batches taken, after each chunk."""
    from transformers import AutoTokenizer

    chat = ChatFormat(AutoTokenizer.from_pretrained(policy_path))
    demos = demonstrations(cfg, zoo, families, chat, shares, tools)
    return fine_tune(learner, demos, cfg.warm_start, cfg.run.seed, report), len(demos)

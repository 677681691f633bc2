"""`orchestra-ray bench routes`: what routes that do not read the question can reach on the held-out
FRAMES questions of a config's split, from the zoo's recorded answers alone (no policy, no Ray), and
what one fitted to the question's embedding reaches.

The table gives, per evaluation profile, the anchored reward (as the report computes it), accuracy
and cost per question of:
- the best fixed cascade, chosen on the training split (the report's `cascade` baseline; it
  escalates on the recorded grade "not attempted");
- the same order escalating when what the policy is shown of an answer says the expert does not
  know (`says_unknown` on `expert_view`, the cascade demonstrators' reading rule);
- the best policy that decides from what the experts say (a decision tree of up to three calls,
  reading whether each answer says the expert does not know and whether it agrees with one read
  before: `orchestra_ray/reports/reading_policy.py`), fitted on the training split, and fitted on
  the held-out questions themselves (hindsight: the most a policy reading these signals gets there;
  the row above is one such policy); below the table, the corners of the accuracy-cost frontier of
  such policies on the held-out questions;
- the best of every fixed cascade of up to three experts chosen on the held-out questions
  themselves (hindsight: the most any question-blind order gets there);
- the hindsight cascade's order escalating after every wrong answer (a reader that knew which
  answers are wrong: the ceiling of reading answers);
- an order chosen per question from its sentence embedding, by ridge regressions fitted on the
  training split (`orchestra_ray/reports/route_fit.py`): what reading the question, and the recorded
  abstentions, learns from these training questions;
- the oracle (the cheapest correct expert of each question: the ceiling of reading the question).
"""

from __future__ import annotations

import collections
import itertools
from typing import Callable, Dict, List, Sequence, Tuple

from orchestra_ray.config import OrchestraConfig
from orchestra_ray.errors import ConfigError
from orchestra_ray.families.task import FRAMES
from orchestra_ray.grpo.preferences import COST, OUTCOME, profile_vector
from orchestra_ray.grpo.reward import anchored_reward
from orchestra_ray.reports.baselines import Answer, anchors_of, arm_metrics, best_cascade, cascade_asked, escalating, oracle_slot
from orchestra_ray.reports.reading_policy import UNKNOWN, accuracy_cost_frontier, best_reading_policy, describe, follow, signal
from orchestra_ray.reports.route_fit import fitted_routes
from pipelines.families import Families
from pipelines.zoo import Zoo

Asked = List[Tuple[str, Answer]]
FITTED = "order chosen per question from its embedding (fitted on the training split)"


def route_reward(answers: Dict[str, Answer], slots: Sequence[str], weights: Dict[str, float], asked: Asked) -> float:
    return anchored_reward(arm_metrics(slots, asked, asked[-1][1]), anchors_of(answers, slots), weights)


def figures(answers, ids: Sequence[str], slots: Sequence[str], weights: Dict[str, float],
            route: Callable[[str], Asked]) -> Dict[str, float]:
    reward = correct = cost = 0.0
    for q in ids:
        asked = route(q)
        m = arm_metrics(slots, asked, asked[-1][1])
        reward += anchored_reward(m, anchors_of(answers[q], slots), weights)
        correct += m[OUTCOME]
        cost += m[COST]
    return {"reward": reward / len(ids), "accuracy": correct / len(ids), "cost": cost / len(ids)}


def run(cfg: OrchestraConfig, zoo: Zoo, families: Families) -> Dict:
    from orchestra_ray.tools.search import encode

    if not families.heldout.get(FRAMES) or not families.train.get(FRAMES):
        raise ConfigError("bench routes needs FRAMES training and held-out questions; this config has none")
    train = [q.question_id for q in families.train[FRAMES]]
    heldout = [q.question_id for q in families.heldout[FRAMES]]
    answers = zoo.recorded_answers(families.train[FRAMES] + families.heldout[FRAMES])
    slots = list(zoo.slots)
    seen = cfg.zoo.max_response_chars
    orders = [o for n in range(1, min(3, len(slots)) + 1) for o in itertools.permutations(slots, n)]
    embedded = encode([q.problem for q in families.train[FRAMES] + families.heldout[FRAMES]])
    x_train, x_heldout = embedded[: len(train)], embedded[len(train):]
    out: Dict = {"config": cfg.run.name or "", "heldout_questions": len(heldout), "train_questions": len(train),
                 "profiles": {}, "reading_frontier": [
                     {"accuracy": acc, "cost": cost, "policy": describe(tree)}
                     for acc, cost, tree in accuracy_cost_frontier(answers, heldout, slots, seen)]}
    for profile in cfg.preferences.eval_profiles:
        w = dict(profile_vector(profile, slots, cfg.preferences.weights).weights)
        chosen = best_cascade(answers, train, slots, w)
        scored = {o: figures(answers, heldout, slots, w, lambda q, o=o: cascade_asked(o, answers[q])) for o in orders}
        hindsight = max(orders, key=lambda o: scored[o]["reward"])
        earned = [[route_reward(answers[q], slots, w, cascade_asked(o, answers[q])) for o in orders] for q in train]
        picked = dict(zip(heldout, (orders[i] for i in fitted_routes(x_train, earned, x_heldout))))
        reading = {split: best_reading_policy(answers, ids, slots, w, seen) for split, ids in (("training split", train),
                                                                                               ("held-out, hindsight", heldout))}
        routes = {
            "best fixed cascade (training split)": (chosen, scored[chosen]),
            "  escalating on the text it reads": (chosen, figures(
                answers, heldout, slots, w, lambda q: escalating(chosen, answers[q], lambda a: signal(a, [], seen) != UNKNOWN))),
            **{f"best reading policy ({split})": (describe(tree), figures(
                answers, heldout, slots, w, lambda q, tree=tree: follow(tree, answers[q], seen))) for split, tree in reading.items()},
            "best fixed cascade (held-out, hindsight)": (hindsight, scored[hindsight]),
            "  escalating after every wrong answer": (hindsight, figures(
                answers, heldout, slots, w, lambda q: escalating(hindsight, answers[q], lambda a: a.correct))),
            FITTED: ((), figures(
                answers, heldout, slots, w, lambda q: cascade_asked(picked[q], answers[q]))),
            "oracle (cheapest correct expert)": ((), figures(
                answers, heldout, slots, w, lambda q: [(oracle_slot(answers[q], slots), answers[q][oracle_slot(answers[q], slots)])])),
        }
        out["profiles"][profile] = {name: {"order": [o] if isinstance(o, str) else list(o), **f} for name, (o, f) in routes.items()}
        common, n = collections.Counter(picked.values()).most_common(1)[0]
        out["profiles"][profile][FITTED]["most_chosen"] = {"order": list(common), "questions": n}
    return out


def table(result: Dict) -> str:
    lines = [f"held-out FRAMES: {result['heldout_questions']} questions (routes chosen on {result['train_questions']} training questions)",
             "", "| profile | route | order | reward | accuracy | cost / question |", "|---|---|---|---|---|---|"]
    for profile, routes in result["profiles"].items():
        for name, r in routes.items():
            order = " -> ".join(r["order"]) or "-"
            if "most_chosen" in r:
                order = f"per question; most often {' -> '.join(r['most_chosen']['order'])} ({r['most_chosen']['questions']})"
            lines.append(f"| {profile} | {name.strip()}{' (same order)' if name.startswith(' ') else ''} | {order} | "
                         f"{r['reward']:.3f} | {100 * r['accuracy']:.1f} % | ${r['cost']:.5f} |")
    lines += ["", "Accuracy against cost of the policies that read the answers, not the question (chosen on the held-out "
              "questions: the corners of their frontier; between two corners a policy costs at least the line between them):",
              "", "| accuracy | cost / question | policy |", "|---|---|---|"]
    lines += [f"| {100 * c['accuracy']:.1f} % | ${c['cost']:.5f} | {c['policy']} |" for c in result["reading_frontier"]]
    return "\n".join(lines)

"""The held-out evaluation's samples, shared by training (warm start and final) and `orchestra-ray
eval`: the policy in the rollout pool, exactly as in training, on every held-out problem."""

from __future__ import annotations

from typing import List

from orchestra_ray.config import OrchestraConfig
from orchestra_ray.families.task import FRAMES, eval_tasks
from orchestra_ray.reports.evaluation import anchor_metrics, score_records
from orchestra_ray.rollout.sample import Sample
from pipelines.families import Families
from pipelines.zoo import Zoo


def heldout_records(cfg: OrchestraConfig, zoo: Zoo, families: Families, pool, step: int) -> List[Sample]:
    """One greedy (eval.temperature) sample of every held-out problem under every eval profile from
    the rollout pool, each with its evaluation reward as `reward`."""
    tasks = [t for p in families.heldout.values() for t in eval_tasks(p, cfg.preferences.eval_profiles, zoo.slots, cfg.preferences.weights)]
    records = pool.run(tasks, 1, cfg.eval.temperature, seed=10_000_000 + step)
    anchors = {q.question_id: anchor_metrics(q.question_id, q.problem, zoo.experts, zoo.slots)
               for q in families.heldout.get(FRAMES, [])}
    return score_records(records, anchors)

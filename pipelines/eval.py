"""`orchestra-ray eval CHECKPOINT`: the policy of a checkpoint and every baseline on the held-out
split, on the Ray cluster, with each evaluation profile; then the report.

The policy runs in the rollout pool exactly as in training (greedy by default, eval.temperature).
The baselines replay the zoo's recorded answers on the same held-out questions; the learned router
(RLlib PPO over question embeddings) is trained on the training split once per run and kept in
<run>/router. Everything is written as Parquet trajectories before the report reads it back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from typing import Dict, List, Optional, Tuple

import pyarrow.parquet as pq

from orchestra_ray import checkpoint as ckpt
from orchestra_ray.reports.baselines import baseline_records, plan_baselines
from orchestra_ray.config import OrchestraConfig
from orchestra_ray.errors import ConfigError
from orchestra_ray.grpo.preferences import metric_names, profile_vector
from orchestra_ray.families.task import FRAMES
from orchestra_ray.rollout.sample import Sample
from orchestra_ray.rollout.trajectory import trajectory_rows
from pipelines.families import Families
from pipelines.heldout import heldout_records
from pipelines.progress import Progress
from pipelines.report import POLICY, TRAJECTORIES, build_report, method_file
from pipelines.workers import Workers
from pipelines.zoo import Zoo

ROUTER_DIR = "router"
FITTED_ON = "fitted_on.sha256"  # beside the router: the data it was fitted on (`fitted_on`)


class EvalRefused(ConfigError):
    """The evaluation would score questions the policy was trained on, or cannot tell."""


def resolve_checkpoint(path: str) -> Tuple[str, str]:
    """(checkpoint dir, run dir) from a checkpoint directory or a run directory (its latest
    step checkpoint, else its warm start)."""
    path = os.path.abspath(path.rstrip("/"))
    if os.path.isfile(os.path.join(path, "state.json")):
        return path, os.path.dirname(os.path.dirname(path))
    if os.path.isfile(os.path.join(path, "config.yaml")):
        latest = ckpt.latest_checkpoint(path)
        warm = os.path.join(ckpt.checkpoints_dir(path), "warm_start")
        if latest is None and not os.path.isfile(os.path.join(warm, "state.json")):
            raise FileNotFoundError(f"run directory {path} has no complete checkpoint yet")
        return latest or warm, path
    raise FileNotFoundError(f"{path} is neither a checkpoint (no state.json) nor a run directory (no config.yaml)")


def check_heldout(state: dict, families: Families, checkpoint: str) -> None:
    """Refuses to evaluate on any question of the checkpoint's training split."""
    split = state.get("split")
    if not split or "train" not in split:
        raise EvalRefused(f"checkpoint {checkpoint} does not record its training split, so held-out questions "
                          "cannot be told from trained ones; evaluate a checkpoint written by this version")
    for fam, pool in families.heldout.items():
        trained = set(split["train"].get(fam, []))
        seen = sorted(q.question_id for q in pool if q.question_id in trained)
        if seen:
            raise EvalRefused(f"refusing to evaluate: {len(seen)} of the {len(pool)} held-out {fam} questions were in "
                              f"the policy's training split (e.g. {', '.join(seen[:3])}; recorded in {checkpoint}/state.json); "
                              "evaluate with the data split the policy was trained with")


def train_run_router(cfg: OrchestraConfig, zoo: Zoo, families: Families, run_dir: str, progress: Progress,
                     iterations: int, answers=None) -> str:
    """Trains the RLlib PPO router on the run's FRAMES training split (every training profile)
    and keeps it in <run>/router; returns that directory."""
    from orchestra_ray.reports.baselines import anchors_of
    from orchestra_ray.tools.search import encode
    from pipelines.router import train_router

    train_ids = [q.question_id for q in families.train.get(FRAMES, [])]
    if not train_ids:
        raise ConfigError("the learned router needs FRAMES training questions; this config has none")
    answers = answers or zoo.recorded_answers(families.train[FRAMES])
    out_dir = os.path.join(run_dir, ROUTER_DIR)
    progress.note(f"training the RLlib PPO router on {len(train_ids)} training questions ({iterations} iterations) ...")
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(out_dir, FITTED_ON))  # a router being replaced is fitted on nothing known
    feats = encode([q.problem for q in families.train[FRAMES]])
    train_profiles = [dict(profile_vector(p, zoo.slots, cfg.preferences.weights).weights) for p in cfg.preferences.train_profiles]
    train_router(feats, [anchors_of(answers[q], zoo.slots) for q in train_ids], train_profiles, list(zoo.slots),
                 out_dir, iterations=iterations, seed=cfg.run.seed, progress=progress)
    with open(os.path.join(out_dir, FITTED_ON), "w") as f:
        f.write(fitted_on(cfg, zoo, train_ids))
    return out_dir


def fitted_on(cfg: OrchestraConfig, zoo: Zoo, train_ids: List[str]) -> str:
    """What a router is fitted on (its questions, arms and training profiles' weights): a cached
    router is used only for the same."""
    profiles = {p: profile_vector(p, zoo.slots, cfg.preferences.weights).weights for p in cfg.preferences.train_profiles}
    key = json.dumps([sorted(train_ids), list(zoo.slots), [e.arm for e in cfg.zoo.experts], profiles], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def router_choices(cfg: OrchestraConfig, zoo: Zoo, families: Families, run_dir: str, answers, heldout_ids: List[str],
                   questions: Dict[str, str], profiles: Dict[str, Dict[str, float]], progress: Progress,
                   iterations: int) -> Tuple[Dict[Tuple[str, str], str], Dict]:
    """The learned router's pick for every (profile, held-out question); trained the first time."""
    from orchestra_ray.tools.search import ENCODER, encode
    from pipelines.router import load_router

    out_dir = os.path.join(run_dir, ROUTER_DIR)
    train_ids = [q.question_id for q in families.train.get(FRAMES, [])]
    try:
        with open(os.path.join(out_dir, FITTED_ON)) as f:
            cached = f.read().strip() == fitted_on(cfg, zoo, train_ids)
    except FileNotFoundError:
        cached = False
    if not (cached and os.path.isfile(os.path.join(out_dir, "training.json"))):
        train_run_router(cfg, zoo, families, run_dir, progress, iterations, answers)
    router = load_router(out_dir)
    feats = encode([questions[q] for q in heldout_ids])
    picks: Dict[Tuple[str, str], str] = {}
    for p, w in profiles.items():
        for q, s in zip(heldout_ids, router.choose(feats, [w] * len(heldout_ids))):
            picks[(p, q)] = s
    with open(os.path.join(out_dir, "training.json")) as f:
        info = json.load(f)
    return picks, {"path": out_dir, "encoder": ENCODER, "iterations": len(info["iterations"]),
                   "final_episode_return_mean": info["iterations"][-1]["episode_return_mean"] if info["iterations"] else None}


def run_eval(checkpoint: str, run_dir: str, cfg: OrchestraConfig, zoo: Zoo, families: Families, progress: Progress,
             router: bool = True, router_iterations: int = 30, test_data: Optional[str] = None) -> str:
    """Runs on a connected Ray cluster; returns the eval directory (report.md inside): eval/<checkpoint>
    for the run's own held-out split, eval/<checkpoint>/<data set> for another data set's questions
    (`test_data`, its directory: `with_test_data` made `zoo` and `families` hold them out)."""
    data_set = os.path.basename(os.path.normpath(test_data)) if test_data else None
    state = ckpt.read_state(checkpoint)
    check_heldout(state, families, checkpoint)
    name = os.path.basename(checkpoint)
    eval_dir = os.path.join(run_dir, "eval", name, *([data_set] if data_set else []))
    tdir = os.path.join(eval_dir, TRAJECTORIES)
    os.makedirs(tdir, exist_ok=True)
    profiles = {p: dict(profile_vector(p, zoo.slots, cfg.preferences.weights).weights) for p in cfg.preferences.eval_profiles}
    t0 = time.time()

    run_id, step = os.path.basename(os.path.abspath(run_dir)), int(state.get("step", 0))
    workers = Workers(cfg, families, zoo.slots, (test_data,) if test_data else ())
    workers.start_rollout(os.path.join(checkpoint, "policy"))
    n_tasks = sum(len(p) for p in families.heldout.values()) * len(profiles)
    progress.note(f"policy: {n_tasks} held-out episodes ({', '.join(profiles)}) ...")
    scored = heldout_records(cfg, zoo, families, workers.pool, step)
    _write(tdir, POLICY, run_id, step, scored)

    frames_train = [q.question_id for q in families.train.get(FRAMES, [])]
    frames_heldout = [q.question_id for q in families.heldout.get(FRAMES, [])]
    meta_router = None
    if frames_heldout:
        pool = families.train.get(FRAMES, []) + families.heldout[FRAMES]
        questions = {q.question_id: q.problem for q in pool}
        answers = zoo.recorded_answers(pool)
        plan = plan_baselines(answers, frames_train, zoo.slots, profiles)
        picks = None
        if router:
            picks, meta_router = router_choices(cfg, zoo, families, run_dir, answers, frames_heldout, questions,
                                                profiles, progress, router_iterations)
        for method, rows in baseline_records(answers, frames_heldout, zoo.slots, profiles, plan, cfg.run.seed, picks).items():
            _write(tdir, method, run_id, step, [Sample(**r) for r in rows])
        baselines = {"cheapest": plan.cheapest, "strongest": plan.strongest,
                     "cascades": {p: list(c) for p, c in plan.cascades.items()}}
        grades = {q: {s: a.grade for s, a in answers[q].items()} for q in frames_heldout}
    else:
        baselines, grades = {"cheapest": "-", "strongest": "-", "cascades": {}}, {}

    meta = {
        "run_id": run_id, "checkpoint": checkpoint, "checkpoint_name": name, "step": step,
        "profiles": list(profiles), "profile_weights": profiles, "temperature": cfg.eval.temperature,
        "bootstrap_samples": cfg.eval.bootstrap_samples, "seed": cfg.run.seed,
        "split_sizes": {"train": {f: len(p) for f, p in families.train.items()},
                        "heldout": {f: len(p) for f, p in families.heldout.items()}},
        "baselines": baselines, "router": meta_router, "slots": list(zoo.slots), "data_set": data_set or "FRAMES",
        "metric_names": metric_names(zoo.slots), "seconds": time.time() - t0,
        "grades": grades,  # the recorded grade of each held-out question per slot (the orchestration table)
    }
    with open(os.path.join(eval_dir, "eval.json"), "w") as f:
        json.dump(meta, f, indent=1)
    build_report(eval_dir, run_dir)
    return eval_dir


def _write(tdir: str, method: str, run_id: str, step: int, samples: List[Sample]) -> None:
    for s in samples:
        s.advantage, s.kept = 0.0, False  # evaluated, not trained on
    final = os.path.join(tdir, method_file(method))
    pq.write_table(trajectory_rows(run_id, step, samples), final + ".tmp")
    os.replace(final + ".tmp", final)


def with_test_data(cfg: OrchestraConfig, zoo: Zoo, families: Families, test_dir: str) -> Tuple[Zoo, Families, str]:
    """(zoo, families, a line on what is held out) that hold out the questions of
    `test_dir` (another data set in the replay schema) and keep the run's training split, which
    the baselines are fitted on."""
    from pipelines.families import load_families
    from pipelines.zoo import load_test_zoo

    if FRAMES not in families.train:
        raise ConfigError("--test-data holds questions in the replay schema: the run's config trains no "
                          "FRAMES-family questions to fit the baselines on")
    zoo, note = load_test_zoo(cfg, zoo, test_dir)
    families = load_families(cfg, zoo)
    families.heldout = {FRAMES: families.heldout[FRAMES]}
    return zoo, families, note


def eval_config(run_dir: str, config: Optional[str], overrides: List[str]) -> OrchestraConfig:
    """The run's own config (so the data split matches), unless another is named; then overrides."""
    from orchestra_ray.config_load import load_config

    return load_config(config or os.path.join(run_dir, "config.yaml"), overrides)

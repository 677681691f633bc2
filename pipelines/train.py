"""The GRPO training pipeline, as the paper's algorithm box:

    warm start (SFT on God-model demonstrations) -> version 0 -> reference model frozen
    for each step (pipelines/step.py: collect -> score -> reference -> update -> record):
        draw tasks (question, preference) -> each rollout worker runs whole groups of G samples
        reward = orchestration_reward over each group -> grouped advantages, filters
        reference log-probs -> learner PPO-clip + KL step -> publish version v+1
        write the step's trajectories (Parquet) and metrics; checkpoint on schedule
    (asynchronous mode, rollout.max_staleness = N > 0: the rollouts of the next N steps are
    generated while the learner trains; pipelines/rollout_ahead.py)
    held-out evaluation of the warm-start and final policies, with a paired bootstrap interval
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from typing import Dict, List, Optional

import numpy as np
import ray
import torch
from omegaconf import OmegaConf

from actors.tool_client import RayToolClient
from orchestra_ray import checkpoint as ckpt
from orchestra_ray.config import OrchestraConfig
from orchestra_ray.errors import DataError, LearnerLost
from orchestra_ray.families.domains.call_match import summarise_call_match
from orchestra_ray.reports.evaluation import (compare_outcomes, episode_outcomes, paired_bootstrap, per_question_reward, summarise,
                                      summarise_families)
from orchestra_ray.grpo.ledger import StepLedger
from orchestra_ray.grpo.scoring import Scored
from orchestra_ray.families.task import DOMAIN, FRAMES, MixedTaskSampler, Task
from orchestra_ray.rollout.sample import Sample
from pipelines.cluster import dashboard_url
from pipelines.heldout import heldout_records
from pipelines.families import Families, load_families
from pipelines.progress import Progress
from pipelines import step as stages
from pipelines.rollout_ahead import Collected, RolloutAhead
from pipelines import tracking
from pipelines.warm_start import run_warm_start
from pipelines.workers import Workers
from pipelines.zoo import Zoo, initial_policy_path


class Trainer:
    def __init__(self, cfg: OrchestraConfig, zoo: Zoo, run_dir: str, progress: Progress, families: Optional[Families] = None,
                 workers: Optional[Workers] = None):
        self.cfg, self.run_dir, self.progress = cfg, run_dir, progress
        self.run_id = os.path.basename(os.path.abspath(run_dir))
        self.zoo = zoo
        self.families = families or load_families(cfg, zoo)
        self.step = 0
        self.sampler = MixedTaskSampler(self.families.train, cfg.families.weights, cfg.preferences.train_profiles,
                                        self.zoo.slots, cfg.run.seed, cfg.preferences.weights)
        self.data_position = self.sampler.position  # after the tasks of the last step trained
        self.workers = workers or Workers(cfg, self.families, zoo.slots)
        self.ahead: Optional[RolloutAhead] = None
        self.last_scored: Optional[Scored] = None  # the last step's samples, for its benchmark

    # ---- set-up -------------------------------------------------------------------------------
    def policy_path(self) -> str:
        pretraining = self.progress.stage("pre-training the tiny base model", "steps")
        return initial_policy_path(self.zoo, self.cfg, self.families, pretraining)

    # The actors this driver calls, started and owned by `self.workers`.
    learner = property(lambda self: self.workers.learner)
    reference = property(lambda self: self.workers.reference)
    pool = property(lambda self: self.workers.pool)
    code_pool = property(lambda self: self.workers.code_pool)

    # ---- stages -------------------------------------------------------------------------------
    def warm_start(self, policy_path: str) -> List[float]:
        tools = RayToolClient({}, self.code_pool, self.workers.search, self.cfg.tools.sandbox.max_output_chars)
        losses, self.demonstrations = run_warm_start(self.cfg, self.zoo, self.families,
                                                     self.sampler.counts(self.cfg.warm_start.examples), self.learner, tools,
                                                     policy_path, self.progress.stage("warm start", "batches"))
        return losses

    def rollout(self, tasks: List[Task], group_size: int, temperature: float, seed: int,
                ledger: Optional[StepLedger] = None) -> List[Sample]:
        return self.pool.run(tasks, group_size, temperature, seed, ledger)

    def split(self) -> Dict[str, Dict[str, List[str]]]:
        """The question ids of each family's training and held-out split (kept in every checkpoint,
        so that an evaluation can refuse questions the policy was trained on)."""
        return {part: {f: sorted(q.question_id for q in pool) for f, pool in getattr(self.families, part).items()}
                for part in ("train", "heldout")}

    def evaluate(self, label: str) -> Dict:
        t0 = time.time()
        scored = heldout_records(self.cfg, self.zoo, self.families, self.pool, self.step)
        families = summarise_families(scored)
        if DOMAIN in families:  # why domain episodes fail: the wrong function, or arguments not copied
            families[DOMAIN].update(summarise_call_match([r for r in scored if r.family == DOMAIN], self.families.reference))
        result = {
            "label": label,
            "step": self.step,
            "weight_versions": sorted({r.weight_version for r in scored}),
            "heldout_questions": {f: len(p) for f, p in self.families.heldout.items()},
            "train_questions": {f: len(p) for f, p in self.families.train.items()},
            "profiles": summarise(scored),
            "families": families,
            "per_question_reward": per_question_reward(scored),
            "episode_outcomes": episode_outcomes(scored),
            "seconds": time.time() - t0,
        }
        os.makedirs(os.path.join(self.run_dir, "eval"), exist_ok=True)
        with open(os.path.join(self.run_dir, "eval", f"{label}.json"), "w") as f:
            json.dump(result, f, indent=1)
        return result

    def collect(self, step: int, tasks: List[Task]) -> Collected:
        return stages.collect(self.rollout, step, tasks, self.cfg.rollout, self.cfg.run.seed)

    def start_rollouts_ahead(self) -> RolloutAhead:
        """The step loop's source of rollouts: synchronous, or up to rollout.max_staleness steps ahead."""
        r = self.cfg.rollout
        self.ahead = RolloutAhead(self.collect, lambda step: self.sampler.next_tasks(r.tasks_per_step, step),
                                  lambda: self.sampler.position, r.max_staleness, self.cfg.trainer.steps, self.pool.cancel)
        return self.ahead

    def grpo_step(self) -> Dict:
        """collect -> score -> reference -> update -> record (pipelines/step.py)."""
        cfg, r = self.cfg, self.cfg.rollout
        self.step += 1
        t0 = time.time()
        if self.ahead is None:
            self.start_rollouts_ahead()
        got, self.data_position = self.ahead.take(self.step)
        t_wait = time.time() - t0
        scored = self.last_scored = stages.score(got, ray.get(self.learner.current_version.remote()), cfg)
        stages.write_trajectories(self.run_dir, self.run_id, self.step, scored.samples)
        t1 = time.time()
        batch = ray.put(scored.batch()) if scored.kept else None  # one copy for the reference model and the learner
        ref = stages.reference(self.reference, batch, r.temperature, cfg.trainer.kl_coef)
        stats = stages.update(self.learner, batch, ref, r.temperature)
        times = stages.StepTimes(got.seconds, t_wait, time.time() - t1)
        return stages.record(self.run_dir, self.step, scored, stats, times, self.pool.size()["ready"],
                             per_family=len(self.families.train) > 1)

    # ---- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self) -> str:
        final = ckpt.step_dir(self.run_dir, self.step)
        tmp = ckpt.temp_dir_for(final)
        ray.get(self.learner.save.remote(tmp))
        state = {
            "step": self.step,
            "data_position": self.data_position,
            "rng": {"python": _encode_rng(random.getstate()), "numpy": _encode_rng(np.random.get_state()),
                    "torch": torch.get_rng_state().tolist()},
            "split": self.split(),
        }
        ckpt.commit(tmp, final, state)
        return final

    def restore(self, path: str) -> None:
        state = ckpt.read_state(path)
        self.step = int(state["step"])
        self.sampler.restore(state["data_position"])
        self.data_position = self.sampler.position
        random.setstate(_decode_rng(state["rng"]["python"]))
        np.random.set_state(_decode_rng(state["rng"]["numpy"]))
        torch.set_rng_state(torch.tensor(state["rng"]["torch"], dtype=torch.uint8))
        ray.get(self.learner.restore.remote(path))
        for line in self.drop_outputs_after(self.step):
            self.progress.note(line)

    def drop_outputs_after(self, step: int) -> List[str]:
        """Work of steps after the checkpoint is redone: drop what they wrote (step files, temporary
        files of an interrupted write, metrics lines, a line cut short by the kill); returns a line
        for each damaged metrics line dropped. Files of other names are the user's: left alone."""
        tdir = os.path.join(self.run_dir, "trajectories")
        for name in os.listdir(tdir) if os.path.isdir(tdir) else []:
            m = _STEP_FILE.match(name)
            if m and (m.group(2) or int(m.group(1)) > step):
                os.remove(os.path.join(tdir, name))
        mpath = os.path.join(self.run_dir, "metrics.jsonl")
        notes: List[str] = []
        if os.path.exists(mpath):
            keep = []
            with open(mpath, "rb") as f:
                for n, raw in enumerate(f, 1):
                    at = _step_of(raw)
                    if at is None:
                        notes.append(f"metrics.jsonl line {n} is damaged (cut by a kill, or not JSON with a step): dropped")
                    elif at <= step:
                        keep.append(raw)
            with open(mpath + ".tmp", "wb") as f:
                f.writelines(keep)
            os.replace(mpath + ".tmp", mpath)
        return notes


_STEP_FILE = re.compile(r"^step_(\d{6})\.parquet(\.tmp)?$")


def _step_of(raw: bytes) -> Optional[int]:
    """The step of one metrics line, or None for a line that is not UTF-8 JSON with a whole step."""
    try:
        step = json.loads(raw.decode("utf-8"))["step"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def _encode_rng(state):
    return json.loads(json.dumps(state, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _decode_rng(state):
    if isinstance(state, list) and state and state[0] == "MT19937":
        return (state[0], np.array(state[1], dtype=np.uint32), *state[2:])
    return (state[0], tuple(state[1]), state[2])


def new_run_dir(cfg: OrchestraConfig, config_name: str) -> str:
    name = cfg.run.name or f"{config_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = os.path.join(cfg.run.root, name)
    if os.path.exists(path) and os.listdir(path):
        raise FileExistsError(f"run directory {path} already exists; use --resume {path} to continue it")
    os.makedirs(path, exist_ok=True)
    return path


def compare(before: Dict, after: Dict, cfg: OrchestraConfig) -> Dict:
    """What GRPO changed on the held-out questions: reward with a paired bootstrap interval, each
    family's success episode by episode, and the cost per question under the cost-first profile."""
    d, lo, hi = paired_bootstrap(before["per_question_reward"], after["per_question_reward"], cfg.eval.bootstrap_samples, cfg.run.seed)
    out: Dict = {"eval_warm_start": before["profiles"], "eval_warm_start_families": before.get("families", {}),
                 "reward_difference": {"mean": d, "ci95": [lo, hi]}}
    # An evaluation written before episode outcomes were recorded (a resumed run) has none.
    b_eps, a_eps = before.get("episode_outcomes", {}), after.get("episode_outcomes", {})
    out["success_change"] = {f: compare_outcomes(b_eps[f], a_eps[f], cfg.eval.bootstrap_samples, cfg.run.seed)
                             for f in sorted(set(b_eps) & set(a_eps)) if set(b_eps[f]) & set(a_eps[f])}
    if "cost-first" in before["profiles"] and "cost-first" in after["profiles"]:
        b, a = before["profiles"]["cost-first"]["cost"], after["profiles"]["cost-first"]["cost"]
        out["cost_first_cost"] = {"warm_start": b, "final": a, "ratio": a / b if b > 0 else float("nan")}
    return out


def train(cfg: OrchestraConfig, zoo: Zoo, run_dir: str, progress: Progress, resume: bool = False,
          families: Optional[Families] = None) -> Dict:
    """Runs on a connected Ray cluster; `zoo` and `families` are loaded (and so checked) before the
    cluster starts."""
    random.seed(cfg.run.seed)
    np.random.seed(cfg.run.seed)
    torch.manual_seed(cfg.run.seed)
    OmegaConf.save(OmegaConf.structured(cfg), os.path.join(run_dir, "config.yaml"))
    t_start = time.time()
    tr = Trainer(cfg, zoo, run_dir, progress, families)
    workers = tr.workers
    sizes = ", ".join(f"{f} {len(p)}/{len(tr.families.heldout[f])}" for f, p in tr.families.train.items())
    progress.note(f"data (train/held-out): {sizes}; zoo: {', '.join(zoo.slots)}")
    warm_dir = os.path.join(ckpt.checkpoints_dir(run_dir), "warm_start")
    latest = None
    if resume:
        latest, skipped = ckpt.latest_verified(run_dir)
        for path, why in skipped:  # cut or damaged after it was written (a full disk, a crash)
            progress.note(f"skipped checkpoint {path}: {why}")
        if latest is None and os.path.isdir(warm_dir) and (why := ckpt.verify(warm_dir)):
            raise DataError(f"the warm-start checkpoint {warm_dir} cannot be resumed from: {why}; start a new run")
    if latest is not None:
        ckpt.check_resumable(latest, cfg.trainer.num_learners)
    policy_path = tr.policy_path()
    workers.start(policy_path)
    summary: Dict = {"run_dir": os.path.abspath(run_dir), "dashboard_url": dashboard_url()}
    if resume and not os.path.isfile(os.path.join(warm_dir, "state.json")):
        raise FileNotFoundError(f"{run_dir} has no complete warm-start checkpoint to resume from; start a new run")
    if not resume:
        if cfg.warm_start.enabled:
            t0 = time.time()
            losses = tr.warm_start(policy_path)
            habit = {"strongest": "God-model", "preference": "preference-following",
                     "cascade": "escalating (consult, read, escalate)",
                     "best-cascade": "escalating (consult, read, escalate; the training split's best order)"}[cfg.warm_start.demonstrator]
            kind = (f"{habit} demonstrations" if tr.families.names == [FRAMES]
                    else f"demonstrations ({habit} on FRAMES, reference solutions elsewhere)")
            progress.note(f"warm start: {tr.demonstrations} {kind} x {len(losses)} epoch(s), "
                          f"loss per epoch {', '.join(f'{x:.3f}' for x in losses)} ({time.time() - t0:.0f}s)")
            summary["warm_start_loss"] = losses
        workers.publish_start(warm_dir, {"step": 0, "split": tr.split()})
    workers.start_reference(os.path.join(warm_dir, "policy"))
    if latest is not None:
        tr.restore(latest)
        progress.note(f"resumed from {latest} at step {tr.step}, data position {tr.sampler.position}")
    elif resume:
        ray.get(tr.learner.restore.remote(warm_dir))
        for line in tr.drop_outputs_after(0):
            progress.note(line)
        progress.note("no step checkpoint yet; starting GRPO from the warm-start policy")
    trackers = tracking.start_trackers(cfg, run_dir, progress.note, resume, tr.step)
    try:
        return _train_and_evaluate(tr, trackers, summary, warm_dir, t_start)
    finally:
        trackers.close()


def _train_and_evaluate(tr: Trainer, trackers, summary: Dict, warm_dir: str, t_start: float) -> Dict:
    cfg, run_dir, progress = tr.cfg, tr.run_dir, tr.progress
    if "warm_start_loss" in summary:
        trackers.log_metrics({"warm_start/loss": summary["warm_start_loss"][-1]}, 0)
    before = None
    before_path = os.path.join(run_dir, "eval", "warm_start.json")
    if cfg.eval.enabled:
        if os.path.exists(before_path):
            with open(before_path) as f:
                before = json.load(f)
        elif tr.step == 0:
            progress.note("evaluating the warm-start policy on the held-out questions ...")
            before = tr.evaluate("warm_start")
            progress.eval_line("warm start", before)
            tracking.log_evaluation(trackers, "warm_start", before)
    progress.start(cfg.trainer.steps, tr.step)
    last = None
    try:
        while tr.step < cfg.trainer.steps:
            last = tr.grpo_step()
            if "console" in cfg.logging.backends:
                progress.step(last)
            tracking.log_step(trackers, last)
            if tr.step % cfg.trainer.checkpoint_every == 0 or tr.step == cfg.trainer.steps:
                tr.save_checkpoint()
    except LearnerLost as exc:
        where = ckpt.latest_verified(run_dir)[0] or f"{warm_dir} (the warm start)"
        raise LearnerLost(f"{getattr(exc, 'cause', None) or exc}; last checkpoint: {where}") from None
    finally:
        if tr.ahead is not None:
            tr.ahead.close()
    progress.close()
    tracking.log_training_curves(trackers, run_dir, tr.step)
    if tr.step > 0 and ckpt.latest_checkpoint(run_dir) != ckpt.step_dir(run_dir, tr.step):
        tr.save_checkpoint()
    summary.update(steps=tr.step, last_step=last, checkpoint=ckpt.latest_checkpoint(run_dir) or warm_dir)
    if cfg.eval.enabled:
        progress.note("evaluating the trained policy on the held-out questions ...")
        after = tr.evaluate("final")
        progress.eval_line("after GRPO", after)
        tracking.log_evaluation(trackers, "final", after)
        summary["eval_final"] = after["profiles"]
        summary["eval_final_families"] = after["families"]
        if before is not None:
            summary.update(compare(before, after, cfg))
    summary["wall_s"] = time.time() - t_start
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    tracking.log_summary(trackers, run_dir, summary, tr.step)
    return summary

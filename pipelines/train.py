"""The GRPO training pipeline, as the paper's algorithm box:

    warm start (SFT on God-model demonstrations) -> version 0 -> reference model frozen
    for each step:
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
import shutil
import time
from dataclasses import asdict
from typing import Dict, List, Optional

import numpy as np
import pyarrow.parquet as pq
import ray
import torch
from omegaconf import OmegaConf
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.experts import start_experts
from actors.code_interpreter import start_code_pool
from actors.learner import Learner
from actors.metrics import record_step
from actors.reference_model import ReferenceModel
from actors.rollout_pool import RolloutPool
from actors.rollout_worker import RolloutSpec, RolloutWorker
from actors.search_tool import start_search_actor
from actors.weight_transport import WeightStore
from orchestra_ray import checkpoint as ckpt
from orchestra_ray.grpo.advantages import FilterCounts, advantages_with_filters
from orchestra_ray.rollout.chat import ChatFormat, user_message
from orchestra_ray.config import OrchestraConfig
from orchestra_ray.errors import ConfigError
from orchestra_ray.families.demos import listed_choice, relay_demo, scripted_demo
from orchestra_ray.families.domains.call_match import summarise_call_match
from orchestra_ray.rollout.episode import EpisodeLimits
from orchestra_ray.reports.evaluation import (anchor_metrics, compare_outcomes, episode_outcomes, paired_bootstrap, per_question_reward,
                                      score_records, summarise, summarise_families)
from orchestra_ray.rollout.failures import INFRASTRUCTURE
from orchestra_ray.grpo.ledger import StepLedger
from orchestra_ray.grpo.preferences import COST, LATENCY, OUTCOME
from orchestra_ray.grpo.reward import orchestration_reward
from orchestra_ray.grpo.staleness import within_bound
from orchestra_ray.families.task import ARITHMETIC, DOMAIN, FRAMES, MixedTaskSampler, Task, demo_tasks, eval_tasks
from orchestra_ray.rollout.trajectory import trajectory_rows
from pipelines.cluster import dashboard_url
from pipelines.families import Families, load_families
from pipelines.progress import Progress
from pipelines.rollout_ahead import Collected, RolloutAhead
from pipelines.zoo import Zoo, initial_policy_path


class Trainer:
    def __init__(self, cfg: OrchestraConfig, zoo: Zoo, run_dir: str, progress: Progress, families: Optional[Families] = None):
        self.cfg, self.run_dir, self.progress = cfg, run_dir, progress
        self.run_id = os.path.basename(os.path.abspath(run_dir))
        self.zoo = zoo
        self.families = families or load_families(cfg, zoo)
        self.step = 0
        self.sampler = MixedTaskSampler(self.families.train, cfg.families.weights, cfg.preferences.train_profiles,
                                        self.zoo.slots, cfg.run.seed)
        self.data_position = self.sampler.position  # after the tasks of the last step trained
        self.code_pool = self.search = None
        self.ahead: Optional[RolloutAhead] = None

    # ---- set-up -------------------------------------------------------------------------------
    def policy_path(self) -> str:
        return initial_policy_path(self.zoo, self.cfg, self.families)

    def start_actors(self, policy_path: str) -> None:
        self.start_rollout(policy_path)
        t = self.cfg.trainer
        self.learner = Learner.options(num_cpus=t.num_cpus, num_gpus=t.num_gpus, resources=dict(t.resources)).remote(
            policy_path, self.store, t, self.cfg.policy.dtype, self.cfg.policy.device, self.cfg.run.seed
        )

    def start_rollout(self, policy_path: str) -> None:
        """Experts, tools and the rollout pool, with the policy at `policy_path` until the learner
        publishes newer weights (an evaluation runs with these alone)."""
        cfg = self.cfg
        # The store holds the only reference to the published weights: it lives on the driver's node,
        # whose loss ends the run anyway, so that losing any other node cannot take the weights with it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.store = WeightStore.options(scheduling_strategy=here).remote()
        self.experts = start_experts(cfg, cfg.data.path)
        self.start_tools()
        r = cfg.rollout
        limits = EpisodeLimits(r.max_turns, r.max_new_tokens, r.max_total_tokens, cfg.zoo.max_response_chars,
                               domain_call_latency_s=cfg.tools.domain_call_latency_s)
        spec = RolloutSpec(policy_path, self.families.toolsets, tuple(self.zoo.slots), limits, self.families.domains,
                           cfg.policy.dtype, cfg.policy.device, r.torch_threads, r.max_batch_size,
                           cfg.policy.engine, dict(cfg.policy.vllm))

        def make_worker(i: int):
            return RolloutWorker.options(num_cpus=r.num_cpus_per_worker, num_gpus=r.num_gpus_per_worker,
                                         resources=dict(r.resources)).remote(
                spec, self.experts, self.store, i, self.code_pool, self.search)

        self.pool = RolloutPool(make_worker, r.num_workers, r.autoscale, r.resources, r.max_batch_retries,
                                r.retry_backoff_s, r.batch_timeout_s)
        ray.get([a.ready.remote() for a in self.experts.values()])

    def start_tools(self) -> None:
        """The code-interpreter pool when a family needs it, the search actor when a corpus is set."""
        t = self.cfg.tools
        # A tool that cannot start (no bubblewrap, a bad corpus) stops the run with one line.
        try:
            if ARITHMETIC in self.families.train:
                self.code_pool = start_code_pool(t.sandbox, t.code_pool)
            if t.search.corpus:
                self.search = start_search_actor(t.search)
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def start_reference(self, path: str) -> None:
        t = self.cfg.trainer
        self.reference = ReferenceModel.options(num_cpus=t.num_cpus, num_gpus=t.num_gpus, resources=dict(t.resources)).remote(
            path, self.cfg.policy.dtype, self.cfg.policy.device, t.torch_threads, t.micro_batch_size
        )

    # ---- stages -------------------------------------------------------------------------------
    def warm_start(self, policy_path: str) -> List[float]:
        cfg = self.cfg
        chat = ChatFormat(_tokenizer(policy_path))
        strongest = self.zoo.experts[cfg.zoo.strongest]
        demos = []
        counts = {**self.sampler.counts(cfg.warm_start.examples), **cfg.warm_start.family_examples}
        rng = random.Random(cfg.run.seed)
        for family, pool in self.families.train.items():
            for t in demo_tasks(pool, cfg.preferences.train_profiles, self.zoo.slots, counts.get(family, 0), cfg.run.seed):
                prompt, user = self.families.toolsets[t.toolset][0], user_message(t.question, t.preference)
                if family == FRAMES:
                    expert = strongest
                    if cfg.warm_start.demonstrator == "preference":
                        expert = self.zoo.experts[listed_choice(self.zoo.cards, cfg.zoo.strongest, t.preference.weights,
                                                                cfg.warm_start.demonstrator_temperature, rng)]
                    demos.append(relay_demo(chat, prompt, user, t, expert, cfg.zoo.max_response_chars))
                else:
                    demos.append(scripted_demo(chat, prompt, user, self.families.reference[t.question_id], self._observer(t)))
        random.Random(cfg.run.seed).shuffle(demos)
        w = cfg.warm_start
        self.demonstrations = len(demos)
        return ray.get(self.learner.warm_start.remote(demos, w.epochs, w.batch_size, w.lr, cfg.run.seed))

    def _observer(self, task: Task):
        """Runs a demonstration's tool calls for real, as a rollout would."""
        limit = self.cfg.zoo.max_response_chars
        env = self.families.domains[task.toolset.split(":", 1)[1]].new_env() if task.toolset.startswith("domain:") else None

        def observe(name: str, args: Dict) -> str:
            if name == "run_python":
                return ray.get(self.code_pool.execute.remote(args["code"])).observation(self.cfg.tools.sandbox.max_output_chars)[:limit]
            return env.call(name, args)[:limit]

        return observe

    def rollout(self, tasks: List[Task], group_size: int, temperature: float, seed: int,
                ledger: Optional[StepLedger] = None) -> List[dict]:
        return self.pool.run(tasks, group_size, temperature, seed, ledger)

    def split(self) -> Dict[str, Dict[str, List[str]]]:
        """The question ids of each family's training and held-out split (kept in every checkpoint,
        so that an evaluation can refuse questions the policy was trained on)."""
        return {part: {f: sorted(q.question_id for q in pool) for f, pool in getattr(self.families, part).items()}
                for part in ("train", "heldout")}

    def eval_records(self) -> List[dict]:
        """One greedy (eval.temperature) sample of every held-out problem under every eval profile,
        each with `eval_reward`."""
        cfg = self.cfg
        tasks = [t for pool in self.families.heldout.values() for t in eval_tasks(pool, cfg.preferences.eval_profiles, self.zoo.slots)]
        records = self.rollout(tasks, 1, cfg.eval.temperature, seed=10_000_000 + self.step)
        anchors = {q.question_id: anchor_metrics(q.question_id, q.problem, self.zoo.experts, self.zoo.slots)
                   for q in self.families.heldout.get(FRAMES, [])}
        return score_records(records, anchors)

    def evaluate(self, label: str) -> Dict:
        t0 = time.time()
        scored = self.eval_records()
        families = summarise_families(scored)
        if DOMAIN in families:  # why domain episodes fail: the wrong function, or arguments not copied
            families[DOMAIN].update(summarise_call_match([r for r in scored if r.get("family") == DOMAIN], self.families.reference))
        result = {
            "label": label,
            "step": self.step,
            "weight_versions": sorted({r["weight_version"] for r in scored}),
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
        """One step's groups from the rollout pool, every episode accounted for by the step's ledger."""
        r = self.cfg.rollout
        t0 = time.time()
        ledger = StepLedger(step)
        records = self.rollout(tasks, r.group_size, r.temperature, seed=self.cfg.run.seed * 100_003 + step, ledger=ledger)
        books = ledger.close()  # every issued episode completed exactly once, or the step fails here
        return Collected(records, books, time.time() - t0)

    def start_rollouts_ahead(self) -> RolloutAhead:
        """The step loop's source of rollouts: synchronous, or up to rollout.max_staleness steps ahead."""
        r = self.cfg.rollout
        self.ahead = RolloutAhead(self.collect, lambda step: self.sampler.next_tasks(r.tasks_per_step, step),
                                  lambda: self.sampler.position, r.max_staleness, self.cfg.trainer.steps, self.pool.cancel)
        return self.ahead

    def grpo_step(self) -> Dict:
        cfg, r = self.cfg, self.cfg.rollout
        self.step += 1
        t0 = time.time()
        if self.ahead is None:
            self.start_rollouts_ahead()
        got, self.data_position = self.ahead.take(self.step)
        records, books, t_roll = got.records, got.books, got.seconds
        t_wait = time.time() - t0
        counts = FilterCounts()
        by_task: Dict[str, List[dict]] = {}
        for rec in records:
            by_task.setdefault(rec["task_id"], []).append(rec)
        for group in by_task.values():
            weights = group[0]["preference"]
            rewards = orchestration_reward([g["metrics"] for g in group], weights)
            res = advantages_with_filters(
                rewards, [bool(g["format_errors"]) for g in group], [bool(g["answer_source"]) for g in group],
                std_normalize=cfg.reward.std_normalize, eps=cfg.reward.eps,
                filter_zero_variance=cfg.reward.filter_zero_variance,
                filter_format_errors=cfg.reward.filter_format_errors,
                filter_no_answer=cfg.reward.filter_no_answer, counts=counts,
            )
            for g, rew, adv, keep in zip(group, rewards, res.advantages, res.keep):
                g.update(reward=rew, advantage=adv, kept=keep, zero_variance=res.zero_variance,
                         has_format_error=bool(g["format_errors"]), no_answer=not g["answer_source"])
        # An episode hurt by a tool or expert that stayed down after its retries says nothing about
        # the policy: it stays on record (and in its group's statistics) but is not trained on.
        for g in records:
            if g["kept"] and any(c.get("error_kind") == INFRASTRUCTURE for c in g["tool_calls"]):
                g["kept"] = False
                counts.infrastructure_failure_samples += 1
                counts.kept_samples -= 1
        # Rollouts run ahead of the learner may come from older weights: stamp each sample with its
        # staleness, and train on none beyond the bound.
        learner_version = ray.get(self.learner.current_version.remote())
        for g, ok in zip(records, within_bound([g["weight_version"] for g in records], learner_version, r.max_staleness)):
            g["learner_version"], g["staleness"] = learner_version, learner_version - g["weight_version"]
            if g["kept"] and not ok:
                g["kept"] = False
                counts.stale_samples += 1
                counts.kept_samples -= 1
        self.write_trajectories(records)
        kept = [g for g in records if g["kept"]]
        t1 = time.time()
        stats: Dict[str, float] = {}
        if kept:
            ref = None
            if cfg.trainer.kl_coef > 0:
                ref = self.reference.logprobs.remote([g["token_ids"] for g in kept], r.temperature,
                                                     [g["loss_mask"] for g in kept])
            stats = ray.get(self.learner.train_step.remote(kept, ref, r.temperature))
        t_learn = time.time() - t1
        n = len(records)
        gen_tokens = sum(g["generated_tokens"] for g in records)
        metrics = {
            "step": self.step,
            "weight_version_used": sorted({g["weight_version"] for g in records}),
            # A step whose samples were all filtered out leaves the weights (and version) as they were.
            "weight_version": int(stats["version"]) if stats else max(g["weight_version"] for g in records),
            "updated": bool(stats),
            "reward": sum(g["reward"] for g in records) / n,
            "accuracy": sum(g["metrics"][OUTCOME] for g in records) / n,
            "cost": sum(g["metrics"][COST] for g in records) / n,
            "latency": sum(g["metrics"][LATENCY] for g in records) / n,
            "turns": sum(g["turns"] for g in records) / n,
            "format_error_rate": sum(1 for g in records if g["format_errors"]) / n,
            "tokens_per_s": gen_tokens / max(t_roll, 1e-9),
            "rollout_s": t_roll,
            "rollout_wait_s": t_wait,  # what the loop waited for rollouts (less than rollout_s when ahead)
            "staleness": {"max": max(g["staleness"] for g in kept) if kept else 0,
                          "mean": sum(g["staleness"] for g in kept) / len(kept) if kept else 0.0},
            "learn_s": t_learn,
            "filters": counts.as_dict(),
            # Failed tool and expert calls by whose fault they were (orchestra_ray.rollout.failures).
            "tool_failures": {kind: sum(1 for g in records for c in g["tool_calls"] if c.get("error_kind") == kind)
                              for kind in ("infrastructure", "data")},
            "cost_by_profile": _mean_by(records, "preference_profile", lambda g: g["metrics"][COST]),
            "families": summarise_families(records, "reward") if len(self.families.train) > 1 else {},
            **{k: v for k, v in stats.items() if k != "version"},
        }
        metrics["rollout_workers"] = self.pool.size()["ready"]
        metrics["ledger"] = {**books, "trained": len(kept), "trained_unique": len({g["episode_id"] for g in kept})}
        with open(os.path.join(self.run_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(metrics) + "\n")
        record_step(metrics, records, metrics["weight_version"])
        return metrics

    def write_trajectories(self, records: List[dict]) -> None:
        d = os.path.join(self.run_dir, "trajectories")
        os.makedirs(d, exist_ok=True)
        final = os.path.join(d, f"step_{self.step:06d}.parquet")
        pq.write_table(trajectory_rows(self.run_id, self.step, records), final + ".tmp")
        os.replace(final + ".tmp", final)

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
        self.drop_outputs_after(self.step)

    def drop_outputs_after(self, step: int) -> None:
        """Work of steps after the checkpoint is redone: drop what they wrote (step files, temporary
        files of an interrupted write, metrics lines, a line cut short by the kill)."""
        tdir = os.path.join(self.run_dir, "trajectories")
        for name in os.listdir(tdir) if os.path.isdir(tdir) else []:
            if name.startswith("step_") and (name.endswith(".tmp") or int(name[5:11]) > step):
                os.remove(os.path.join(tdir, name))
        mpath = os.path.join(self.run_dir, "metrics.jsonl")
        if os.path.exists(mpath):
            with open(mpath) as f:
                keep = [line for line in f if _step_of(line) is not None and _step_of(line) <= step]
            with open(mpath, "w") as f:
                f.writelines(keep)


def _step_of(line: str) -> Optional[int]:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _mean_by(records: List[dict], key: str, value) -> Dict[str, float]:
    acc: Dict[str, List[float]] = {}
    for g in records:
        acc.setdefault(g[key], []).append(value(g))
    return {k: sum(v) / len(v) for k, v in sorted(acc.items())}


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
    sizes = ", ".join(f"{f} {len(p)}/{len(tr.families.heldout[f])}" for f, p in tr.families.train.items())
    progress.note(f"data (train/held-out): {sizes}; zoo: {', '.join(zoo.slots)}")
    policy_path = tr.policy_path()
    tr.start_actors(policy_path)
    warm_dir = os.path.join(ckpt.checkpoints_dir(run_dir), "warm_start")
    latest = ckpt.latest_checkpoint(run_dir) if resume else None
    summary: Dict = {"run_dir": os.path.abspath(run_dir), "dashboard_url": dashboard_url()}
    if resume and not os.path.isfile(os.path.join(warm_dir, "state.json")):
        raise FileNotFoundError(f"{run_dir} has no complete warm-start checkpoint to resume from; start a new run")
    if not resume:
        if cfg.warm_start.enabled:
            t0 = time.time()
            losses = tr.warm_start(policy_path)
            habit = "God-model" if cfg.warm_start.demonstrator == "strongest" else "preference-following"
            kind = (f"{habit} demonstrations" if tr.families.names == [FRAMES]
                    else f"demonstrations ({habit} on FRAMES, reference solutions elsewhere)")
            progress.note(f"warm start: {tr.demonstrations} {kind} x {len(losses)} epoch(s), "
                          f"loss per epoch {', '.join(f'{x:.3f}' for x in losses)} ({time.time() - t0:.0f}s)")
            summary["warm_start_loss"] = losses
        ray.get(tr.learner.publish.remote())
        tmp = ckpt.temp_dir_for(warm_dir)
        ray.get(tr.learner.save.remote(tmp, False))
        ckpt.commit(tmp, warm_dir, {"step": 0, "split": tr.split()})
    tr.start_reference(os.path.join(warm_dir, "policy"))
    if latest is not None:
        tr.restore(latest)
        progress.note(f"resumed from {latest} at step {tr.step}, data position {tr.sampler.position}")
    elif resume:
        ray.get(tr.learner.restore.remote(warm_dir))
        tr.drop_outputs_after(0)
        progress.note("no step checkpoint yet; starting GRPO from the warm-start policy")
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
    progress.start(cfg.trainer.steps, tr.step)
    last = None
    try:
        while tr.step < cfg.trainer.steps:
            last = tr.grpo_step()
            progress.step(last)
            if tr.step % cfg.trainer.checkpoint_every == 0 or tr.step == cfg.trainer.steps:
                tr.save_checkpoint()
    finally:
        if tr.ahead is not None:
            tr.ahead.close()
    progress.close()
    if tr.step > 0 and ckpt.latest_checkpoint(run_dir) != ckpt.step_dir(run_dir, tr.step):
        tr.save_checkpoint()
    summary.update(steps=tr.step, last_step=last, checkpoint=ckpt.latest_checkpoint(run_dir) or warm_dir)
    if cfg.eval.enabled:
        progress.note("evaluating the trained policy on the held-out questions ...")
        after = tr.evaluate("final")
        progress.eval_line("after GRPO", after)
        summary["eval_final"] = after["profiles"]
        summary["eval_final_families"] = after["families"]
        if before is not None:
            summary.update(compare(before, after, cfg))
    summary["wall_s"] = time.time() - t_start
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary

"""`orchestra-ray bench trl`: this project's GRPO against TRL's `GRPOTrainer` on the same work.

The work: single-turn routing of FRAMES questions (the policy writes one tool call,
`answer(expert=...)`, and the named expert's recorded answer is the episode's answer), from the
same tiny policy, on the same tasks in the same order (the run's task sampler), with the same group
size, completion length, learning rate, clipping, KL coefficient and number of steps. TRL's reward
runs the project's own episode code on TRL's completions, so both sides score identically.

Three sides run interleaved, rep after rep, in this one process: TRL (in this process, this
machine's CPUs), this project synchronous (rollout.max_staleness=0) and asynchronous
(rollout.max_staleness=1) on the local Ray cluster. Seconds per step are the wall time between
the ends of steps 2..S (step 1 pays one-off costs); start-up is not counted on either side.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Dict, List, Sequence, Tuple

from orchestra_ray.experts.base import InProcessExperts

SIDES = ("trl", "sync", "async")


# ---- the shared task ------------------------------------------------------------------------------
def routing_overrides(steps: int, tasks: int, group: int, new_tokens: int) -> List[str]:
    return [
        f"trainer.steps={steps}", f"trainer.checkpoint_every={steps}", f"rollout.tasks_per_step={tasks}",
        f"rollout.group_size={group}", f"rollout.max_new_tokens={new_tokens}", "rollout.max_turns=1",
        "warm_start.enabled=false", "eval.enabled=false", "families.weights={frames: 1.0}",
        # TRL trains on every sample; so does this side.
        "reward.filter_zero_variance=false", "trainer.mini_batches=1", "trainer.epochs=1",
    ]


class GivenCompletions:
    """An engine that 'generates' completions already generated (by TRL), so that the project's
    episode code parses, calls the experts and scores them exactly as in a rollout."""

    def __init__(self, completions: Sequence[Sequence[int]], end_of_turn_id: int):
        self.completions, self.end_of_turn_id = completions, end_of_turn_id

    def generate(self, prompts, *, max_new_tokens, temperature, stop_token_ids):
        from orchestra_ray.policy.engine import Generation

        out = []
        for c in self.completions:
            ids = list(c)
            done = bool(ids) and ids[-1] == self.end_of_turn_id
            out.append(Generation(ids, [0.0] * len(ids), "stop" if done else "length"))
        return out


class LocalExperts(InProcessExperts):
    """The zoo's replay experts called in this process (TRL's reward runs in the trainer), failures
    answered as in a rollout."""

    def run_tools(self, calls):
        raise ValueError("the routing task has no basic tools")


def routing_rewards(chat, toolsets, slots, limits, experts, tasks: Sequence, completions: Sequence[Sequence[int]]) -> List[float]:
    """Orchestration rewards of completions (one per task in `tasks`), grouped by task."""
    from orchestra_ray.rollout.chat import user_message
    from orchestra_ray.rollout.episode import episode_record, new_episodes, run_episodes
    from orchestra_ray.grpo.reward import orchestration_reward

    episodes = []
    for task in tasks:
        prompt = toolsets[task.toolset][0]
        episodes.extend(new_episodes(chat, prompt, task, user_message(task.question, task.preference), 1))
    tools = {name: list(t) for name, (_, t) in toolsets.items()}
    run_episodes(GivenCompletions(completions, chat.end_of_turn_id), chat, episodes, tools, LocalExperts(experts), limits, 1.0)
    records = [episode_record(ep, slots) for ep in episodes]
    groups: Dict[str, List[int]] = {}
    for i, t in enumerate(tasks):
        groups.setdefault(t.task_id, []).append(i)
    rewards = [0.0] * len(tasks)
    for idx in groups.values():
        for i, r in zip(idx, orchestration_reward([records[i].metrics for i in idx], tasks[idx[0]].preference.weights)):
            rewards[i] = r
    return rewards


# ---- TRL ----------------------------------------------------------------------------------------
def run_trl(cfg, zoo, families, policy_path: str, out_dir: str) -> List[float]:
    """TRL GRPOTrainer on the routing task; returns the wall-clock time at the end of each step."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from orchestra_ray.rollout.chat import IM_END, ChatFormat, user_message
    from orchestra_ray.rollout.episode import episode_limits
    from orchestra_ray.families.task import MixedTaskSampler

    r, t = cfg.rollout, cfg.trainer
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    tokenizer.eos_token = IM_END  # a completion ends with its turn, as in the project's engine
    chat = ChatFormat(tokenizer)
    sampler = MixedTaskSampler(families.train, cfg.families.weights, cfg.preferences.train_profiles, zoo.slots, cfg.run.seed,
                               cfg.preferences.weights)
    tasks = [task for step in range(1, t.steps + 1) for task in sampler.next_tasks(r.tasks_per_step, step)]
    prompts = [chat.decode(chat.prompt_ids(families.toolsets[x.toolset][0], user_message(x.question, x.preference))) for x in tasks]
    by_index = {i: x for i, x in enumerate(tasks)}
    limits = episode_limits(cfg, max_turns=1)  # single-turn routing

    def reward(prompts, completions, completion_ids, task_index, **_):
        return routing_rewards(chat, families.toolsets, zoo.slots, limits, zoo.experts,
                               [by_index[i] for i in task_index], completion_ids)

    ends: List[float] = []

    class StepEnds(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    samples = r.tasks_per_step * r.group_size
    micro = min(t.micro_batch_size, samples)
    args = GRPOConfig(
        output_dir=out_dir, max_steps=t.steps, learning_rate=t.lr, weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm, num_generations=r.group_size, per_device_train_batch_size=micro,
        gradient_accumulation_steps=samples // micro, max_completion_length=r.max_new_tokens,
        temperature=r.temperature, beta=t.kl_coef, epsilon=t.clip_low, epsilon_high=t.clip_high, loss_type="dapo",
        num_iterations=t.epochs, shuffle_dataset=False, use_cpu=True, bf16=False, report_to="none",
        save_strategy="no", logging_steps=10**6, disable_tqdm=True, seed=cfg.run.seed, dataloader_num_workers=0,
        lr_scheduler_type="constant", warmup_steps=0, gradient_checkpointing=False,
    )
    model = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float32)
    data = Dataset.from_dict({"prompt": prompts, "task_index": list(range(len(tasks)))})
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tokenizer,
                          callbacks=[StepEnds()])
    trainer.train()
    return ends


# ---- this project -----------------------------------------------------------------------------
def run_project(cfg, zoo, families, run_dir: str, progress) -> Tuple[List[float], List[int]]:
    """The project's trainer on the routing task; the wall-clock time at the end of each step, and
    the staleness of each step's trained samples (max)."""
    from orchestra_ray import checkpoint as ckpt
    from pipelines.train import Trainer
    from pipelines.workers import Workers
    from pipelines.zoo import initial_policy_path

    workers = Workers(cfg, families, zoo.slots)
    os.makedirs(run_dir, exist_ok=True)
    workers.start(initial_policy_path(zoo, cfg, families))
    warm = os.path.join(ckpt.checkpoints_dir(run_dir), "warm_start")
    workers.publish_start(warm, {"step": 0})
    workers.start_reference(os.path.join(warm, "policy"))
    workers.wait_ready(cfg.rollout.num_workers)
    tr = Trainer(cfg, zoo, run_dir, progress, families, workers)  # for its GRPO step
    ends, staleness = [], []
    try:
        for _ in range(cfg.trainer.steps):
            m = tr.grpo_step()
            ends.append(time.perf_counter())
            staleness.append(m["staleness"]["max"])
    finally:
        if tr.ahead is not None:
            tr.ahead.close()
        workers.stop()
    return ends, staleness


def per_step(ends: Sequence[float]) -> float:
    """Seconds per step over steps 2..S."""
    return (ends[-1] - ends[0]) / (len(ends) - 1)


def run(cfg, zoo, families, run_dir: str, reps: int, progress) -> Dict:
    from dataclasses import replace

    from pipelines.zoo import initial_policy_path

    samples = cfg.rollout.tasks_per_step * cfg.rollout.group_size
    policy_path = initial_policy_path(zoo, cfg, families)
    sync_cfg = replace(cfg, rollout=replace(cfg.rollout, max_staleness=0))
    async_cfg = replace(cfg, rollout=replace(cfg.rollout, max_staleness=1))
    seconds: Dict[str, List[float]] = {s: [] for s in SIDES}
    staleness: Dict[str, List[int]] = {"sync": [], "async": []}
    for rep in range(reps):
        for side in SIDES:
            where = os.path.join(run_dir, f"{side}-{rep}")
            if side == "trl":
                ends = run_trl(cfg, zoo, families, policy_path, where)
            else:
                ends, stale = run_project(sync_cfg if side == "sync" else async_cfg, zoo, families, where, progress)
                staleness[side].extend(stale)
            seconds[side].append(per_step(ends))
            progress.note(f"rep {rep + 1}/{reps} {side}: {seconds[side][-1]:.2f} s/step, "
                          f"{samples / seconds[side][-1]:.1f} samples/s")
    med = {s: statistics.median(v) for s, v in seconds.items()}
    r, t = cfg.rollout, cfg.trainer
    return {
        "benchmark": "trl",
        "work": {"task": "single-turn routing (answer(expert=...)) on FRAMES", "tasks_per_step": r.tasks_per_step,
                 "group_size": r.group_size, "samples_per_step": samples, "max_completion_tokens": r.max_new_tokens,
                 "lr": t.lr, "kl_coef": t.kl_coef, "clip": [t.clip_low, t.clip_high], "steps": t.steps, "reps": reps,
                 "rollout_workers": r.num_workers},
        "seconds_per_step": seconds,
        "median_seconds_per_step": med,
        "median_samples_per_s": {s: samples / v for s, v in med.items()},
        "speedup_vs_trl": {"sync": med["trl"] / med["sync"], "async": med["trl"] / med["async"]},
        "max_staleness_seen": {s: max(v) if v else 0 for s, v in staleness.items()},
    }


def table(result: Dict) -> str:
    w = result["work"]
    lines = [f"GRPO on the same work: {w['samples_per_step']} samples/step ({w['tasks_per_step']} tasks x {w['group_size']}), "
             f"<= {w['max_completion_tokens']} completion tokens, {w['steps']} steps x {w['reps']} reps (medians)",
             f"{'side':<28}{'s/step':>10}{'samples/s':>12}{'vs TRL':>9}"]
    names = {"trl": "TRL GRPOTrainer", "sync": "orchestra-ray synchronous", "async": "orchestra-ray asynchronous"}
    for side in SIDES:
        s = result["median_seconds_per_step"][side]
        ratio = 1.0 if side == "trl" else result["speedup_vs_trl"][side]
        lines.append(f"{names[side]:<28}{s:>10.2f}{result['median_samples_per_s'][side]:>12.1f}{ratio:>8.2f}x")
    return "\n".join(lines)

"""RolloutWorker: a policy copy and its engine, running the multi-turn loop for whole groups."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import ray

from actors.collective_transport import CONCURRENCY_GROUPS, CollectiveReceiver, ReceivesWeights
from actors.common import ActorResources, quiet_torch_process
from actors.metrics import record
from actors.tool_client import RayToolClient
from actors.weight_transport import pull_if_newer
from orchestra_ray.config import OrchestraConfig
from orchestra_ray.rollout.chat import ChatFormat, user_message
from orchestra_ray.policy.engine import HFEngine
from orchestra_ray.policy.lora import apply_lora
from orchestra_ray.rollout.episode import EpisodeLimits, episode_limits, episode_record, new_episodes, run_episodes
from orchestra_ray.rollout.sample import Sample
from orchestra_ray.rollout.stage_clock import StageClock, timed
from orchestra_ray.families.family import TaskFamily
from orchestra_ray.families.task import Task
from orchestra_ray.policy.tiny_model import load_policy, load_tokenizer
from orchestra_ray.tools.spec import ToolSpec


@dataclass(frozen=True)
class RolloutSpec:
    """What every rollout worker of a run is built from (the worker's index aside)."""

    policy_path: str
    # toolset -> (system prompt, tools): what a task of that toolset shows the policy
    toolsets: Mapping[str, Tuple[str, Sequence[ToolSpec]]]
    slots: Sequence[str]
    limits: EpisodeLimits
    families: Mapping[str, TaskFamily]  # family name -> TaskFamily: each episode's initial state
    dtype: str
    device: str
    torch_threads: int
    max_batch_size: int
    engine: str  # "hf" or "vllm" (orchestra_ray/policy/vllm_engine.py)
    engine_options: Mapping[str, Any]  # further vllm.LLM arguments
    resources: ActorResources  # per worker
    max_tool_output_chars: int  # of a code run's output in its observation, as in the warm start
    weight_transport: str = "object_store"  # or "collective": the worker joins the learner's broadcast group
    # (rank, alpha, target modules) when versions are LoRA factors alone (trainer.lora.publish=adapter)
    adapter: Optional[Tuple[int, float, Tuple[str, ...]]] = None
    kv_cache_tokens: int = 0  # the transformers engine's kept KV between an episode's turns (0: none)
    share_prompt_prefill: bool = True  # the transformers engine prefills each distinct prompt of a call once
    preallocate_kv_cache: bool = True  # ... and decodes into KV buffers allocated per call

    @classmethod
    def from_config(cls, cfg: OrchestraConfig, policy_path: str, toolsets: Mapping[str, Tuple[str, Sequence[ToolSpec]]],
                    slots: Sequence[str], families: Mapping[str, TaskFamily]) -> "RolloutSpec":
        """The rollout section's settings with the task families (and their toolsets) and the zoo's slots."""
        r, lo = cfg.rollout, cfg.trainer.lora
        adapter = (lo.rank, lo.alpha, tuple(lo.target_modules)) if lo.rank > 0 and lo.publish == "adapter" else None
        return cls(policy_path, toolsets, tuple(slots), episode_limits(cfg), families, r.dtype or cfg.policy.dtype, cfg.policy.device,
                   r.torch_threads, r.max_batch_size, cfg.policy.engine, dict(cfg.policy.vllm),
                   ActorResources(r.num_cpus_per_worker, r.num_gpus_per_worker, dict(r.resources)),
                   cfg.tools.sandbox.max_output_chars, cfg.weights.transport, adapter,
                   r.kv_cache_max_tokens if r.kv_cache else 0, r.share_prompt_prefill, r.preallocate_kv_cache)


@ray.remote(concurrency_groups=CONCURRENCY_GROUPS)
class RolloutWorker(ReceivesWeights):
    def __init__(self, spec: RolloutSpec, experts: Dict[str, "ray.actor.ActorHandle"], weight_store, index: int,
                 code_pool: Optional["ray.actor.ActorHandle"] = None, search: Optional["ray.actor.ActorHandle"] = None):
        quiet_torch_process(spec.torch_threads)
        self.spec, self.index, self.store = spec, index, weight_store
        if spec.engine == "vllm":
            from orchestra_ray.policy.vllm_engine import VLLMEngine

            tokenizer = load_tokenizer(spec.policy_path)
            self.engine = VLLMEngine(spec.policy_path, spec.dtype, spec.max_batch_size, dict(spec.engine_options or {}),
                                     adapter=spec.adapter)
        else:
            model, tokenizer = load_policy(spec.policy_path, spec.dtype, spec.device)
            if spec.adapter:  # versions set the factors of peft's adapters; the base stays the policy's
                rank, alpha, targets = spec.adapter
                model = apply_lora(model, rank, alpha, 0.0, targets)
            # On CPU the workers of a node read the published weights in place, one copy for all of them.
            self.engine = HFEngine(model, tokenizer.pad_token_id, spec.max_batch_size, share_weights=True,
                                   kv_cache_tokens=spec.kv_cache_tokens, share_prompt_prefill=spec.share_prompt_prefill,
                                   preallocate=spec.preallocate_kv_cache)
        self.chat = ChatFormat(tokenizer)
        self.tools = {name: list(tools) for name, (_, tools) in spec.toolsets.items()}
        self.client = RayToolClient(experts, code_pool, search, spec.max_tool_output_chars)
        self.version = -1
        self.clock = StageClock()
        self.receiver = None
        if spec.weight_transport == "collective":
            # joining starts a new epoch: the learner's next version forms a group with this worker in it
            self.receiver = CollectiveReceiver()
            ray.get(self.store.join_transport.remote(ray.get_runtime_context().current_actor))

    def __repr__(self) -> str:  # the actor's name in the dashboard and in log prefixes
        return f"RolloutWorker[{self.index}]"

    def ready(self) -> int:
        return os.getpid()

    def sync_weights(self) -> int:
        t0 = time.perf_counter()
        update = pull_if_newer(self.store, self.version, self.receiver.take if self.receiver else None)
        if update is not None:
            self.version, weights = update
            self.engine.load_weights(weights)
            record("orchestra_weight_sync_seconds", time.perf_counter() - t0)
            self.clock.add("weight_sync", time.perf_counter() - t0)
        return self.version

    def run_groups(self, tasks: List[Task], group_size: int, temperature: float, seed: int) -> List[Sample]:
        """All samples of these tasks, batched together, generated with the latest weights; every
        sample is stamped with the weight version that produced it, and carries its share of the
        batch's wall time by stage (`rollout_seconds`)."""
        import torch

        t0 = time.perf_counter()
        self.clock.take()
        self.sync_weights()
        torch.manual_seed(seed)
        episodes = []
        for task in tasks:
            prompt = self.spec.toolsets[task.toolset][0]
            episodes.extend(new_episodes(self.chat, prompt, task, user_message(task.question, task.preference), group_size))
        for ep in episodes:
            ep.weight_version = self.version
            ep.env = self.spec.families[ep.task.family].new_state(ep.task)
        engine = timed(self.engine, self.clock, {"generate": "generation"})
        client = timed(self.client, self.clock, {"respond_many": "tools", "run_tools": "tools"})
        run_episodes(engine, self.chat, episodes, self.tools, client, self.spec.limits, temperature)
        records = [episode_record(ep, self.spec.slots) for ep in episodes]
        seconds = {**self.clock.take(), "worker": time.perf_counter() - t0}
        for rec in records:
            rec.rollout_seconds = {k: v / len(records) for k, v in seconds.items()}
        return records


def start_rollout_worker(spec: RolloutSpec, index: int, experts: Dict[str, "ray.actor.ActorHandle"], weight_store,
                         code_pool: Optional["ray.actor.ActorHandle"] = None,
                         search: Optional["ray.actor.ActorHandle"] = None) -> "ray.actor.ActorHandle":
    return RolloutWorker.options(**spec.resources.options()).remote(spec, experts, weight_store, index, code_pool, search)

"""LearnerGroup: N learner ranks behind one handle with the single learner's interface.

The ranks (actors/learner.py, `trainer.num_learners` of them) are placed in one placement group
(`trainer.placement_strategy`), rank 0 gives the process group's address and port, and every call
the driver makes (warm start, GRPO step, publish, save, restore, and the reference log-probs of the
KL term, computed on the same ranks) goes to all ranks in the same order, since each is a
collective. Their results are merged into what one learner would return.

A rank that dies or fails ends the group: the others are killed at once (they would otherwise
wait in a collective until `trainer.collective_timeout_s`), and this call and every later one
raise `LearnerLost` naming the rank. The run resumes from its last checkpoint with `--resume`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Optional, Sequence

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.learner import Learner, LearnerSpec
from orchestra_ray.errors import ConfigError, LearnerLost
from orchestra_ray.grpo.shares import RANK_PARTS
from orchestra_ray.rollout.sample import TrainBatch

# After one rank's call fails, how long the others' results are awaited before blaming it: a
# survivor's "connection closed" comes at once, the dead rank's death notice from Ray a moment later.
SETTLE_S = 5.0


def _bundle(spec: LearnerSpec) -> Dict[str, float]:
    r = spec.resources
    return {k: v for k, v in {"CPU": r.num_cpus, "GPU": r.num_gpus, **r.custom}.items() if v}


@ray.remote(num_cpus=0)
class LearnerGroup:
    def __init__(self, spec: LearnerSpec, weight_store):
        self.spec, self.store = spec, weight_store
        self.n, self.lost, self.ranks, self.pg = spec.trainer.num_learners, None, [], None
        self.started: Optional[asyncio.Future] = None

    async def _start(self) -> None:
        """Placement group, ranks, process group: once, on the first call (an actor's constructor
        cannot await). A failure stops whatever had started."""
        t = self.spec.trainer
        self.pg = placement_group([_bundle(self.spec)] * self.n, strategy=t.placement_strategy)
        try:
            await asyncio.wait_for(self.pg.ready(), t.collective_timeout_s)
        except asyncio.TimeoutError:
            self.shutdown()
            raise ConfigError(f"the learner group's {self.n} bundles of {_bundle(self.spec)} ({t.placement_strategy}) could "
                              f"not be placed within trainer.collective_timeout_s={t.collective_timeout_s:g} s; cluster "
                              f"resources: {ray.cluster_resources()}") from None
        self.ranks = [Learner.options(**self.spec.resources.options(), scheduling_strategy=PlacementGroupSchedulingStrategy(
            self.pg, placement_group_bundle_index=i)).remote(self.spec, self.store, i, self.n) for i in range(self.n)]
        address, port = (await self._on_ranks("start", [self.ranks[0].address.remote()]))[0]
        await self._on_ranks("join", [r.join.remote(address, port) for r in self.ranks])

    async def _all(self, method: str, *args) -> List[Any]:
        """`method` on every rank, submitted in one go (each rank runs its calls in this order)."""
        if self.started is None:
            self.started = asyncio.ensure_future(self._start())
        await self.started
        if self.lost:
            raise LearnerLost(self.lost)
        return await self._on_ranks(method, [getattr(r, method).remote(*args) for r in self.ranks])

    async def _on_ranks(self, method: str, refs: List["ray.ObjectRef"]) -> List[Any]:
        futures = [asyncio.wrap_future(ref.future()) for ref in refs]
        done, pending = await asyncio.wait(futures, return_when=asyncio.FIRST_EXCEPTION)
        if pending:
            await asyncio.wait(pending, timeout=SETTLE_S)
        failed = [(i, f.exception()) for i, f in enumerate(futures) if f.done() and f.exception() is not None]
        if failed:
            # The rank that died is the cause; the others only lost their peer.
            rank, exc = next(((i, e) for i, e in failed if isinstance(e, ray.exceptions.RayActorError)), failed[0])
            self._end(rank, method, exc)
        return [f.result() for f in futures]

    def _end(self, rank: int, method: str, exc: BaseException) -> None:
        if not self.lost:
            died = isinstance(exc, ray.exceptions.RayActorError)
            why = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            why = why.split(" Some common causes")[0][:240]  # Ray's death notice, without its list of guesses
            self.lost = f"learner rank {rank} of {self.n} {'died' if died else 'failed'} during {method}: {why}"
            self.shutdown()
        raise LearnerLost(self.lost) from exc

    def shutdown(self) -> None:
        """Stops the ranks and frees their placement group (which outlives this actor otherwise)."""
        for r in self.ranks:
            ray.kill(r, no_restart=True)
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None

    # ---- the learner interface ------------------------------------------------------------------
    async def pid(self) -> int:
        return (await self._all("pid"))[0]

    async def publish(self) -> int:
        return (await self._all("publish"))[0]

    async def current_version(self) -> int:
        return (await self._all("current_version"))[0]

    async def warm_start(self, demos: Sequence[dict], epochs: int, batch_size: int, lr: float, seed: int) -> List[float]:
        parts = await self._all("warm_start", ray.put(demos), epochs, batch_size, lr, seed)  # one copy for all ranks
        return [sum(p[e] for p in parts) for e in range(len(parts[0]))]

    async def warm_start_begin(self, demos: Sequence[dict], epochs: int, batch_size: int, lr: float, seed: int) -> int:
        return (await self._all("warm_start_begin", ray.put(demos), epochs, batch_size, lr, seed))[0]

    async def warm_start_run(self, batches: int) -> Optional[List[float]]:
        parts = await self._all("warm_start_run", batches)  # every rank takes the same batches
        return None if parts[0] is None else [sum(p[e] for p in parts) for e in range(len(parts[0]))]

    async def train_step(self, batch: TrainBatch, ref_logprobs: Optional[Sequence[Sequence[float]]],
                         temperature: float) -> Dict[str, float]:
        ref = None if ref_logprobs is None else ray.put(ref_logprobs)
        parts = await self._all("train_step", ray.put(batch), ref, temperature)
        stats = dict(parts[0])
        for k in RANK_PARTS:
            stats[k] = sum(p[k] for p in parts)
        stats["update_s"] = max(p["update_s"] for p in parts)
        stats["publish_s"] = max(p["publish_s"] for p in parts)
        return stats

    async def save(self, path: str, with_optimizer: bool = True) -> str:
        return (await self._all("save", path, with_optimizer))[0]

    async def restore(self, path: str) -> int:
        return (await self._all("restore", path))[0]

    # ---- the reference model, on the ranks ------------------------------------------------------
    async def load_reference(self, policy_path: str) -> int:
        return (await self._all("load_reference", policy_path))[0]

    async def logprobs(self, batch: TrainBatch, temperature: float = 1.0) -> List[List[float]]:
        parts = await self._all("logprobs", ray.put(batch), temperature)
        merged = {i: lp for p in parts for i, lp in p.items()}
        return [merged[i] for i in range(len(merged))]

    async def busy_seconds(self) -> float:
        return max(await self._all("busy_seconds"))

    # ---- measurement and tests ------------------------------------------------------------------
    async def rank_pids(self) -> List[int]:
        return await self._all("pid")

    async def reset_peak_memory(self) -> None:
        await self._all("reset_peak_memory")

    async def memory(self) -> List[Dict[str, float]]:
        return [m for part in await self._all("memory") for m in part]


def start_learner(spec: LearnerSpec, weight_store) -> "ray.actor.ActorHandle":
    """The run's learner, publishing to `weight_store`: one actor, or a group of
    `trainer.num_learners` ranks behind one handle; the driver sees the same methods either way."""
    if spec.trainer.num_learners == 1:
        return Learner.options(**spec.resources.options()).remote(spec, weight_store)
    return LearnerGroup.remote(spec, weight_store)


def stop_learner(handle, group: bool) -> None:
    """Stops a learner started by `start_learner`; a group's ranks and placement group too."""
    if group:
        try:
            ray.get(handle.shutdown.remote(), timeout=30)
        except (ray.exceptions.RayError, TimeoutError):
            pass  # the group actor is gone: its ranks went with it (their owner), its placement group with the job
    ray.kill(handle, no_restart=True)

"""Workers: the Ray actors of a run, each built from a frozen spec made from the config (next to its
actor in actors/), started in one order and stopped together. Training, evaluation, serving and the
benchmarks start what they need through it:

    weight store (on the driver's node) -> experts -> tools -> rollout pool -> learner (one actor, or
    a group of trainer.num_learners ranks) -> reference model (on the warm-start policy; on the
    group's ranks for a group; none when trainer.kl_coef = 0)
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import ray

from actors.code_interpreter import start_code_pool
from actors.experts import ExpertsSpec, start_experts
from actors.learner import LearnerSpec
from actors.learner_group import start_learner, stop_learner
from actors.reference_model import ReferenceSpec, start_reference
from actors.rollout_pool import RolloutPool
from actors.rollout_worker import RolloutSpec, start_rollout_worker
from actors.search_tool import start_search_actor
from actors.weight_transport import start_weight_store
from orchestra_ray import checkpoint as ckpt
from orchestra_ray.config import OrchestraConfig
from orchestra_ray.errors import ConfigError
from orchestra_ray.families.task import ARITHMETIC
from pipelines.families import Families


class Workers:
    def __init__(self, cfg: OrchestraConfig, families: Families, slots: Sequence[str], extra_data: Sequence[str] = ()):
        """`extra_data`: other replay data sets whose questions the replay experts answer too (an
        evaluation's --test-data)."""
        self.cfg, self.families, self.slots, self.extra_data = cfg, families, tuple(slots), tuple(extra_data)
        self.store = self.code_pool = self.search = None
        self.experts: Dict[str, "ray.actor.ActorHandle"] = {}
        self.pool: Optional[RolloutPool] = None
        self.learner = self.reference = None

    def start(self, policy_path: str) -> None:
        """What a training run needs before its warm start: the rollout side, then the learner."""
        self.start_rollout(policy_path)
        self.learner = start_learner(LearnerSpec.from_config(self.cfg, policy_path), self.store)

    def start_rollout(self, policy_path: str) -> None:
        """Experts, tools and the rollout pool, with the policy at `policy_path` until the learner
        publishes newer weights (an evaluation runs with these alone)."""
        self.store = start_weight_store()
        self.start_experts()
        self.start_tools(code=ARITHMETIC in self.families.train)
        spec = RolloutSpec.from_config(self.cfg, policy_path, self.families.toolsets, self.slots, self.families.by_name)
        r = self.cfg.rollout
        self.pool = RolloutPool(lambda i: start_rollout_worker(spec, i, self.experts, self.store, self.code_pool, self.search),
                                r.num_workers, r.autoscale, r.resources, r.max_batch_retries, r.retry_backoff_s,
                                r.batch_timeout_s, on_remove=lambda h: self.store.leave_transport.remote([h]))
        self.wait_experts()

    def start_experts(self) -> None:
        self.experts = start_experts(ExpertsSpec.from_config(self.cfg, extra_data=self.extra_data))

    def wait_experts(self) -> None:
        ray.get([a.ready.remote() for a in self.experts.values()])

    def start_tools(self, code: bool) -> None:
        """The code-interpreter pool when `code` (a family runs the policy's Python), the search actor
        when a corpus is set."""
        t = self.cfg.tools
        # A tool that cannot start (no bubblewrap, a bad corpus) stops the run with one line.
        try:
            if code:
                self.code_pool = start_code_pool(t.sandbox, t.code_pool)
            if t.search.corpus:
                self.search = start_search_actor(t.search)
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def publish_start(self, warm_dir: str, state: Dict) -> None:
        """Publishes the learner's first version and keeps it as the warm-start checkpoint (`state`
        in its state.json): the policy the reference model freezes."""
        ray.get(self.learner.publish.remote())
        tmp = ckpt.temp_dir_for(warm_dir)
        ray.get(self.learner.save.remote(tmp, False))
        ckpt.commit(tmp, warm_dir, state)

    def start_reference(self, policy_path: str) -> None:
        """The frozen policy of the KL term; none when trainer.kl_coef is 0, where no step asks it. A
        learner group holds it on its ranks, sharded like the policy."""
        if self.cfg.trainer.kl_coef <= 0:
            return
        if self.cfg.trainer.num_learners > 1:
            ray.get(self.learner.load_reference.remote(policy_path))
            self.reference = self.learner
        else:
            self.reference = start_reference(ReferenceSpec.from_config(self.cfg, policy_path))

    def wait_ready(self, rollout_workers: int = 0) -> None:
        """Until the reference model has loaded and `rollout_workers` workers are up (a benchmark's
        first step then times no start-up)."""
        if self.reference is not None:
            ray.get(self.reference.pid.remote())
        if rollout_workers:
            self.pool.wait_ready(rollout_workers)

    def handles(self) -> List["ray.actor.ActorHandle"]:
        """Every actor started here, the rollout pool's workers included."""
        out = [self.learner, self.reference, self.store, *self.experts.values(), self.code_pool, self.search]
        out += [m.handle for m in self.pool.members.values()] if self.pool is not None else []
        return list({id(h): h for h in out if h is not None}.values())  # a learner group is its own reference

    def stop(self) -> None:
        if self.learner is not None:
            stop_learner(self.learner, group=self.cfg.trainer.num_learners > 1)
        for h in self.handles():
            ray.kill(h, no_restart=True)

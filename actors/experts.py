"""Expert actors: one Ray actor per zoo slot hosting that slot's backend (replay, an OpenAI-compatible
endpoint, or a model deployed on Ray Serve), and the client the rollout loop calls them through."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import ray

from actors.metrics import record
from orchestra_ray.config import ExpertSlotConfig, OrchestraConfig
from orchestra_ray.errors import ConfigError
from orchestra_ray.experts.base import ExpertError, ExpertRequest, ExpertResponse, ReplayExpert
from orchestra_ray.rollout.failures import classify_exception
from orchestra_ray.families.frames import load_responses
from orchestra_ray.experts.openai_expert import OpenAIExpert
from orchestra_ray.experts.pricing import ExpertPrice, PriceTable

# Serve's HTTP proxy always runs on the head node; an actor placed there reaches it on loopback.
HEAD_NODE_RESOURCE = "node:__internal_head__"


def make_expert(slot: ExpertSlotConfig, price: ExpertPrice, data_path: str, input_overhead: int, base_url: Optional[str] = None,
                extra_data: Sequence[str] = ()):
    """The backend object of one slot; `base_url` is where a "serve" slot's deployment answers. A
    replay slot also answers the questions of `extra_data` (other data sets in the replay schema,
    such as an evaluation's test data); where a question id is in both, `data_path`'s answer wins."""
    prices = PriceTable({slot.name: price})
    if slot.backend == "replay":
        records: Dict = {}
        for path in (*extra_data, data_path):
            records.update(load_responses(path, [slot.arm])[slot.arm])
        return ReplayExpert(slot.name, records, prices, input_overhead)
    if slot.backend == "serve":
        if base_url is None:
            raise ValueError(f"expert '{slot.name}' is a 'serve' slot and needs the URL of its deployment")
        # The deployment serves the model under the slot's name (see actors/serve_expert.py).
        return OpenAIExpert(slot.name, slot.name, base_url, prices, timeout_s=slot.timeout_s,
                            max_retries=slot.max_retries, max_output_tokens=slot.max_output_tokens)
    return OpenAIExpert(slot.name, slot.model, base_url or slot.base_url, prices, api_key_env=slot.api_key_env,
                        timeout_s=slot.timeout_s, max_retries=slot.max_retries, max_output_tokens=slot.max_output_tokens,
                        limit_param=slot.token_limit_param)


# Threaded: calls from all rollout workers to one slot run side by side (an endpoint that times
# out must not hold up the others' calls behind it).
@ray.remote(num_cpus=0, max_restarts=3, max_task_retries=3, max_concurrency=32)
class ExpertActor:
    """Serves one slot through its backend. A backend that cannot start (an unset key variable, a
    missing arm) leaves the actor alive with the reason, for `start_experts` to report in one line."""

    def __init__(self, slot: ExpertSlotConfig, price: ExpertPrice, data_path: str, input_overhead: int, base_url: Optional[str] = None,
                 extra_data: Sequence[str] = ()):
        self.slot, self.expert, self.error = slot.name, None, None
        try:
            self.expert = make_expert(slot, price, data_path, input_overhead, base_url, extra_data)
        except ConfigError as exc:
            self.error = ("config", str(exc))
        except Exception as exc:
            self.error = ("start", f"expert '{slot.name}' could not start: {type(exc).__name__}: {exc}")

    def respond(self, request: ExpertRequest) -> Union[ExpertResponse, ExpertError]:
        # An expert's failure is returned, not raised: it is data for the episode, not a crash.
        if self.expert is None:
            record("orchestra_expert_errors", 1, {"expert": self.slot})
            return ExpertError(self.error[1])
        try:
            return self.expert.respond(request)
        except ExpertError as exc:
            record("orchestra_expert_errors", 1, {"expert": self.slot})
            return exc

    def __repr__(self) -> str:
        return f"Expert[{self.slot}]"

    def startup_error(self) -> Optional[Tuple[str, str]]:
        """(kind, one-line reason) when the backend did not start; None when it did."""
        return self.error

    def ready(self) -> bool:
        return self.expert is not None

    def describe(self) -> str:
        """The backend as it would appear in a log line."""
        return repr(self.expert)


def _check_fits(slot: ExpertSlotConfig, key: str) -> None:
    """A replica the cluster can never place would leave Serve waiting for it forever."""
    total = ray.cluster_resources()
    for res, want in (("CPU", slot.serve.num_cpus), ("GPU", slot.serve.num_gpus)):
        have = total.get(res, 0.0)
        if want > have:
            raise ConfigError(
                f"invalid value for config key '{key}.serve.num_{res.lower()}s': a replica asks for {want:g} {res}, "
                f"the cluster has {have:g}"
            )


@dataclass(frozen=True)
class ExpertsSpec:
    """The zoo's slots, the recorded answers replay slots read (an absolute path: the actors' working
    directory need not be the driver's) and the instruction tokens billed with each question."""

    slots: Tuple[ExpertSlotConfig, ...]
    data_path: str
    input_overhead: int
    extra_data: Tuple[str, ...] = ()  # further data sets whose questions replay slots answer too

    @classmethod
    def from_config(cls, cfg: OrchestraConfig, data_path: Optional[str] = None, extra_data: Sequence[str] = ()) -> "ExpertsSpec":
        """`data_path` overrides `data.path`."""
        return cls(tuple(copy.deepcopy(cfg.zoo.experts)), os.path.abspath(data_path or cfg.data.path),
                   cfg.zoo.input_tokens_overhead, tuple(os.path.abspath(p) for p in extra_data))


def start_experts(spec: ExpertsSpec) -> Dict[str, "ray.actor.ActorHandle"]:
    """One ExpertActor per slot; each "serve" slot's model is deployed on Ray Serve first. Returns
    when every backend has started; ConfigError names the first slot whose backend could not."""
    prices = PriceTable.from_slots(spec.slots)
    handles = {}
    for i, slot in enumerate(spec.slots):
        options, base_url = {}, None
        if slot.backend == "serve":
            from actors.serve_expert import deploy_chat_model

            _check_fits(slot, f"zoo.experts.{i}")
            try:
                base_url = deploy_chat_model(slot.name, slot.model, slot.serve)
            except ExpertError as exc:
                raise ConfigError(f"invalid value for config key 'zoo.experts.{i}.model': {exc}") from None
            options = {"resources": {HEAD_NODE_RESOURCE: 0.001}}
        handles[slot.name] = ExpertActor.options(**options).remote(
            slot, prices.prices[slot.name], spec.data_path, spec.input_overhead, base_url, spec.extra_data
        )
    errors = [e for e in ray.get([h.startup_error.remote() for h in handles.values()]) if e is not None]
    if errors:
        for h in handles.values():
            ray.kill(h)
        kind, message = errors[0]
        raise (ConfigError if kind == "config" else ExpertError)(message)
    return handles


class RayExpertClient:
    """`ExpertClient` over expert actor handles: all calls of a turn run concurrently."""

    def __init__(self, handles: Dict[str, "ray.actor.ActorHandle"]):
        self.handles = handles

    def respond_many(self, requests: Sequence[Tuple[str, ExpertRequest]]) -> List[Union[ExpertResponse, ExpertError]]:
        refs = [self.handles[slot].respond.remote(req) for slot, req in requests]
        out: List[Union[ExpertResponse, ExpertError]] = []
        for (slot, _), ref in zip(requests, refs):
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                out.append(ExpertError(f"expert '{slot}' failed: {type(exc).__name__}", classify_exception(exc)))
        return out

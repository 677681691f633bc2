"""Expert actors: one Ray actor per zoo slot, and the client the rollout loop calls them through."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import ray

from orchestra_ray.experts import ExpertError, ExpertRequest, ExpertResponse, ReplayExpert
from orchestra_ray.frames import load_responses
from orchestra_ray.pricing import PriceTable


@ray.remote(num_cpus=0, max_restarts=3, max_task_retries=3)
class ReplayExpertActor:
    """Serves one slot from the recorded answers of its arm."""

    def __init__(self, data_path: str, slot, input_overhead: int):
        records = load_responses(data_path, [slot.arm])[slot.arm]
        self.expert = ReplayExpert(slot.name, records, PriceTable.from_slots([slot]), input_overhead)

    def respond(self, request: ExpertRequest) -> Union[ExpertResponse, ExpertError]:
        # An expert's failure is returned, not raised: it is data for the episode, not a crash.
        try:
            return self.expert.respond(request)
        except ExpertError as exc:
            return exc

    def ready(self) -> bool:
        return True


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
                out.append(ExpertError(f"expert '{slot}' failed: {type(exc).__name__}"))
        return out

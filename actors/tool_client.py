"""The rollout loop's view of the remote tools: expert actors, the code-interpreter pool and the
search actor. All calls of one turn are in flight together; a tool that fails or dies yields an
error observation for that episode, never an exception in the worker."""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import ray

from actors.experts import RayExpertClient
from orchestra_ray.rollout.tool_router import ToolOutcome
from orchestra_ray.experts.base import ExpertError, ExpertRequest, ExpertResponse
from orchestra_ray.rollout.failures import DATA, INFRASTRUCTURE, classify_exception


class RayToolClient:
    def __init__(self, experts: Dict[str, "ray.actor.ActorHandle"], code_pool=None, search=None, max_output_chars: int = 4000):
        self.experts = RayExpertClient(experts)
        self.code_pool, self.search = code_pool, search
        self.max_output_chars = max_output_chars

    def respond_many(self, requests: Sequence[Tuple[str, ExpertRequest]]) -> List[Union[ExpertResponse, ExpertError]]:
        return self.experts.respond_many(requests)

    def run_tools(self, calls: Sequence[Tuple[str, Dict[str, Any]]]) -> List[ToolOutcome]:
        refs: List[Optional[ray.ObjectRef]] = []
        t0 = time.monotonic()
        for name, args in calls:
            if name == "run_python" and self.code_pool is not None:
                refs.append(self.code_pool.execute.remote(args["code"]))
            elif name == "search" and self.search is not None:
                refs.append(self.search.search.remote(args["query"], args.get("k")))
            else:
                refs.append(None)
        out: List[ToolOutcome] = []
        for (name, _), ref in zip(calls, refs):
            if ref is None:
                msg = f"tool '{name}' is not available in this run"
                out.append(ToolOutcome(f"error: {msg}", ok=False, error=msg))
                continue
            try:
                res = ray.get(ref)
            except ray.exceptions.RayError as exc:
                msg = f"tool '{name}' failed: {type(exc).__name__}"
                out.append(ToolOutcome(f"error: {msg}", ok=False, error=msg, error_kind=classify_exception(exc)))
                continue
            out.append(self._outcome(name, res, time.monotonic() - t0))
        return out

    def _outcome(self, name: str, res, waited_s: float) -> ToolOutcome:
        # Latency is measured: the sandbox's own wall time, or (search) the wait for the answer.
        if name == "run_python":
            # A sandbox that could not run the code is the cluster's fault; what the code did is the policy's.
            kind = "" if res.ok else (INFRASTRUCTURE if res.failure_kind() == "unavailable" else DATA)
            return ToolOutcome(res.observation(self.max_output_chars), ok=res.ok, error=res.error, latency=res.wall_s,
                               error_kind=kind)
        text = str(res)
        failed = text.startswith("error:")
        return ToolOutcome(text, ok=not failed, error=text[6:].strip() if failed else "", latency=waited_s,
                           error_kind=DATA if failed else "")

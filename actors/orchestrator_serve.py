"""A trained orchestrator on Ray Serve, behind an OpenAI-compatible API.

Two deployments: the ingress (FastAPI: checks requests, answers 4xx, applies the request timeout)
and the policy (a copy of the policy per replica, autoscaled). The policy deployment batches the
requests that arrive together and runs their episodes through the rollout loop itself
(`orchestra_ray.rollout.episode.run_episodes`), calling the same expert actors and tools as training.
A streamed request's episode reports its calls and its answer's tokens as they happen
(`orchestra_ray.serving.stream`): the loop's thread queues them on the replica's event loop, and a
streaming generator hands them to the ingress, which sends each as a server-sent event.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' `Request` annotation
# at run time to inject the request.
import asyncio
import json
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Dict, List, Sequence, Tuple

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from actors.common import quiet_torch_process
from actors.serving_client import ServingClient
from actors.tool_client import RayToolClient
from orchestra_ray.config import OrchestraConfig
from orchestra_ray.rollout.chat import user_message
from orchestra_ray.rollout.episode import EpisodeLimits, episode_limits, new_episodes, run_episodes
from orchestra_ray.serving.api import (ApiSpec, OrchestrationRequest, RequestError, chunk_base, completion_body,
                                     delta_chunk, orchestration_trace, parse_json, parse_request, stream_chunk)
from orchestra_ray.serving.stream import EpisodeStream, Item
from orchestra_ray.families.task import FRAMES, Task
from orchestra_ray.serving.config import ServingConfig
from orchestra_ray.tools.spec import ToolSpec


@dataclass(frozen=True)
class PolicySpec:
    policy_path: str
    system_prompt: str
    tools: Sequence[ToolSpec]  # the served toolset (expert tools, and search when configured)
    limits: EpisodeLimits
    dtype: str = "float32"
    device: str = "cpu"
    torch_threads: int = 1
    expert_timeout_s: float = 60.0
    request_timeout_s: float = 120.0  # a batch's episodes stop starting turns by then

    @classmethod
    def from_config(cls, cfg: OrchestraConfig, serving: ServingConfig, policy_path: str,
                    toolset: Tuple[str, Sequence[ToolSpec]]) -> "PolicySpec":
        """The served policy with the run's dtype, device and episode limits (a request may lower
        max_turns) and the served toolset (system prompt, tools)."""
        system, tools = toolset
        return cls(policy_path, system, tuple(tools), episode_limits(cfg, serving.max_turns), cfg.policy.dtype,
                   cfg.policy.device, serving.torch_threads, serving.expert_timeout_s, serving.request_timeout_s)


def restricted_tools(tools: Sequence[ToolSpec], allowed: Sequence[str]) -> List[ToolSpec]:
    """The toolset narrowed to the allowed experts and tools: the parser refuses anything else, so a
    call of a forbidden tool is the policy's error (an error observation), never a call."""
    out = []
    for t in tools:
        if t.name in ("call_expert", "answer"):
            params = json.loads(json.dumps(t.parameters))
            params["properties"]["expert"]["enum"] = [s for s in params["properties"]["expert"]["enum"] if s in allowed]
            out.append(replace(t, parameters=params))
        elif t.name in allowed:
            out.append(t)
    return out


@serve.deployment
class OrchestratorPolicy:
    def __init__(self, spec: PolicySpec, experts: Dict[str, Any], search=None, max_batch_size: int = 32,
                 batch_wait_timeout_s: float = 0.01):
        from orchestra_ray.rollout.chat import ChatFormat
        from orchestra_ray.policy.engine import HFEngine
        from orchestra_ray.policy.tiny_model import load_policy

        quiet_torch_process(spec.torch_threads)
        self.spec = spec
        model, tokenizer = load_policy(spec.policy_path, spec.dtype, spec.device)
        self.engine = HFEngine(model, tokenizer.pad_token_id, max_batch_size)
        self.chat = ChatFormat(tokenizer)
        self.tools = RayToolClient(experts, None, search)
        self.run_batch.set_max_batch_size(max_batch_size)
        self.run_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.lock = threading.Lock()  # one batch on the model at a time
        self.streams: Dict[str, EpisodeStream] = {}  # by request id: the streamed requests' event sinks

    def ping(self) -> bool:
        return True

    async def run(self, req: OrchestrationRequest) -> Tuple[Dict[str, Any], str]:
        return await self.run_batch(req)

    async def run_stream(self, req: OrchestrationRequest) -> AsyncIterator[List[Item]]:
        """The request's episode as it runs, batched with the others as `run` is: lists of stream
        items, the last one ending with the end item, or an error item when the episode failed."""
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()

        def push(item: Item) -> None:  # called from the loop's thread
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the replica's event loop is closed: nobody reads any more
                pass

        stream = self.streams[req.request_id] = EpisodeStream(self.chat, push)
        task = asyncio.ensure_future(self.run_batch(req))
        # Queued after every item the thread pushed: the batch's result comes back the same way.
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                done = items[-1] is None
                if done:
                    break
                yield items
            try:
                trace, answer = task.result()
            except Exception as exc:
                yield items[:-1] + [{"error": f"the orchestration failed: {type(exc).__name__}: {str(exc)[:500]}"}]
                return
            yield items[:-1] + stream.end(trace, answer)
        finally:
            self.streams.pop(req.request_id, None)
            if not task.done():
                task.cancel()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def run_batch(self, reqs: List[OrchestrationRequest]) -> List[Tuple[Dict[str, Any], str]]:
        # The loop blocks (generation, waiting for experts): off the replica's event loop.
        return await asyncio.to_thread(self._run, reqs)

    def _run(self, reqs: List[OrchestrationRequest]) -> List[Tuple[Dict[str, Any], str]]:
        # The ingress answers 504 at the request time-out, counted from its arrival (queueing and
        # batching included); the work stops then too, not later.
        now = time.time()
        left = min((r.received_at or now) + self.spec.request_timeout_s - now for r in reqs)
        deadline = time.monotonic() + left
        client = ServingClient(self.tools, self.spec.expert_timeout_s)
        toolsets: Dict[str, List[ToolSpec]] = {}
        groups: Dict[Tuple[int, float], list] = {}
        episodes = []
        for i, req in enumerate(reqs):
            toolset = "serve:" + ",".join(req.tools)
            if toolset not in toolsets:
                toolsets[toolset] = restricted_tools(self.spec.tools, req.tools)
            # The loop names expert requests by Task.question_id: a per-request key here, which the
            # client maps back to the question id (see actors/serving_client.py).
            key = f"{req.request_id}:{i}"
            task = Task(req.request_id, key, req.question, req.gold, req.preference, FRAMES, toolset)
            ep = new_episodes(self.chat, self.spec.system_prompt, task, user_message(req.question, req.preference), 1)[0]
            ep.events = self.streams.get(req.request_id)
            client.register(key, req.question_id, req.max_cost, ep)
            episodes.append(ep)
            groups.setdefault((req.max_turns, req.temperature), []).append(ep)
        with self.lock:
            for (max_turns, temperature), eps in groups.items():
                run_episodes(self.engine, self.chat, eps, toolsets, client, replace(self.spec.limits, max_turns=max_turns),
                             temperature, deadline)
        return [(orchestration_trace(ep, req), ep.answer) for req, ep in zip(reqs, episodes)]


app = FastAPI()


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def _sse(chunk: Dict[str, Any]) -> str:
    return f"data: {json.dumps(chunk)}\n\n"


@serve.deployment
@serve.ingress(app)
class OrchestratorIngress:
    def __init__(self, policy, api: ApiSpec, request_timeout_s: float, max_body_bytes: int = 1 << 20):
        self.policy, self.api, self.timeout_s, self.max_body = policy, api, request_timeout_s, max_body_bytes
        self.created = int(time.time())

    async def _body(self, request: Request) -> bytes:
        """The body, read no further than serving.max_body_bytes (413 past it, told by the header
        or found while reading)."""
        too_big = RequestError(f"the request body is larger than {self.max_body} bytes (serving.max_body_bytes)",
                               None, 413, "request_too_large")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    @app.get("/healthz")
    async def healthz(self):
        try:
            await asyncio.wait_for(self.policy.ping.remote(), timeout=10)
        except Exception as exc:  # no replica answers: the service is not usable
            return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, status_code=503)
        return {"status": "ok", "model": self.api.model_name}

    @app.get("/v1/models")
    def models(self) -> Dict[str, Any]:
        return {"object": "list", "data": [{"id": self.api.model_name, "object": "model", "created": self.created,
                                            "owned_by": "orchestra-ray"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        t0, arrived = time.perf_counter(), time.time()
        try:
            req = replace(parse_request(parse_json(await self._body(request)), self.api), received_at=arrived)
        except RequestError as exc:
            return _error(exc)
        if req.stream:
            return StreamingResponse(self._stream(req, t0), media_type="text/event-stream")
        response = self.policy.run.remote(req)
        try:
            trace, answer = await asyncio.wait_for(response, timeout=self.timeout_s)
        except asyncio.TimeoutError:
            response.cancel()
            return _error(RequestError(f"the orchestration did not finish within serving.request_timeout_s="
                                       f"{self.timeout_s:g} s", None, 504, "timeout"))
        trace["wall_s"] = time.perf_counter() - t0
        return completion_body(req, self.api.model_name, trace, answer)

    async def _stream(self, req: OrchestrationRequest, t0: float) -> AsyncIterator[str]:
        """Server-sent chunks as the episode runs: the role, each call, the answer's pieces, the
        finish with usage and trace, then [DONE]. A failure or the time-out ends the stream with
        an error chunk (which the `openai` client raises as an APIError)."""
        base = chunk_base(req, self.api.model_name)
        yield _sse(delta_chunk(base, {"role": "assistant", "content": ""}))
        gen = self.policy.options(stream=True).run_stream.remote(req)
        error, ended = None, False
        try:
            while not ended and error is None:
                left = t0 + self.timeout_s - time.perf_counter()
                items = await asyncio.wait_for(gen.__anext__(), timeout=max(0.0, left))
                for item in items:
                    if "error" in item:
                        error = RequestError(item["error"], None, 500, "orchestration_failed")
                        break
                    body = None
                    if "end" in item:
                        trace = item["end"]["trace"]
                        trace["wall_s"] = time.perf_counter() - t0
                        body, ended = completion_body(req, self.api.model_name, trace, ""), True
                    yield _sse(stream_chunk(base, item, body))
        except StopAsyncIteration:
            error = RequestError("the orchestration ended without an answer", None, 500, "orchestration_failed")
        except asyncio.TimeoutError:
            error = RequestError(f"the orchestration did not finish within serving.request_timeout_s="
                                 f"{self.timeout_s:g} s", None, 504, "timeout")
        except Exception as exc:  # the policy replica is gone, say
            error = RequestError(f"the orchestration failed: {type(exc).__name__}: {str(exc)[:500]}", None, 500,
                                 "orchestration_failed")
        finally:
            if not ended:
                gen.cancel()  # and the policy stops streaming to a client that is gone
        if error is not None:
            yield _sse(error.body())
        yield "data: [DONE]\n\n"


def orchestrator_application(spec: PolicySpec, api: ApiSpec, experts: Dict[str, Any], search, scfg):
    """The bound Serve application: ingress -> policy, resources and autoscaling from `scfg`
    (orchestra_ray.serving.config.ServingConfig)."""
    policy = OrchestratorPolicy.options(
        name="policy",
        ray_actor_options={"num_cpus": scfg.num_cpus, "num_gpus": scfg.num_gpus},
        max_ongoing_requests=scfg.max_ongoing_requests,
        autoscaling_config={"min_replicas": scfg.min_replicas, "max_replicas": scfg.max_replicas,
                            "target_ongoing_requests": scfg.target_ongoing_requests},
        max_constructor_retry_count=3,
    ).bind(spec, experts, search, scfg.max_batch_size, scfg.batch_wait_timeout_s)
    return OrchestratorIngress.options(
        name="ingress", ray_actor_options={"num_cpus": scfg.ingress_num_cpus},
        max_ongoing_requests=max(1000, scfg.max_ongoing_requests),
    ).bind(policy, api, scfg.request_timeout_s, scfg.max_body_bytes)

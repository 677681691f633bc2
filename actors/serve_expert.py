"""A local Hugging Face causal LM as an expert on Ray Serve, behind an OpenAI-compatible HTTP API
(`POST /v1/chat/completions`, `GET /v1/models`): the client that calls a hosted model calls this one
unchanged, and Serve's autoscaler adds replicas when calls queue up."""

# No `from __future__ import annotations` here: FastAPI reads the endpoint's `Request` annotation
# at run time to inject the request.
import asyncio
import socket
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from orchestra_ray.config import ServeConfig, serve_route_prefix
from orchestra_ray.experts.base import ExpertError

ROLES = ("system", "user", "assistant", "tool")


class BadRequest(Exception):
    def __init__(self, message: str, param: Optional[str] = None, status: int = 400, code: Optional[str] = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status == 400 else "not_found_error"
        return JSONResponse(
            {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}},
            status_code=self.status,
        )


def _text_of(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    # The OpenAI format also allows a list of typed parts; only text parts mean anything to a text model.
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise BadRequest(f"messages[{i}].content must be a string or a list of text parts", f"messages[{i}].content")


def parse_chat_request(body: Any, served_name: str, max_new_tokens: int) -> Tuple[List[Dict[str, str]], int, float]:
    """(messages, token limit, temperature) of a chat completion request; BadRequest names what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a string", "model")
    if model != served_name:
        raise BadRequest(f"the model '{model}' does not exist; this server serves '{served_name}'", "model", 404, "model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRequest(f"messages[{i}] must be an object with 'role' and 'content'", f"messages[{i}]")
        if m.get("role") not in ROLES:
            raise BadRequest(f"messages[{i}].role must be one of {', '.join(ROLES)}", f"messages[{i}].role")
        out.append({"role": m["role"], "content": _text_of(m.get("content"), i)})
    if body.get("stream"):
        raise BadRequest("streaming is not supported", "stream")
    if body.get("n", 1) != 1:
        raise BadRequest("only n=1 is supported", "n")
    limit = max_new_tokens
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"'{key}' must be a positive integer", key)
        limit = min(limit, value)
    temperature = body.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise BadRequest("'temperature' must be a number in [0, 2]", "temperature")
    return out, limit, float(temperature)


def render_prompt(tokenizer, messages: List[Dict[str, str]]) -> str:
    """The model's own chat template; role-prefixed lines for a tokenizer that has none."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


app = FastAPI()


@serve.deployment
@serve.ingress(app)
class ChatModel:
    def __init__(self, served_name: str, model_path: str, max_new_tokens: int, torch_threads: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(max(1, torch_threads))
        self.torch = torch
        self.served_name, self.max_new_tokens = served_name, max_new_tokens
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        self.context = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        self.created = int(time.time())
        # One generation at a time per replica: parallel generate calls on the same cores only slow
        # each other down, and requests waiting here count as ongoing, which is what autoscaling reads.
        self.lock = threading.Lock()

    @app.get("/v1/models")
    def models(self) -> Dict[str, Any]:
        return {"object": "list", "data": [{"id": self.served_name, "object": "model", "created": self.created, "owned_by": "orchestra-ray"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        try:
            try:
                body = await request.json()
            except ValueError:
                raise BadRequest("the request body is not valid JSON") from None
            messages, limit, temperature = parse_chat_request(body, self.served_name, self.max_new_tokens)
            prompt_ids = self.tokenizer(render_prompt(self.tokenizer, messages), add_special_tokens=False)["input_ids"]
            if self.context and len(prompt_ids) + limit > self.context:
                raise BadRequest(
                    f"the prompt is {len(prompt_ids)} tokens; with max_tokens {limit} it exceeds the model's context of {self.context}",
                    "messages",
                )
        except BadRequest as exc:
            return exc.response()
        text, completion, finish = await asyncio.to_thread(self._generate, prompt_ids, limit, temperature)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.served_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": completion, "total_tokens": len(prompt_ids) + completion},
        }

    def _generate(self, prompt_ids: List[int], limit: int, temperature: float) -> Tuple[str, int, str]:
        torch, tok = self.torch, self.tokenizer
        ids = torch.tensor([prompt_ids], device=self.device)
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {"do_sample": False}
        with self.lock, torch.no_grad():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=limit,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                eos_token_id=tok.eos_token_id,
                **sampling,
            )
        new = out[0, len(prompt_ids):].tolist()
        # The end-of-sequence token is generated and billed, as OpenAI-compatible servers count it.
        finish = "stop" if new and new[-1] == tok.eos_token_id else "length"
        return tok.decode(new, skip_special_tokens=True), len(new), finish


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _reachable_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "localhost", "127.0.0.1") else host


def serve_application(name: str, model_path: str, serve_cfg: ServeConfig):
    """The bound Serve application of one expert, with its resources and autoscaling."""
    return ChatModel.options(
        name=f"{name}-chat",
        ray_actor_options={"num_cpus": serve_cfg.num_cpus, "num_gpus": serve_cfg.num_gpus},
        autoscaling_config={
            "min_replicas": serve_cfg.min_replicas,
            "max_replicas": serve_cfg.max_replicas,
            "target_ongoing_requests": serve_cfg.target_ongoing_requests,
        },
        max_constructor_retry_count=3,  # a model that cannot load fails the deployment quickly
    ).bind(name, model_path, serve_cfg.max_new_tokens, int(serve_cfg.num_cpus))


def deploy_chat_model(
    name: str,
    model_path: str,
    serve_cfg: ServeConfig,
    *,
    host: str = "127.0.0.1",
    port: Optional[int] = None,
) -> str:
    """Deploy `model_path` as Serve application `name` serving model name `name`; return its
    OpenAI base URL. Serve's HTTP proxy is started on host:port (a free port when None) unless it
    already runs, in which case the running proxy's address is used."""
    from ray.serve.context import _get_global_client
    from ray.serve.exceptions import RayServeException

    prefix = serve_route_prefix(name, serve_cfg)
    try:
        client = _get_global_client()
    except RayServeException:
        serve.start(http_options={"host": host, "port": port or _free_port(host)})
        client = _get_global_client()
    http = client.http_config
    try:
        serve.run(serve_application(name, model_path, serve_cfg), name=name, route_prefix=prefix)
    except Exception as exc:  # Serve reports a failed deployment as a RuntimeError with the replica's traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExpertError(f"Serve deployment of expert '{name}' ({model_path}) failed: {first[:300]}") from None
    return f"http://{_reachable_host(http.host)}:{http.port}{prefix}/v1"

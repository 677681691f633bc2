"""An expert behind any OpenAI-compatible chat endpoint (a vLLM server, a hosted API, a model on
Ray Serve), called with the official `openai` client: a timeout per call, retries with exponential
backoff on 429 and 5xx (the client's own), token usage taken from the response, cost from the price
table. The API key is read from an environment variable and kept out of every message and repr."""

from __future__ import annotations

import os
import time
from typing import Optional

from orchestra_ray.config import TOKEN_LIMIT_PARAMS
from orchestra_ray.errors import ConfigError
from orchestra_ray.experts.base import ExpertError, ExpertRequest, ExpertResponse
from orchestra_ray.rollout.failures import INFRASTRUCTURE, classify_http_status
from orchestra_ray.experts.pricing import PriceTable

REDACTED = "[redacted]"
# OpenAI's reasoning models refuse `max_tokens` (HTTP 400) and take `max_completion_tokens`, which
# counts the hidden reasoning tokens too; vLLM and most other servers take `max_tokens`.
_REASONING_PREFIXES = ("gpt-5", "o1", "o3", "o4")


def token_limit_param(model: str, explicit: Optional[str] = None) -> str:
    """The request field that carries the output-token limit for `model`: `explicit` when set, else
    `max_completion_tokens` for OpenAI reasoning models (by name, a provider prefix allowed) and
    `max_tokens` for the rest."""
    if explicit is not None:
        if explicit not in TOKEN_LIMIT_PARAMS:
            raise ConfigError(f"token limit parameter must be one of {', '.join(TOKEN_LIMIT_PARAMS)}, got {explicit!r}")
        return explicit
    name = model.rsplit("/", 1)[-1].lower()
    return "max_completion_tokens" if name.startswith(_REASONING_PREFIXES) else "max_tokens"


def api_key_from_env(api_key_env: Optional[str], slot: str) -> str:
    """The key held by the variable `api_key_env` ("" when the endpoint needs none); ConfigError,
    naming the variable and never a value, when it is unset or empty."""
    if not api_key_env:
        return ""
    key = os.environ.get(api_key_env, "")
    if not key:
        raise ConfigError(
            f"expert '{slot}': environment variable {api_key_env} (named by api_key_env) is not set or empty "
            f"where the expert runs; export it there"
        )
    return key


class OpenAIExpert:
    def __init__(
        self,
        slot: str,
        model: str,
        base_url: str,
        prices: PriceTable,
        *,
        api_key_env: Optional[str] = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        max_output_tokens: Optional[int] = None,
        limit_param: Optional[str] = None,
    ):
        import openai

        # Keys come from the environment (a Kubernetes Secret, a shell export), never from config.
        self._key = api_key_from_env(api_key_env, slot)
        self.slot, self.model, self.base_url, self.api_key_env = slot, model, base_url, api_key_env
        self.prices = prices
        self.max_output_tokens = max_output_tokens
        self.limit_param = token_limit_param(model, limit_param)
        self.client = openai.OpenAI(base_url=base_url, api_key=self._key or "none", timeout=timeout_s, max_retries=max_retries)
        self._openai = openai

    def __repr__(self) -> str:
        return f"OpenAIExpert(slot={self.slot!r}, model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    def _redact(self, text: str) -> str:
        # Some endpoints echo the key they were sent in their error body.
        return text.replace(self._key, REDACTED) if self._key else text

    def respond(self, request: ExpertRequest) -> ExpertResponse:
        limit = request.max_output_tokens or self.max_output_tokens
        who = f"expert '{self.slot}' ({self.model})"
        t0 = time.monotonic()
        failure, kind = None, INFRASTRUCTURE
        try:
            out = self.client.chat.completions.create(
                model=self.model, messages=list(request.messages), **({self.limit_param: limit} if limit else {})
            )
        except self._openai.APIStatusError as exc:
            failure = f"{who} answered HTTP {exc.status_code}: {self._redact(str(exc))[:300]}"
            kind = classify_http_status(exc.status_code)
        except self._openai.APITimeoutError:
            failure = f"{who} timed out"
        except self._openai.APIConnectionError as exc:
            failure = f"{who} unreachable: {self._redact(str(exc))[:300]}"
        if failure is not None:
            # Raised outside the handler, so the client's exception (its request carries the key in
            # a header) is not kept as this error's context.
            raise ExpertError(failure, kind)
        latency = time.monotonic() - t0
        if not out.choices:
            raise ExpertError(f"{who} returned no choices")
        text = out.choices[0].message.content or ""
        usage = out.usage
        if usage is None:
            raise ExpertError(f"{who} returned no token usage; cost cannot be billed")
        in_tok, out_tok = int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
        return ExpertResponse(
            slot=self.slot,
            text=text,
            input_tokens=in_tok,
            output_tokens=out_tok,
            cost=self.prices.cost(self.slot, in_tok, out_tok),
            latency=latency,
            meta={"model": out.model or self.model},
        )

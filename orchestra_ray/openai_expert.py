"""An expert behind any OpenAI-compatible chat endpoint (a vLLM server, a hosted API), called with
the official `openai` client: a timeout per call, retries with exponential backoff on 429 and 5xx
(the client's own), token usage taken from the response, cost from the price table."""

from __future__ import annotations

import os
import time
from typing import Optional

from orchestra_ray.experts import ExpertError, ExpertRequest, ExpertResponse
from orchestra_ray.pricing import PriceTable


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
    ):
        import openai

        # Keys come from the environment (a Kubernetes Secret, a shell export), never from config.
        key = os.environ.get(api_key_env, "") if api_key_env else ""
        self.slot, self.model, self.prices = slot, model, prices
        self.max_output_tokens = max_output_tokens
        self.client = openai.OpenAI(base_url=base_url, api_key=key or "none", timeout=timeout_s, max_retries=max_retries)
        self._openai = openai

    def respond(self, request: ExpertRequest) -> ExpertResponse:
        limit = request.max_output_tokens or self.max_output_tokens
        t0 = time.monotonic()
        try:
            out = self.client.chat.completions.create(
                model=self.model, messages=list(request.messages), **({"max_tokens": limit} if limit else {})
            )
        except self._openai.APIStatusError as exc:
            raise ExpertError(f"expert '{self.slot}' ({self.model}) answered HTTP {exc.status_code}: {str(exc)[:200]}") from None
        except self._openai.APITimeoutError:
            raise ExpertError(f"expert '{self.slot}' ({self.model}) timed out") from None
        except self._openai.APIConnectionError as exc:
            raise ExpertError(f"expert '{self.slot}' ({self.model}) unreachable: {str(exc)[:200]}") from None
        latency = time.monotonic() - t0
        if not out.choices:
            raise ExpertError(f"expert '{self.slot}' ({self.model}) returned no choices")
        text = out.choices[0].message.content or ""
        usage = out.usage
        if usage is None:
            raise ExpertError(f"expert '{self.slot}' ({self.model}) returned no token usage; cost cannot be billed")
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

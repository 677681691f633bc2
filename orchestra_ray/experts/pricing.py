"""Cost and latency of expert calls, from token counts, a price table and throughput figures.

Prices of hosted models come from `genai-prices`, a maintained price list shipped inside the
package (no network at run time); a slot's `input_price`/`output_price` override it, which is how
self-hosted models (no list price) and negotiated rates are priced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple

from orchestra_ray.errors import ConfigError

# Probe size for the library: small enough to stay in the base tier of models whose price rises
# with long prompts (the rates we want are per token at ordinary lengths).
_PROBE_TOKENS = 1000


@dataclass(frozen=True)
class ExpertPrice:
    input_per_million: float  # USD
    output_per_million: float  # USD
    output_tokens_per_s: float
    time_to_first_token_s: float


def library_price(model: str, provider: Optional[str] = None) -> Tuple[float, float]:
    """USD per 1M input and output tokens of `model` in genai-prices; LookupError if it is not listed."""
    from genai_prices import Usage, calc_price

    calc = calc_price(Usage(input_tokens=_PROBE_TOKENS, output_tokens=_PROBE_TOKENS), model, provider_id=provider)
    scale = 1e6 / _PROBE_TOKENS
    return float(calc.input_price) * scale, float(calc.output_price) * scale


def price_ref(slot) -> str:
    """The model name a slot is priced as: `price_model`, else the served `model`, else the slot name."""
    return getattr(slot, "price_model", None) or getattr(slot, "model", None) or slot.name


def slot_price(slot, key: str = "zoo.experts") -> ExpertPrice:
    """One slot's prices: overrides where set, the library for the rest."""
    inp, out = slot.input_price, slot.output_price
    if inp is None or out is None:
        ref, provider = price_ref(slot), getattr(slot, "price_provider", None)
        try:
            lib_in, lib_out = library_price(ref, provider)
        except LookupError:
            where = f" from provider '{provider}'" if provider else ""
            raise ConfigError(
                f"invalid value for config key '{key}.price_model': genai-prices has no price for model '{ref}'{where} "
                f"(slot '{slot.name}'); set price_model to a listed model, or input_price and output_price"
            ) from None
        inp = lib_in if inp is None else inp
        out = lib_out if out is None else out
    return ExpertPrice(float(inp), float(out), slot.output_tokens_per_s, slot.time_to_first_token_s)


class PriceTable:
    def __init__(self, prices: Dict[str, ExpertPrice]):
        self.prices = dict(prices)

    @classmethod
    def from_slots(cls, slots: Iterable) -> "PriceTable":
        """Slots as in `zoo.experts` (ExpertSlotConfig); ConfigError names a slot without a price."""
        return cls({s.name: slot_price(s, f"zoo.experts.{i}") for i, s in enumerate(slots)})

    def cost(self, slot: str, input_tokens: int, output_tokens: int) -> float:
        p = self.prices[slot]
        return (input_tokens * p.input_per_million + output_tokens * p.output_per_million) / 1e6

    def latency(self, slot: str, output_tokens: int) -> float:
        """Modelled time for replayed answers; live backends measure wall time instead."""
        p = self.prices[slot]
        return p.time_to_first_token_s + output_tokens / p.output_tokens_per_s

"""Cost and latency of expert calls, from token counts, a price table and throughput figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable


@dataclass(frozen=True)
class ExpertPrice:
    input_per_million: float  # USD
    output_per_million: float  # USD
    output_tokens_per_s: float
    time_to_first_token_s: float


class PriceTable:
    def __init__(self, prices: Dict[str, ExpertPrice]):
        self.prices = dict(prices)

    @classmethod
    def from_slots(cls, slots: Iterable) -> "PriceTable":
        return cls(
            {
                s.name: ExpertPrice(s.input_price, s.output_price, s.output_tokens_per_s, s.time_to_first_token_s)
                for s in slots
            }
        )

    def cost(self, slot: str, input_tokens: int, output_tokens: int) -> float:
        p = self.prices[slot]
        return (input_tokens * p.input_per_million + output_tokens * p.output_per_million) / 1e6

    def latency(self, slot: str, output_tokens: int) -> float:
        p = self.prices[slot]
        return p.time_to_first_token_s + output_tokens / p.output_tokens_per_s

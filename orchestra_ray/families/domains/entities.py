"""Vocabulary and id helpers the domain generators draw their entities from.

Everything is drawn from a `random.Random` seeded with a string, which Python hashes the same way
in every process, so a domain's database is a pure function of the seed.
"""

from __future__ import annotations

import random
from typing import List, Tuple

FIRST_NAMES = (
    "Ava", "Ben", "Chloe", "Daniel", "Elena", "Farid", "Grace", "Hugo", "Isla", "Jonas", "Keiko", "Liam",
    "Maya", "Nikhil", "Olivia", "Pablo", "Quinn", "Rosa", "Samir", "Tara", "Umar", "Vera", "Wen", "Yusuf", "Zoe",
)
LAST_NAMES = (
    "Adams", "Brooks", "Castro", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen", "Kowalski",
    "Lopez", "Moreau", "Nakamura", "Okafor", "Patel", "Rossi", "Schmidt", "Tanaka", "Silva", "Weber", "Young",
)
STREETS = ("Oak Street", "Maple Avenue", "Harbor Road", "Elm Lane", "Park Drive", "Mill Road", "Station Street", "Lake View")
TOWNS = ("Springfield", "Riverton", "Fairview", "Lakewood", "Greenville", "Ashford", "Brookside", "Westport")
MAIL_DOMAINS = ("example.com", "mail.test", "inbox.test", "post.test")
DATES = tuple(f"2025-07-{d:02d}" for d in range(1, 8))


def rng_for(seed: int, *parts: str) -> random.Random:
    return random.Random(":".join([str(seed), *parts]))


def unique_ids(rng: random.Random, prefix: str, n: int, low: int, high: int) -> List[str]:
    return [f"{prefix}{k}" for k in sorted(rng.sample(range(low, high), n))]


def person(rng: random.Random) -> Tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


def email_for(rng: random.Random, first: str, last: str) -> str:
    return f"{first.lower()}.{last.lower()}@{rng.choice(MAIL_DOMAINS)}"


def street_address(rng: random.Random) -> str:
    return f"{rng.randint(1, 99)} {rng.choice(STREETS)}, {rng.choice(TOWNS)}"


def next_id(existing: List[str], prefix: str) -> str:
    """The id a new row gets: one past the largest, so it depends on the state, not on history."""
    numbers = [int(x[len(prefix):]) for x in existing if x.startswith(prefix) and x[len(prefix):].isdigit()]
    return f"{prefix}{max(numbers, default=0) + 1}"


def pick(rng: random.Random, rows: List[dict], likely=None, bias: float = 0.75) -> dict:
    """A row, usually one that satisfies `likely`: requests are mostly valid, and the rest give the
    failed-gold-action filter real work, as a synthetic generator's mistakes would."""
    if likely is not None and rng.random() < bias:
        good = [r for r in rows if likely(r)]
        if good:
            return rng.choice(good)
    return rng.choice(rows)

"""Judging a free-text answer against the gold answer: by normalised match, or numerically."""

from __future__ import annotations

import re
import string
import unicodedata

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalise_answer(text: str) -> str:
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def judge_free_text(answer: str, gold: str, max_extra_words: int = 5) -> bool:
    """Correct when the normalised answer equals the normalised gold, or contains it as whole words
    with at most `max_extra_words` other words (so a sentence around the answer is fine, a long list
    of guesses is not)."""
    a, g = normalise_answer(answer), normalise_answer(gold)
    if not g:
        return False
    if a == g:
        return True
    if re.search(rf"(^| ){re.escape(g)}( |$)", a) is None:
        return False
    return len(a.split()) - len(g.split()) <= max_extra_words


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def judge_number(answer: str, gold: str, rel_tol: float = 1e-6) -> bool:
    """Correct when the answer states exactly one number (thousands separators allowed) and it
    equals the gold number; several numbers are a list of guesses, not an answer."""
    found = _NUMBER.findall((answer or "").replace(",", ""))
    if len(found) != 1:
        return False
    try:
        a, g = float(found[0]), float(gold)
    except ValueError:
        return False
    return abs(a - g) <= rel_tol * max(1.0, abs(g))

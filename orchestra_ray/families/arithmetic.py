"""Arithmetic and small data problems: the family where the code interpreter is the cheapest correct
tool. A language model guessing `4821 * 377 - 1290` is usually wrong; one `run_python` call is right
and costs nothing but a fraction of a second. Each problem comes with the program that solves it,
which the warm-start demonstrations use."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, List, Tuple

from orchestra_ray.families.task import ARITHMETIC, Problem

WORDS = ["strawberry", "banana", "mississippi", "parallel", "bookkeeper", "committee", "assessment",
         "cinnamon", "possession", "tennessee", "balloon", "coffee", "referee", "success", "address"]


@dataclass(frozen=True)
class ArithmeticProblem:
    problem: Problem
    code: str  # a program that prints the answer


def _expression(rng: random.Random) -> Tuple[str, str]:
    a, b, c = rng.randint(100, 9999), rng.randint(11, 999), rng.randint(100, 99999)
    op = rng.choice(["+", "-"])
    expr = f"{a} * {b} {op} {c}"
    return f"Compute {expr}.", f"print({expr})"


def _sum(rng: random.Random) -> Tuple[str, str]:
    xs = [rng.randint(10, 999) for _ in range(rng.randint(5, 9))]
    return f"What is the sum of the numbers {', '.join(map(str, xs))}?", f"print(sum([{', '.join(map(str, xs))}]))"


def _power(rng: random.Random) -> Tuple[str, str]:
    a, b = rng.randint(3, 29), rng.randint(4, 9)
    return f"What is {a} to the power of {b}?", f"print({a} ** {b})"


def _remainder(rng: random.Random) -> Tuple[str, str]:
    a, b = rng.randint(10_000, 999_999), rng.randint(7, 97)
    return f"What is the remainder when {a} is divided by {b}?", f"print({a} % {b})"


def _count_letter(rng: random.Random) -> Tuple[str, str]:
    words = rng.sample(WORDS, 3)
    text = " ".join(words)
    letter = rng.choice(sorted(set(text.replace(" ", ""))))
    return f"How many times does the letter '{letter}' appear in '{text}'?", f"print('{text}'.count('{letter}'))"


def _max_minus_min(rng: random.Random) -> Tuple[str, str]:
    xs = [rng.randint(-500, 5000) for _ in range(rng.randint(6, 10))]
    body = ", ".join(map(str, xs))
    return f"What is the largest minus the smallest of {body}?", f"xs = [{body}]\nprint(max(xs) - min(xs))"


TEMPLATES: List[Callable[[random.Random], Tuple[str, str]]] = [_expression, _sum, _power, _remainder, _count_letter, _max_minus_min]


def generate_arithmetic(n: int, seed: int) -> List[ArithmeticProblem]:
    """`n` distinct problems, a pure function of the seed; the gold is the program's printed value."""
    rng = random.Random(f"arithmetic-{seed}")
    out: List[ArithmeticProblem] = []
    seen = set()
    while len(out) < n:
        question, code = TEMPLATES[len(out) % len(TEMPLATES)](rng)
        if question in seen:
            continue
        seen.add(question)
        gold = _evaluate(code)
        qid = f"arith-{seed}-{len(out):05d}"
        out.append(ArithmeticProblem(Problem(qid, question, gold, ARITHMETIC, ARITHMETIC), code))
    return out


def _evaluate(code: str) -> str:
    """The gold answer: the generator's own trusted program, run in-process (no policy code here)."""
    lines: List[str] = []
    exec(compile(code, "<arithmetic>", "exec"), {"print": lambda *a: lines.append(" ".join(map(str, a)))})
    return lines[-1]

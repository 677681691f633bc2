"""Arithmetic and small data problems: the family where the code interpreter is the cheapest correct
tool. A language model guessing `4821 * 377 - 1290` is usually wrong; one `run_python` call is right
and costs nothing but a fraction of a second. Each problem comes with the program that solves it,
which the warm-start demonstrations use (`ArithmeticFamily`: judged by numeric match)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

from orchestra_ray.families.family import EpisodeState, Loaded, TaskFamily
from orchestra_ray.families.grading import judge_number
from orchestra_ray.families.task import ARITHMETIC, Problem, split_problems
from orchestra_ray.rollout.chat import task_prompt
from orchestra_ray.tools.spec import code_tool, text_answer_tool

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


class ArithmeticFamily(TaskFamily):
    """The code interpreter and a free-text answer; an answer is right when its number is the gold.
    A demonstration runs the problem's program, then answers with its printed value."""

    name = ARITHMETIC

    @classmethod
    def load(cls, cfg: Any, zoo: Any) -> Loaded:
        a = cfg.families.arithmetic
        tools = [code_tool(), text_answer_tool("Give the final answer and end.")]
        toolsets = {ARITHMETIC: (task_prompt("Solve the user's problem: compute with tools, then answer.", tools), tools)}
        problems = generate_arithmetic(a.problems, a.seed)
        reference = {p.problem.question_id: [("run_python", {"code": p.code}), ("answer", {"text": p.problem.answer})]
                     for p in problems}
        train, heldout = split_problems([p.problem for p in problems], cfg.data.heldout_fraction, cfg.families.max_heldout)
        return Loaded(cls(toolsets, reference), train, heldout)

    @classmethod
    def judge(cls, answer: str, task: Any, state: Optional[EpisodeState]) -> bool:
        return judge_number(answer, task.gold)

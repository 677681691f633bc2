"""The FRAMES replay data set: questions, gold answers, and every arm's recorded answer and grade;
and the FRAMES task family (`FramesFamily`): questions the policy routes among the zoo's experts.

Files are checked on load; a missing file, column or wrongly typed column, an empty or repeated id
or an unknown grade is a `DataError` naming the file and the column. The train / held-out split is a
pure function of the question id, so it is the same on every machine and for every run.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.parquet as pq

from orchestra_ray.errors import DataError
from orchestra_ray.families.demos import Reading, cascade, cascade_order, listed_choice
from orchestra_ray.families.family import Call, EpisodeState, Loaded, TaskFamily
from orchestra_ray.families.grading import judge_free_text
from orchestra_ray.parquet_input import read_columns
from orchestra_ray.reports.baselines import Answers, best_cascade
from orchestra_ray.rollout.chat import SlotCard
from orchestra_ray.tools.spec import ToolSpec, expert_tools, search_tool

QUESTIONS_FILE = "questions.parquet"
RESPONSES_FILE = "responses.parquet"
QUESTION_COLUMNS = {"question_id": pa.string(), "problem": pa.string(), "answer": pa.string()}
RESPONSE_COLUMNS = {
    "question_id": pa.string(),
    "arm": pa.string(),
    "response": pa.string(),
    "grading": pa.string(),
    "billed_output_tokens": pa.int64(),
}


GRADES = ("A", "B", "C")
FRAMES = "frames"  # the family's name (Task.family), and its one toolset's


@dataclass(frozen=True)
class Question:
    question_id: str
    problem: str
    answer: str
    source: str = field(default="", compare=False, repr=False)  # the file it was read from, for messages


@dataclass(frozen=True)
class RecordedResponse:
    text: str
    grade: str  # A correct, B incorrect, C not attempted
    output_tokens: int


def _read(path: str, columns: Dict[str, pa.DataType]) -> pa.Table:
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}")
    try:
        schema = pq.read_schema(path)
    except Exception as exc:
        raise DataError(f"cannot read Parquet file {path}: {(str(exc).splitlines() or [type(exc).__name__])[0]}") from None
    for name, typ in columns.items():
        if name not in schema.names:
            raise DataError(f"{path}: missing column '{name}'")
        got = schema.field(name).type
        if got != typ and not (pa.types.is_integer(typ) and pa.types.is_integer(got)) and not (
            pa.types.is_string(typ) and pa.types.is_large_string(got)
        ):
            raise DataError(f"{path}: column '{name}' has type {got}, expected {typ}")
    table = read_columns(path, list(columns))
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows")
    return table


def _check_keys(path: str, rows: List[dict], column: str) -> None:
    """A key column (ids, arm names) with an empty value would be read as the id "None" or "";
    a question without its text or its gold answer could only be guessed at or never judged."""
    for i, r in enumerate(rows):
        if r[column] is None or not str(r[column]).strip():
            raise DataError(f"{path}: column '{column}' is empty at row {i}")


def load_questions(root: str) -> List[Question]:
    path = os.path.join(root, QUESTIONS_FILE)
    rows = _read(path, QUESTION_COLUMNS).to_pylist()
    for column in ("question_id", "problem", "answer"):
        _check_keys(path, rows, column)
    seen: Dict[str, int] = {}
    for i, r in enumerate(rows):
        if seen.setdefault(r["question_id"], i) != i:
            first = seen[r["question_id"]]
            raise DataError(f"{path}: column 'question_id' repeats '{r['question_id'][:64]}' at row {i} (first at row {first})")
    return [Question(str(r["question_id"]), r["problem"] or "", r["answer"] or "", path) for r in rows]


def load_responses(root: str, arms: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, RecordedResponse]]:
    """arm -> question_id -> recorded response (only the arms asked for, when given)."""
    path = os.path.join(root, RESPONSES_FILE)
    rows = _read(path, RESPONSE_COLUMNS).to_pylist()
    for column in ("question_id", "arm"):
        _check_keys(path, rows, column)
    out: Dict[str, Dict[str, RecordedResponse]] = {}
    wanted = set(arms) if arms is not None else None
    first: Dict[Tuple[str, str], int] = {}
    for i, r in enumerate(rows):
        key = (str(r["question_id"]), r["arm"])
        j = first.setdefault(key, i)
        if j != i and (rows[j]["response"], rows[j]["grading"]) != (r["response"], r["grading"]):
            raise DataError(f"{path}: arm '{key[1][:64]}' has two different responses to question '{key[0][:64]}' "
                            f"(rows {j} and {i}): which one replays is undefined")
        if r["grading"] is not None and r["grading"] not in GRADES:
            raise DataError(f"{path}: column 'grading' has '{str(r['grading'])[:32]}' at row {i}, "
                            f"expected one of {', '.join(GRADES)} or empty")
        if wanted is not None and r["arm"] not in wanted:
            continue
        # A few providers reported negative token counts: unknown, not a refund.
        tokens = max(0, int(r["billed_output_tokens"] or 0))
        record = RecordedResponse(r["response"] or "", r["grading"] or "C", tokens)
        out.setdefault(r["arm"], {})[str(r["question_id"])] = record
    if wanted is not None:
        absent = sorted(wanted - set(out))
        if absent:
            raise DataError(f"{path}: column 'arm' has no rows for arm '{absent[0]}'")
    return out


def is_heldout(question_id: str, heldout_fraction: float) -> bool:
    h = int(hashlib.sha256(question_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < heldout_fraction


def split_questions(questions: Sequence[Question], heldout_fraction: float) -> Tuple[List[Question], List[Question]]:
    """(train, held-out), decided per question id, so it never depends on order or run."""
    train = [q for q in questions if not is_heldout(q.question_id, heldout_fraction)]
    heldout = [q for q in questions if is_heldout(q.question_id, heldout_fraction)]
    if not train or not heldout:
        where = f"{questions[0].source}: column 'question_id': " if questions and questions[0].source else ""
        raise DataError(f"{where}split of {len(questions)} questions with data.heldout_fraction={heldout_fraction} "
                        f"leaves the {'train' if not train else 'held-out'} split empty")
    return train, heldout


class FramesFamily(TaskFamily):
    """FRAMES questions: the zoo's experts (and search, when a corpus is set), judged by normalised
    match with the gold answer. A demonstration consults one expert and relays its answer; which one
    is the demonstrator's habit (`warm_start.demonstrator`): always the strongest (the "God model"
    one the paper criticises), or the one the task's preference picks from the system prompt's
    listing (`demos.listed_choice`). The cascade demonstrators read and escalate (`demos.cascade`), in
    the listed order ("cascade") or in the order that earned the most reward on the training split
    under the task's preference ("best-cascade"; `training()` gives every slot's recorded answer to
    each training question)."""

    name = FRAMES
    always_loaded = True

    def __init__(self, system_prompt: str, tools: Sequence[ToolSpec], strongest: str, demonstrator: str = "strongest",
                 cards: Sequence[SlotCard] = (), temperature: float = 0.0,
                 training: Optional[Callable[[], Answers]] = None):
        super().__init__({FRAMES: (system_prompt, list(tools))})
        self.strongest, self.demonstrator = strongest, demonstrator
        self.cards, self.temperature = list(cards), temperature
        if demonstrator == "best-cascade" and training is None:
            raise ValueError("the best-cascade demonstrator needs the training split's recorded answers")
        self.training = training  # read on the first demonstration: evaluation never needs it
        self.answers: Optional[Answers] = None
        self.best_orders: Dict[Tuple[Tuple[str, float], ...], Tuple[str, ...]] = {}  # per preference weights

    @classmethod
    def load(cls, cfg: Any, zoo: Any) -> Loaded:
        tools = expert_tools(zoo.slots) + ([search_tool()] if cfg.tools.search.corpus else [])
        w = cfg.warm_start
        training = (lambda: zoo.recorded_answers(zoo.train)) if w.demonstrator == "best-cascade" else None
        family = cls(zoo.system_prompt, tools, cfg.zoo.strongest, w.demonstrator, zoo.cards, w.demonstrator_temperature,
                     training)
        return Loaded(family, list(zoo.train), list(zoo.heldout))

    @classmethod
    def judge(cls, answer: str, task: Any, state: Optional[EpisodeState]) -> bool:
        return judge_free_text(answer, task.gold)

    def demonstration(self, task: Any, rng: random.Random) -> Union[List[Call], Reading]:
        if self.demonstrator == "best-cascade":
            return cascade(self.best_order(task.preference.weights), 3)
        if self.demonstrator == "cascade":  # consult, read, escalate: up to three experts
            return cascade(cascade_order(self.cards, self.strongest, task.preference.weights, self.temperature, rng), 3)
        slot = self.strongest
        if self.demonstrator == "preference":
            slot = listed_choice(self.cards, self.strongest, task.preference.weights, self.temperature, rng)
        return [("call_expert", {"expert": slot}), ("answer", {"expert": slot})]

    def __getstate__(self) -> Dict[str, Any]:
        """A copy sent to a rollout worker never demonstrates: it goes without the zoo `training`
        reads from (every recorded answer), keeping the orders already computed."""
        return {**self.__dict__, "training": None, "answers": None}

    def best_order(self, weights: Dict[str, float]) -> Tuple[str, ...]:
        """The training split's best cascade under `weights`, computed once per preference."""
        key = tuple(sorted(weights.items()))
        if key not in self.best_orders:
            if self.answers is None:
                if self.training is None:
                    raise ValueError("this copy of the FRAMES family was sent without the training split's answers")
                self.answers = self.training()
            if not self.answers:
                raise ValueError("the best-cascade demonstrator needs training questions; the training split is empty")
            self.best_orders[key] = best_cascade(self.answers, list(self.answers), [c.name for c in self.cards], weights)
        return self.best_orders[key]

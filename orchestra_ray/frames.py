"""The FRAMES replay data set: questions, gold answers, and every arm's recorded answer and grade.

Files are checked on load; a missing file, column or wrongly typed column is a `DataError` naming
the file and the column. The train / held-out split is a pure function of the question id, so it is
the same on every machine and for every run.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

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


class DataError(ValueError):
    """A data file problem, naming the file and, where it applies, the column."""


@dataclass(frozen=True)
class Question:
    question_id: str
    problem: str
    answer: str


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
        raise DataError(f"cannot read Parquet file {path}: {str(exc).splitlines()[0]}") from None
    for name, typ in columns.items():
        if name not in schema.names:
            raise DataError(f"{path}: missing column '{name}'")
        got = schema.field(name).type
        if got != typ and not (pa.types.is_integer(typ) and pa.types.is_integer(got)) and not (
            pa.types.is_string(typ) and pa.types.is_large_string(got)
        ):
            raise DataError(f"{path}: column '{name}' has type {got}, expected {typ}")
    table = pq.read_table(path, columns=list(columns))
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows")
    return table


def load_questions(root: str) -> List[Question]:
    path = os.path.join(root, QUESTIONS_FILE)
    rows = _read(path, QUESTION_COLUMNS).to_pylist()
    return [Question(str(r["question_id"]), r["problem"] or "", r["answer"] or "") for r in rows]


def load_responses(root: str, arms: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, RecordedResponse]]:
    """arm -> question_id -> recorded response (only the arms asked for, when given)."""
    path = os.path.join(root, RESPONSES_FILE)
    table = _read(path, RESPONSE_COLUMNS)
    out: Dict[str, Dict[str, RecordedResponse]] = {}
    wanted = set(arms) if arms is not None else None
    for r in table.to_pylist():
        if wanted is not None and r["arm"] not in wanted:
            continue
        out.setdefault(r["arm"], {})[str(r["question_id"])] = RecordedResponse(
            r["response"] or "", r["grading"] or "C", int(r["billed_output_tokens"] or 0)
        )
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
        raise DataError(f"split with heldout_fraction={heldout_fraction} leaves an empty split")
    return train, heldout

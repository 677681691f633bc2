"""The FRAMES replay data: loading and checking the Parquet files, the split, free-text judging."""

from __future__ import annotations

import os
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestra_ray.config import FRAMES_DATA
from orchestra_ray.families.frames import (
    QUESTIONS_FILE,
    RESPONSES_FILE,
    DataError,
    Question,
    RecordedResponse,
    is_heldout,
    load_questions,
    load_responses,
    split_questions,
)
from orchestra_ray.families.grading import judge_free_text, normalise_answer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = os.environ.get("ORCHESTRA_RAY_FRAMES") or FRAMES_DATA
ARMS = ["claude-sonnet4_budget4096", "gpt-5-mini_medium_effort", "grok-3-mini_low_effort", "Qwen3-8B_no_think"]



@pytest.fixture(scope="module")
def questions():
    return load_questions(FRAMES)


@pytest.fixture(scope="module")
def responses():
    return load_responses(FRAMES, ARMS)


# ---------------------------------------------------------------------------------------------
# the real data


def test_load_questions_real_data(questions):
    assert len(questions) == 824
    assert all(isinstance(q, Question) for q in questions)
    ids = [q.question_id for q in questions]
    assert len(set(ids)) == len(ids)
    assert all(q.problem and isinstance(q.problem, str) for q in questions)
    assert all(isinstance(q.answer, str) for q in questions)
    assert sum(bool(q.answer.strip()) for q in questions) > 800


def test_load_responses_real_data(questions, responses):
    assert set(responses) == set(ARMS)
    qids = {q.question_id for q in questions}
    for arm, by_q in responses.items():
        assert len(by_q) >= 822, arm
        assert set(by_q) <= qids
        for rec in by_q.values():
            assert isinstance(rec, RecordedResponse)
            assert rec.grade in {"A", "B", "C"}
            assert isinstance(rec.output_tokens, int) and rec.output_tokens >= 0
    # accuracies as the data set's README states them (54.6%, 52.2%, 41.4%)
    acc = {arm: sum(r.grade == "A" for r in by_q.values()) / len(qids) for arm, by_q in responses.items()}
    assert acc["claude-sonnet4_budget4096"] == pytest.approx(0.546, abs=0.002)
    assert acc["gpt-5-mini_medium_effort"] == pytest.approx(0.522, abs=0.002)
    assert acc["grok-3-mini_low_effort"] == pytest.approx(0.414, abs=0.002)


def test_load_responses_all_arms_and_unknown_arm():
    everything = load_responses(FRAMES)
    assert len(everything) == 28
    with pytest.raises(DataError) as info:
        load_responses(FRAMES, ["claude-sonnet4_budget4096", "no-such-arm"])
    assert "no-such-arm" in str(info.value) and RESPONSES_FILE in str(info.value)


# ---------------------------------------------------------------------------------------------
# file checks


def _write_questions(root, table: pa.Table):
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, QUESTIONS_FILE)
    pq.write_table(table, path)
    return path


def _questions_table(**columns):
    base = {
        "question_id": pa.array(["q1", "q2"], pa.string()),
        "problem": pa.array(["What?", "Who?"], pa.string()),
        "answer": pa.array(["this", "them"], pa.string()),
    }
    base.update(columns)
    return pa.table({k: v for k, v in base.items() if v is not None})


def test_small_valid_file_loads(tmp_path):
    _write_questions(tmp_path, _questions_table(answer=pa.array(["this", "them"], pa.string())))
    qs = load_questions(str(tmp_path))
    assert qs == [Question("q1", "What?", "this"), Question("q2", "Who?", "them")]  # a null answer: test_bad_input


def test_large_string_columns_are_accepted(tmp_path):
    _write_questions(tmp_path, _questions_table(problem=pa.array(["What?", "Who?"], pa.large_string())))
    assert [q.problem for q in load_questions(str(tmp_path))] == ["What?", "Who?"]


def test_missing_column_names_file_and_column(tmp_path):
    path = _write_questions(tmp_path, _questions_table(answer=None))
    with pytest.raises(DataError) as info:
        load_questions(str(tmp_path))
    msg = str(info.value)
    assert path in msg and "'answer'" in msg
    assert "\n" not in msg


def test_wrong_column_type_names_file_column_and_types(tmp_path):
    path = _write_questions(tmp_path, _questions_table(answer=pa.array([1, 2], pa.int64())))
    with pytest.raises(DataError) as info:
        load_questions(str(tmp_path))
    msg = str(info.value)
    assert path in msg and "'answer'" in msg and "int64" in msg and "string" in msg


def test_wrong_type_in_responses_file(tmp_path):
    table = pa.table({
        "question_id": pa.array(["q1"], pa.string()),
        "arm": pa.array(["a"], pa.string()),
        "response": pa.array(["x"], pa.string()),
        "grading": pa.array(["A"], pa.string()),
        "billed_output_tokens": pa.array(["12"], pa.string()),
    })
    path = os.path.join(tmp_path, RESPONSES_FILE)
    pq.write_table(table, path)
    with pytest.raises(DataError) as info:
        load_responses(str(tmp_path))
    assert path in str(info.value) and "billed_output_tokens" in str(info.value)


def test_other_integer_widths_are_accepted(tmp_path):
    table = pa.table({
        "question_id": pa.array(["q1", "q2"], pa.string()),
        "arm": pa.array(["a", "a"], pa.string()),
        "response": pa.array(["x", None], pa.string()),
        "grading": pa.array(["A", None], pa.string()),
        "billed_output_tokens": pa.array([12, None], pa.int32()),
    })
    pq.write_table(table, os.path.join(tmp_path, RESPONSES_FILE))
    out = load_responses(str(tmp_path))
    assert out == {"a": {"q1": RecordedResponse("x", "A", 12), "q2": RecordedResponse("", "C", 0)}}


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError) as info:
        load_questions(str(tmp_path))
    assert os.path.join(str(tmp_path), QUESTIONS_FILE) in str(info.value)


def test_not_a_parquet_file(tmp_path):
    path = os.path.join(tmp_path, QUESTIONS_FILE)
    with open(path, "w") as f:
        f.write("question_id,problem,answer\nq1,a,b\n")
    with pytest.raises(DataError) as info:
        load_questions(str(tmp_path))
    assert path in str(info.value)


def test_empty_file(tmp_path):
    empty = _questions_table().slice(0, 0)
    path = _write_questions(tmp_path, empty)
    with pytest.raises(DataError, match="no rows") as info:
        load_questions(str(tmp_path))
    assert path in str(info.value)


# ---------------------------------------------------------------------------------------------
# the split


def _synthetic(n=2000, seed=0):
    rng = random.Random(seed)
    return [Question(f"q{rng.getrandbits(64):x}-{i}", f"p{i}", f"a{i}") for i in range(n)]


def test_split_is_deterministic_and_order_independent():
    qs = _synthetic()
    train1, held1 = split_questions(qs, 0.2)
    shuffled = list(qs)
    random.Random(1).shuffle(shuffled)
    train2, held2 = split_questions(shuffled, 0.2)
    assert {q.question_id for q in held1} == {q.question_id for q in held2}
    assert {q.question_id for q in train1} == {q.question_id for q in train2}
    assert split_questions(qs, 0.2) == (train1, held1)
    # per-question decision: a question's side does not depend on the other questions
    assert all(is_heldout(q.question_id, 0.2) for q in held1)
    assert not any(is_heldout(q.question_id, 0.2) for q in train1)
    sub_train, sub_held = split_questions(qs[:300], 0.2)
    assert {q.question_id for q in sub_held} <= {q.question_id for q in held1}


def test_split_is_disjoint_and_complete():
    qs = _synthetic()
    train, held = split_questions(qs, 0.2)
    t, h = {q.question_id for q in train}, {q.question_id for q in held}
    assert not t & h
    assert t | h == {q.question_id for q in qs}
    assert len(train) + len(held) == len(qs)


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
def test_split_fraction_roughly_as_configured(fraction):
    qs = _synthetic(4000, seed=3)
    _, held = split_questions(qs, fraction)
    assert abs(len(held) / len(qs) - fraction) < 0.03


def test_larger_fraction_holds_out_a_superset():
    qs = _synthetic(1000)
    _, small = split_questions(qs, 0.1)
    _, large = split_questions(qs, 0.3)
    assert {q.question_id for q in small} <= {q.question_id for q in large}


def test_split_real_questions(questions):
    train, held = split_questions(questions, 0.2)
    frac = len(held) / len(questions)
    assert 0.15 <= frac <= 0.25
    assert not {q.question_id for q in train} & {q.question_id for q in held}
    again = split_questions(load_questions(FRAMES), 0.2)
    assert [q.question_id for q in again[1]] == [q.question_id for q in held]


def test_split_that_leaves_a_side_empty_is_an_error():
    with pytest.raises(DataError, match="empty"):
        split_questions(_synthetic(3), 1e-9)
    with pytest.raises(DataError, match="empty"):
        split_questions([], 0.2)


# ---------------------------------------------------------------------------------------------
# free-text judging (normalised match)


@pytest.mark.parametrize(
    "answer, gold",
    [
        ("Paris", "Paris"),
        ("paris", "PARIS"),
        ("  Paris.  ", "Paris"),
        ("The Eiffel Tower", "Eiffel Tower"),
        ("an apple", "Apple"),
        ("Zoë Saldaña", "Zoe Saldana"),  # accents removed
        ("Ze\u0301", "Zé"),  # combining accent
        ("It is Paris, I think.", "Paris"),  # a short sentence around the answer is fine
        ("1,945", "1 945"),  # punctuation becomes space
        ("Jean-Paul Sartre", "jean paul sartre"),
        ("The answer: 42", "42"),
    ],
)
def test_judge_accepts_normalised_match(answer, gold):
    assert judge_free_text(answer, gold)


@pytest.mark.parametrize(
    "answer, gold",
    [
        ("London", "Paris"),
        ("Parisian", "Paris"),  # whole words only
        ("1945", "194"),
        ("", "Paris"),
        ("Paris", ""),  # empty gold is never matched
        ("the", "The"),  # gold that normalises to nothing
        ("Maybe London, Berlin, Rome, Madrid, Vienna or Paris", "Paris"),  # a list of guesses
        ("Eiffel", "Eiffel Tower"),
    ],
)
def test_judge_rejects(answer, gold):
    assert not judge_free_text(answer, gold)


def test_judge_extra_word_budget():
    gold = "Paris"
    five_extra = "well I guess it's Paris"  # it s -> two words after punctuation removal
    assert len(normalise_answer(five_extra).split()) - 1 == 5
    assert judge_free_text(five_extra, gold)
    assert not judge_free_text("well I really guess it's Paris", gold)
    assert judge_free_text("well I really guess it's Paris", gold, max_extra_words=6)
    assert not judge_free_text("it is Paris", gold, max_extra_words=1)


def test_normalise_answer():
    assert normalise_answer("  The Quick, brown fox!  ") == "quick brown fox"
    assert normalise_answer("Ångström") == "angstrom"
    assert normalise_answer(None) == ""
    assert normalise_answer("theatre") == "theatre"  # articles only as whole words

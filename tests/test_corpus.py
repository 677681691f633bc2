"""Reading a search corpus from real Parquet and JSONL files, and the one-line errors for bad ones."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestra_ray.tools.corpus import Document, load_corpus
from orchestra_ray.errors import DataError
from search_corpus import DOCS, write_jsonl, write_parquet


def _error(path: str) -> str:
    with pytest.raises(DataError) as info:
        load_corpus(path)
    message = str(info.value)
    assert "\n" not in message
    assert path in message
    return message


def _lines(path: str, lines) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_parquet_and_jsonl_read_the_same_documents(tmp_path):
    from_parquet = load_corpus(write_parquet(str(tmp_path / "c.parquet")))
    from_jsonl = load_corpus(write_jsonl(str(tmp_path / "c.jsonl")))
    assert from_parquet == from_jsonl
    assert [d.doc_id for d in from_parquet] == [d["id"] for d in DOCS]
    assert from_parquet[0] == Document(DOCS[0]["id"], DOCS[0]["title"], DOCS[0]["text"])


def test_integer_ids_become_strings_and_a_missing_title_is_empty(tmp_path):
    table = pa.table({"id": [7, 8], "title": ["Seven", None], "text": ["seven text", "eight text"], "extra": [1, 2]})
    pq.write_table(table, tmp_path / "ints.parquet")
    docs = load_corpus(str(tmp_path / "ints.parquet"))
    assert docs == [Document("7", "Seven", "seven text"), Document("8", "", "eight text")]


def test_jsonl_skips_blank_lines_and_accepts_ndjson(tmp_path):
    path = _lines(str(tmp_path / "c.ndjson"), [
        json.dumps({"id": "a", "title": "A", "text": "alpha"}),
        "",
        "   ",
        json.dumps({"id": 2, "title": "B", "text": "beta", "url": "ignored"}),
    ])
    assert load_corpus(path) == [Document("a", "A", "alpha"), Document("2", "B", "beta")]


def test_missing_file(tmp_path):
    path = str(tmp_path / "absent.parquet")
    assert "not found" in _error(path)


def test_wrong_extension(tmp_path):
    path = str(tmp_path / "corpus.csv")
    with open(path, "w") as f:
        f.write("id,title,text\n1,a,b\n")
    assert "unsupported type" in _error(path)


def test_parquet_missing_column(tmp_path):
    path = str(tmp_path / "c.parquet")
    pq.write_table(pa.table({"id": ["a"], "text": ["alpha"]}), path)
    assert "missing column 'title'" in _error(path)


def test_parquet_column_of_wrong_type(tmp_path):
    path = str(tmp_path / "c.parquet")
    pq.write_table(pa.table({"id": ["a"], "title": ["A"], "text": [3]}), path)
    assert "column 'text' has type int64" in _error(path)


def test_parquet_duplicate_id_names_both_rows(tmp_path):
    path = write_parquet(str(tmp_path / "c.parquet"), DOCS[:3] + [dict(DOCS[1], text="another text")])
    message = _error(path)
    assert f"duplicate id '{DOCS[1]['id']}'" in message and "row 1 and row 3" in message


def test_parquet_empty_text_names_the_row(tmp_path):
    path = write_parquet(str(tmp_path / "c.parquet"), DOCS[:2] + [dict(DOCS[2], text="   ")])
    message = _error(path)
    assert "row 2" in message and "'text' must be a non-empty string" in message


def test_not_a_parquet_file(tmp_path):
    path = str(tmp_path / "c.parquet")
    with open(path, "w") as f:
        f.write("this is not parquet")
    assert "cannot read Parquet corpus file" in _error(path)


def test_jsonl_bad_json_names_the_line(tmp_path):
    path = _lines(str(tmp_path / "c.jsonl"), [json.dumps(DOCS[0]), '{"id": "x", "title": "X", "text": ', json.dumps(DOCS[1])])
    assert "line 2: invalid JSON" in _error(path)


def test_jsonl_missing_key_names_the_line(tmp_path):
    path = _lines(str(tmp_path / "c.jsonl"), [json.dumps(DOCS[0]), json.dumps(DOCS[1]), json.dumps({"id": "x", "title": "X"})])
    assert "line 3: missing key 'text'" in _error(path)


def test_jsonl_duplicate_id_names_both_lines(tmp_path):
    path = _lines(str(tmp_path / "c.jsonl"), [json.dumps(DOCS[0]), "", json.dumps(dict(DOCS[0], text="again"))])
    assert f"duplicate id '{DOCS[0]['id']}' (line 1 and line 3)" in _error(path)


def test_jsonl_integer_and_string_ids_collide(tmp_path):
    # Both become the id "5", which the policy could not tell apart.
    path = _lines(str(tmp_path / "c.jsonl"), [
        json.dumps({"id": 5, "title": "", "text": "five"}), json.dumps({"id": "5", "title": "", "text": "five again"})])
    assert "duplicate id '5'" in _error(path)


@pytest.mark.parametrize("row, expected", [
    ([1, 2], "expected a JSON object, got list"),
    ({"id": True, "title": "T", "text": "t"}, "'id' must be a non-empty string or integer"),
    ({"id": 1.5, "title": "T", "text": "t"}, "'id' must be a non-empty string or integer"),
    ({"id": " ", "title": "T", "text": "t"}, "'id' must be a non-empty string or integer"),
    ({"id": "a", "title": 3, "text": "t"}, "'title' must be a string, got int"),
    ({"id": "a", "title": "T", "text": None}, "'text' must be a non-empty string"),
])
def test_jsonl_bad_values_name_the_line(tmp_path, row, expected):
    path = _lines(str(tmp_path / "c.jsonl"), [json.dumps(DOCS[0]), json.dumps(row)])
    message = _error(path)
    assert "line 2" in message and expected in message


def test_jsonl_not_utf8(tmp_path):
    path = str(tmp_path / "c.jsonl")
    with open(path, "wb") as f:
        f.write(json.dumps(DOCS[0]).encode() + b"\n" + b'{"id": "\xff"}\n')
    assert "line 2: not UTF-8" in _error(path)


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.parquet"])
def test_empty_corpus(tmp_path, name):
    path = str(tmp_path / name)
    if name.endswith(".parquet"):
        pq.write_table(pa.table({"id": pa.array([], pa.string()), "title": pa.array([], pa.string()),
                                 "text": pa.array([], pa.string())}), path)
    else:
        open(path, "w").close()
    assert "no documents" in _error(path)


def test_corpus_errors_are_value_errors():
    # Config loading and the search actor catch ValueError; a corpus problem must be one of them.
    assert issubclass(DataError, ValueError)

"""A local document corpus for the search tool: one Parquet or JSONL file of `id`, `title`, `text`.

The file is checked as it is read; any problem is a `DataError` naming the file and the column,
key or line, so a bad corpus stops a run before an index is built from it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List

import pyarrow as pa
import pyarrow.parquet as pq

from orchestra_ray.errors import DataError
from orchestra_ray.parquet_input import read_columns

FIELDS = ("id", "title", "text")
PARQUET_SUFFIXES = (".parquet",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str


def corpus_format(path: str) -> str:
    """'parquet' or 'jsonl', from the file name; '' when it is neither."""
    lower = path.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    return ""


def load_corpus(path: str) -> List[Document]:
    if not os.path.isfile(path):
        raise DataError(f"corpus file not found: {path}")
    fmt = corpus_format(path)
    if fmt == "parquet":
        docs = _parquet_documents(path)
    elif fmt == "jsonl":
        docs = _jsonl_documents(path)
    else:
        raise DataError(f"corpus file {path}: unsupported type, expected .parquet or .jsonl")
    if not docs:
        raise DataError(f"corpus file {path}: no documents")
    return docs


def _document(path: str, where: str, row: Dict[str, Any]) -> Document:
    doc_id = row["id"]
    # bool is an int in Python, but an id of `true` is a data mistake, not a number.
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id).strip() == "":
        raise DataError(f"corpus file {path}: {where}: 'id' must be a non-empty string or integer, got {doc_id!r:.64}")
    title = row["title"]
    if title is None:
        title = ""
    if not isinstance(title, str):
        raise DataError(f"corpus file {path}: {where}: 'title' must be a string, got {type(title).__name__}")
    text = row["text"]
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"corpus file {path}: {where}: 'text' must be a non-empty string")
    return Document(str(doc_id), title, text)


def _parquet_documents(path: str) -> List[Document]:
    try:
        schema = pq.read_schema(path)
    except Exception as exc:
        raise DataError(f"cannot read Parquet corpus file {path}: {(str(exc).splitlines() or [type(exc).__name__])[0]}") from None
    for name in FIELDS:
        if name not in schema.names:
            raise DataError(f"corpus file {path}: missing column '{name}'")
    id_type = schema.field("id").type
    if not (pa.types.is_string(id_type) or pa.types.is_large_string(id_type) or pa.types.is_integer(id_type)):
        raise DataError(f"corpus file {path}: column 'id' has type {id_type}, expected string or integer")
    for name in ("title", "text"):
        got = schema.field(name).type
        if not (pa.types.is_string(got) or pa.types.is_large_string(got) or pa.types.is_null(got)):
            raise DataError(f"corpus file {path}: column '{name}' has type {got}, expected string")
    rows = read_columns(path, list(FIELDS), "Parquet corpus file").to_pylist()
    docs = [_document(path, f"row {i}", r) for i, r in enumerate(rows)]
    _check_unique(path, docs, "row", list(range(len(docs))))
    return docs


def _jsonl_documents(path: str) -> List[Document]:
    docs: List[Document] = []
    lines: List[int] = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise DataError(f"corpus file {path}: line {number}: not UTF-8") from None
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"corpus file {path}: line {number}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"corpus file {path}: line {number}: expected a JSON object, got {type(row).__name__}")
            for name in FIELDS:
                if name not in row:
                    raise DataError(f"corpus file {path}: line {number}: missing key '{name}'")
            docs.append(_document(path, f"line {number}", row))
            lines.append(number)
    _check_unique(path, docs, "line", lines)
    return docs


def _check_unique(path: str, docs: List[Document], unit: str, positions: List[int]) -> None:
    # Hits are reported by id, so two documents with one id would be indistinguishable to the policy.
    seen: Dict[str, int] = {}
    for doc, pos in zip(docs, positions):
        if doc.doc_id in seen:
            raise DataError(
                f"corpus file {path}: duplicate id '{doc.doc_id:.64}' ({unit} {seen[doc.doc_id]} and {unit} {pos})"
            )
        seen[doc.doc_id] = pos

"""A domain's state: an in-memory SQLite database, copied per episode from serialized bytes.

The state hash reads every table's rows in a canonical order as JSON, so two databases with the
same contents hash the same whatever order their rows were inserted in and on whichever machine.
Each domain call runs inside one transaction, so a call that fails changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence


def _connect() -> sqlite3.Connection:
    # Autocommit mode: transactions are opened explicitly, one per domain call.
    return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)


class Database:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.conn.row_factory = sqlite3.Row

    @classmethod
    def create(cls, schema: str) -> "Database":
        db = cls(_connect())
        db.conn.executescript(schema)
        return db

    @classmethod
    def from_bytes(cls, data: bytes) -> "Database":
        conn = _connect()
        conn.deserialize(data)
        return cls(conn)

    def to_bytes(self) -> bytes:
        return self.conn.serialize()

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        for row in rows:
            cols = list(row)
            self.conn.execute(
                f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                [row[c] for c in cols],
            )

    def one(self, sql: str, params: Sequence[Any] = ()) -> Optional[Dict[str, Any]]:
        row = self.conn.execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    def all(self, sql: str, params: Sequence[Any] = ()) -> List[Dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(sql, params).fetchall()]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def tables(self) -> List[str]:
        rows = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        return sorted(r[0] for r in rows)

    def dump(self) -> Dict[str, List[Dict[str, Any]]]:
        """Every table's rows, each table sorted canonically (a JSON-ready snapshot)."""
        out = {}
        for table in self.tables():
            rows = self.all(f"SELECT * FROM {table}")
            out[table] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))
        return out

    def state_hash(self) -> str:
        # ORDER BY every column gives a canonical row order (SQLite orders NULL, numbers, text
        # totally), so one JSON encoding per table suffices.
        h = hashlib.sha256()
        cur = self.conn.cursor()
        cur.row_factory = None  # plain tuples: JSON-encodable as they are
        for table in self.tables():
            cols = sorted(r[1] for r in cur.execute(f"PRAGMA table_info({table})"))
            listed = ", ".join(cols)
            rows = cur.execute(f"SELECT {listed} FROM {table} ORDER BY {listed}").fetchall()
            h.update(json.dumps([table, cols, rows], separators=(",", ":")).encode())
            h.update(b"\x00")
        return h.hexdigest()

"""Reading a user's Parquet file whole, or failing with one line that names it: damaged bytes,
strings that are not UTF-8, a file cut short. The schema checks stay with each reader."""

from __future__ import annotations

from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from orchestra_ray.errors import DataError


def read_columns(path: str, columns: Sequence[str], what: str = "Parquet file") -> pa.Table:
    """The columns of `path`, every value checked (strings valid UTF-8), or a DataError."""
    try:
        table = pq.read_table(path, columns=list(columns))
    except Exception as exc:  # pyarrow raises several kinds for damaged files
        raise DataError(f"cannot read {what} {path}: {(str(exc).splitlines() or [type(exc).__name__])[0][:200]}") from None
    for name in table.column_names:
        try:
            table.column(name).validate(full=True)
        except pa.ArrowInvalid as exc:
            raise DataError(f"{path}: column '{name}' holds invalid data ({(str(exc).splitlines() or [type(exc).__name__])[0][:160]})") from None
    return table

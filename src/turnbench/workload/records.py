"""Reading JSON and JSONL files into located records, and typed field access.

Why one reader for every format: each loader must name the file, the line and the field of a
bad value, and must never let a stray `KeyError` or `UnicodeDecodeError` escape as a traceback.
Every record carries its own location, so a loader only says which field was wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from turnbench.errors import InputError

MAX_RECORD_BYTES = 64 * 1024 * 1024
"""A single line (JSONL) or record (JSON array) above this is refused: surely not a record."""

_WS = re.compile(r"[ \t\n\r]*")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded record and where it came from (1-based line; index within a JSON array)."""

    value: Any
    file: str
    line: int
    index: int | None = None

    def error(self, message: str, field: str | None = None) -> InputError:
        """Build the InputError for a bad value of this record, naming its location."""
        where = f"record {self.index}: " if self.index is not None else ""
        return InputError(where + message, file=self.file, line=self.line, field=field)


def read_records(path: Path) -> list[Record]:
    """Read a JSONL file, or a JSON file holding an array of records, into located records.

    Why both shapes in one call: ShareGPT and trajectory dumps are JSON arrays, everything else
    is JSONL, and users name files inconsistently; the content decides (see `_is_json_array`).
    """
    name = str(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read dataset: {err.strerror or err}", file=name) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(
            f"not UTF-8 text (byte {err.start}: {err.reason})", file=name, line=line
        ) from None
    if not text.strip():
        raise InputError("the dataset file is empty", file=name)
    whole = _one_object(text, path, name)
    if whole is not None:
        return [whole]
    records = _read_array(text, name) if _is_json_array(text, path) else _read_lines(text, name)
    if not records:
        raise InputError("the dataset holds no records", file=name)
    return records


def _one_object(text: str, path: Path, name: str) -> Record | None:
    """A `.json` file that is one JSON object over several lines (a pretty-printed WEKA
    trace) as one record; None for anything else, which the line reader then reads."""
    stripped = text.strip()
    if path.suffix.lower() != ".json" or not stripped.startswith("{") or "\n" not in stripped:
        return None
    try:
        value = msgspec.json.decode(stripped.encode("utf-8", "surrogatepass"))
    except (msgspec.DecodeError, RecursionError, ValueError):
        return None
    return Record(value, name, 1) if isinstance(value, dict) else None


def _is_json_array(text: str, path: Path) -> bool:
    """A file is one JSON array when it starts with `[` and is named .json or opens a
    multi-line array; a JSONL file whose first line is a bare messages list stays JSONL."""
    stripped = text.lstrip()
    if not stripped.startswith("["):
        return False
    if path.suffix.lower() == ".json":
        return True
    first_line = stripped.split("\n", 1)[0].strip()
    return first_line == "["


def _read_lines(text: str, name: str) -> list[Record]:
    records: list[Record] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        raw = line.encode("utf-8", "surrogatepass")
        if len(raw) > MAX_RECORD_BYTES:
            raise InputError(
                f"line is {len(raw)} bytes, above the {MAX_RECORD_BYTES} byte limit",
                file=name,
                line=number,
            )
        try:
            value = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError, ValueError) as err:
            raise InputError(f"bad JSON: {err}", file=name, line=number) from None
        records.append(Record(value, name, number))
    return records


def _read_array(text: str, name: str) -> list[Record]:
    """Decode a JSON array record by record, so an error names the record and its line."""
    decoder = json.JSONDecoder()
    pos = _WS.match(text, 0).end() + 1  # type: ignore[union-attr]
    line = text.count("\n", 0, pos) + 1
    records: list[Record] = []
    while True:
        end_ws = _WS.match(text, pos).end()  # type: ignore[union-attr]
        line += text.count("\n", pos, end_ws)
        pos = end_ws
        if pos < len(text) and text[pos] == "]" and not records:
            pos += 1
            break
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise InputError(
                f"record {len(records)}: bad JSON: {err.msg} (column {err.colno})",
                file=name,
                line=err.lineno,
            ) from None
        except RecursionError:
            raise InputError(
                f"record {len(records)}: JSON nested too deeply", file=name, line=line
            ) from None
        if len(text[pos:end].encode("utf-8", "surrogatepass")) > MAX_RECORD_BYTES:
            raise InputError(
                f"record {len(records)} is above the {MAX_RECORD_BYTES} byte limit",
                file=name,
                line=line,
            )
        records.append(Record(value, name, line, len(records)))
        line += text.count("\n", pos, end)
        end_ws = _WS.match(text, end).end()  # type: ignore[union-attr]
        line += text.count("\n", end, end_ws)
        pos = end_ws
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        if pos < len(text) and text[pos] == "]":
            pos += 1
            break
        raise InputError(
            f"after record {len(records) - 1}: expected ',' or ']' in the JSON array",
            file=name,
            line=line,
        )
    if text[pos:].strip():
        raise InputError("extra data after the JSON array", file=name, line=line)
    return records


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list"}
    names[dict] = "an object"
    kinds = kind if isinstance(kind, tuple) else (kind,)
    shown = [k for k in kinds if not (k is int and float in kinds)]  # a number is enough
    return " or ".join(names.get(k, k.__name__) for k in shown)


def field(
    rec: Record,
    obj: Any,
    key: str,
    kind: type[T] | tuple[type, ...],
    path: str,
    *,
    required: bool = True,
) -> Any:
    """Return `obj[key]` checked against `kind` (None when optional and absent or null).

    Why here: bool is an int in Python but never a valid count or length in a dataset, and a
    float field must accept integers; both rules live in one place.
    """
    where = f"{path}.{key}" if path else key
    if not isinstance(obj, Mapping):
        raise rec.error("expected an object", path or None)
    value = obj.get(key)
    if value is None:
        if required:
            raise rec.error(f"missing required field '{key}'", where)
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in kinds:
        raise rec.error(f"expected {_type_name(kind)}, got a boolean", where)
    if not isinstance(value, kinds):
        raise rec.error(f"expected {_type_name(kind)}, got {type(value).__name__}", where)
    return value


def non_negative(rec: Record, value: float | None, where: str) -> float | None:
    """Check a duration or length is not negative (and finite)."""
    if value is not None and not (0 <= value < float("inf")):
        raise rec.error(f"must be a finite number >= 0, got {value}", where)
    return value

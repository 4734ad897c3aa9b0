"""Guessing a dataset's format from its first records.

Why by content: file names say little (`.json` ShareGPT dumps are often JSONL), while each
format has keys no other format uses. Two matching formats, or none, is an error that tells
the user to pass `format:`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from turnbench.workload.config import DatasetOptions
from turnbench.workload.records import Record

_SAMPLE = 5


def _is_messages_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, Mapping) and "role" in m for m in value)
    )


def _formats_of(value: Any, options: DatasetOptions) -> set[str]:
    if _is_messages_list(value):
        return {"messages"}
    if not isinstance(value, Mapping):
        return set()
    found = set()
    if isinstance(value.get("conversations"), list):
        found.add("sharegpt")
    if _is_messages_list(value.get(options.messages.messages_key)):
        found.add("messages")
    if "conversation_id" in value and "role" in value:
        found.add("rows")
    if "session_id" in value and isinstance(value.get("turns"), list):
        found.add("aiperf")
    if "hash_ids" in value or ("input_length" in value and "output_length" in value):
        found.add("trace")
    return found


def detect_format(records: Sequence[Record], options: DatasetOptions) -> str:
    """Return the one format the first records match, or raise InputError saying why not."""
    first = records[0]
    found: set[str] = set()
    for rec in records[:_SAMPLE]:
        found |= _formats_of(rec.value, options)
    if len(found) == 1:
        return found.pop()
    if not found:
        value = first.value
        if isinstance(value, Mapping):
            lists = [k for k, v in value.items() if _is_messages_list(v)]
            if lists:
                raise first.error(
                    f"unknown dataset format; the messages list is under '{lists[0]}': set "
                    f"`format: messages` and `messages: {{messages_key: {lists[0]}}}`"
                )
        raise first.error(
            "unknown dataset format: expected sharegpt, rows, messages, aiperf or trace "
            "records; set `format:`"
        )
    raise first.error(
        f"ambiguous dataset format (looks like {' and '.join(sorted(found))}); set `format:`"
    )

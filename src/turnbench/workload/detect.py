"""Guessing a dataset's format, and the key of its messages list, from its first records.

Why by content: file names say little (`.json` ShareGPT dumps are often JSONL), while each
format has keys no other format uses. Two matching formats, or none, is an error that tells
the user to pass `format:`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from turnbench.errors import InputError
from turnbench.workload.records import Record

DEFAULT_MESSAGES_KEY = "messages"
_SAMPLE = 5
_SHOWN_KEYS = 8
_CHOOSE_KEY = "`workload.messages.messages_key: {key}` (YAML) or `--messages-key {key}`"
_NEEDS = (
    "sharegpt (conversations), messages (a messages list), rows (conversation_id, role), "
    "aiperf (session_id, turns), trace (hash_ids, or input_length and output_length), "
    "weka (requests and block_size)"
)


def _is_messages_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, Mapping) and "role" in m for m in value)
    )


def _formats_of(value: Any, messages_key: str) -> set[str]:
    if _is_messages_list(value):
        return {"messages"}
    if not isinstance(value, Mapping):
        return set()
    found = set()
    if isinstance(value.get("conversations"), list):
        found.add("sharegpt")
    if _is_messages_list(value.get(messages_key)):
        found.add("messages")
    if "conversation_id" in value and "role" in value:
        found.add("rows")
    if "session_id" in value and isinstance(value.get("turns"), list):
        found.add("aiperf")
    if "hash_ids" in value or ("input_length" in value and "output_length" in value):
        found.add("trace")
    if isinstance(value.get("requests"), list) and "block_size" in value:
        found.add("weka")
    return found


def find_messages_key(records: Sequence[Record]) -> str:
    """The key of the first records that holds their messages list: `messages` when present
    (or when no key holds one), else the one key that does; two such keys raise InputError.

    Why guess: trajectory dumps keep the list under their own key (`traj` in tau-bench), and
    when only one key can be meant, asking the user to name it is a step for nothing.
    """
    seen: dict[str, Record] = {}
    for rec in records[:_SAMPLE]:
        if isinstance(rec.value, Mapping):
            for key, value in rec.value.items():
                if _is_messages_list(value):
                    seen.setdefault(str(key), rec)
    if DEFAULT_MESSAGES_KEY in seen or not seen:
        return DEFAULT_MESSAGES_KEY
    keys = list(seen)
    if len(keys) == 1:
        return keys[0]
    named = " and ".join(f"'{k}'" for k in keys)
    raise seen[keys[1]].error(
        f"messages lists under {named}: choose one with {_CHOOSE_KEY.format(key='KEY')}"
    )


def _unknown(first: Record, messages_key: str) -> InputError:
    """The error for records no format matches, naming what they hold and what each needs."""
    value = first.value
    if not isinstance(value, Mapping):
        return first.error(
            f"unknown dataset format: a record is {type(value).__name__}, expected an object or "
            "a messages list"
        )
    lists = [str(k) for k, v in value.items() if _is_messages_list(v)]
    if lists:
        return first.error(
            f"unknown dataset format: no messages list under '{messages_key}', but one under "
            f"'{lists[0]}': set {_CHOOSE_KEY.format(key=lists[0])}"
        )
    keys = sorted(str(k) for k in value)
    shown = ", ".join(keys[:_SHOWN_KEYS]) + (", ..." if len(keys) > _SHOWN_KEYS else "")
    held = f"keys {shown}" if keys else "no keys"
    return first.error(f"unknown dataset format: the record ({held}) fits none of {_NEEDS}")


def detect_format(records: Sequence[Record], messages_key: str) -> str:
    """Return the one format the first records match, or raise InputError saying why not."""
    found: set[str] = set()
    for rec in records[:_SAMPLE]:
        found |= _formats_of(rec.value, messages_key)
    if len(found) == 1:
        return found.pop()
    if not found:
        raise _unknown(records[0], messages_key)
    raise records[0].error(
        f"ambiguous dataset format (looks like {' and '.join(sorted(found))}); set `format:`"
    )

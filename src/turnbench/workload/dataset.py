"""Loading a dataset file (or a folder of them) of any supported format into conversation
plans plus a report.

Why one entry point: `conversations()` and `turnbench dataset inspect/convert` must see the
same plans and the same repairs; the whole file is read and checked before a run starts, so a
bad line fails in the first second rather than an hour in. A folder is its `.json` and
`.jsonl` files in name order, each read and detected on its own: trace corpora (WEKA) are one
file per agent session, shipped beside a README and a LICENSE.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from turnbench.errors import InputError
from turnbench.tokens.sizer import TextSizer
from turnbench.workload.config import DatasetFormat, DatasetOptions
from turnbench.workload.conversation import Conversation
from turnbench.workload.detect import DEFAULT_MESSAGES_KEY, detect_format, find_messages_key
from turnbench.workload.messages import load_messages
from turnbench.workload.records import Record, read_records
from turnbench.workload.report import LoadReport

Loader = Callable[[Sequence[Record], DatasetOptions, LoadReport], Sequence[Conversation]]


def _loaders(sizer: TextSizer, messages_key: str) -> dict[str, Loader]:
    from turnbench.workload.aiperf import load_aiperf
    from turnbench.workload.rows import load_rows
    from turnbench.workload.sharegpt import load_sharegpt
    from turnbench.workload.trace import load_trace
    from turnbench.workload.weka import load_weka

    return {
        "messages": lambda recs, opts, rep: load_messages(recs, messages_key, rep),
        "sharegpt": lambda recs, opts, rep: load_sharegpt(recs, opts.sharegpt, rep),
        "rows": lambda recs, opts, rep: load_rows(recs, rep),
        "aiperf": lambda recs, opts, rep: load_aiperf(recs, rep),
        "trace": lambda recs, opts, rep: load_trace(recs, opts.trace, rep, sizer),
        "weka": lambda recs, opts, rep: load_weka(recs, opts.weka, rep, sizer),
    }


DATASET_SUFFIXES = (".json", ".jsonl")
"""The files of a dataset folder that are read; others (README, LICENSE) are left out."""


@dataclass
class DatasetLoad:
    """The plans of one dataset file, the format they were read as, and what was changed."""

    path: Path
    format: str
    conversations: Sequence[Conversation]
    report: LoadReport = field(default_factory=LoadReport)


def load_dataset(
    path: Path,
    format: DatasetFormat = "auto",
    options: DatasetOptions | None = None,
    sizer: TextSizer | None = None,
) -> DatasetLoad:
    """Read, validate and plan a whole dataset file, or every dataset file of a folder; any
    bad record raises InputError.

    `sizer` writes the texts a format only gives lengths for (traces); default: exact for the
    simulator. A messages list found under a key the user did not name is said on stderr, here,
    so `dataset inspect`, `dataset convert` and a run all say it.
    """
    options = options or DatasetOptions()
    sizer = sizer or TextSizer()
    if path.is_dir():
        return _load_folder(path, format, options, sizer)
    load = _load_file(path, format, options, sizer)
    plans = load.conversations
    if not plans:
        raise InputError(
            "no conversations left after filters (see the drop reasons with "
            "`turnbench dataset inspect`)",
            file=str(path),
        )
    load.conversations = _limited(plans, options, load.report)
    return load


def _load_file(
    path: Path, format: DatasetFormat, options: DatasetOptions, sizer: TextSizer
) -> DatasetLoad:
    records = read_records(path)
    messages_key = _messages_key(records, format, options)
    fmt = detect_format(records, messages_key) if format == "auto" else format
    report = LoadReport(records=len(records))
    plans = _loaders(sizer, messages_key)[fmt](records, options, report)
    guessed = messages_key not in (options.messages.messages_key, DEFAULT_MESSAGES_KEY)
    if fmt == "messages" and guessed:
        print(f"note: {path}: messages found under '{messages_key}'", file=sys.stderr)
    return DatasetLoad(path, fmt, plans, report)


def _load_folder(
    path: Path, format: DatasetFormat, options: DatasetOptions, sizer: TextSizer
) -> DatasetLoad:
    """Every dataset file of a folder, in name order; a plan id seen in an earlier file is
    prefixed with its file's name (`<stem>/<id>`), so sessions stay distinct."""
    try:
        files = sorted(
            p for p in path.iterdir() if p.suffix.lower() in DATASET_SUFFIXES and p.is_file()
        )
    except OSError as err:
        raise InputError(f"cannot read the folder: {err.strerror or err}", file=str(path)) from None
    if not files:
        raise InputError("the folder holds no .json or .jsonl dataset file", file=str(path))
    report = LoadReport()
    plans: list[Conversation] = []
    formats: list[str] = []
    seen: set[str] = set()
    for file in files:
        load = _load_file(file, format, options, sizer)
        report.records += load.report.records
        report.dropped.update(load.report.dropped)
        report.repaired.update(load.report.repaired)
        if load.format not in formats:
            formats.append(load.format)
        for conv in load.conversations:
            if conv.id in seen:
                conv = replace(conv, id=f"{file.stem}/{conv.id}")
            seen.add(conv.id)
            plans.append(conv)
    if not plans:
        raise InputError(
            "no conversations left after filters (see the drop reasons with "
            "`turnbench dataset inspect`)",
            file=str(path),
        )
    return DatasetLoad(path, "+".join(formats), _limited(plans, options, report), report)


def _limited(
    plans: Sequence[Conversation], options: DatasetOptions, report: LoadReport
) -> Sequence[Conversation]:
    limit = options.max_conversations
    if limit is not None and len(plans) > limit:
        report.drop("beyond max_conversations", len(plans) - limit)
        return plans[:limit]
    return plans


def _messages_key(records: Sequence[Record], format: DatasetFormat, options: DatasetOptions) -> str:
    """The key the user named, else the one the records use; a file read as another named
    format never uses the key, so a stray second list in its records must not fail it."""
    named = options.messages.messages_key
    if named is not None:
        return named
    if format in ("auto", "messages"):
        return find_messages_key(records)
    return DEFAULT_MESSAGES_KEY

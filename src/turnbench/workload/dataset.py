"""Loading a dataset file of any supported format into conversation plans plus a report.

Why one entry point: `conversations()` and `turnbench dataset inspect/convert` must see the
same plans and the same repairs; the whole file is read and checked before a run starts, so a
bad line fails in the first second rather than an hour in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from turnbench.errors import InputError
from turnbench.workload.config import DatasetFormat, DatasetOptions
from turnbench.workload.conversation import Conversation
from turnbench.workload.detect import detect_format
from turnbench.workload.lengths import TextSizer
from turnbench.workload.messages import load_messages
from turnbench.workload.records import Record, read_records
from turnbench.workload.report import LoadReport

Loader = Callable[[Sequence[Record], DatasetOptions, LoadReport], Sequence[Conversation]]


def _loaders(sizer: TextSizer) -> dict[str, Loader]:
    from turnbench.workload.aiperf import load_aiperf
    from turnbench.workload.rows import load_rows
    from turnbench.workload.sharegpt import load_sharegpt
    from turnbench.workload.trace import load_trace

    return {
        "messages": lambda recs, opts, rep: load_messages(recs, opts.messages, rep),
        "sharegpt": lambda recs, opts, rep: load_sharegpt(recs, opts.sharegpt, rep),
        "rows": lambda recs, opts, rep: load_rows(recs, rep),
        "aiperf": lambda recs, opts, rep: load_aiperf(recs, rep),
        "trace": lambda recs, opts, rep: load_trace(recs, opts.trace, rep, sizer),
    }


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
    """Read, validate and plan a whole dataset file; any bad record raises InputError.

    `sizer` writes the texts a format only gives lengths for (traces); default: exact for the
    simulator.
    """
    options = options or DatasetOptions()
    records = read_records(path)
    fmt = detect_format(records, options) if format == "auto" else format
    report = LoadReport(records=len(records))
    plans = _loaders(sizer or TextSizer())[fmt](records, options, report)
    if not plans:
        raise InputError(
            "no conversations left after filters (see the drop reasons with "
            "`turnbench dataset inspect`)",
            file=str(path),
        )
    limit = options.max_conversations
    if limit is not None and len(plans) > limit:
        report.drop("beyond max_conversations", len(plans) - limit)
        plans = plans[:limit]
    return DatasetLoad(path, fmt, plans, report)

"""`turnbench dataset inspect|convert`: look at a dataset as turnbench will play it.

Why inspect before a run: a dataset's shape (turns per conversation, context growth) decides
what a multi-turn benchmark measures, and repairs made while loading must be visible.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import cast, get_args

import typer
from rich.console import Console
from rich.table import Table

from turnbench.cli_format import Command, Group, fail
from turnbench.errors import InputError
from turnbench.tokens.template import (
    GENERATION_OVERHEAD,
    MESSAGE_OVERHEAD,
    count_tokens,
    render_message,
)
from turnbench.workload.config import DatasetFormat, DatasetOptions, MessagesOptions
from turnbench.workload.conversation import Conversation, Turn
from turnbench.workload.dataset import DatasetLoad, load_dataset
from turnbench.workload.messages import to_record

dataset_app = typer.Typer(
    help="Inspect and convert workload datasets.", no_args_is_help=True, cls=Group
)

FORMATS: tuple[str, ...] = get_args(DatasetFormat)
CONVERT_FROM = tuple(f for f in FORMATS if f != "auto")
MAX_TURN_ROWS = 20
MESSAGES_KEY_HELP = (
    "Key of the messages list in each record; default: `messages`, or the one key holding one."
)


def _format(value: str, flag: str, allowed: tuple[str, ...]) -> DatasetFormat:
    """Check a format flag here: an unknown name must be one line naming the flag."""
    if value not in allowed:
        raise InputError(f"expected one of {', '.join(allowed)}, got {value!r}", field=flag)
    return cast(DatasetFormat, value)


def _load(path: Path, fmt: DatasetFormat, messages_key: str | None) -> DatasetLoad:
    options = DatasetOptions(messages=MessagesOptions(messages_key=messages_key))
    return load_dataset(path, fmt, options)


def _turn_tokens(turn: Turn) -> int:
    if turn.input_tokens is not None:
        return turn.input_tokens
    return sum(count_tokens(render_message(m)) - MESSAGE_OVERHEAD for m in turn.messages)


def _context_by_turn(plans: Sequence[Conversation]) -> list[list[int]]:
    """Tokens of the full chat prompt at each turn index (recorded replies in the history)."""
    by_turn: list[list[int]] = []
    for conv in plans:
        ctx = count_tokens(render_message({"role": "system", "content": conv.system}))
        ctx = ctx if conv.system is not None else 0
        for k, turn in enumerate(conv.turns):
            ctx += sum(count_tokens(render_message(m)) for m in turn.messages)
            ctx += MESSAGE_OVERHEAD + turn.input_tokens if turn.input_tokens else 0
            if k == len(by_turn):
                by_turn.append([])
            by_turn[k].append(ctx + GENERATION_OVERHEAD)
            if turn.reply is not None:
                ctx += count_tokens(render_message(turn.reply))
    return by_turn


def _histogram(values: list[int]) -> list[tuple[str, int]]:
    counts = Counter(values)
    if len(counts) <= 12:
        return [(str(v), counts[v]) for v in sorted(counts)]
    bins: Counter[int] = Counter()
    for v in values:
        bins[max(v, 1).bit_length()] += 1
    return [(f"{1 << (b - 1)}-{(1 << b) - 1}", bins[b]) for b in sorted(bins)]


@dataset_app.command(cls=Command)
def inspect(
    file: Path = typer.Argument(..., help="Dataset file."),
    format: str = typer.Option("auto", "--format", help="|".join(FORMATS)),
    messages_key: str | None = typer.Option(None, "--messages-key", help=MESSAGES_KEY_HELP),
) -> None:
    """Print conversations, turn and token statistics, context growth and load repairs."""
    try:
        load = _load(file, _format(format, "--format", FORMATS), messages_key)
    except InputError as err:
        raise fail(str(err)) from None
    plans = list(load.conversations)
    turns = [len(c.turns) for c in plans]
    tokens = [_turn_tokens(t) for c in plans for t in c.turns]
    out = Console(width=120)
    summary = Table(title=f"{file.name} ({load.format})")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    summary.add_row("records", str(load.report.records))
    summary.add_row("conversations", str(len(plans)))
    summary.add_row("turns", str(sum(turns)))
    summary.add_row("turns per conversation (mean)", f"{statistics.fmean(turns):.2f}")
    summary.add_row("tokens per turn (min)", str(min(tokens)))
    summary.add_row("tokens per turn (mean)", f"{statistics.fmean(tokens):.1f}")
    summary.add_row("tokens per turn (median)", f"{statistics.median(tokens):g}")
    summary.add_row("tokens per turn (max)", str(max(tokens)))
    out.print(summary)
    hist = Table(title="turns per conversation")
    hist.add_column("turns")
    hist.add_column("conversations", justify="right")
    for label, n in _histogram(turns):
        hist.add_row(label, str(n))
    out.print(hist)
    growth = Table(title="context growth (tokens of the full prompt at turn k)")
    for col in ("turn", "conversations", "mean tokens", "max tokens"):
        growth.add_column(col, justify="right")
    for k, ctx in enumerate(_context_by_turn(plans)[:MAX_TURN_ROWS]):
        growth.add_row(str(k + 1), str(len(ctx)), f"{statistics.fmean(ctx):.1f}", str(max(ctx)))
    out.print(growth)
    changes = Table(title="dropped or repaired while loading")
    for col in ("action", "reason", "count"):
        changes.add_column(col, justify="right" if col == "count" else "left")
    for action, counter in (("dropped", load.report.dropped), ("repaired", load.report.repaired)):
        for reason, n in sorted(counter.items()):
            changes.add_row(action, reason, str(n))
    if not changes.rows:
        changes.add_row("-", "nothing", "0")
    out.print(changes)


@dataset_app.command(cls=Command)
def convert(
    src: Path = typer.Argument(..., help="Input dataset."),
    dst: Path = typer.Argument(..., help="Output canonical messages JSONL."),
    from_: str = typer.Option(..., "--from", help="|".join(CONVERT_FROM)),
    messages_key: str | None = typer.Option(None, "--messages-key", help=MESSAGES_KEY_HELP),
) -> None:
    """Write a dataset as canonical messages JSONL (think times and max_tokens kept)."""
    try:
        load = _load(src, _format(from_, "--from", CONVERT_FROM), messages_key)
        _write(dst, load.conversations)
    except InputError as err:
        raise fail(str(err)) from None
    print(f"wrote {len(load.conversations)} conversations to {dst}", file=sys.stderr)


def _write(dst: Path, plans: Sequence[Conversation]) -> None:
    """Write plans as canonical records; an unwritable output is a user error, not a bug."""
    try:
        with dst.open("w", encoding="utf-8") as f:
            for conv in plans:
                f.write(json.dumps(to_record(conv), ensure_ascii=False) + "\n")
    except OSError as err:
        raise InputError(f"cannot write: {err.strerror or err}", file=str(dst)) from None

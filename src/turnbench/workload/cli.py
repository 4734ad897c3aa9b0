"""`turnbench dataset inspect|convert`: look at a dataset as turnbench will play it.

Why inspect before a run: a dataset's shape (turns per conversation, context growth) decides
what a multi-turn benchmark measures, and repairs made while loading must be visible.

Why the readers, the token counts and rich are imported in the commands: `turnbench --help`
declares these commands to list them, and does not read a dataset.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast, get_args

import typer

from turnbench.cli_format import Command, Group, fail
from turnbench.errors import InputError
from turnbench.workload.config import DatasetFormat, DatasetOptions, MessagesOptions

if TYPE_CHECKING:
    from rich.console import Console

    from turnbench.workload.conversation import Conversation, Turn
    from turnbench.workload.dataset import DatasetLoad

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
    from turnbench.workload.dataset import load_dataset

    options = DatasetOptions(messages=MessagesOptions(messages_key=messages_key))
    return load_dataset(path, fmt, options)


def _turn_tokens(turn: Turn) -> int:
    from turnbench.tokens.template import MESSAGE_OVERHEAD, count_tokens, render_message

    if turn.input_tokens is not None:
        return turn.input_tokens
    return sum(count_tokens(render_message(m)) - MESSAGE_OVERHEAD for m in turn.messages)


def _context_by_turn(plans: Sequence[Conversation]) -> list[list[int]]:
    """Tokens of the full chat prompt at each turn index (recorded replies in the history)."""
    from turnbench.tokens.template import (
        GENERATION_OVERHEAD,
        MESSAGE_OVERHEAD,
        count_tokens,
        render_message,
    )

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
    file: Path = typer.Argument(..., help="Dataset file, or a folder of them."),
    format: str = typer.Option("auto", "--format", help="|".join(FORMATS)),
    messages_key: str | None = typer.Option(None, "--messages-key", help=MESSAGES_KEY_HELP),
) -> None:
    """Print conversations, turn and token statistics, context growth, agent graphs (sub-agents,
    depth, ideal cache hit) and load repairs."""
    from rich.console import Console
    from rich.table import Table

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
    if any(c.children or c.metadata.get("source") == "weka" for c in plans):
        _print_graphs(out, plans)
    changes = Table(title="dropped or repaired while loading")
    for col in ("action", "reason", "count"):
        changes.add_column(col, justify="right" if col == "count" else "left")
    for action, counter in (("dropped", load.report.dropped), ("repaired", load.report.repaired)):
        for reason, n in sorted(counter.items()):
            changes.add_row(action, reason, str(n))
    if not changes.rows:
        changes.add_row("-", "nothing", "0")
    out.print(changes)


def _print_graphs(out: Console, plans: Sequence[Conversation]) -> None:
    """The agent tasks' graph statistics: a summary over all, then one row per task.

    Context growth and the ideal cache hit come from the recorded input sizes and hash ids a
    trace loader keeps in each plan's metadata (WEKA); other sources show `-` there.
    """
    from rich.table import Table

    from turnbench.workload.conversation import walk

    summary = Table(title="agent tasks (session graphs)")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    trees = [list(walk(c)) for c in plans]
    subs = [(s, d) for tree in trees for s, d in tree if d > 0]
    background = sum(
        1 for tree in trees for s, _ in tree for child in s.children if child.join_turn is None
    )
    requests = [sum(len(s.turns) for s, _ in tree) for tree in trees]
    turns = [t for tree in trees for s, _ in tree for t in s.turns]
    summary.add_row("agent tasks", str(len(plans)))
    summary.add_row("requests", str(sum(requests)))
    summary.add_row(
        "requests per task (mean / max)", f"{statistics.fmean(requests):.1f} / {max(requests)}"
    )
    summary.add_row("sub-agents (forks included)", str(len(subs)))
    summary.add_row("  of them in the background (never joined)", str(background))
    summary.add_row("sub-agent requests", str(sum(len(s.turns) for s, _ in subs)))
    summary.add_row("depth (max)", str(max(d for tree in trees for _, d in tree)))
    summary.add_row(
        "turns after a tool's result", str(sum(t.tool_time_s is not None for t in turns))
    )
    summary.add_row("compactions (prefix replaced)", str(sum(t.compact for t in turns)))
    hit = sum(c.metadata.get("ideal_cached_tokens", 0) for c in plans)
    total = sum(c.metadata.get("recorded_input_tokens", 0) for c in plans)
    summary.add_row("ideal cache hit % (hash ids)", f"{100 * hit / total:.1f}" if total else "-")
    out.print(summary)
    table = Table(title="per agent task")
    for col in (
        "task",
        "requests",
        "sub-agents",
        "depth",
        "input tokens first → max",
        "ideal hit %",
        "recorded span s",
    ):
        table.add_column(col, justify="left" if col == "task" else "right")
    for conv, tree in list(zip(plans, trees, strict=True))[:MAX_TURN_ROWS]:
        sizes = conv.metadata.get("input_tokens") or []
        growth = f"{sizes[0]:,} → {max(sizes):,}" if sizes else "-"
        n_in = conv.metadata.get("recorded_input_tokens", 0)
        share = f"{100 * conv.metadata.get('ideal_cached_tokens', 0) / n_in:.1f}" if n_in else "-"
        span = conv.metadata.get("recorded_span_s")
        table.add_row(
            conv.id,
            str(sum(len(s.turns) for s, _ in tree)),
            str(len(tree) - 1),
            str(max(d for _, d in tree)),
            growth,
            share,
            f"{span:,.0f}" if span is not None else "-",
        )
    out.print(table)


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
        _write(dst, load.conversations, src)
    except InputError as err:
        raise fail(str(err)) from None
    print(f"wrote {len(load.conversations)} conversations to {dst}", file=sys.stderr)


def _write(dst: Path, plans: Sequence[Conversation], src: Path) -> None:
    """Write plans as canonical records; an unwritable output is a user error, not a bug,
    and so is an agent with sub-agents, which a messages record cannot hold (dropping them
    would turn an agent into a plain conversation without a word)."""
    from turnbench.workload.messages import to_record

    for conv in plans:
        if conv.children:
            raise InputError(
                f"{conv.id!r} has sub-agents, which the messages format cannot hold: play the "
                "dataset as it is (`--dataset`)",
                file=str(src),
            )
    try:
        with dst.open("w", encoding="utf-8") as f:
            for conv in plans:
                f.write(json.dumps(to_record(conv), ensure_ascii=False) + "\n")
    except OSError as err:
        raise InputError(f"cannot write: {err.strerror or err}", file=str(dst)) from None

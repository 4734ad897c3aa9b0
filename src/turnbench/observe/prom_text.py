"""The Prometheus text exposition format (0.0.4), read into samples: name, labels, value.

Why not `prometheus_client.parser`: it builds a family object per metric and checks every
token in Python, ~30 us a line; a vLLM `/metrics` (500 lines, mostly histogram buckets) took
13 ms to parse, and the scrape runs on the event loop that times requests (the run's only
worker when `engine.workers` is 1). Here a line is split with `str` methods, buckets and
`_created` series are dropped before their labels are read, and labels are decoded only for
a label text not seen before (the caller caches): 0.5 ms for the same body. The tests check
this parser against prometheus_client's on generated expositions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

SKIPPED_SUFFIXES = ("_bucket", "_created")
"""Series not kept: histogram buckets (the `_sum` and `_count` stay: a mean per interval),
and the creation timestamps prometheus_client adds to every counter and histogram."""

_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_ESCAPE = re.compile(r'\\([\\n"])')


class Sample(NamedTuple):
    """One sample line: its labels still as written between the braces (`labels()` reads
    them), so that a label text seen at every scrape is decoded once."""

    name: str
    labels: str
    value: float


def samples(text: str) -> Iterator[Sample]:
    """The samples of an exposition, in order, without buckets and `_created` series.

    Comments (`# HELP`, `# TYPE`) and lines that are not a sample are skipped; a sample's
    own timestamp is ignored (the scraper times the scrape on the run's clock).
    """
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        if brace < 0:
            name, _, rest = line.partition(" ")
            labels = ""
        else:
            close = line.rfind("}")
            if close < brace:
                continue
            name, labels, rest = line[:brace], line[brace + 1 : close], line[close + 1 :]
        if not name or name.endswith(SKIPPED_SUFFIXES):
            continue
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        yield Sample(name.rstrip(), labels, value)


def labels(text: str) -> dict[str, str]:
    """The labels written between a sample's braces, unescaped (`\\\\`, `\\"`, `\\n`).

    Raises ValueError when `text` is not a label list.
    """
    found: dict[str, str] = {}
    at = 0
    text = text.strip()
    while at < len(text):
        match = _LABEL.match(text, at)
        if match is None:
            raise ValueError(f"not a label list: {text!r}")
        name, value = match.groups()
        found[name] = _ESCAPE.sub(lambda m: "\n" if m[1] == "n" else m[1], value)
        at = match.end()
    return found

"""Did sessions stick? Which replica served each turn of a session, from `events.db` alone.

Why it matters: behind a router, a turn that lands on another replica than the turn before
finds none of its conversation in that replica's prefix cache and pays a cold prefill. The
`replica` column (the response header `target.replica_header`) says where each attempt went;
this module compares each session's consecutive successful turns and sets the cache hits and
TTFT of the turns that stayed against those of the turns that moved (formulas in
docs/metrics.md, "Session affinity").
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field

from turnbench.metrics.affinity_model import Affinity, AffinityTurns
from turnbench.metrics.stats import describe

MS = 1e6  # nanoseconds per millisecond
_BATCH = 100_000

# ok attempts with a replica, a session's turns in order; one ok attempt per turn at most
_TURNS = """
SELECT session_id, replica, stage != 'warmup', prompt_tokens, cached_tokens,
       t_first_token_ns - t_sent_ns
FROM requests WHERE status = 'ok' AND replica IS NOT NULL
ORDER BY session_id, turn_index, attempt
"""


@dataclass
class _Group:
    """The turns that stayed, or those that moved: their tokens and TTFTs."""

    turns: int = 0
    prompt: int = 0
    cached: int = 0
    reported_cached: bool = False
    ttft_ms: list[float] = field(default_factory=list)

    def add(self, prompt: int | None, cached: int | None, ttft_ns: int | None) -> None:
        """Count one turn; its tokens enter the ratio only when the server reported them."""
        self.turns += 1
        if prompt is not None:
            self.prompt += prompt
            if cached is not None:
                self.cached += cached
                self.reported_cached = True
        if ttft_ns is not None:
            self.ttft_ms.append(ttft_ns / MS)

    def describe(self) -> AffinityTurns:
        """`turns`, `cached_ratio` (Σ cached / Σ prompt; null without any cached count or
        prompt tokens) and the `ttft_ms` distribution."""
        ratio = self.cached / self.prompt if self.reported_cached and self.prompt else None
        return AffinityTurns(
            turns=self.turns,
            cached_ratio=ratio,
            ttft_ms=describe(self.ttft_ms),
        )


def _has_replica_column(conn: sqlite3.Connection) -> bool:
    """Whether the `requests` table has the column (an events.db from before it has not)."""
    return any(row[1] == "replica" for row in conn.execute("PRAGMA table_info(requests)"))


def describe_affinity(conn: sqlite3.Connection) -> Affinity | None:
    """Session affinity as summary.json shows it (keys in docs/metrics.md); None when no
    successful attempt names its replica (the server sent no such header).

    A turn *moved* when the replica of its successful attempt differs from that of the
    session's previous successful turn with a known replica, else it *stayed*; a session's
    first such turn is neither. Warm-up turns are compared against but not counted.
    """
    if not _has_replica_column(conn):
        return None
    stayed, moved = _Group(), _Group()
    by_replica: Counter[str] = Counter()
    changes: list[int] = []  # per session with a main-stage turn that stayed or moved
    session: str | None = None
    previous: str | None = None
    compared = 0  # of the current session: main-stage turns that stayed or moved
    moves = 0  # of them, those that moved
    cursor = conn.execute(_TURNS)
    while rows := cursor.fetchmany(_BATCH):
        for sid, replica, main, prompt, cached, ttft_ns in rows:
            if sid != session:
                if compared:
                    changes.append(moves)
                session, previous, compared, moves = sid, None, 0, 0
            if main:
                by_replica[replica] += 1
                if previous is not None:
                    compared += 1
                    if replica == previous:
                        stayed.add(prompt, cached, ttft_ns)
                    else:
                        moved.add(prompt, cached, ttft_ns)
                        moves += 1
            previous = replica
    if compared:
        changes.append(moves)
    if not by_replica:
        return None
    later = stayed.turns + moved.turns
    return Affinity(
        replicas=len(by_replica),
        requests_by_replica=dict(sorted(by_replica.items())),
        sessions=len(changes),
        sessions_never_moved=changes.count(0),
        replica_changes=describe(changes),
        changes_per_session={str(k): n for k, n in sorted(Counter(changes).items())},
        migration_rate=moved.turns / later if later else None,
        stayed=stayed.describe(),
        moved=moved.describe(),
    )

"""What the server said about itself during the run, from the `server_metrics` rows alone.

Why counter growth, not counter values: a server's counters hold everything since it started
(other runs, warm-up traffic), so the run's figures are the growth between its own scrapes.
Why per second: the same bins as the client's throughput plot (bin k holds run time [k, k+1)
s), so a rise in TTFT and a full KV cache or a queue can be read off one time axis.

Several series of one metric (vLLM's per-engine series, the simulator's per-replica ones) are
one figure: counts and counter growth summed, KV-cache usage averaged. Formulas in
docs/metrics.md.
"""

from __future__ import annotations

import itertools
import sqlite3
import statistics
from collections import defaultdict

from turnbench.metrics.server_model import Gauge, Server, ServerSecond
from turnbench.observe.names import GAUGES, Role, choose, family

S = 1e9
_SUMMED = (Role.RUNNING, Role.WAITING)

Scrape = dict[Role, float]
"""One scrape's figure per role: a gauge's value, a counter's growth since the last scrape."""


def _has_table(conn: sqlite3.Connection) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'server_metrics'"
        ).fetchone()
        is not None
    )


def _scrapes(
    conn: sqlite3.Connection, chosen: dict[Role, str], times: list[int]
) -> list[tuple[int, Scrape]]:
    """Each scrape's figures, in time order.

    A counter series seen at the run's first scrape starts there (its value then is the
    server's past); one that first appears later started during the run, so all of its value
    is growth. A value below the last one is a restart of the counter: its growth is the value.
    """
    roles = {name: role for role, name in chosen.items()}
    marks = ", ".join("?" for _ in roles)
    rows = conn.execute(
        f"SELECT t_ns, name, labels, value FROM server_metrics WHERE name IN ({marks}) "
        "AND value IS NOT NULL ORDER BY t_ns, rowid",
        tuple(roles),
    )
    first = times[0]
    last: dict[tuple[str, str], float] = {}
    out: list[tuple[int, Scrape]] = []
    for t_ns, group in itertools.groupby(rows, key=lambda r: r[0]):
        gauges: dict[Role, list[float]] = defaultdict(list)
        growth: dict[Role, float] = defaultdict(float)
        for _, name, labels, value in group:
            role = roles[name]
            if role in GAUGES:
                gauges[role].append(value)
                continue
            before = last.get((name, labels), None if t_ns != first else value)
            growth[role] += value if before is None or value < before else value - before
            last[name, labels] = value
        scrape: Scrape = dict(growth)
        for role, values in gauges.items():
            scrape[role] = sum(values) if role in _SUMMED else sum(values) / len(values)
        out.append((t_ns, scrape))
    return out


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def _queries(figures: dict[Role, float], chosen: dict[Role, str]) -> float | None:
    """Prompt tokens looked up: the queries counter, else hits plus misses (llama.cpp)."""
    if Role.PREFIX_QUERIES in chosen:
        return figures.get(Role.PREFIX_QUERIES, 0.0)
    if Role.PREFIX_MISSES in chosen and Role.PREFIX_HITS in chosen:
        return figures.get(Role.PREFIX_HITS, 0.0) + figures.get(Role.PREFIX_MISSES, 0.0)
    return None


def _counted(figures: dict[Role, float], chosen: dict[Role, str], role: Role) -> float | None:
    """A counter's growth; None when the server does not export it."""
    return figures.get(role, 0.0) if role in chosen else None


def _growth(scrapes: list[Scrape]) -> dict[Role, float]:
    """Each counter's growth summed over `scrapes`."""
    sums: dict[Role, float] = defaultdict(float)
    for scrape in scrapes:
        for role, value in scrape.items():
            if role not in GAUGES:
                sums[role] += value
    return sums


def _cache_figures(growth: dict[Role, float], chosen: dict[Role, str]) -> dict[str, float | None]:
    """Prefix-cache hits and hit rates, preemptions and the external cache's hits and hit
    rate, from counter growth; None for what the server does not export. Keyword arguments
    of `Server` and `ServerSecond`, which both hold them."""
    hits = _counted(growth, chosen, Role.PREFIX_HITS)
    queries = _queries(growth, chosen)
    external = _counted(growth, chosen, Role.EXTERNAL_HITS)
    external_queries = _counted(growth, chosen, Role.EXTERNAL_QUERIES)
    return {
        "prefix_hits": hits,
        "prefix_queries": queries,
        "prefix_hit_rate": _ratio(hits, queries),
        "preemptions": _counted(growth, chosen, Role.PREEMPTIONS),
        "external_hits": external,
        "external_queries": external_queries,
        "external_hit_rate": _ratio(external, external_queries),
    }


def _mean(scrapes: list[Scrape], role: Role) -> float | None:
    values = [s[role] for s in scrapes if role in s]
    return sum(values) / len(values) if values else None


def _per_second(scrapes: list[tuple[int, Scrape]], chosen: dict[Role, str]) -> list[ServerSecond]:
    """One point per second that holds a scrape: gauges averaged over its scrapes, counter
    growth summed, hit rates as the ratio of the summed growth."""
    points = []
    for second, group in itertools.groupby(scrapes, key=lambda s: int(s[0] // S)):
        members = [scrape for _, scrape in group]
        points.append(
            ServerSecond(
                t=second,
                running=_mean(members, Role.RUNNING),
                waiting=_mean(members, Role.WAITING),
                kv_usage=_mean(members, Role.KV_USAGE),
                **_cache_figures(_growth(members), chosen),
            )
        )
    return points


def _gauge(scrapes: list[Scrape], role: Role) -> Gauge | None:
    """Mean and max of a gauge over the scrapes that have it; None when none has."""
    mean = _mean(scrapes, role)
    if mean is None:
        return None
    return Gauge(mean=mean, max=max(s[role] for s in scrapes if role in s))


def describe_server(conn: sqlite3.Connection) -> Server | None:
    """The run's server figures (summary.json `server`); None without a scrape that brought
    rows (scraping off, no /metrics, an events.db older than the table)."""
    if not _has_table(conn):
        return None
    times = [t for (t,) in conn.execute("SELECT DISTINCT t_ns FROM server_metrics ORDER BY 1")]
    if not times:
        return None
    present = {name for (name,) in conn.execute("SELECT DISTINCT name FROM server_metrics")}
    (rows,) = conn.execute("SELECT COUNT(*) FROM server_metrics").fetchone()
    chosen = choose(present)
    scrapes = _scrapes(conn, chosen, times) if chosen else []
    figures = [scrape for _, scrape in scrapes]
    gaps = [(b - a) / S for a, b in itertools.pairwise(times)]
    return Server(
        names=family(present),
        metrics={str(role): name for role, name in chosen.items()},
        scrapes=len(times),
        interval_s=statistics.median(gaps) if gaps else None,
        first_s=times[0] / S,
        last_s=times[-1] / S,
        rows_per_scrape=rows / len(times),
        running=_gauge(figures, Role.RUNNING),
        waiting=_gauge(figures, Role.WAITING),
        kv_usage=_gauge(figures, Role.KV_USAGE),
        **_cache_figures(_growth(figures), chosen),
        per_second=_per_second(scrapes, chosen),
    )

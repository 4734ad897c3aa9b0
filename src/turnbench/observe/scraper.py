"""Scrape the target's Prometheus /metrics at an interval while a run goes, into events.db.

Why in the coordinator, on its event loop: it owns the EventRecorder and the run's clock, so a
scrape becomes rows timed like every request row, with no process in between. Why cheap: with
one worker that loop also times the requests. A scrape is one GET on a kept-alive connection
(`fetch.fetch_text`), a line-by-line read (`prom_text`), label texts decoded once per run,
and a bounded number of rows (`MAX_SERIES`).

Why it never stops the run: the server's metrics explain the client's figures, they are not
the benchmark. A target without /metrics, or one whose scrape fails, is said once (a console
line and a notice in the report) and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

from turnbench.client.fetch import fetch_text
from turnbench.client.h1 import Pool
from turnbench.config import TargetConfig
from turnbench.observe.names import KNOWN
from turnbench.observe.prom_text import labels, samples
from turnbench.pacing.clock import RunClock
from turnbench.record.recorder import EventRecorder
from turnbench.record.schema import ServerMetricSample

MAX_SERIES = 500
"""Rows one scrape keeps at most: the series of known metrics (`names.KNOWN`) all, then the
others in the order the server wrote them. A label per session or per request would otherwise
grow every scrape with the run (the simulator's per-session counter does)."""
TIMEOUT_CAP_S = 5.0
"""A scrape's timeout is 0.8 × the interval, at most this: it ends before the next is due."""
GONE = frozenset({401, 403, 404, 405, 501})
"""HTTP statuses after which scraping stops: no later scrape of the URL would answer."""
_LABEL_TEXTS_KEPT = 20_000
NOTICE_KIND = "server_metrics_unavailable"


def metrics_url(api_root: str, configured: str | None) -> str:
    """The URL to scrape: `target.metrics_url` (a bare host:port/path gets http://), else the
    API root without its /v1, plus /metrics, where vLLM, SGLang, llama-server and TGI (and the
    built-in simulator) serve it."""
    if configured is not None:
        return configured if "://" in configured else "http://" + configured
    return api_root.rstrip("/").removesuffix("/v1") + "/metrics"


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


class Scraper:
    """Scrapes one URL every `interval_s` on the run's clock until closed."""

    def __init__(
        self,
        url: str,
        *,
        interval_s: float,
        clock: RunClock,
        recorder: EventRecorder,
        say: Callable[[str], None],
        headers: dict[str, str],
        verify_tls: bool,
        ca_pem: str | None,
    ) -> None:
        """`say`: prints the one console line when scraping fails; `headers`: sent with
        every scrape."""
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = min(0.8 * interval_s, TIMEOUT_CAP_S)
        self.clock = clock
        self.recorder = recorder
        self.say = say
        self.headers = headers
        self.pool = Pool(url, verify_tls=verify_tls, connect_s=self.timeout_s, ca_pem=ca_pem)
        self.scrapes = 0
        """Scrapes that brought rows."""
        self.failures = 0
        self.gone = False
        """True once the URL answered that it serves no metrics: scraping has stopped."""
        self._label_json: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Scrape now, then every interval, in a task of the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._every_interval())

    async def _every_interval(self) -> None:
        """Scrapes due on a grid of the interval from the run's start, so they do not drift;
        a due time already passed is skipped, not made up."""
        interval_ns = int(self.interval_s * 1e9)
        tick = 0
        while not self.gone:
            await self.clock.sleep_until(tick * interval_ns)
            await self.scrape()
            tick = max(tick + 1, -(-self.clock() // interval_ns))

    async def scrape(self) -> None:
        """One scrape: its rows to the recorder, or its failure counted (and said, the first)."""
        sent = self.clock()
        try:
            status, text = await fetch_text(
                self.pool, headers=self.headers, timeout_s=self.timeout_s
            )
        except TimeoutError:
            self._failed(f"no answer within {self.timeout_s:g} s", sent)
            return
        except OSError as err:
            why = " ".join(str(err).split()) or type(err).__name__
            self._failed(f"cannot fetch it: {why}", sent)
            return
        t_ns = (sent + self.clock()) // 2
        if status != 200:
            self._failed(f"it answered HTTP {status}", t_ns, gone=status in GONE)
            return
        rows = self._rows(text, t_ns)
        if not rows:
            self._failed("its answer holds no Prometheus sample", t_ns, gone=not self.scrapes)
            return
        for row in rows:
            self.recorder.record(row)
        self.scrapes += 1

    def _rows(self, text: str, t_ns: int) -> list[ServerMetricSample]:
        """The scrape's rows: every known series, then the others up to `MAX_SERIES` in all."""
        known: list[ServerMetricSample] = []
        other: list[ServerMetricSample] = []
        for sample in samples(text):
            is_known = sample.name in KNOWN
            if not is_known and len(other) >= MAX_SERIES:
                continue
            label_json = self._label_json.get(sample.labels)
            if label_json is None:
                try:
                    decoded = labels(sample.labels)
                except ValueError:
                    continue  # a line that is not a sample: skipped like a comment
                label_json = json.dumps(
                    decoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False
                )
                if len(self._label_json) < _LABEL_TEXTS_KEPT:
                    self._label_json[sample.labels] = label_json
            row = ServerMetricSample(t_ns, sample.name, label_json, sample.value)
            (known if is_known else other).append(row)
        return known + other[: max(0, MAX_SERIES - len(known))]

    def _failed(self, why: str, t_ns: int, *, gone: bool = False) -> None:
        """Count a failed scrape; the first is said on the console and kept as a notice."""
        self.failures += 1
        self.gone = gone
        if self.failures > 1:
            return
        then = (
            "server metrics are not recorded"
            if gone
            else "server metrics are not recorded while it fails; "
            f"tried again every {self.interval_s:g} s"
        )
        message = f"no server metrics from {self.url}: {why} ({then})"
        self.say(message)
        self.recorder.notice(NOTICE_KIND, message, t_ns, {"url": self.url, "error": why})

    async def close(self, *, final: bool) -> None:
        """Stop scraping; with `final`, scrape once more first, so that the counters' growth
        covers the whole run (the last requests end after the last scrape on the grid)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if final and not self.gone:
            await self.scrape()
        self.pool.close()


@contextlib.asynccontextmanager
async def scraping(
    target: TargetConfig,
    api_root: str,
    *,
    clock: RunClock,
    recorder: EventRecorder,
    say: Callable[[str], None],
    auth_headers: dict[str, str],
    ca_pem: str | None,
) -> AsyncIterator[Scraper | None]:
    """Scrape the target's /metrics while the body runs (None: `metrics_interval_s` is 0).

    Enter it when the run's clock starts. The target's headers and API key go with each
    scrape only when the metrics URL is on the API root's origin (scheme, host and port):
    a key is never sent to another server.
    """
    if target.metrics_interval_s <= 0:
        yield None
        return
    url = metrics_url(api_root, target.metrics_url)
    same_origin = _origin(url) == _origin(api_root)
    scraper = Scraper(
        url,
        interval_s=target.metrics_interval_s,
        clock=clock,
        recorder=recorder,
        say=say,
        headers={**target.headers, **auth_headers} if same_origin else {},
        verify_tls=target.verify_tls,
        ca_pem=ca_pem,
    )
    scraper.start()
    ended = False
    try:
        yield scraper
        ended = True
    finally:
        await scraper.close(final=ended)

"""Each per-request formula of the summary (docs/metrics.md) on a hand-built events.db whose
answers follow from its rows, read through the typed model as the report reads it; and
summary.json read back into the same model."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np
import pytest

from handmade import session_record, write_events_db
from turnbench.client.attempt import Attempt
from turnbench.metrics.model import Summary, load_summary, to_json
from turnbench.metrics.summary import summarize

MS = 1_000_000

# (session, turn, intended ms, sent ms, ttft ms, e2e ms, output tokens, chunk gaps ms,
#  prompt tokens, cached tokens, status)
ROWS = [
    ("a", 1, 0, 0, 100, 500, 5, [100, 100, 100, 100], 200, 0, "ok"),
    ("a", 2, 600, 650, 40, 240, 3, [100, 100], 400, 192, "ok"),
    ("b", 1, 100, 100, 200, 200, 1, [], 200, 0, "ok"),
    ("b", 2, 300, 300, None, 50, 0, [], None, None, "error"),
    ("c", 1, 200, 210, 60, 1060, 11, [100] * 10, 300, 100, "ok"),
]
"""Turn a/2 was sent 50 ms late; b/1 has one token (no TPOT); b/2 failed."""


def _db(path: Path) -> Path:
    attempts = []
    for sid, turn, intended, sent, ttft, e2e, out, gaps, prompt, cached, status in ROWS:
        sent_ns = (sent + 1) * MS  # t_sent_ns 0 marks an attempt never sent
        attempts.append(
            Attempt(
                stage="main",
                worker=0,
                session_id=sid,
                conversation_id=sid,
                turn_index=turn,
                attempt=1,
                t_intended_ns=(intended + 1) * MS,
                t_sent_ns=sent_ns,
                t_first_token_ns=None if ttft is None else sent_ns + ttft * MS,
                t_end_ns=sent_ns + e2e * MS,
                chunk_gaps=(np.array(gaps, dtype="<i8") * MS).tobytes(),
                content_chunks=len(gaps) + 1 if ttft is not None else 0,
                prompt_tokens=prompt,
                completion_tokens=out,
                cached_tokens=cached,
                status=status,
                error_kind=None if status == "ok" else "http_5xx",
            )
        )
    sessions = [session_record(sid, 0, 2_000 * MS, turns_planned=2) for sid in "abc"]
    return write_events_db(path, attempts, sessions)


@pytest.fixture
def summary(tmp_path: Path) -> Summary:
    return summarize(_db(tmp_path / "events.db"))


def _ok(column: int) -> list[float]:
    return [row[column] for row in ROWS if row[-1] == "ok"]


def test_latencies_are_taken_from_the_send_and_from_the_intended_send(summary: Summary) -> None:
    req = summary.requests
    assert req.ttft_ms.count == 4  # the failed attempt enters no latency
    assert req.ttft_ms.p50 == pytest.approx(np.percentile([100, 40, 200, 60], 50))
    assert req.ttft_ms.max == pytest.approx(200)
    assert req.e2e_ms.mean == pytest.approx(np.mean([500, 240, 200, 1060]))
    # a/2 was sent 50 ms after it was due, c/1 10 ms: from the intended send they are longer
    assert req.ttft_from_intended_ms.max == pytest.approx(200)
    assert req.ttft_from_intended_ms.min == pytest.approx(70)
    assert req.e2e_from_intended_ms.max == pytest.approx(1070)
    assert req.schedule_lag_ms.max == pytest.approx(50)


def test_tpot_leaves_out_single_token_replies_and_ntpot_counts_every_token(
    summary: Summary,
) -> None:
    # tpot = (e2e - ttft) / (tokens - 1): a (400/4), a/2 (200/2), c (1000/10); b/1 has 1 token
    tpot = [100.0, 100.0, 100.0]
    assert summary.requests.tpot_ms.count == len(tpot)
    assert summary.requests.tpot_ms.mean == pytest.approx(100.0)
    # ntpot = e2e / tokens: 100, 80, 200, 96.36
    ntpot = [500 / 5, 240 / 3, 200 / 1, 1060 / 11]
    assert summary.requests.ntpot_ms.count == 4
    assert summary.requests.ntpot_ms.p50 == pytest.approx(np.percentile(ntpot, 50))
    assert summary.requests.ntpot_ms.max == pytest.approx(200)


def test_itl_pools_every_chunk_gap_of_successful_attempts(summary: Summary) -> None:
    gaps = [g for row in ROWS if row[-1] == "ok" for g in row[7]]
    assert summary.requests.itl_ms.count == len(gaps) == 16
    assert summary.requests.itl_ms.p99 == pytest.approx(100)


def test_percentiles_are_exact_from_full_data(summary: Summary) -> None:
    prompt = _ok(8)
    dist = summary.requests.prompt_tokens
    for p in (50, 90, 95, 99):
        assert dist.at(f"p{p}") == pytest.approx(np.percentile(prompt, p))
    assert (dist.min, dist.max, dist.count) == (200, 400, 4)


def test_throughput_and_the_cached_ratio_are_over_the_measured_window(
    summary: Summary,
) -> None:
    # the window: from the first send (0 ms) to the last successful end (c/1 at 1270 ms)
    assert summary.requests.window_s == pytest.approx(1.270)
    out = sum(_ok(6))
    assert summary.requests.throughput.output_tokens_per_s == pytest.approx(out / 1.270)
    assert summary.requests.throughput.requests_per_s == pytest.approx(4 / 1.270)
    assert summary.requests.cached_token_ratio == pytest.approx(292 / 1100)
    assert (summary.requests.ok, summary.requests.failed) == (4, 1)
    assert summary.errors == {"http_5xx": 1}
    (turn1, turn2) = summary.per_turn
    assert (turn1.ok, turn1.failed, turn2.ok, turn2.failed) == (3, 0, 1, 1)
    assert turn2.cached_ratio == pytest.approx(192 / 400)


def test_summary_json_is_the_model_and_reads_back_into_it(summary: Summary, tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_bytes(to_json(summary))
    assert load_summary(path) == summary
    data = json.loads(path.read_text())
    assert data["requests"]["tpot_ms"]["mean"] == pytest.approx(100.0)
    data["requests"]["ttft_ms"]["p42"] = 1.0
    path.write_text(json.dumps(data))
    with pytest.raises(msgspec.ValidationError, match=r"p42.*\$\.requests\.ttft_ms"):
        load_summary(path)

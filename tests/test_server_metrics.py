"""Server metrics: the target's /metrics scraped into events.db during a run, and the report's
figures from those rows alone.

Real processes on 127.0.0.1: the simulator as a subprocess, and a small aiohttp server of
our own for targets whose /metrics is missing or broken. The parser is checked on hand-written
vLLM and llama.cpp bodies and, on generated ones, against prometheus_client's own parser.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from conftest import SimProcess
from runs import RunResult, run_bench
from turnbench.metrics.server import describe_server
from turnbench.observe.prom_text import labels, samples
from turnbench.observe.scraper import MAX_SERIES, metrics_url
from turnbench.record.recorder import connect

VLLM_BODY = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.4375
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.2288e+04
# HELP vllm:prefix_cache_hits_created Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_created gauge
vllm:prefix_cache_hits_created{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.7e+09
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="m"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 30.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 30.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 4.5
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 12.0
# HELP python_info Python platform information
# TYPE python_info gauge
python_info{implementation="CPython",major="3",minor="12",version="3.12.3"} 1.0
weird_label{path="C:\\\\tmp",quote="say \\"hi\\"",nl="a\\nb"} NaN
"""

LLAMA_CPP_BODY = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed, excluding cached tokens
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 15
# HELP llamacpp:prompt_tokens_cached_total Number of prompt tokens reused from the cache
# TYPE llamacpp:prompt_tokens_cached_total counter
llamacpp:prompt_tokens_cached_total 13
# HELP llamacpp:prompt_seconds_total Total time spent processing prompts
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 3.26648
# HELP llamacpp:requests_processing Number of requests processing
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 0
# HELP llamacpp:requests_deferred Number of requests deferred
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 0
"""


def _read(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, labels(s.labels), s.value) for s in samples(text)]


def test_parser_reads_a_vllm_body_without_buckets_or_created_series() -> None:
    got = _read(VLLM_BODY)
    names = [name for name, _, _ in got]
    assert names == [
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_hits_total",
        "vllm:time_to_first_token_seconds_count",
        "vllm:time_to_first_token_seconds_sum",
        "vllm:request_success_total",
        "python_info",
        "weird_label",
    ]
    assert got[0][1] == {"engine": "0", "model_name": "meta-llama/Llama-3.1-8B-Instruct"}
    assert got[0][2] == 7.0 and got[2][2] == 12288.0 and got[1][2] == 0.4375
    assert got[5][1]["finished_reason"] == "stop"
    _, escaped, value = got[-1]
    assert escaped == {"path": "C:\\tmp", "quote": 'say "hi"', "nl": "a\nb"}
    assert math.isnan(value)


def test_parser_reads_llama_server_metrics() -> None:
    assert [(n, v) for n, _, v in _read(LLAMA_CPP_BODY)] == [
        ("llamacpp:prompt_tokens_total", 15.0),
        ("llamacpp:prompt_tokens_cached_total", 13.0),
        ("llamacpp:prompt_seconds_total", 3.26648),
        ("llamacpp:requests_processing", 0.0),
        ("llamacpp:requests_deferred", 0.0),
    ]


def test_parser_skips_what_is_not_a_sample() -> None:
    text = 'ok 1\n\n  # a comment\nno_value\nbad_value{a="b"} x\nunclosed{a="b" 3\nok2 2 1700000\n'
    assert [(s.name, s.value) for s in samples(text)] == [("ok", 1.0), ("ok2", 2.0)]
    with pytest.raises(ValueError):
        labels('a="b" junk')


_NAME = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: not n.endswith(("_bucket", "_created", "_total", "_sum", "_count", "_info"))
)
_VALUE = st.floats(allow_nan=False, width=64) | st.integers(-(10**12), 10**12).map(float)
_LABELS = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(lambda n: n != "le"),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8),
    max_size=3,
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@given(st.dictionaries(_NAME, st.lists(st.tuples(_LABELS, _VALUE), min_size=1, max_size=3)))
def test_parser_agrees_with_prometheus_client(families: dict[str, Any]) -> None:
    lines = []
    for name, rows in families.items():
        lines.append(f"# TYPE {name} gauge")
        seen = set()
        for label_set, value in rows:
            key = tuple(sorted(label_set.items()))
            if key in seen:
                continue
            seen.add(key)
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in label_set.items())
            lines.append(f"{name}{{{inner}}} {value!r}" if inner else f"{name} {value!r}")
    text = "\n".join(lines) + "\n"
    theirs = [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]
    assert _read(text) == theirs


def test_metrics_url_is_beside_the_api_root() -> None:
    assert metrics_url("http://127.0.0.1:8000/v1", None) == "http://127.0.0.1:8000/metrics"
    assert metrics_url("http://127.0.0.1:8000/v1/", None) == "http://127.0.0.1:8000/metrics"
    assert metrics_url("https://h/api", None) == "https://h/api/metrics"
    assert metrics_url("http://h:1/v1", "h:9400/metrics") == "http://h:9400/metrics"


# --- figures from hand-built rows -------------------------------------------------------


def _db(tmp_path: Path, rows: list[tuple[float, str, dict[str, str], float | None]]) -> Path:
    path = tmp_path / "events.db"
    conn = connect(path)
    conn.executemany(
        "INSERT INTO server_metrics VALUES ('r', ?, ?, ?, ?)",
        [(int(t * 1e9), n, json.dumps(lab, sort_keys=True), v) for t, n, lab, v in rows],
    )
    conn.close()
    return path


def _describe(path: Path) -> dict[str, Any] | None:
    """The builder's `server` as summary.json holds it (plain JSON values)."""
    conn = sqlite3.connect(path)
    try:
        return msgspec.to_builtins(describe_server(conn))
    finally:
        conn.close()


def test_counter_growth_gauges_and_hit_rate_from_rows(tmp_path: Path) -> None:
    a, b = {"replica": "a"}, {"replica": "b"}
    rows: list[tuple[float, str, dict[str, str], float | None]] = []
    hits = "vllm:prefix_cache_hits_total"
    queries = "vllm:prefix_cache_queries_total"
    for t, (ha, qa, hb, qb, run_a, run_b, kv_a, kv_b) in zip(
        (0.1, 1.1, 2.1, 3.1),
        (
            (500, 1000, 0, 0, 0, 0, 0.1, 0.3),  # the server's past: the baseline
            (600, 1200, 50, 100, 2, 3, 0.2, 0.4),
            (40, 80, 150, 200, 4, 1, 0.5, None),  # replica a restarted its counters
            (100, 160, 150, 200, 0, 0, 0.0, 0.0),
        ),
        strict=True,
    ):
        rows += [
            (t, hits, a, ha),
            (t, queries, a, qa),
            (t, hits, b, hb),
            (t, queries, b, qb),
            (t, "vllm:num_requests_running", a, run_a),
            (t, "vllm:num_requests_running", b, run_b),
            (t, "vllm:kv_cache_usage_perc", a, kv_a),
            (t, "vllm:kv_cache_usage_perc", b, kv_b),
            (t, "vllm:gpu_cache_usage_perc", a, 0.99),  # the old spelling: not read
            (t, "something_else", {}, 1.0),
        ]
    rows.append((3.1, "vllm:num_preemptions_total", {}, 2.0))  # appeared during the run
    server = _describe(_db(tmp_path, rows))
    assert server is not None
    assert server["names"] == "vLLM" and server["scrapes"] == 4
    assert server["metrics"]["kv_usage"] == "vllm:kv_cache_usage_perc"
    assert server["interval_s"] == pytest.approx(1.0)
    # growth: a 100+40+60, b 50+100+0 hits; a 200+80+80, b 100+100+0 queries
    assert server["prefix_hits"] == 350 and server["prefix_queries"] == 560
    assert server["prefix_hit_rate"] == pytest.approx(350 / 560)
    assert server["preemptions"] == 2
    assert server["running"] == {"mean": pytest.approx(2.5), "max": 5}
    assert server["kv_usage"]["max"] == pytest.approx(0.5)  # NULL skipped, not 0
    assert server["waiting"] is None and server["external_hits"] is None
    first, second, *_ = server["per_second"]
    assert first["t"] == 0 and first["prefix_hits"] == 0 and first["prefix_hit_rate"] is None
    assert second["t"] == 1 and second["prefix_hit_rate"] == pytest.approx(150 / 300)
    assert second["kv_usage"] == pytest.approx(0.3)
    assert server["rows_per_scrape"] == pytest.approx(41 / 4)


def test_llama_cpp_hit_rate_from_hits_and_misses(tmp_path: Path) -> None:
    rows: list[tuple[float, str, dict[str, str], float | None]] = [
        (0.0, "llamacpp:prompt_tokens_cached_total", {}, 10),
        (0.0, "llamacpp:prompt_tokens_total", {}, 90),
        (1.0, "llamacpp:prompt_tokens_cached_total", {}, 70),
        (1.0, "llamacpp:prompt_tokens_total", {}, 110),
    ]
    server = _describe(_db(tmp_path, rows))
    assert server is not None and server["names"] == "llama.cpp"
    assert server["prefix_queries"] == 80 and server["prefix_hit_rate"] == pytest.approx(0.75)
    assert server["kv_usage"] is None and server["preemptions"] is None


def test_no_rows_and_old_files_give_no_server_figures(tmp_path: Path) -> None:
    assert _describe(_db(tmp_path, [])) is None
    old = tmp_path / "old.db"
    sqlite3.connect(old).close()
    assert _describe(old) is None


# --- runs against the simulator ---------------------------------------------------------


def _config(url: str, **target: Any) -> dict[str, Any]:
    return {
        "name": "scraped",
        "target": {"url": url, **target},
        "workload": {"type": "synthetic", "turns": 3, "input_tokens": 30, "output_tokens": 20},
        "session": {"ignore_eos": True},
        "load": {"mode": "users", "users": 6, "duration_s": 2.5},
    }


def test_a_run_against_the_simulator_records_its_metrics_on_the_run_clock(
    tmp_path: Path, sim_factory: Any
) -> None:
    sim: SimProcess = sim_factory("--set", "max_num_seqs=2")
    result = run_bench(tmp_path, _config(sim.url, metrics_interval_s=0.5))
    times = [r["t_ns"] for r in result.rows("SELECT DISTINCT t_ns FROM server_metrics")]
    (last_end,) = result.rows("SELECT MAX(t_end_ns) FROM requests")[0]
    assert len(times) >= 5
    assert all(0 <= t <= last_end + 0.5e9 for t in times)
    assert max(times) > last_end  # the last scrape comes after the last request
    (rows_per_scrape,) = result.rows(
        "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM server_metrics GROUP BY t_ns)"
    )[0]
    assert rows_per_scrape <= MAX_SERIES
    assert not result.rows("SELECT 1 FROM server_metrics WHERE name LIKE '%_bucket'")
    # the simulator was fresh: its counters at the end are this run's requests, exactly
    cached, prompt = result.rows(
        "SELECT SUM(cached_tokens), SUM(prompt_tokens) FROM requests WHERE status = 'ok'"
    )[0]
    final = dict(
        result.rows(
            "SELECT name, value FROM server_metrics WHERE t_ns = ? AND name IN "
            "('vllm:prefix_cache_hits_total', 'vllm:prefix_cache_queries_total')",
            max(times),
        )
    )
    assert final == {
        "vllm:prefix_cache_hits_total": cached,
        "vllm:prefix_cache_queries_total": prompt,
    }
    server = result.summary["server"]
    assert server["names"] == "turnbench sim, vLLM names"
    assert 0 < server["prefix_hits"] <= cached and 0 < server["prefix_queries"] <= prompt
    assert 0 < server["prefix_hit_rate"] < 1
    assert server["running"]["max"] == 2  # never above max_num_seqs
    assert server["waiting"]["max"] > 0  # 6 users for 2 places
    assert 0 < server["kv_usage"]["max"] <= 1
    assert server["preemptions"] is None  # the simulator does not preempt
    assert [p["t"] for p in server["per_second"]] == sorted({int(t // 1e9) for t in times})
    assert "Server (from /metrics: turnbench sim, vLLM names)" in result.output
    assert "note:" not in result.output
    html = (result.path / "report.html").read_text()
    # the server's panels, on the client's time axis (their titles are in Bokeh's JSON)
    assert "Server: requests running and waiting" in html
    assert "Server: KV cache and prefix cache" in html
    resolved = (result.path / "config.yaml").read_text()
    assert f"metrics_url: {sim.url}/metrics" in resolved


def test_no_server_metrics_flag_records_none(tmp_path: Path, fast_sim: SimProcess) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable, "-m", "turnbench", "run", "--target", fast_sim.url,
            "--no-server-metrics", "--max-requests", "6", "--out", str(out),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = list(out.iterdir())
    result = RunResult(run_dir, proc.stdout)
    assert result.rows("SELECT COUNT(*) FROM server_metrics")[0][0] == 0
    assert result.summary["server"] is None
    assert "Server (from /metrics" not in proc.stdout and "note:" not in proc.stdout


# --- targets whose /metrics is missing or broken ----------------------------------------


class BareServer:
    """An OpenAI-compatible chat server of a few lines, whose /metrics answers `status`;
    it keeps the Authorization header of every /metrics request."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.metrics_auth: list[str | None] = []
        self.url = ""

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bare"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await reply.prepare(request)
        for choice in ({"delta": {"content": "hi"}}, {"delta": {}, "finish_reason": "stop"}):
            chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, **choice}]}
            await reply.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
        await reply.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await reply.write(b"data: [DONE]\n\n")
        return reply

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metrics_auth.append(request.headers.get("Authorization"))
        return web.Response(status=self.status, text="up 1\n")

    def serve(self) -> Iterator[BareServer]:
        """Serve on a free 127.0.0.1 port in a thread of its own until the generator ends."""
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.run_until_complete(runner.cleanup())
            loop.close()


@pytest.fixture
def bare(request: pytest.FixtureRequest) -> Iterator[BareServer]:
    yield from BareServer(getattr(request, "param", 200)).serve()


def _notices(result: RunResult) -> list[sqlite3.Row]:
    return result.rows("SELECT kind, message, data_json FROM notices")


@pytest.mark.parametrize(
    ("bare", "stops"), [(404, True), (503, False)], indirect=["bare"], ids=["404", "503"]
)
def test_a_target_whose_metrics_fail_is_noted_once_and_the_run_goes_on(
    tmp_path: Path, bare: BareServer, stops: bool
) -> None:
    result = run_bench(tmp_path, _config(bare.url, metrics_interval_s=0.2))
    assert result.summary["requests"]["ok"] > 0
    assert result.summary["run"]["end_reason"] == "duration"
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert notes == [
        f"note: no server metrics from {bare.url}/metrics: it answered HTTP {bare.status} "
        + (
            "(server metrics are not recorded)"
            if stops
            else "(server metrics are not recorded while it fails; tried again every 0.2 s)"
        )
    ]
    ((kind, message, data),) = _notices(result)
    assert kind == "server_metrics_unavailable" and notes[0] == f"note: {message}"
    why = f"it answered HTTP {bare.status}"
    assert json.loads(data) == {"url": f"{bare.url}/metrics", "error": why}
    assert f"notice: {message}" in result.output  # the report says it again, last
    assert result.summary["server"] is None
    assert (len(bare.metrics_auth) == 1) is stops  # a 404 is asked once; a 503 every interval
    assert len(bare.metrics_auth) >= (1 if stops else 8)


def test_the_api_key_goes_only_to_metrics_on_the_api_origin(
    tmp_path: Path, bare: BareServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TURNBENCH_METRICS_KEY", "sk-metrics-7d2e")
    config = _config(bare.url, api_key_env="TURNBENCH_METRICS_KEY", metrics_interval_s=0.5)
    config["load"] = {"mode": "users", "users": 1, "sessions": 1}
    result = run_bench(tmp_path / "same", config)
    assert result.summary["server"]["names"] is None  # `up`: not a server turnbench knows
    assert set(bare.metrics_auth) == {"Bearer sk-metrics-7d2e"}
    bare.metrics_auth.clear()
    other_origin = bare.url.replace("127.0.0.1", "localhost") + "/metrics"
    config["target"]["metrics_url"] = other_origin
    result = run_bench(tmp_path / "other", config)
    assert result.summary["server"]["scrapes"] >= 1
    assert bare.metrics_auth and set(bare.metrics_auth) == {None}

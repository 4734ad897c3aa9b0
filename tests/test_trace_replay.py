"""Trace replay against the simulator: the cached tokens it reports per request are what the
trace's hash ids imply. Plus the CLI: a trace replay and a shared-prefix run exit 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from runs import RunResult, run_bench

TRACE = Path("/work/shared/data/mooncake_conversation_trace_head.jsonl")
BLOCK = 512
"""The trace's tokens per hash id."""
SIM_BLOCK = 16
"""The simulator's KV block: it caches and matches whole blocks of 16 tokens."""
TEMPLATE_HEAD = 3
"""`<|im_start|>user` precedes the user content (the trace has no system prompt), then the
run's salt word (`cache.salt`), the same in every conversation of the run."""
TEMPLATE_TAIL = 3
"""`<|im_end|>`, then the generation prompt `<|im_start|>assistant`."""
SIM_ARGS = ["--zero-delay", "--kv-cache-tokens", "20000000", "--max-model-len", "200000"]


def _head(src: Path, n: int, dst: Path) -> Path:
    dst.write_text("".join(src.read_text().splitlines(keepends=True)[:n]))
    return dst


def _block_len(req: dict[str, Any], i: int) -> int:
    """Tokens of block i in the request's content (the last block is cut)."""
    return min(BLOCK, req["input_length"] - BLOCK * i)


def common_content(a: dict[str, Any], b: dict[str, Any]) -> int:
    """Leading content tokens two requests share: their common leading run of hash ids, each
    block counted at the shorter of its two lengths, stopping after a cut (partial) block."""
    n = 0
    for i, (ha, hb) in enumerate(zip(a["hash_ids"], b["hash_ids"], strict=False)):
        if ha != hb:
            break
        la, lb = _block_len(a, i), _block_len(b, i)
        n += min(la, lb)
        if la != lb or la < BLOCK:
            break
    return n


def expected_cached(a: dict[str, Any], b: dict[str, Any]) -> int:
    """Tokens of b's prompt the simulator finds cached if a's prompt (and reply) is cached:

        common = 2 + common_content(a, b)        (the whole prompt if a and b are identical)
        cached = 16 * floor(min(common, n_b - 1) / 16),    n_b = 2 + input_length_b + 3

    Whole 16-token blocks only, and never the prompt's last token (as vLLM).
    """
    n_b = TEMPLATE_HEAD + b["input_length"] + TEMPLATE_TAIL
    same = a["hash_ids"] == b["hash_ids"] and a["input_length"] == b["input_length"]
    common = n_b if same else TEMPLATE_HEAD + common_content(a, b)
    return SIM_BLOCK * (min(common, n_b - 1) // SIM_BLOCK)


def _check_cached_tokens(result: RunResult, trace: Path) -> tuple[int, int]:
    """For each request b: max over requests a whose first token came before b was sent
    (a's prompt was cached by then) <= cached(b) <= max over requests a sent before b's first
    token (a might have been cached by b's lookup). Returns (requests, requests with hits)."""
    reqs = {i + 1: json.loads(line) for i, line in enumerate(trace.read_text().splitlines())}
    rows = result.attempts
    assert rows and all(r["status"] == "ok" for r in rows)
    assert len(rows) == len(reqs)
    hits = 0
    for b in rows:
        line = int(b["conversation_id"].removeprefix("req-"))
        rb = reqs[line]
        assert b["prompt_tokens"] == TEMPLATE_HEAD + rb["input_length"] + TEMPLATE_TAIL
        low = high = 0
        for a in rows:
            if a is b:
                continue
            exp = expected_cached(reqs[int(a["conversation_id"].removeprefix("req-"))], rb)
            if a["t_first_token_ns"] < b["t_sent_ns"]:
                low = max(low, exp)
            if a["t_sent_ns"] < b["t_first_token_ns"]:
                high = max(high, exp)
        assert low <= b["cached_tokens"] <= high, (line, low, b["cached_tokens"], high)
        hits += b["cached_tokens"] > 0
    return len(rows), hits


def test_trace_replay_cached_tokens_match_the_hash_ids(tmp_path: Path) -> None:
    trace = _head(TRACE, 60, tmp_path / "trace.jsonl")
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": SIM_ARGS},
            "workload": {
                "type": "dataset",
                "path": str(trace),
                "format": "trace",
                "trace": {"block_size": BLOCK, "time_scale": 0.02},
            },
            "load": {"mode": "session-rate", "arrival": "trace"},
        },
    )
    n, hits = _check_cached_tokens(result, trace)
    assert n == 60 and hits >= 20
    starts = [r["t_intended_ns"] for r in sorted(result.attempts, key=lambda r: r["t_sent_ns"])]
    assert starts == sorted(starts) and starts[-1] > 0.2e9  # recorded times, scaled by 0.02


def _tb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "turnbench", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def _only_run(out: Path) -> RunResult:
    [path] = list(out.iterdir())
    return RunResult(path, "")


def test_cli_trace_replay(tmp_path: Path) -> None:
    trace = _head(TRACE, 30, tmp_path / "trace.jsonl")
    out = tmp_path / "runs"
    proc = _tb(
        "run",
        "--dataset",
        str(trace),
        "--dataset-format",
        "trace",
        "--mode",
        "session-rate",
        "--set",
        "load.arrival=trace",
        "--set",
        "load.time_scale=0.01",
        "--set",
        f"target.sim_args={json.dumps(SIM_ARGS)}",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = _only_run(out)
    n, hits = _check_cached_tokens(result, trace)
    assert n == 30 and hits > 0
    assert result.summary["length_source"] == "simulator-exact"


def test_cli_shared_prefix_keeps_each_groups_system_prompt_cached(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = _tb(
        "run",
        "--shared-prefix",
        "2:3",
        "--mode",
        "parallel",
        "--set",
        'target.sim_args=["--zero-delay"]',
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = _only_run(out)
    system_len = result.summary["config"]["workload"]["system_prompt_len"]
    rows = result.attempts
    assert len(rows) == 6 and len({r["conversation_id"] for r in rows}) == 2
    for r in rows:
        assert r["status"] == "ok"
        if r["turn_index"] >= 2:  # turn_index is 1-based
            # the system message (content + 3 template tokens) is cached, whole blocks only
            assert r["cached_tokens"] >= SIM_BLOCK * ((system_len + 3) // SIM_BLOCK)

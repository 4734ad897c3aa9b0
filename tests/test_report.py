"""The report: the verdict on who held the load back, and escaping of server text."""

from __future__ import annotations

from pathlib import Path

from runs import run_bench


def test_a_cap_holding_requests_back_is_called_capacity_bound(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--decode-ms-base", "5", "--ttft-base-ms", "5"]},
            "workload": {
                "type": "synthetic",
                "conversations": 6,
                "turns": 2,
                "input_tokens": 10,
                "output_tokens": 10,
            },
            "session": {"ignore_eos": True},
            "load": {"mode": "parallel", "max_in_flight": 1},
        },
    )
    verdict = result.summary["verdict"]
    assert verdict["capacity_bound"] and not verdict["client_bound"]
    assert "capacity-bound" in result.output
    req = result.summary["requests"]
    # from the intended send, latency includes the wait for the cap
    assert req["e2e_from_intended_ms"]["p99"] > req["e2e_ms"]["p99"] + 50


def test_an_unhurried_run_gets_no_warning(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--zero-delay"]},
            "workload": {
                "type": "synthetic",
                "conversations": 3,
                "turns": 2,
                "input_tokens": 5,
                "output_tokens": 5,
            },
            "load": {"mode": "sequential"},
        },
    )
    verdict = result.summary["verdict"]
    assert not verdict["capacity_bound"] and not verdict["client_bound"]
    assert "warning" not in result.output


def test_server_text_is_escaped_on_the_console(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--zero-delay", "--model", "[bold red]evil[/]"]},
            "workload": {
                "type": "synthetic",
                "conversations": 1,
                "turns": 1,
                "input_tokens": 5,
                "output_tokens": 5,
            },
            "load": {"mode": "sequential"},
        },
    )
    assert "[bold red]evil[/]" in result.output


def test_html_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    hostile = "<script>alert(1)</script>"
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--model", hostile, "--decode-ms-base", "2"]},
            "workload": {
                "type": "synthetic",
                "conversations": 4,
                "turns": 3,
                "input_tokens": 8,
                "output_tokens": 6,
            },
            "load": {"mode": "parallel"},
        },
    )
    page = (result.path / "report.html").read_text()
    assert hostile not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # the fifth: the server's /metrics; the sixth: the prefix cache, ideal against realised
    assert page.count("data:image/png;base64,") == 6
    scraped = result.summary["config"]["resolved"]["metrics_url"]
    shown = page.replace(result.summary["run"]["target"], "").replace(scraped, "")
    assert "http://" not in shown  # nothing fetched
    for heading in ("Per request", "Per turn", "Per conversation", "Plots"):
        assert heading in page

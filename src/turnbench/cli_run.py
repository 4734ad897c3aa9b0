"""`turnbench run`, declared on the app of `cli.py` when that command is wanted (or the whole
list of commands, for `--help`).

Why apart from `cli.py`: its forty flags are declared only when `run` is wanted; the defaults
their help shows come from the run's config models, imported only when that help is shown or
the run starts, and the run's own modules only when it runs.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import typer

from turnbench.cli import app
from turnbench.cli_format import Command, fail, flag_error
from turnbench.entry import INTERRUPTED_EXIT
from turnbench.errors import InputError
from turnbench.slo import FLAG_HELP as SLO_HELP

_DEFAULT_OF: dict[str, str] = {}
"""The help texts of `_help`, each with the config key whose default it shows."""


def _help(text: str, key: str) -> str:
    """A flag's help, to be shown with the default its config key takes when neither flag nor
    file sets it.

    Why from the model: the flags default to None (a config file's value must win over an
    unset flag), so typer alone would show no default; the pydantic field holds the truth.
    Why only when shown (`RunCommand`): importing the config models would cost every command
    that declares `run` without showing its flags (`turnbench --help` lists it) their time.
    """
    _DEFAULT_OF[text] = key
    return text


@functools.cache
def _with_default(text: str, key: str) -> str:
    """`text` followed by the default of config `key` (`text` alone when that is None)."""
    from turnbench.config import RunConfig

    model: Any = RunConfig
    *sections, name = key.split(".")
    for section in sections:
        info = model.model_fields[section]
        # a tagged union (load:) shows its default model's defaults
        model = info.annotation
        if not hasattr(model, "model_fields"):
            model = type(info.get_default(call_default_factory=True))
    field = model.model_fields[name]
    default = field.get_default(call_default_factory=True)
    if default is None:
        return text
    shown = "on" if default is True else "off" if default is False else default
    return rf"{text} \[default: {shown}]"  # escaped: the help is rich markup


class RunCommand(Command):
    """`run`: the flags of `_help` show their defaults once the command's flags are read."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            key = _DEFAULT_OF.get(getattr(param, "help", None) or "")
            if key is not None:
                param.help = _with_default(param.help, key)
        return params


# Each single-value flag of `turnbench run` and the config key it sets (the flag wins).
_FLAG_KEYS = {
    "--target": "target.url",
    "--model": "target.model",
    "--api": "target.api",
    "--api-key-env": "target.api_key_env",
    "--name": "name",
    "--duration": "load.duration_s",
    "--mode": "load.mode",
    "--sessions": "load.sessions",
    "--rate": "load.rate",
    "--users": "load.users",
    "--max-requests": "load.max_requests",
    "--max-in-flight": "load.max_in_flight",
    "--history": "session.history",
    "--seed": "seed",
    "--turns": "workload.turns",
    "--messages-key": "workload.messages.messages_key",
    "--workers": "engine.workers",
    "--engine": "engine.kind",
    "--ray-address": "engine.ray_address",
    "--insecure": "target.verify_tls",
    "--ca-bundle": "target.ca_bundle",
    "--metrics-url": "target.metrics_url",
    "--no-server-metrics": "target.metrics_interval_s",
    "--block-size": "cache.block_size",
    "--no-cache-salt": "cache.salt",
}


@app.command("run", cls=RunCommand)
def run_command(
    config: Path | None = typer.Argument(
        None, help="YAML config (see examples/).", show_default=False
    ),
    target: str | None = typer.Option(
        None,
        "--target",
        metavar="URL",
        help="Server URL: a bare host (http://127.0.0.1:8000, localhost:8000) or the API root "
        "(.../v1); unset: the built-in simulator.",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help=_help("Model name, or auto (the first of /v1/models).", "target.model"),
    ),
    api: str | None = typer.Option(
        None,
        "--api",
        help=_help("chat, completions, responses or anthropic (docs/apis.md).", "target.api"),
    ),
    name: str | None = typer.Option(
        None, "--name", help=_help("Run name, part of the run folder's name.", "name")
    ),
    out: Path | None = typer.Option(
        None, "--out", help=_help("Folder that receives the run folder.", "out_dir")
    ),
    duration: float | None = typer.Option(
        None,
        "--duration",
        metavar="SECONDS",
        help="Seconds before arrivals stop; unset: the workload or another limit ends the run.",
    ),
    mode: str | None = typer.Option(
        None,
        "--mode",
        help=_help(
            "parallel, sequential, session-rate (open loop) or users (closed loop).", "load.mode"
        ),
    ),
    sessions: int | None = typer.Option(
        None,
        "--sessions",
        help="Sessions to play in all; unset with an endless workload and no other limit: 100.",
    ),
    rate: float | None = typer.Option(
        None, "--rate", help="session-rate: sessions per second (needed by that mode)."
    ),
    users: int | None = typer.Option(
        None, "--users", help=_help("users: concurrent users.", "load.users")
    ),
    max_requests: int | None = typer.Option(
        None, "--max-requests", help="Stop after this many requests."
    ),
    turns: int | None = typer.Option(
        None, "--turns", help=r"Synthetic workload: turns per conversation. \[default: 5]"
    ),
    max_in_flight: int | None = typer.Option(
        None, "--max-in-flight", help="Cap on concurrent requests; unset: no cap."
    ),
    history: str | None = typer.Option(
        None,
        "--history",
        help=_help(
            "live (the server's replies) or dataset (the recorded ones).", "session.history"
        ),
    ),
    seed: int | None = typer.Option(
        None, "--seed", help=_help("Seed of every random choice.", "seed")
    ),
    api_key_env: str | None = typer.Option(
        None,
        "--api-key-env",
        metavar="VAR",
        help=_help("Environment variable holding the API key.", "target.api_key_env"),
    ),
    dataset: Path | None = typer.Option(
        None, "--dataset", help="Play conversations from this file (or folder of files)."
    ),
    dataset_format: str = typer.Option(
        "auto",
        "--dataset-format",
        help="sharegpt, rows, messages, aiperf, trace, weka or auto.",
    ),
    messages_key: str | None = typer.Option(
        None,
        "--messages-key",
        metavar="KEY",
        help=r"Dataset records' key holding the messages list (e.g. traj). \[default: "
        "the one key that holds one]",
    ),
    shared_prefix: str | None = typer.Option(
        None, "--shared-prefix", help="GROUPS:PROMPTS_PER_GROUP shared-prefix user sessions."
    ),
    agent: str | None = typer.Option(
        None,
        "--agent",
        metavar="STEPS[:FAN_OUT[:DEPTH]]",
        help="Synthetic agents: STEPS tool steps each, FAN_OUT sub-agents started at once "
        "(DEPTH levels of them); the rest from workload.* (docs/agents.md).",
    ),
    workers: str | None = typer.Option(
        None,
        "--workers",
        help=_help("Worker processes (or Ray actors): a number or auto.", "engine.workers"),
    ),
    engine: str | None = typer.Option(None, "--engine", help=_help("local or ray.", "engine.kind")),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="ray: auto, or ray://host:10001; unset: a local Ray."
    ),
    insecure: bool = typer.Option(
        False, "--insecure", help="Do not verify TLS certificates (a warning is printed)."
    ),
    ca_bundle: Path | None = typer.Option(
        None,
        "--ca-bundle",
        metavar="FILE",
        help="PEM file of the CAs to trust instead of the system's (a private CA).",
    ),
    metrics_url: str | None = typer.Option(
        None,
        "--metrics-url",
        metavar="URL",
        help="The server's Prometheus metrics, scraped during the run; unset: the API root "
        "without /v1, plus /metrics.",
    ),
    no_server_metrics: bool = typer.Option(
        False, "--no-server-metrics", help="Do not scrape the server's /metrics."
    ),
    block_size: int | None = typer.Option(
        None,
        "--block-size",
        metavar="TOKENS",
        help=_help(
            "The server's KV-cache block size, the unit of the ideal cached prefix.",
            "cache.block_size",
        ),
    ),
    no_cache_salt: bool = typer.Option(
        False,
        "--no-cache-salt",
        help="Send conversations unsalted: an earlier run's prefixes may then be found in the "
        "server's cache (the report warns when first requests find them).",
    ),
    slo: list[str] = typer.Option([], "--slo", metavar="SLO", help=SLO_HELP, show_default=False),
    sets: list[str] = typer.Option(
        [],
        "--set",
        metavar="KEY=VALUE",
        help="Override any config key: dotted.key=value (repeatable).",
        show_default=False,
    ),
    live: bool = typer.Option(True, "--live/--no-live", help="Show live progress."),
) -> None:
    """Run a multi-turn benchmark and write runs/<timestamp>-<name>/."""
    from turnbench.config_load import load_config
    from turnbench.errors import EngineError, TargetError
    from turnbench.run import execute
    from turnbench.slo import with_flags

    flags: dict[str, object] = {
        "--target": target,
        "--model": model,
        "--api": api,
        "--api-key-env": api_key_env,
        "--name": name,
        "--duration": duration,
        "--mode": mode,
        "--sessions": sessions,
        "--rate": rate,
        "--users": users,
        "--max-requests": max_requests,
        "--max-in-flight": max_in_flight,
        "--history": history,
        "--seed": seed,
        "--turns": turns,
        "--messages-key": messages_key,
        "--workers": int(workers) if workers and workers.isdigit() else workers,
        "--engine": engine,
        "--ray-address": ray_address,
        "--insecure": False if insecure else None,
        "--ca-bundle": str(ca_bundle.resolve()) if ca_bundle else None,
        "--metrics-url": metrics_url,
        "--no-server-metrics": 0.0 if no_server_metrics else None,
        "--block-size": block_size,
        "--no-cache-salt": False if no_cache_salt else None,
    }
    overrides: dict[str, object] = {_FLAG_KEYS[flag]: value for flag, value in flags.items()}
    if dataset is not None:
        overrides["workload"] = {
            "type": "dataset",
            "path": str(dataset.resolve()),
            "format": dataset_format,
        }
    if shared_prefix is not None:
        groups, _, per_group = shared_prefix.partition(":")
        if not (groups.isdigit() and per_group.isdigit()):
            raise fail(f"--shared-prefix expects GROUPS:PROMPTS_PER_GROUP, got {shared_prefix!r}")
        overrides["workload"] = {
            "type": "shared_prefix",
            "num_groups": int(groups),
            "prompts_per_group": int(per_group),
            "as_sessions": True,
        }
    if agent is not None:
        overrides["workload"] = _agent_workload(agent)
    given = {key: flag for flag, key in _FLAG_KEYS.items() if flags[flag] is not None}
    try:
        cfg = load_config(config, overrides, sets)
        cfg.slo = with_flags(cfg.slo, slo)
        base_dir = config.resolve().parent if config else Path.cwd()
        folder = execute(cfg, base_dir=base_dir, out=out, live=live and sys.stdout.isatty())
    except InputError as e:
        raise fail(flag_error(e, given)) from None
    except (TargetError, EngineError) as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:  # before the run began (probe, dataset); after it, a report
        raise fail(
            "interrupted before the run started; nothing was written", INTERRUPTED_EXIT
        ) from None
    reason = _end_reason(folder)
    if reason == "target_unreachable":
        raise typer.Exit(1)  # the report of what ran is written; a script must still see it
    if reason == "interrupted":
        raise typer.Exit(INTERRUPTED_EXIT)  # reported, as capacity and sweep are: still 130


def _agent_workload(spec: str) -> dict[str, object]:
    """The `workload:` section of `--agent STEPS[:FAN_OUT[:DEPTH]]`."""
    parts = spec.split(":")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts) or parts[2:] == ["0"]:
        raise fail(f"--agent expects STEPS[:FAN_OUT[:DEPTH]] (whole numbers), got {spec!r}")
    workload: dict[str, object] = {"type": "synthetic_agent", "steps": int(parts[0])}
    if len(parts) > 1:
        subagents: dict[str, object] = {"fan_out": int(parts[1])}
        if len(parts) > 2:
            subagents["depth"] = int(parts[2])
        workload["subagents"] = subagents
    return workload


def _end_reason(folder: Path) -> str | None:
    """The run's `end_reason` from its summary.json (None when there is none)."""
    import msgspec

    from turnbench.metrics.model import load_summary

    try:
        return load_summary(folder / "summary.json").run.end_reason
    except (OSError, msgspec.DecodeError):
        return None

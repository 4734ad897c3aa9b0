"""How every command's `--help` and errors look: one form across `run`, `report`, `sim`, `dataset`.

Why its own module: the commands live in three modules (`cli`, `sim.cli`, `workload.cli`) and
each must show switches without a value marker and fail with the same one line, `error: ...`,
exit code 2, whether the mistake is caught by click (an unknown flag) or by turnbench.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from turnbench.errors import InputError

USAGE_EXIT = 2


def _mark_switches(params: list[Any]) -> list[Any]:
    """A switch (`--insecure`, `--help`) takes no value: show no `<bool>` after it."""
    for param in params:
        if getattr(param, "param_type_name", None) == "option" and param.is_flag:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A typer command whose switches show no value marker in `--help`."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _mark_switches(super().get_params(ctx))


class Group(TyperGroup):
    """A typer group whose switches show no value marker in `--help`."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _mark_switches(super().get_params(ctx))


def fail(message: str, code: int = USAGE_EXIT) -> typer.Exit:
    """Print a user error on one line to stderr; the caller raises the returned exit (code 2
    unless told)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def run_app(app: typer.Typer, args: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; typer's own usage errors (an unknown flag, a bad
    value, a missing argument) become the same one line as every other error.

    Why not typer's standalone mode: it prints a usage block and a boxed panel over several
    lines, a different form from turnbench's own errors.
    """
    try:
        result: Any = app(args=args, standalone_mode=False)
    except typer.TyperException as e:
        ctx = getattr(e, "ctx", None)  # usage errors know the command they belong to
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
            return 0
        where = f"{ctx.command_path}: " if ctx is not None else ""
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        message = " ".join(e.format_message().split())
        typer.echo(f"error: {where}{message}{hint}", err=True)
        return USAGE_EXIT
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 130
    return result if isinstance(result, int) else 0


def flag_error(err: InputError, given: dict[str, str]) -> str:
    """An error about a key a flag set names the flag, not `<flags> [key]`."""
    field = err.field or ""
    flag = next(
        (f for key, f in given.items() if key == field or key.startswith(field + ".")), None
    )
    if flag is None or not field:
        return str(err)
    source = f"{err.file}: " if err.file not in (None, "<flags>") else ""
    if err.message == "unknown key":
        return f"{source}{flag} does not apply to this workload ({field} is not one of its keys)"
    return f"{source}{flag} ({field}): {err.message}"


SERIES_FLAG_KEYS = {
    "--target": "target.url",
    "--model": "target.model",
    "--api": "target.api",
    "--name": "name",
}
"""The single-value flags `capacity` and `sweep` share with `run`, and the config key each
sets (the flag wins)."""


def target_option() -> Any:
    """`--target`, as every command that runs something takes it."""
    return typer.Option(
        None, "--target", metavar="URL", help="Server URL; unset: the built-in simulator."
    )


def model_option() -> Any:
    """`--model`, as `capacity` and `sweep` take it."""
    return typer.Option(
        None, "--model", help=r"Model name, or auto (the first of /v1/models). \[default: auto]"
    )


def api_option() -> Any:
    """`--api`, as `capacity` and `sweep` take it."""
    return typer.Option(
        None, "--api", help=r"chat, completions, responses or anthropic. \[default: chat]"
    )


def series_overrides(
    target: str | None, model: str | None, api: str | None, name: str | None
) -> tuple[dict[str, object], dict[str, str]]:
    """The config overrides of `SERIES_FLAG_KEYS`' flags, and the keys given by a flag (for
    `flag_error`)."""
    flags: dict[str, object] = {"--target": target, "--model": model, "--api": api, "--name": name}
    overrides = {SERIES_FLAG_KEYS[flag]: value for flag, value in flags.items()}
    given = {key: flag for flag, key in SERIES_FLAG_KEYS.items() if flags[flag] is not None}
    return overrides, given

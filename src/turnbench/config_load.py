"""Reading the one `RunConfig`: YAML file, then `--set` overrides, then flags.

Why strict: a benchmark that silently ignores a misspelt key measures something else than the
user asked for. Every model forbids unknown keys; errors name the file, the key, the value and
what was expected, on one line (`_format_validation`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from turnbench.config import RunConfig
from turnbench.errors import InputError
from turnbench.pacing.modes import DEFAULT_MODE, MODES, mode_taking


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise InputError(f"cannot set {dotted}: {key} is not a section", field=dotted)
        node = child
    node[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """Parse one `--set dotted.key=value`; the value is read as YAML (numbers, lists...)."""
    if "=" not in item:
        raise InputError(f"--set expects dotted.key=value, got {item!r}", field="--set")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _line_of(text: str | None, parts: list[str]) -> int | None:
    """The 1-based line of a dotted key in the YAML text (the deepest part found)."""
    if not text:
        return None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == part), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _format_validation(
    err: ValidationError, source: str, data: dict[str, Any], text: str | None = None
) -> InputError:
    """One line from pydantic's first error: the dotted key, what was wrong, the value."""
    first = err.errors()[0]
    parts: list[str] = []
    value: Any = data
    loc = first["loc"]
    for i, part in enumerate(loc):
        if _is_tag(loc, i):
            continue  # the discriminator pydantic adds for a tagged union
        if (isinstance(value, dict) and part in value) or (
            isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        ):
            container: Any = value
            value = container[part]
            parts.append(str(part))
        else:
            parts.append(str(part))
            value = None
    msg = first["msg"]
    note = ""
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
        section = _mode_section(data, parts)
        other = mode_taking(parts[-1]) if section is not None else None
        if section is not None and other is not None:
            mode = section.get("mode", DEFAULT_MODE)
            note = f"; `{parts[-1]}` is for mode {other}, not {mode}"
    elif first["type"] == "union_tag_invalid" and parts[:1] == ["workload"]:
        parts.append("type")
        value = first["ctx"]["tag"]
        msg = "unknown workload type; expected " + ", ".join(sorted(_UNION_TAGS))
    elif first["type"] == "union_tag_invalid":
        parts.append("mode")
        value = first["ctx"]["tag"]
        msg = "unknown load mode; expected " + ", ".join(MODES)
    shown = f" (got {value!r})" if value is not None and not isinstance(value, dict) else ""
    more = f" (+{len(err.errors()) - 1} more errors)" if len(err.errors()) > 1 else ""
    return InputError(
        f"{msg}{shown}{note}{more}",
        file=source,
        line=_line_of(text, parts),
        field=".".join(parts) or None,
    )


_UNION_TAGS = frozenset({"synthetic", "dataset", "shared_prefix", "synthetic_agent"})


def _is_tag(loc: tuple[int | str, ...], i: int) -> bool:
    """Whether `loc[i]` is the tag pydantic puts after a tagged union's key: after
    `workload`, after `load`, and after a stage's index."""
    before = loc[:i]
    if before in (("workload",), ("load",)):
        return True
    return len(before) == 2 and before[0] == "stages" and isinstance(before[1], int)


def _mode_section(data: dict[str, Any], parts: list[str]) -> dict[str, Any] | None:
    """The `load:` section or the stage an error's key is in, if it is in one."""
    node: Any = None
    if len(parts) == 2 and parts[0] == "load":
        node = data.get("load")
    elif len(parts) == 3 and parts[0] == "stages" and parts[1].isdigit():
        stages = data.get("stages")
        if isinstance(stages, list) and int(parts[1]) < len(stages):
            node = stages[int(parts[1])]
    return node if isinstance(node, dict) else None


def _infer_workload_type(data: dict[str, Any]) -> None:
    """Fill in a `workload:` section's missing `type`: the default source (synthetic), or a
    dataset when the section names a `path`, the one key only a dataset has.

    Why here and not as a pydantic default: a tagged union needs its tag before it can pick
    the model, and pydantic's own wording ("Unable to extract tag using discriminator") names
    nothing a user wrote.
    """
    workload = data.get("workload")
    if isinstance(workload, dict) and "type" not in workload:
        workload["type"] = "dataset" if "path" in workload else "synthetic"


def load_config(
    path: Path | None, overrides: dict[str, Any] | None = None, sets: list[str] | None = None
) -> RunConfig:
    """Read a YAML config (optional), apply `--set` items and flag overrides, and validate."""
    data: dict[str, Any] = {}
    text: str | None = None
    source = str(path) if path else "<flags>"
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError("file not found", file=source) from None
        except UnicodeDecodeError as e:
            raise InputError(f"not UTF-8 text (byte {e.start})", file=source) from None
        except OSError as e:
            raise InputError(e.strerror or str(e), file=source) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(e, "problem", None) or "malformed YAML"
            raise InputError(f"malformed YAML: {problem}", file=source, line=line) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InputError("the top level must be a mapping of keys", file=source)
        data = loaded
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    # Whole sections from flags (`--dataset` replaces `workload`) come first, so that
    # `--set workload.x=...` still refines them; single-key flags win over everything.
    sections = {k: v for k, v in overrides.items() if isinstance(v, dict)}
    for key, value in sections.items():
        _set_dotted(data, key, value)
    for item in sets or []:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    for key, value in overrides.items():
        if key not in sections:
            _set_dotted(data, key, value)
    _infer_workload_type(data)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise _format_validation(err, source, data, text) from None

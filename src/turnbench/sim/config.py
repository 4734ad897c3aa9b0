"""The simulator's configuration: one strict pydantic model, loaded from YAML and flags.

Why one model with `extra="forbid"`: a typo in `sim.yaml` or `--set` must stop the simulator
with a line that names the key, not silently fall back to a default and skew a benchmark.
The defaults describe a small model served on one GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from turnbench.errors import InputError

FAULT_KINDS: tuple[str, ...] = (
    "http500",
    "http429",
    "reset",
    "stall",
    "stall_mid",
    "malformed",
    "truncate",
)
"""Every fault the simulator can inject, in the order a request checks them."""

FaultKind = Literal["http500", "http429", "reset", "stall", "stall_mid", "malformed", "truncate"]

SESSION_HEADERS: tuple[str, ...] = (
    "X-Session-ID",
    "X-Correlation-ID",
    "X-Session-Affinity",
    "X-SMG-Routing-Key",
    "x-aibrix-session-key",
    "X-Dynamo-Session-ID",
)
"""Session headers of common clients and routers, looked up in this order by default:
turnbench's, AIPerf's, Fireworks' (OpenCode sends it), SGLang Model Gateway's, AIBrix's and
NVIDIA Dynamo's. Why all of them: a session from any of those tools is counted, no flag needed."""

ROUTERS: tuple[str, ...] = ("sticky", "round-robin", "random", "least-loaded")
"""How the simulated router picks a replica (see `sim/router.py`)."""

RouterKind = Literal["sticky", "round-robin", "random", "least-loaded"]


def _as_list(value: object) -> object:
    """One header name is a list of one: `--set session_header=X-Foo` keeps working."""
    return [value] if isinstance(value, str) else value


class OutputLenConfig(BaseModel):
    """How many tokens a reply has when the client does not set `ignore_eos`."""

    model_config = ConfigDict(extra="forbid")

    dist: Literal["fixed", "uniform", "exponential", "lognormal"] = Field(
        "lognormal",
        description="Distribution of the natural reply length (the point where the model "
        "would emit end-of-sequence); the result is clipped to [min_tokens, max_tokens].",
    )
    mean: float = Field(200.0, gt=0, description="Mean reply length in tokens.")
    min: int = Field(
        1, ge=1, description="Floor of every draw; `uniform` draws from [min, 2 × mean − min]."
    )
    max: int | None = Field(None, ge=1, description="Cap of every draw (None: no cap).")
    sigma: float = Field(
        0.6, gt=0, description="Shape (σ of the underlying normal) of `lognormal`."
    )


class SimConfig(BaseModel):
    """Everything that shapes the simulator's behaviour; field names are a public contract."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("turnbench-sim", description="The served model name (`/v1/models`).")
    max_model_len: int = Field(
        131072,
        ge=2,
        description="Context length: prompt plus completion tokens, at most (128k, as the "
        "models agents run on: a 110k-token coding agent's context fits).",
    )
    max_num_seqs: int = Field(
        64, ge=1, description="Sequences running at once; further requests wait in a FIFO queue."
    )
    max_waiting: int | None = Field(
        None, ge=0, description="Capacity of the waiting queue (None: unbounded); beyond it 429."
    )
    block_size: int = Field(16, ge=1, description="Tokens per KV-cache block (prefix-cache unit).")
    kv_cache_tokens: int = Field(
        262144, ge=0, description="Capacity of the LRU prefix cache, in tokens."
    )
    ttft_base_ms: float = Field(
        20.0, ge=0, description="Fixed time to first token once a request is running, in ms."
    )
    prefill_ms_per_token: float = Field(
        0.08, ge=0, description="Prefill time per uncached prompt token, in ms."
    )
    decode_ms_base: float = Field(
        10.0, ge=0, description="Time per output token with one running sequence, in ms."
    )
    decode_ms_per_seq: float = Field(
        0.25, ge=0, description="Added time per output token for each running sequence, in ms."
    )
    output_len: OutputLenConfig = Field(
        default_factory=OutputLenConfig,
        description="Reply length distribution used unless the request sets `ignore_eos`.",
    )
    zero_delay: bool = Field(
        False, description="Never sleep: stream every reply as fast as possible (capacity tests)."
    )
    seed: int = Field(0, description="Seed of reply texts, reply lengths and fault draws.")
    faults: dict[FaultKind, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict,
        description="Fault kind → probability per request, drawn independently for each kind.",
    )
    stall_s: float = Field(
        5.0,
        ge=0,
        description="How long a `stall` fault holds the first token, and a `stall_mid` "
        "fault the stream after a few tokens, in seconds.",
    )
    session_header: Annotated[
        list[Annotated[str, Field(min_length=1)]], BeforeValidator(_as_list)
    ] = Field(
        default_factory=lambda: list(SESSION_HEADERS),
        min_length=1,
        description="Request headers that name a session, in order: the first one a request "
        "carries wins, and its values are counted per session in `/metrics`. One name or a "
        "list.",
    )
    retry_after_s: int = Field(
        1, ge=0, description="Value of the `Retry-After` header on 429 replies, in seconds."
    )
    stored_responses: int = Field(
        10000,
        ge=0,
        description="Responses API: how many responses the server keeps (each with its whole "
        "conversation) for `previous_response_id`; the least recently used goes first, and a "
        "chained request naming a dropped one gets 404 (0 keeps none).",
    )
    replicas: int = Field(
        1,
        ge=1,
        description="Engine replicas behind a simulated router, each with its own batch "
        "(`max_num_seqs`, `max_waiting`) and prefix cache (`kv_cache_tokens`).",
    )
    router: RouterKind = Field(
        "sticky",
        description="How the router picks a replica: sticky (a hash of the session header's "
        "value; least-loaded without one), round-robin, random (seeded) or least-loaded "
        "(fewest running plus waiting).",
    )
    replica_header: str = Field(
        "x-served-by",
        pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        description="Response header naming the replica that served a request "
        "(`replica-K`); sent only with more than one replica.",
    )


def parse_fault(spec: str) -> tuple[str, float]:
    """Parse one `--fault KIND=RATE` flag; why here: the error must name the flag and kinds."""
    kind, sep, rate_text = spec.partition("=")
    kind = kind.strip()
    if not sep or kind not in FAULT_KINDS:
        raise InputError(
            f"expected KIND=RATE with KIND one of {', '.join(FAULT_KINDS)}, got {spec!r}",
            field="--fault",
        )
    try:
        rate = float(rate_text)
    except ValueError:
        raise InputError(
            f"rate must be a number in [0, 1], got {spec!r}", field="--fault"
        ) from None
    if not 0.0 <= rate <= 1.0:
        raise InputError(f"rate must be a number in [0, 1], got {spec!r}", field="--fault")
    return kind, rate


def _apply_set(data: dict[str, Any], spec: str) -> None:
    """Apply one `--set a.b=value`; the value is parsed as YAML so numbers and nulls work."""
    key, sep, value_text = spec.partition("=")
    if not sep or not key.strip():
        raise InputError(f"expected key=value, got {spec!r}", field="--set")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError:
        raise InputError(f"value is not valid YAML: {spec!r}", field="--set") from None
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _read_yaml(path: Path) -> dict[str, Any]:
    """Read the YAML config file; why strict: a non-mapping file is a user error, not {}."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot read config: {err.strerror}", file=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise InputError(f"invalid YAML: {problem}", file=str(path), line=line) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("expected a mapping of config keys", file=str(path))
    return data


def load_config(
    path: str | Path | None = None,
    *,
    sets: Sequence[str] = (),
    faults: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
) -> SimConfig:
    """Build the config: defaults < YAML file < `--set` < named flags < `--fault`.

    Why one merge then one validation: pydantic reports every bad key in the same words,
    whichever source it came from; the error names the file when there is one.
    """
    data: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    sources = dict.fromkeys(data, str(path))
    for spec in sets:
        _apply_set(data, spec)
        sources[spec.partition("=")[0].strip().split(".")[0]] = "--set"
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
            sources[key] = "--" + key.replace("_", "-")
    if faults:
        sources["faults"] = "--fault"
        merged = dict(data.get("faults") or {})
        for spec in faults:
            kind, rate = parse_fault(spec)
            merged[kind] = rate
        data["faults"] = merged
    try:
        return SimConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "config"
        value = first.get("input")
        shown = "" if first["type"] == "missing" else f" (got {value!r})"
        where = sources.get(str(first["loc"][0]) if first["loc"] else "", None)
        raise InputError(f"{first['msg']}{shown}", file=where, field=key) from None

"""The config loader: strict, one-line errors, never a traceback (hypothesis fuzz)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from turnbench.config import RunConfig
from turnbench.config_load import load_config
from turnbench.errors import InputError

KEYS = [
    "name",
    "seed",
    "target",
    "load",
    "session",
    "workload",
    "mode",
    "users",
    "rate",
    "url",
    "api",
    "type",
    "turns",
    "think_time",
    "dist",
    "mean",
    "bogus",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["parallel", "users", "chat", "uniform"]),
)
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trees)
def test_any_yaml_gives_a_config_or_one_input_error(tmp_path: Path, tree) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(tree))
    try:
        cfg = load_config(path)
    except InputError as e:
        assert "\n" not in str(e) and str(path) in str(e)
    else:
        assert isinstance(cfg, RunConfig)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_any_bytes_give_a_config_or_one_input_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except InputError as e:
        assert "\n" not in str(e)


def test_defaults_and_overrides() -> None:
    cfg = load_config(
        None,
        {"load.mode": "parallel", "load.sessions": 3},
        ["session.think_time={dist: exponential, mean: 2}", "target.api=completions"],
    )
    assert cfg.load.mode == "parallel" and cfg.load.sessions == 3
    assert cfg.session.think_time.dist == "exponential" and cfg.target.api == "completions"
    with pytest.raises(InputError, match=r"\[load.sessions\]"):
        load_config(None, {"load.sessions": 0})


def test_session_header_presets_and_redaction() -> None:
    cfg = RunConfig.model_validate(
        {
            "session": {"session_header": "aibrix"},
            "target": {"headers": {"Authorization": "Bearer x", "X-Trace": "keep"}},
        }
    )
    assert cfg.session.session_header_name == "x-aibrix-session-key"
    red = cfg.redacted()["target"]["headers"]
    assert red == {"Authorization": "<redacted>", "X-Trace": "keep"}


def test_set_refines_a_workload_given_by_a_flag() -> None:
    cfg = load_config(
        None,
        {"workload": {"type": "dataset", "path": "/x.jsonl", "format": "trace"}},
        ["workload.max_conversations=5"],
    )
    assert cfg.workload.type == "dataset" and cfg.workload.max_conversations == 5

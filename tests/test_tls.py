"""The https path end to end: the simulator serves TLS, `turnbench run` verifies it.

Why real certificates: a private CA and a server certificate for 127.0.0.1 are made at test
time (trustme), so verification, `--insecure` and `--ca-bundle` meet the same handshake a real
server with a private CA gives, over real sockets, with no mocks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from cli_options import turnbench
from conftest import SimProcess, start_sim

SECRET = "sk-secret-tls-7d2e01"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A private CA (`ca.pem`) and a certificate it issued for 127.0.0.1 with its key."""
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    other = trustme.CA().issue_cert("127.0.0.1")
    files["other_key"] = folder / "other-key.pem"
    other.private_key_pem.write_to_path(str(files["other_key"]))
    files["junk"] = folder / "junk.pem"
    files["junk"].write_text("not a certificate\n")
    return files


@pytest.fixture(scope="module")
def tls_sim(pki: dict[str, Path]) -> Iterator[SimProcess]:
    """The simulator over HTTPS with the private CA's certificate, no modelled delays."""
    sim = start_sim(
        "--set", "zero_delay=true", "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"])
    )  # fmt: skip
    yield sim
    sim.stop()


def assert_ok_run(proc: subprocess.CompletedProcess[str], out: Path, requests: int) -> Path:
    """Exit 0, one run folder, every request answered."""
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["requests"]["ok"] == requests and summary["requests"]["failed"] == 0
    return run_dir


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2 and exactly one line on stderr, starting `error: ` and holding `words`."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_the_ready_line_says_https(tls_sim: SimProcess) -> None:
    assert tls_sim.url.startswith("https://127.0.0.1:")


def test_an_untrusted_certificate_is_one_line(tmp_path: Path, tls_sim: SimProcess) -> None:
    out = tmp_path / "out"
    proc = turnbench(
        "run", "--target", tls_sim.url, "--max-requests", "4", "--out", str(out), cwd=tmp_path
    )
    line = assert_one_line_error(proc, "127.0.0.1", "certificate", "--ca-bundle", "--insecure")
    assert line.startswith(f"error: cannot reach the server at {tls_sim.v1}/models: ")
    assert "_ssl.c" not in line and "[SSL" not in line
    assert not out.exists(), "a run folder was left behind"


def test_insecure_runs_with_a_warning(tmp_path: Path, tls_sim: SimProcess) -> None:
    out = tmp_path / "out"
    proc = turnbench(
        "run", "--target", tls_sim.url, "--max-requests", "4", "--insecure", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok_run(proc, out, requests=4)
    warnings = [line for line in proc.stdout.splitlines() if "warning:" in line]
    assert warnings == ["warning: TLS certificates are not verified"]


def test_a_ca_bundle_trusts_a_private_ca(
    tmp_path: Path, tls_sim: SimProcess, pki: dict[str, Path]
) -> None:
    out = tmp_path / "out"
    proc = turnbench(
        "run", "--target", tls_sim.url, "--max-requests", "4", "--ca-bundle", str(pki["ca"]),
        "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    run_dir = assert_ok_run(proc, out, requests=4)
    assert "warning" not in proc.stdout + proc.stderr
    assert f"ca_bundle: {pki['ca']}" in (run_dir / "config.yaml").read_text()


def test_the_bundle_reaches_worker_processes(
    tmp_path: Path, tls_sim: SimProcess, pki: dict[str, Path]
) -> None:
    """Workers build their own connections, so they too must trust the bundle's CA."""
    out = tmp_path / "out"
    proc = turnbench(
        "run", "--target", tls_sim.url, "--max-requests", "8", "--ca-bundle", str(pki["ca"]),
        "--workers", "2", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert_ok_run(proc, out, requests=8)


def test_a_relative_bundle_resolves_against_the_config_file(
    tmp_path: Path, tls_sim: SimProcess, pki: dict[str, Path]
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "my-ca.pem").write_bytes(pki["ca"].read_bytes())
    config = folder / "run.yaml"
    config.write_text(
        f"target: {{url: '{tls_sim.url}', ca_bundle: my-ca.pem}}\nload: {{max_requests: 4}}\n"
    )
    out = tmp_path / "out"
    proc = turnbench("run", str(config), "--out", str(out), cwd=tmp_path)
    assert_ok_run(proc, out, requests=4)


def test_a_certificate_for_another_name_is_one_line(
    tmp_path: Path, tls_sim: SimProcess, pki: dict[str, Path]
) -> None:
    url = tls_sim.url.replace("127.0.0.1", "localhost")
    out = tmp_path / "out"
    proc = turnbench(
        "run", "--target", url, "--ca-bundle", str(pki["ca"]), "--max-requests", "4",
        "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(proc, "localhost", "certificate", "--insecure")
    assert not out.exists()


@pytest.mark.parametrize(
    ("bundle", "why"),
    [("missing", "No such file or directory"), ("junk", "no PEM certificate")],
)
def test_a_bad_bundle_is_one_line_before_the_run(
    bundle: str, why: str, tmp_path: Path, tls_sim: SimProcess, pki: dict[str, Path]
) -> None:
    path = pki.get(bundle, tmp_path / "missing.pem")
    out = tmp_path / "out"
    proc = turnbench(
        "run", "--target", tls_sim.url, "--ca-bundle", str(path), "--max-requests", "4",
        "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(proc, str(path), "target.ca_bundle", why)
    assert not out.exists()


def test_the_api_key_is_never_written_over_https(
    tmp_path: Path, tls_sim: SimProcess, pki: dict[str, Path]
) -> None:
    out = tmp_path / "out"
    proc = turnbench(
        "run", "--target", tls_sim.url, "--ca-bundle", str(pki["ca"]), "--api-key-env",
        "MY_KEY", "--max-requests", "4", "--out", str(out),
        cwd=tmp_path, env={"MY_KEY": SECRET},
    )  # fmt: skip
    run_dir = assert_ok_run(proc, out, requests=4)
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {"events.db", "config.yaml", "summary.json", "report.html"} <= {p.name for p in files}
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path.name
    assert SECRET not in proc.stdout + proc.stderr


def run_sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "turnbench", "sim", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--tls-cert", "{cert}"), ("--tls-cert needs --tls-key",)),
        (("--tls-key", "{key}"), ("--tls-key needs --tls-cert",)),
        (("--tls-cert", "{missing}", "--tls-key", "{key}"), ("{missing}", "cannot read")),
        (("--tls-cert", "{junk}", "--tls-key", "{key}"), ("{junk}", "not a PEM certificate")),
        (("--tls-cert", "{cert}", "--tls-key", "{junk}"), ("{junk}", "private key")),
        (("--tls-cert", "{cert}", "--tls-key", "{other_key}"), ("{other_key}", "mismatch")),
    ],
    ids=["cert-alone", "key-alone", "missing-cert", "junk-cert", "junk-key", "other-key"],
)
def test_the_sim_refuses_bad_tls_files_in_one_line(
    args: tuple[str, ...], words: tuple[str, ...], pki: dict[str, Path], tmp_path: Path
) -> None:
    names = {name: str(path) for name, path in pki.items()}
    names["missing"] = str(tmp_path / "missing.pem")
    proc = run_sim(*(a.format(**names) for a in args))
    assert_one_line_error(proc, *(w.format(**names) for w in words))
    assert proc.stdout == ""

"""`glo loss show` and `glo loss plot`: output shape, acceptance numbers, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import main

KEYS = {"infix", "canonical_key", "valid", "nodes", "depth", "coefficients", "binary_minimum"}


def show(expr: str) -> dict:
    result = CliRunner().invoke(main, ["loss", "show", expr, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == KEYS
    return data


def test_show_json_acceptance() -> None:
    baikal, text = show("baikal"), show("log(y) - x / y")
    assert baikal == text
    assert baikal["binary_minimum"] == pytest.approx(0.707, abs=0.005)
    assert (baikal["nodes"], baikal["depth"], baikal["coefficients"], baikal["valid"]) == (6, 3, 3, True)
    assert show("x * log(y)")["canonical_key"] == show("log(y) * x")["canonical_key"]
    assert show("baikal_cma")["binary_minimum"] == pytest.approx(0.772, abs=0.005)
    assert show("baikal_cma")["canonical_key"] != baikal["canonical_key"]
    assert show("ce")["binary_minimum"] is None
    assert show("x * x")["valid"] is False


def test_show_table() -> None:
    result = CliRunner().invoke(main, ["loss", "show", "x * x"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == len(KEYS)
    assert any(line.startswith("valid") and "no" in line for line in lines)
    assert len({line.index(line.split()[-1]) for line in lines if line.startswith(("nodes", "depth"))}) == 1


@pytest.mark.parametrize("args", [
    ["loss", "show", "x * * y"],
    ["loss", "show", "mse"],
    ["loss", "show", "__import__('os')"],
    ["loss", "plot", "x +", "--out", "a.png"],
    ["loss", "plot", "ce", "--out", "/nonexistent-dir/a.png"],
])
def test_errors_are_one_line_without_traceback(args: list[str], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("Error:")


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "fig6.png"
    result = CliRunner().invoke(main, ["loss", "plot", "ce", "baikal", "baikal_cma", "x * y", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_real_subprocess_call(tmp_path: Path) -> None:
    glo = Path(sys.executable).with_name("glo")
    cmd = [str(glo)] if glo.exists() else [sys.executable, "-m", "orchestrator.cli"]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run([*cmd, "loss", "show", "baikal", "--json"], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["canonical_key"] == "s2:-x/y + log(y)"
    bad = subprocess.run([*cmd, "loss", "show", "x +"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

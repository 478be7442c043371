"""benchmarks/median_baseline.py: the CI baseline built from several sweeps, each row the median reading."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tiltbench import UserError
from tiltbench.check import load_rows

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "median_baseline.py"
BASELINE = ROOT / "results" / "ci-baseline"


def _module():
    spec = importlib.util.spec_from_file_location("median_baseline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scaled(rows, factors):
    """The rows with each one's headline speedup times its factor (as another sweep might read them)."""
    return [
        dataclasses.replace(r, speedup_vs_dense_dynamic=r.speedup_vs_dense_dynamic * f)
        for r, f in zip(rows, factors, strict=True)
    ]


def test_each_row_comes_from_the_sweep_that_read_its_median():
    rows = load_rows(BASELINE)
    n = len(rows)
    assert n >= 3 and all(r.headline_baseline == "dense-dynamic" for r in rows)
    # three sweeps, the median reading of each row in a different one of them
    factors = [[(0.9, 1.0, 1.1)[(i + k) % 3] for i in range(n)] for k in range(3)]
    runs = [_scaled(rows, f) for f in factors]
    runs[1].reverse()  # the rows' order within a sweep does not matter
    chosen = _module().median_rows(runs)
    assert [r.place for r in chosen] == [r.place for r in rows]
    assert [r.headline_speedup for r in chosen] == pytest.approx([r.headline_speedup for r in rows])


def test_sweeps_of_other_grids_or_checkpoints_are_refused():
    rows = load_rows(BASELINE)
    module = _module()
    with pytest.raises(UserError, match="different grids"):
        module.median_rows([rows, rows, rows[:-1]])
    other = [dataclasses.replace(rows[0], metric=rows[0].metric + 0.01), *rows[1:]]
    with pytest.raises(UserError, match="metrics differ"):
        module.median_rows([rows, other, rows])


def test_the_command_writes_a_baseline_check_reads_and_refuses_an_even_count(tmp_path):
    copies = []
    for i in range(3):
        copies.append(tmp_path / f"run-{i}")
        copies[-1].mkdir()
        for name in ("report.json", "config.json"):
            (copies[-1] / name).write_text((BASELINE / name).read_text())
    output = tmp_path / "baseline"
    run = [sys.executable, str(SCRIPT), *map(str, copies), "--output", str(output)]
    done = subprocess.run(run, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert [r.place for r in load_rows(output)] == [r.place for r in load_rows(BASELINE)]
    assert json.loads((output / "config.json").read_text())["median_of"] == list(map(str, copies))
    even = subprocess.run(run[:2] + run[3:], capture_output=True, text=True, cwd=ROOT)
    assert even.returncode == 2 and even.stderr.strip() == (
        "error: pass an odd number of sweeps, at least 3 (got 2): the median must be a reading"
    )

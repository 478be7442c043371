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


def test_sweeps_of_other_grids_settings_or_checkpoints_are_refused():
    rows = load_rows(BASELINE)
    module = _module()
    with pytest.raises(UserError, match="different grids"):
        module.median_rows([rows, rows, rows[:-1]])
    other = [dataclasses.replace(rows[0], metric=rows[0].metric + 0.01), *rows[1:]]
    with pytest.raises(UserError, match="metrics differ"):
        module.median_rows([rows, other, rows])
    threads = [dataclasses.replace(rows[0], threads=rows[0].threads + 1), *rows[1:]]
    with pytest.raises(UserError, match="differ in 'threads'"):
        module.median_rows([rows, rows, threads])


def _copies(tmp_path: Path) -> list[Path]:
    """Three sweep folders of the committed baseline's rows, row i's speedup scaled so that its median reading
    (the committed value) sits in copy (i + 1) % 3."""
    report = json.loads((BASELINE / "report.json").read_text())
    copies = []
    for k in range(3):
        scaled = json.loads(json.dumps(report))
        for i, row in enumerate(scaled["rows"]):
            row["speedup_vs_dense_dynamic"] *= (0.9, 1.0, 1.1)[(i + k) % 3]
        copies.append(tmp_path / f"run-{k}")
        copies[-1].mkdir()
        (copies[-1] / "report.json").write_text(json.dumps(scaled))
    return copies


def test_the_command_writes_the_median_readings_as_a_run_check_reads(tmp_path):
    copies = _copies(tmp_path)
    output = tmp_path / "baseline"
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, copies), "--output", str(output)],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    written, committed = load_rows(output), load_rows(BASELINE)
    # readings 0.9x, 1x and 1.1x the median spread 20 %, past what check grants (8 %): every row is named
    warnings = done.stderr.strip().splitlines()
    assert len(warnings) == len(committed) and all("spread 20.0%, more than the 8%" in w for w in warnings)
    assert [r.place for r in written] == [r.place for r in committed]
    assert [r.headline_speedup for r in written] == pytest.approx([r.headline_speedup for r in committed])
    config = json.loads((output / "config.json").read_text())
    assert config["median_of"] == list(map(str, copies))
    # every sweep's reading is kept, for check's allowance: the median and its 0.9x and 1.1x neighbours
    for entry, row in zip(config["speedup_readings"], committed, strict=True):
        assert entry["place"] == list(row.place)
        assert entry["readings"] == pytest.approx([f * row.headline_speedup for f in (0.9, 1.0, 1.1)], abs=1e-4)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("two sweeps", "error: pass an odd number of sweeps, at least 3 (got 2): the median must be a reading"),
        ("foreign output", "is not empty and holds no measure or sweep run; choose a new or empty folder"),
        ("output is a file", "is a file, not a folder"),
    ],
)
def test_bad_input_gets_one_error_line_and_exit_2(tmp_path, case, message):
    copies = _copies(tmp_path)
    output = tmp_path / "out"
    if case == "two sweeps":
        copies = copies[:2]
    elif case == "foreign output":
        output.mkdir()
        (output / "notes.txt").write_text("mine")
    else:
        output.write_text("mine")
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, copies), "--output", str(output)],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("error: ")
    if case != "two sweeps":
        assert (output / "notes.txt" if case == "foreign output" else output).read_text() == "mine"

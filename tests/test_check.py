"""check: prediction error and regressions on real (tiny) sweep results, doctored as the tests need."""

from __future__ import annotations

import json
import shutil

import pytest
from test_sweep import _config
from typer.testing import CliRunner

from tiltbench.check import CheckConfig, check, speedup_standard_error
from tiltbench.cli import app
from tiltbench.errors import UserError
from tiltbench.sweep import sweep


@pytest.fixture(scope="module")
def run_folder(tiny_checkpoint, tmp_path_factory):
    base = tmp_path_factory.mktemp("check")
    sweep(_config(tiny_checkpoint, base, rates=(0.0, 0.3, 0.6), batches=(1, 4)))
    return base / "run"


def _doctor(folder, tmp_path, name: str, change) -> str:
    """A copy of the run whose rows `change` edits in place."""
    out = tmp_path / name
    shutil.copytree(folder, out)
    report = json.loads((out / "report.json").read_text())
    for row in report["rows"]:
        change(row)
    (out / "report.json").write_text(json.dumps(report))
    return str(out)


def _exact(row):
    """Measured = predicted, and noise-free latency samples (so only the edits below can regress)."""
    row["speedup_vs_dense_dynamic"] = row["predicted_speedup"]
    for latency in row["latency"].values():
        latency["samples"] = [1.0] * latency["count"]


def test_prediction_check_passes_when_exact_and_fails_at_30_percent_off(run_folder, tmp_path):
    exact = _doctor(run_folder, tmp_path, "exact", _exact)
    assert check(CheckConfig(exact)).passed
    off = _doctor(
        run_folder, tmp_path, "off", lambda r: r.update(speedup_vs_dense_dynamic=1.3 * r["predicted_speedup"])
    )
    report = check(CheckConfig(off))
    assert not report.passed and report.median_abs_error == pytest.approx(0.3)
    runner = CliRunner()
    assert runner.invoke(app, ["check", exact]).exit_code == 0
    failed = runner.invoke(app, ["check", off])
    assert failed.exit_code == 1 and "FAILED" in failed.stdout


def test_regressions_against_a_baseline(run_folder, tmp_path):
    baseline = _doctor(run_folder, tmp_path, "base", _exact)
    same = _doctor(run_folder, tmp_path, "same", _exact)
    assert check(CheckConfig(same, baseline=baseline)).regressions == []

    def worse(row):
        _exact(row)
        if row["tilt_rate"] == 0.3 and row["batch_size"] == 4:
            row["speedup_vs_dense_dynamic"] *= 0.5
            row["metric"] -= 0.05

    found = check(CheckConfig(_doctor(run_folder, tmp_path, "worse", worse), baseline=baseline)).regressions
    assert len(found) == 2 and all("tilt 0.3 batch 4" in line for line in found)
    assert any("points" in line for line in found) and any("speedup" in line for line in found)
    result = CliRunner().invoke(
        app, ["check", _doctor(run_folder, tmp_path, "worse2", worse), "--baseline", baseline, "--tolerance", "1"]
    )
    assert result.exit_code == 1 and "regression" in result.stdout


def test_speedup_allowance_comes_from_per_round_speedups():
    # 2 batches x 4 rounds; dense totals 20 per round, tiltbench totals 10, 10, 10 and 12.5 -> speedups 2, 2, 2, 1.6
    row = {
        "n_batches": 2,
        "latency": {
            "dense-dynamic": {"count": 8, "samples": [10.0] * 8},
            "tiltbench": {"count": 8, "samples": [5.0] * 6 + [6.0, 6.5]},
        },
    }
    assert speedup_standard_error(row) == pytest.approx(0.0)  # the median round is untouched by one outlier
    row["latency"]["tiltbench"]["samples"] = [5.0, 5.0, 5.5, 5.5, 5.0, 5.0, 5.5, 5.5]  # speedups 2, 1.82, 2, 1.82
    median, mad = (2 + 20 / 11) / 2, (2 - 20 / 11) / 2
    assert speedup_standard_error(row) == pytest.approx(1.4826 * mad / median / 4**0.5, rel=1e-6)


def test_check_user_mistakes(tmp_path):
    with pytest.raises(UserError, match="no report.json"):
        check(CheckConfig(str(tmp_path)))
    with pytest.raises(UserError):
        CheckConfig(str(tmp_path), tolerance=0)
    result = CliRunner().invoke(app, ["check", str(tmp_path / "nope")])
    assert result.exit_code == 2 and result.stderr.startswith("error:")

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


@pytest.fixture(scope="module")
def profile_file(tiny_checkpoint, tmp_path_factory) -> str:
    from tiltbench.calibrate import CalibrateConfig, calibrate

    path = tmp_path_factory.mktemp("profile") / "profile.json"
    calibrate(CalibrateConfig(tiny_checkpoint, reps=1, max_tokens_per_batch=128)).save(path)
    return str(path)


def _scaled(factor: float, prediction):
    """Measured speedups set to `factor` x the prediction (tilt rate 0 rows stay exact, as they are in reality)."""

    def change(row):
        _exact(row)
        if row["knob"] > 0:
            row["speedup_vs_dense_dynamic"] = factor * prediction(row)

    return change


@pytest.mark.parametrize("factor", [1.3, 0.7])
@pytest.mark.parametrize("calibrated", [False, True], ids=["flop", "calibrated"])
def test_prediction_check_fails_when_speedups_are_30_percent_off_either_way(
    run_folder, tmp_path, factor, calibrated, profile_file
):
    from tiltbench.check import predicted
    from tiltbench.rows import MeasureRow
    from tiltbench.speed_model import LatencyProfile

    profile = LatencyProfile.load(profile_file) if calibrated else None
    options = ["--profile", profile_file, "--tolerance", "0.15"] if calibrated else ["--tolerance", "0.15"]
    exact = _doctor(run_folder, tmp_path, "exact", _scaled(1.0, lambda r: predicted(MeasureRow.from_dict(r), profile)))
    off = _doctor(run_folder, tmp_path, "off", _scaled(factor, lambda r: predicted(MeasureRow.from_dict(r), profile)))
    config = dict(profile=profile_file if calibrated else None, tolerance=0.15)
    assert check(CheckConfig(exact, **config)).passed
    report = check(CheckConfig(off, **config))
    assert not report.passed and report.median_abs_error == pytest.approx(abs(factor - 1))
    runner = CliRunner()
    assert runner.invoke(app, ["check", exact, *options]).exit_code == 0
    failed = runner.invoke(app, ["check", off, *options])
    assert failed.exit_code == 1 and "FAILED" in failed.stdout


def test_tilt_rate_zero_rows_are_left_out_of_the_median(run_folder, tmp_path):
    def change(row):
        _exact(row)
        if row["knob"] == 0.3:
            row["speedup_vs_dense_dynamic"] = 1.2 * row["predicted_speedup"]

    # counted rows: tilt 0.3 (20 % off) and 0.6 (exact) at two batch sizes -> median 10 %; were the exact
    # tilt-0 rows counted too, the median of [0, 0, .2, .2, 0, 0] would be 0
    report = check(CheckConfig(_doctor(run_folder, tmp_path, "off", change)))
    assert [r.counted for r in report.rows if r.knob == 0] == [False, False]
    assert report.median_abs_error == pytest.approx(0.1)
    only_zero = _doctor(run_folder, tmp_path, "zero", _exact)
    data = json.loads((tmp_path / "zero" / "report.json").read_text())
    data["rows"] = [r for r in data["rows"] if r["knob"] == 0]
    (tmp_path / "zero" / "report.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="no row that removes tokens"):
        check(CheckConfig(only_zero))
    assert check(CheckConfig(only_zero, baseline=only_zero)).median_abs_error is None  # regressions only


@pytest.mark.parametrize("factor", [1.3, 0.7])
def test_baseline_check_flags_a_fall_and_a_rise(run_folder, tmp_path, factor):
    baseline = _doctor(run_folder, tmp_path, "base", _exact)

    def moved(row):
        _exact(row)
        row["speedup_vs_dense_dynamic"] *= factor

    found = check(CheckConfig(_doctor(run_folder, tmp_path, "moved", moved), baseline=baseline)).regressions
    assert len(found) == 6  # every row
    assert all(("fell" if factor < 1 else "rose") in line and "30.0%" in line for line in found)


@pytest.mark.parametrize(
    ("field", "value"),
    [("threads", 99), ("model", "bert-base"), ("max_seq_len", 16), ("latency_examples", 4), ("task", "imdb")],
)
def test_baseline_rows_must_share_their_identity(run_folder, tmp_path, field, value):
    baseline = _doctor(run_folder, tmp_path, "base", _exact)
    other = _doctor(run_folder, tmp_path, "other", lambda r: (_exact(r), r.update({field: value})))
    with pytest.raises(UserError, match=f"differs from this run in '{field}'"):
        check(CheckConfig(other, baseline=baseline))


def test_offline_tune_folder_is_a_clear_error(tiny_checkpoint, tmp_path):
    from conftest import DATA_DIR

    from tiltbench.data import DataConfig
    from tiltbench.offline import OfflineConfig, offline_tune

    data = DataConfig("sst2", data_dir=str(DATA_DIR), max_eval_samples=8, max_seq_len=32)
    offline_tune(OfflineConfig(tiny_checkpoint, knobs=(0.0, 0.3), data=data, output=str(tmp_path / "offline")))
    with pytest.raises(UserError, match="is an offline-tune run"):
        check(CheckConfig(str(tmp_path / "offline")))


def test_regressions_against_a_baseline(run_folder, tmp_path):
    baseline = _doctor(run_folder, tmp_path, "base", _exact)
    same = _doctor(run_folder, tmp_path, "same", _exact)
    assert check(CheckConfig(same, baseline=baseline)).regressions == []

    def worse(row):
        _exact(row)
        if row["knob"] == 0.3 and row["batch_size"] == 4:
            row["speedup_vs_dense_dynamic"] *= 0.5
            row["metric"] -= 0.05

    found = check(CheckConfig(_doctor(run_folder, tmp_path, "worse", worse), baseline=baseline)).regressions
    assert len(found) == 2 and all("tilt 0.3 batch 4" in line for line in found)
    assert any("points" in line for line in found) and any("speedup vs dense-dynamic fell" in line for line in found)
    result = CliRunner().invoke(
        app, ["check", _doctor(run_folder, tmp_path, "worse2", worse), "--baseline", baseline, "--tolerance", "1"]
    )
    assert result.exit_code == 1 and "regression" in result.stdout


# a cloud VM's model name alone ('Intel(R) Xeon(R) Processor') hides which Xeon it is: the signature tells
@pytest.mark.parametrize("field", ["cpu", "cpu_signature"])
def test_speedups_on_other_hardware_are_not_compared_but_metrics_are(run_folder, tmp_path, field):
    baseline = _doctor(run_folder, tmp_path, "base", _exact)
    report = json.loads((tmp_path / "base" / "report.json").read_text())
    if report["environment"][field] is None:  # cpu_signature: None where /proc/cpuinfo is not there to read
        pytest.skip(f"this platform records no {field}")
    report["environment"][field] = "Another CPU"
    (tmp_path / "base" / "report.json").write_text(json.dumps(report))

    def faster_and_worse(row):
        _exact(row)
        row["speedup_vs_dense_dynamic"] *= 1.3
        if row["knob"] == 0.3 and row["batch_size"] == 4:
            row["metric"] -= 0.05

    moved = _doctor(run_folder, tmp_path, "moved", faster_and_worse)
    result = check(CheckConfig(moved, baseline=baseline))
    # 30 % faster on every row would be six regressions on the same hardware; here only the metric drop counts
    assert len(result.regressions) == 1 and "points" in result.regressions[0]
    assert len(result.notes) == 1 and f"{field}: 'Another CPU' there" in result.notes[0]
    same_hardware = check(CheckConfig(moved, baseline=_doctor(run_folder, tmp_path, "base2", _exact)))
    assert len(same_hardware.regressions) == 7 and same_hardware.notes == []
    cli = CliRunner().invoke(app, ["check", moved, "--baseline", baseline, "--tolerance", "1"])
    assert cli.exit_code == 1 and "other hardware" in " ".join(cli.stdout.split())


def test_speedup_allowance_comes_from_per_round_speedups():
    from types import SimpleNamespace

    # 2 batches x 4 rounds; dense totals 20 per round, tiltbench totals 10, 10, 10 and 12.5 -> speedups 2, 2, 2, 1.6
    row = SimpleNamespace(  # the fields of a MeasureRow that the standard error reads
        headline_baseline="dense-dynamic",
        n_batches=2,
        latency={
            "dense-dynamic": {"count": 8, "samples": [10.0] * 8},
            "tiltbench": {"count": 8, "samples": [5.0] * 6 + [6.0, 6.5]},
        },
    )
    assert speedup_standard_error(row) == pytest.approx(0.0)  # the median round is untouched by one outlier
    row.latency["tiltbench"]["samples"] = [5.0, 5.0, 5.5, 5.5, 5.0, 5.0, 5.5, 5.5]  # speedups 2, 1.82, 2, 1.82
    median, mad = (2 + 20 / 11) / 2, (2 - 20 / 11) / 2
    assert speedup_standard_error(row) == pytest.approx(1.4826 * mad / median / 4**0.5, rel=1e-6)


def test_check_user_mistakes(tmp_path):
    with pytest.raises(UserError, match="no report.json"):
        check(CheckConfig(str(tmp_path)))
    with pytest.raises(UserError):
        CheckConfig(str(tmp_path), tolerance=0)
    result = CliRunner().invoke(app, ["check", str(tmp_path / "nope")])
    assert result.exit_code == 2 and result.stderr.startswith("error:")


def test_the_baseline_sweeps_spread_widens_the_allowance_for_that_row_only(run_folder, tmp_path):
    baseline = _doctor(run_folder, tmp_path, "base", _exact)
    report = json.loads((tmp_path / "base" / "report.json").read_text())
    place = next(r for r in report["rows"] if r["knob"] == 0.3 and r["batch_size"] == 1)
    median = place["speedup_vs_dense_dynamic"]
    # as median_baseline.py records them: this row's three sweeps read 0.96, 1 and 1.03 x the median (7 % spread)
    from tiltbench.rows import short_name

    place_key = [short_name(place["checkpoint"]), 0.3, 1, "fp32"]
    report["config"]["speedup_readings"] = [{"place": place_key, "readings": [0.96 * median, median, 1.03 * median]}]
    (tmp_path / "base" / "report.json").write_text(json.dumps(report))

    def by(factor):
        def change(row):
            _exact(row)
            if row["knob"] == 0.3:  # both batch sizes move alike; only batch 1's baseline saw such a spread
                row["speedup_vs_dense_dynamic"] *= factor

        return change

    found = check(CheckConfig(_doctor(run_folder, tmp_path, "up6", by(1.06)), baseline=baseline)).regressions
    assert len(found) == 1 and "tilt 0.3 batch 4" in found[0] and "noise allows 5.0%)" in found[0]
    found = check(CheckConfig(_doctor(run_folder, tmp_path, "up15", by(1.15)), baseline=baseline)).regressions
    assert len(found) == 2 and "the spread of the baseline's sweeps 7.0%" in found[0] + found[1]
    # one wild sweep (readings 30 % apart) grants at most MAX_SPREAD_ALLOWANCE (8 %): a 9 % rise fails
    report["config"]["speedup_readings"][0]["readings"] = [0.8 * median, median, 1.1 * median]
    (tmp_path / "base" / "report.json").write_text(json.dumps(report))
    found = check(CheckConfig(_doctor(run_folder, tmp_path, "up9", by(1.09)), baseline=baseline)).regressions
    assert len(found) == 2 and "the spread of the baseline's sweeps 8.0%" in found[0] + found[1]
    same = _doctor(run_folder, tmp_path, "same", _exact)
    bad_entries = [
        {"place": ["x"], "readings": [1.0]},
        {"place": place_key, "readings": [1.0, float("inf")]},
        {"place": place_key, "readings": []},
        {"place": "abcd", "readings": [1.0]},
        {"readings": [1.0]},
    ]
    for bad in bad_entries:
        report["config"]["speedup_readings"] = [bad]
        (tmp_path / "base" / "report.json").write_text(json.dumps(report))
        with pytest.raises(UserError, match="speedup_readings are not"):
            check(CheckConfig(same, baseline=baseline))

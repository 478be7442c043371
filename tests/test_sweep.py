"""sweep/measure on a real (tiny) tiltbench checkpoint and real SST-2 inputs: files, resume, force, interrupt."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import DATA_DIR

import tiltbench.sweep as sweep_module
from tiltbench.errors import UserError
from tiltbench.latency import Latency, robust_total
from tiltbench.measure import MeasureConfig
from tiltbench.sweep import SweepConfig, sweep


def _config(checkpoint: str, tmp_path, rates=(0.0, 0.3), batches=(1, 4), **overrides) -> SweepConfig:
    measure = MeasureConfig(
        data_dir=str(DATA_DIR),
        max_eval_samples=16,
        latency_examples=8,
        warmup=0,
        min_iterations=2,
        min_seconds=0.0,
        **overrides,
    )
    return SweepConfig(
        (checkpoint,), knobs=rates, batch_sizes=batches, run_name="run", results_dir=str(tmp_path), measure=measure
    )


def test_sweep_writes_the_run_folder(tiny_checkpoint, tmp_path):
    report = sweep(_config(tiny_checkpoint, tmp_path))
    folder = tmp_path / "run"
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "environment.json",
        "report.json",
        "report.csv",
        "report.md",
        "pareto.png",
        "predicted_vs_measured.png",
        "pareto_size.png",
    } <= names
    rows = json.loads((folder / "report.json").read_text())["rows"]
    assert len(rows) == len(report.rows) == 4
    assert len(list(csv.DictReader((folder / "report.csv").open()))) == 4
    env = json.loads((folder / "environment.json").read_text())
    assert {"cpu", "threads", "versions", "git_commit", "attn_implementation", "seed", "transforms"} <= set(env)
    assert env["transforms"]["int8"]["backend"]  # how int8 rewrites the model here, recorded with every run
    row = report.rows[0]
    assert row.embeddings == "table" and row.memory_mb >= row.model_mb > 0
    assert isinstance(row.embedding_share, float)  # timed (its size is a benchmark's business, not a test's)
    assert sum(row.parameters.values()) > row.parameters["encoder"] > 0 and row.parameters["word_embeddings"] > 0
    row = next(r for r in rows if r["knob"] == 0.3 and r["batch_size"] == 4)
    assert set(row["latency"]) == {"tiltbench", "keep-all", "dense-dynamic", "dense-padded", "dense-eager"}
    assert row["latency"]["tiltbench"]["count"] == row["latency"]["dense-dynamic"]["count"] >= 2
    dense_row = next(r for r in rows if r["knob"] == 0.0 and r["batch_size"] == 4)
    assert "keep-all" not in dense_row["latency"] and dense_row["speedup_from_padding"] == 1.0
    assert row["latency"]["keep-all"]["count"] == row["latency"]["tiltbench"]["count"]
    # each part is the ratio of its own two variants' robust totals, recomputed here from the raw samples
    totals = {name: robust_total(Latency.from_values(lat["samples"]), row["n_batches"])
              for name, lat in row["latency"].items()}  # fmt: skip
    assert row["speedup_from_padding"] == pytest.approx(totals["dense-dynamic"] / totals["keep-all"])
    assert row["speedup_from_elimination"] == pytest.approx(totals["keep-all"] / totals["tiltbench"])
    assert row["speedup_vs_dense_dynamic"] == pytest.approx(totals["dense-dynamic"] / totals["tiltbench"])
    assert row["headline_baseline"] == "dense-dynamic"
    assert row["model"] and row["latency_examples"] == 8 and row["threads"] >= 1
    assert json.loads((folder / "config.json").read_text())["command"] == "sweep"
    assert row["predicted_speedup"] > 1 and row["mean_kept_tokens"][-1] < row["mean_kept_tokens"][0]
    assert row["flops_per_example"] == 2 * row["macs_per_example"]
    assert abs(row["fvcore"]["relative_difference"]) < 0.2  # tiny model: pooler/classifier weigh more
    assert row["n_examples"] == 8 and row["metric_examples"] == 16
    dense = next(r for r in rows if r["knob"] == 0.0 and r["batch_size"] == 4)
    assert dense["predicted_speedup"] == 1.0 and dense["metric_drop_points"] == 0.0


def test_rerun_skips_finished_rows_and_extends_the_grid(tiny_checkpoint, tmp_path, monkeypatch):
    sweep(_config(tiny_checkpoint, tmp_path, rates=(0.0,), batches=(2,)))
    measured: list = []
    original = sweep_module.measure_row

    def spy(bench, tilt_rate, batch_size, progress=None):
        measured.append((tilt_rate, batch_size))
        return original(bench, tilt_rate, batch_size, progress)

    monkeypatch.setattr(sweep_module, "measure_row", spy)
    report = sweep(_config(tiny_checkpoint, tmp_path, rates=(0.3,), batches=(2,)))  # extend with another rate
    assert measured == [(0.3, 2)] and len(report.rows) == 2 and report.skipped == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["knobs"] == [0.0, 0.3]  # extending keeps every rate the run has
    measured.clear()
    report = sweep(_config(tiny_checkpoint, tmp_path, rates=(0.0, 0.3), batches=(2,)))
    assert measured == [] and report.skipped == 2
    forced = _config(tiny_checkpoint, tmp_path, rates=(0.0,), batches=(2,))
    sweep(
        SweepConfig(
            forced.checkpoints,
            knobs=forced.knobs,
            batch_sizes=forced.batch_sizes,
            run_name=forced.run_name,
            results_dir=forced.results_dir,
            measure=forced.measure,
            force=True,
        )
    )
    assert measured == [(0.0, 2)]


def test_interrupted_sweep_keeps_finished_rows(tiny_checkpoint, tmp_path, monkeypatch):
    original = sweep_module.measure_row
    calls = {"n": 0}

    def flaky(bench, tilt_rate, batch_size, progress=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(bench, tilt_rate, batch_size, progress)

    monkeypatch.setattr(sweep_module, "measure_row", flaky)
    with pytest.raises(KeyboardInterrupt, match="interrupted: 2 rows kept .* rerun the same command to resume"):
        sweep(_config(tiny_checkpoint, tmp_path))
    assert len(json.loads((tmp_path / "run" / "report.json").read_text())["rows"]) == 2
    monkeypatch.setattr(sweep_module, "measure_row", original)
    assert sweep(_config(tiny_checkpoint, tmp_path)).skipped == 2  # the rerun resumes


def test_interrupted_command_says_how_to_resume_and_the_rerun_says_what_it_skipped(
    tiny_checkpoint, tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from tiltbench.cli import app

    original = sweep_module.measure_row
    calls = {"n": 0}

    def flaky(bench, tilt_rate, batch_size, progress=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(bench, tilt_rate, batch_size, progress)

    monkeypatch.setattr(sweep_module, "measure_row", flaky)
    args = ["sweep", "--checkpoint", tiny_checkpoint, "--tilt-rate", "0,0.3", "--batch-sizes", "2", *_FAST]
    args += ["--results-dir", str(tmp_path)]
    env = {"TILTBENCH_DATA_DIR": str(DATA_DIR)}
    first = CliRunner().invoke(app, args, env=env)
    assert first.exit_code == 130
    assert "interrupted: 1 rows kept" in first.stderr and "rerun the same command to resume" in first.stderr
    monkeypatch.setattr(sweep_module, "measure_row", original)
    second = CliRunner().invoke(app, args, env=env)
    assert second.exit_code == 0, second.output
    assert "resumed: 1 rows already in" in second.stderr


_FAST = ["--latency-examples", "4", "--min-iterations", "1", "--min-seconds", "0", "--warmup", "0"]
_FAST += ["--max-eval-samples", "8", "--no-fvcore"]


def test_pad_to_max_names_its_headline_baseline_dense_padded(tiny_checkpoint, tmp_path):
    report = sweep(_config(tiny_checkpoint, tmp_path, rates=(0.3,), batches=(4,), pad_to_max=True))
    row = report.rows[0].to_dict()
    assert row["headline_baseline"] == "dense-padded"
    assert set(row["latency"]) == {"tiltbench", "keep-all", "dense-padded", "dense-dynamic", "dense-eager"}
    totals = {name: robust_total(Latency.from_values(lat["samples"]), row["n_batches"])
              for name, lat in row["latency"].items()}  # fmt: skip
    assert row["speedup_from_padding"] == pytest.approx(totals["dense-padded"] / totals["keep-all"])
    assert row["speedup_vs_dense_padded"] == pytest.approx(totals["dense-padded"] / totals["tiltbench"])
    assert row["latency"]["tiltbench"]["count"] == row["latency"]["dense-padded"]["count"]  # one group


def test_a_run_folder_may_hold_its_own_checkpoint_and_a_failed_start_writes_nothing(tiny_checkpoint, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, folder / "checkpoint")  # as benchmarks/measure_minilm.py lays it out
    with pytest.raises(UserError, match="does not exist"):  # inputs fail before any file is written
        sweep(_config(str(folder / "checkpoint"), tmp_path, eval_file=str(tmp_path / "missing.csv")))
    assert [p.name for p in folder.iterdir()] == ["checkpoint"]
    sweep(_config(str(folder / "checkpoint"), tmp_path, rates=(0.0,), batches=(2,)))
    assert {"config.json", "report.json", "checkpoint"} <= {p.name for p in folder.iterdir()}


def test_sweep_refuses_a_folder_it_does_not_own(tiny_checkpoint, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds no tiltbench measure/sweep run"):
        sweep(_config(tiny_checkpoint, tmp_path))
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["notes.txt"]


def test_other_settings_in_same_folder_are_refused(tiny_checkpoint, tmp_path):
    sweep(_config(tiny_checkpoint, tmp_path, rates=(0.0,), batches=(1,)))
    with pytest.raises(UserError, match="other settings"):
        sweep(_config(tiny_checkpoint, tmp_path, rates=(0.0,), batches=(1,), pad_to_max=True))


@pytest.mark.parametrize("bad", [dict(batches=(0,)), dict(rates=())])
def test_bad_grids_are_user_errors(tiny_checkpoint, tmp_path, bad):
    with pytest.raises(UserError):
        _config(tiny_checkpoint, tmp_path, **bad)


def test_measure_command_json_and_user_mistakes(tiny_checkpoint, tmp_path):
    from typer.testing import CliRunner

    from tiltbench.cli import app

    runner = CliRunner()
    common = [
        "--results-dir",
        str(tmp_path),
        "--latency-examples",
        "4",
        "--min-iterations",
        "1",
        "--min-seconds",
        "0",
        "--warmup",
        "0",
        "--max-eval-samples",
        "8",
        "--no-fvcore",
    ]
    env = {"TILTBENCH_DATA_DIR": str(DATA_DIR)}
    ok = runner.invoke(
        app, ["measure", tiny_checkpoint, "--tilt-rates", "0,0.5", "--batch-sizes", "2", "--json", *common], env=env
    )
    assert ok.exit_code == 0, ok.output
    out = json.loads(ok.stdout)
    assert out["folder"].endswith("measure-ckpt") and len(out["rows"]) == 2
    assert json.loads((tmp_path / "measure-ckpt" / "config.json").read_text())["command"] == "measure"
    assert "samples" not in out["rows"][0]["latency"]["tiltbench"]
    for args in (["--batch-sizes", "0"], ["--batch-sizes", "x"], ["--tilt-rates", ","]):
        bad = runner.invoke(app, ["measure", tiny_checkpoint, *args, *common], env=env)
        assert bad.exit_code == 2 and bad.stderr.startswith("error:") and len(bad.stderr.splitlines()) == 1
    missing = runner.invoke(app, ["measure", str(tmp_path / "nope"), *common], env=env)
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    sweep_missing = runner.invoke(app, ["sweep", "--checkpoint", str(tmp_path / "nope"), *common], env=env)
    assert sweep_missing.exit_code == 2


def test_terminal_table_is_readable_at_100_columns(tiny_checkpoint, tmp_path):
    from rich.console import Console

    from tiltbench.console import table
    from tiltbench.results import screen_tables

    report = sweep(_config(tiny_checkpoint, tmp_path, rates=(0.0, 0.3), batches=(1, 4)))
    console = Console(width=100, record=True)
    for checkpoint, headers, rows in screen_tables(report.rows):
        console.print(table(f"{checkpoint} (2 threads) -> {tmp_path / 'run'}", headers, rows, "caption " * 20))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    header_line = next(line for line in lines if "tilt" in line and "batch" in line)
    for header in headers:  # every header on one line, none wrapped or cut
        assert header in header_line
    assert "…" not in text
    assert sum(1 for line in lines if line.split()[:1] == ["0.3"]) == 2  # both batch sizes of tilt 0.3

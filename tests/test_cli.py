"""tiltbench CLI: each command's happy path on real data (one tiny fine-tune), and user mistakes -> exit 2."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR
from typer.testing import CliRunner

from tiltbench.cli import app, main
from tiltbench.schedule import Schedule
from tiltbench.speed_model import ModelDims, predict_speedup

runner = CliRunner()


def cli(*args: str, env: dict[str, str] | None = None):
    """Invoke the app in-process with the local data dir set (the CLI never touches the network here)."""
    return runner.invoke(app, list(args), env={"TILTBENCH_DATA_DIR": str(DATA_DIR), **(env or {})})


def ok_json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def error_line(result) -> str:
    """The one 'error: ...' line of a user mistake (exit 2, nothing on stdout, no traceback)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Fine-tune the packaged MiniLM on 64 SST-2 examples at tilt rate 0.2, once for the module."""
    out = tmp_path_factory.mktemp("finetune") / "ckpt"
    args = "--task sst2 --max-train-samples 64 --max-eval-samples 32 --max-seq-len 32 --tilt-rate 0.2"
    args += " --epochs 1 --batch-size 16 --json"
    result = cli("finetune", *args.split(), "--output", str(out))
    summary = ok_json(result)
    assert 0.0 <= summary["accuracy"] <= 1.0
    assert summary["output"] == str(out)
    return out


@pytest.fixture
def own_checkpoint(checkpoint, tmp_path) -> Path:
    """A private copy for commands that rewrite tiltbench.json."""
    return Path(shutil.copytree(checkpoint, tmp_path / "ckpt"))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# --- finetune -------------------------------------------------------------------------------------


def test_finetune_files_have_normal_modes(checkpoint):
    from tiltbench.files import current_umask

    expected = 0o666 & ~current_umask()
    modes = {p.name: p.stat().st_mode & 0o777 for p in checkpoint.iterdir() if p.is_file()}
    assert "tiltbench.json" in modes and "model.safetensors" in modes
    assert modes == dict.fromkeys(modes, expected)
    assert not [p for p in checkpoint.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_finetune_overwrite_replaces_only_a_checkpoint(checkpoint, tmp_path):
    target = Path(shutil.copytree(checkpoint, tmp_path / "ckpt"))
    (target / "metrics.json").write_text("{}", encoding="utf-8")
    args = "--task sst2 --max-train-samples 16 --max-eval-samples 8 --max-seq-len 16 --json --overwrite".split()
    summary = ok_json(cli("finetune", *args, "--output", str(target)))
    assert summary["output"] == str(target)
    assert read_json(target / "metrics.json")["history"]  # the new checkpoint replaced the old one
    assert read_json(target / "tiltbench.json")["train_config"]["n_train"] == 16


def test_finetune_writes_a_checkpoint(checkpoint):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (checkpoint / name).is_file(), name
    meta = read_json(checkpoint / "tiltbench.json")
    assert meta["method"] == "tilted" and meta["scorer"] == "acc"
    assert meta["knob_name"] == "tilt_rate" and meta["knob"] == 0.2 and meta["method_config"] == {"shape": "geometric"}
    assert meta["schedule"] == {
        "shape": "geometric",
        "tilt_rate": 0.2,
        "keep": None,
        "min_tokens": 1,
        "fractions": None,
    }
    assert meta["task"]["name"] == "sst2" and meta["task"]["label_names"] == ["negative", "positive"]
    assert meta["max_seq_len"] == 32 and meta["seed"] == 0
    assert meta["train_config"]["n_train"] == 64 and meta["train_config"]["n_eval"] == 32
    assert meta["environment"]["versions"]["torch"]
    metrics = read_json(checkpoint / "metrics.json")
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["train_seconds"] >= 0 and len(metrics["history"]) == 1
    assert [s["name"] for s in metrics["stages"]] == ["fine-tune"] and not (checkpoint / "method.safetensors").exists()
    config = read_json(checkpoint / "config.json")
    assert config["id2label"] == {"0": "negative", "1": "positive"}


# --- offline-tune ---------------------------------------------------------------------------------


def check_rows(rows: list[dict], rates: list[float]) -> None:
    assert [r["tilt_rate"] for r in rows] == rates
    assert all(r.keys() == {"tilt_rate", "metric", "predicted_speedup"} for r in rows)
    assert all(0.0 <= r["metric"] <= 1.0 for r in rows)
    speedups = [r["predicted_speedup"] for r in rows]
    assert speedups[0] == 1.0
    assert all(a < b for a, b in zip(speedups, speedups[1:], strict=False))


def test_offline_tune_is_a_look_unless_asked_to_record(own_checkpoint):
    before = (own_checkpoint / "tiltbench.json").read_bytes()
    look = ok_json(cli("offline-tune", str(own_checkpoint), *"--tilt-rates 0,0.4 --max-eval-samples 16 --json".split()))
    assert look["recorded"] is False
    assert (own_checkpoint / "tiltbench.json").read_bytes() == before


def test_offline_tune_records_the_choice(own_checkpoint):
    options = "--tilt-rates 0,0.2,0.4 --max-eval-samples 32 --record --json".split()
    report = ok_json(cli("offline-tune", str(own_checkpoint), *options))
    assert report["recorded"] is True
    rows = report["rows"]
    check_rows(rows, [0.0, 0.2, 0.4])
    within_one_point = [r["tilt_rate"] for r in rows if 100 * (rows[0]["metric"] - r["metric"]) <= 1 + 1e-9]
    assert report["method"] == "tilted" and report["knob_name"] == "tilt_rate"
    assert report["chosen_knob"] == max(within_one_point)
    meta = read_json(own_checkpoint / "tiltbench.json")
    assert meta["schedule"]["tilt_rate"] == meta["knob"] == report["chosen_knob"]
    assert meta["train_schedule"]["tilt_rate"] == 0.2
    assert meta["offline_tune"]["chosen_knob"] == report["chosen_knob"]
    assert meta["offline_tune"]["n_examples"] == 32


def test_offline_tune_target_speedup(checkpoint):
    before = (checkpoint / "tiltbench.json").read_bytes()
    rates = [0.0, 0.05, 0.1, 0.2, 0.4]
    options = ["--target-speedup", "1.3", "--max-eval-samples", "32", "--json"]
    grid = ",".join(map(str, rates))
    report = ok_json(cli("offline-tune", str(checkpoint), "--tilt-rates", grid, *options))
    check_rows(report["rows"], rates)
    reaching = [r["tilt_rate"] for r in report["rows"] if r["predicted_speedup"] >= 1.3]
    assert len(reaching) < len(rates) - 1  # some non-zero rate falls short, so the choice means something
    assert report["chosen_knob"] == min(reaching)
    assert (checkpoint / "tiltbench.json").read_bytes() == before  # a look: nothing recorded


def test_offline_tune_output_folder(checkpoint, tmp_path):
    out = tmp_path / "run"
    options = "--tilt-rates 0,0.3 --max-eval-samples 16".split()
    result = cli("offline-tune", str(checkpoint), *options, "--output", str(out))
    assert result.exit_code == 0, result.output
    beside = tmp_path / "with-checkpoint"  # a run folder may hold the checkpoint it evaluates (make demo does)
    shutil.copytree(checkpoint, beside / "checkpoint")
    assert cli("offline-tune", str(beside / "checkpoint"), *options, "--output", str(beside)).exit_code == 0
    assert (beside / "report.json").is_file()
    again = cli("offline-tune", str(checkpoint), *options, "--output", str(out))
    assert "pass --overwrite" in error_line(again)
    assert cli("offline-tune", str(checkpoint), *options, "--output", str(out), "--overwrite").exit_code == 0
    assert "chosen tilt rate" in result.stdout
    assert {"config.json", "environment.json", "report.json", "report.md"} <= {p.name for p in out.iterdir()}
    assert read_json(out / "config.json")["command"] == "offline-tune"
    assert read_json(out / "environment.json")["versions"]["transformers"]
    report = read_json(out / "report.json")
    assert report["task"] == "sst2" and report["n_examples"] == 16
    assert [r["knob"] for r in report["rows"]] == [0.0, 0.3]
    assert f"Chosen tilt rate: **{report['chosen_knob']:g}**" in (out / "report.md").read_text()


# --- predict --------------------------------------------------------------------------------------


def predictions(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_predict_texts(checkpoint, minilm_tokenizer):
    texts = ["a great movie", "awful"]
    rows = predictions(cli("predict", str(checkpoint), "--text", texts[0], "--text", texts[1], "--json"))
    assert [r["text"] for r in rows] == texts
    for text, row in zip(texts, rows, strict=True):
        assert row["label"] in {"negative", "positive"}
        assert len(row["logits"]) == 2
        kept = row["kept_tokens"]
        n0 = len(minilm_tokenizer(text)["input_ids"])
        assert len(kept) == 7 and kept[0] == n0
        assert all(a >= b for a, b in zip(kept, kept[1:], strict=False))
        assert kept == Schedule(6, 0.2).counts(n0)  # the checkpoint's recorded rate
        assert row["label"] == ("positive" if row["logits"][1] > row["logits"][0] else "negative")


def test_predict_at_tilt_rate_zero_keeps_every_token(checkpoint):
    result = cli("predict", str(checkpoint), "--text", "a great movie", "--tilt-rate", "0", "--json")
    rows = predictions(result)
    assert rows[0]["kept_tokens"] == [5] * 7


def test_predict_input_file_matches_text(checkpoint, tmp_path):
    path = tmp_path / "inputs.jsonl"
    path.write_text('{"text": "a great movie", "text_pair": null}\n\n{"text": "awful"}\n', encoding="utf-8")
    from_file = predictions(cli("predict", str(checkpoint), "--input", str(path), "--json"))
    result = cli("predict", str(checkpoint), "--text", "a great movie", "--text", "awful", "--json")
    from_text = predictions(result)
    assert [r["text"] for r in from_file] == ["a great movie", "awful"]
    for a, b in zip(from_file, from_text, strict=True):
        assert a["label"] == b["label"] and a["kept_tokens"] == b["kept_tokens"]
        assert a["logits"] == pytest.approx(b["logits"], abs=1e-5)


# --- speedup-predict ------------------------------------------------------------------------------


def test_speedup_predict_reads_the_default_model():
    out = ok_json(cli("speedup-predict", "--tilt-rate", "0.2", "--seq-len", "64", "--json"))
    assert (out["hidden"], out["ffn"], out["layers"]) == (384, 1536, 6)
    assert out["seq_len"] == 64 and out["tilt_rate"] == 0.2
    assert out["kept_tokens"] == Schedule(6, 0.2).counts(64)[1:]
    assert out["macs_dense"] > out["macs"] > 0
    assert out["predicted_speedup"] == pytest.approx(out["macs_dense"] / out["macs"])
    assert out["predicted_speedup"] > 1


def test_speedup_predict_explicit_dims_need_no_model(monkeypatch):
    def no_model(name):
        raise AssertionError("explicit --hidden/--ffn/--layers must not read a model")

    monkeypatch.setattr("tiltbench.models.resolve_model", no_model)
    args = "speedup-predict --hidden 768 --ffn 3072 --layers 12 --tilt-rate 0.1 --seq-len 128 --json".split()
    out = ok_json(cli(*args))
    assert (out["hidden"], out["ffn"], out["layers"]) == (768, 3072, 12)
    assert len(out["kept_tokens"]) == 12 and out["predicted_speedup"] > 1


def test_speedup_predict_target():
    out = ok_json(cli("speedup-predict", "--target-speedup", "2", "--seq-len", "128", "--json"))
    rate = out["tilt_rate"]
    assert 0 < rate < 1 and out["predicted_speedup"] >= 2
    below = predict_speedup(ModelDims(384, 1536, 6), Schedule(6, round(rate - 1e-4, 4)), [128])
    assert below.predicted_speedup < 2  # the smallest such rate on the 1e-4 grid


def test_speedup_predict_table():
    result = cli("speedup-predict", "--hidden", "64", "--ffn", "128", "--layers", "2", "--tilt-rate", "0.5")
    assert result.exit_code == 0, result.output
    assert "FLOP-ratio speedup" in result.stdout and "no profile" in result.stdout


# --- the bad-input matrix: every user mistake is one 'error:' line, exit 2, and changes no file ------------
#
# Placeholders: {tmp} a fresh folder holding the files of `bad_input_files`; {ckpt} the module's checkpoint;
# {ro} a folder not even root can write (sysfs). Every case runs through main(), the real entry point.

BAD_INPUTS = {  # command line (split on spaces) -> part of the one error line
    "": "no command given; choose one of finetune, offline-tune",
    "no-such-command": "No such command 'no-such-command'",
    "finetune": "Missing option '--output'",
    "finetune --output {tmp}/o --batch-size abc": "Invalid value for '--batch-size'",
    # finetune: options
    "finetune --output {tmp}/o --tilt-rate 1.5": "tilt rate must be in [0, 1), got 1.5",
    "finetune --output {tmp}/o --tilt-rate -0.1": "tilt rate must be in [0, 1), got -0.1",
    "finetune --output {tmp}/o --task sst3": "unknown task 'sst3'",
    "finetune --output {tmp}/o --task qnli": "qnli has no train split",
    "finetune --output {tmp}/o --max-seq-len 1": "--max-seq-len must be in [2, 512], got 1",
    "finetune --output {tmp}/o --max-eval-samples 0": "--max-eval-samples must be at least 1",
    "finetune --output {tmp}/o --threads 0": "--threads must be at least 1",
    "finetune --output {tmp}/o --embeddings bag": "--embeddings must be table or hashed, got 'bag'",
    "finetune --output {tmp}/o --embeddings hashed --hash-dim 100": "--hash-dim must be a multiple of 8",
    "finetune --output {tmp}/o --hash-dim 256": "--hash-dim goes with --embeddings hashed",
    "finetune --output {tmp}/o --embeddings hashed --hash-fit all": "--hash-fit must be task or vocabulary",
    "finetune --output {tmp}/o --hash-fit vocabulary": "--hash-fit goes with --embeddings hashed",
    "finetune --output {tmp}/o --hash-align-epochs 1": "--hash-align-epochs and --hash-align-lr go with --embeddings",
    "finetune --output {tmp}/o --embeddings hashed --hash-align-epochs -1": "--hash-align-epochs must be >= 0",
    "finetune --output {tmp}/o --epochs 0": "--epochs, --search-epochs, --retrain-epochs and --batch-size must be",
    "finetune --output {tmp}/o --method nope": "unknown method 'nope'; choose from",
    "finetune --output {tmp}/o --method power --tilt-rate 0.2": "--tilt-rate goes with --method tilted, not 'power'",
    "finetune --output {tmp}/o --method power --lambda -1": "--lambda must be >= 0",
    "finetune --output {tmp}/o --method power --lambda inf": "--lambda must be a finite number, got inf",
    "finetune --output {tmp}/o --lr nan": "--lr must be a finite number, got nan",
    "finetune --output {tmp}/o --hash-align-lr inf": "--hash-align-lr must be a finite number",
    "finetune --output {tmp}/o --knob-range 0:inf": "--knob-range needs finite LOW < HIGH",
    "finetune --output {tmp}/o --method power --method-lr 0": "--method-lr positive",
    "finetune --output {tmp}/o --method power --search-epochs 0": "--search-epochs, --retrain-epochs",
    "finetune --output {tmp}/o --method power --init {tmp}/missing": "does not exist or is not a folder",
    "offline-tune {ckpt} --knobs 0,-1": "grid values must be finite and >= 0, got -1",
    "finetune --output {tmp}/o --lr 0": "--lr must be positive",
    "finetune --output {tmp}/o --shape cubic": "unknown schedule shape 'cubic'",
    "finetune --output {tmp}/o --scorer magic": "unknown scorer 'magic'",
    "finetune --output {tmp}/o --data-dir /nonexistent": "'/nonexistent' (from --data-dir) does not exist",
    "finetune --output {tmp}/o --data-dir {tmp}": "missing data file",
    "finetune --output {tmp}/o --model ./no-such-folder": "model folder './no-such-folder' does not exist",
    # finetune: the user's own files
    "finetune --output {tmp}/o --train-file {tmp}/data.csv": "pass --eval-file too",
    "finetune --output {tmp}/o --train-file {tmp}/data.csv --eval-file {tmp}/data.csv --text-column nope": (
        "no column 'nope'; columns are text, label"
    ),
    "finetune --output {tmp}/o --train-file {tmp}/empty.csv --eval-file {tmp}/data.csv": "empty.csv has no rows",
    "finetune --output {tmp}/o --train-file {tmp}/header.csv --eval-file {tmp}/data.csv": (
        "header.csv has no rows below its header"
    ),
    "finetune --output {tmp}/o --train-file {tmp}/bad.jsonl --eval-file {tmp}/data.csv": (
        "bad.jsonl:2: not a JSON object"
    ),
    "finetune --output {tmp}/o --train-file {tmp}/latin1.csv --eval-file {tmp}/data.csv": (
        "latin1.csv:3: not UTF-8 text (byte 0xe9)"
    ),
    "finetune --output {tmp}/o --train-file {tmp}/ragged.csv --eval-file {tmp}/data.csv": (
        "ragged.csv:3: 3 fields where the header has 2"
    ),
    "finetune --output {tmp}/o --train-file {tmp}/some-pairs.jsonl --eval-file {tmp}/some-pairs.jsonl "
    "--text-pair-column text_pair": "some-pairs.jsonl:2: no 'text_pair' value",
    "finetune --output {tmp}/o --train-file {tmp}/no-label.csv --eval-file {tmp}/data.csv": (
        "no-label.csv:3: no 'label' value"
    ),
    "finetune --output {tmp}/o --train-file {tmp}/one-class.csv --eval-file {tmp}/data.csv": (
        "a classifier needs at least two classes"
    ),
    "finetune --output {tmp}/o --train-file {tmp}/mixed-labels.jsonl --eval-file {tmp}/data.csv": (
        "labels mix numbers with fractions and 'abc'"
    ),
    "finetune --output {tmp}/o --train-file {tmp}/data.csv --eval-file {tmp}/unknown-label.csv": (
        "label 'maybe' is not one of 0, 1"
    ),
    "finetune --output {tmp}/o --train-file {tmp}/notes.txt --eval-file {tmp}/data.csv": (
        "unsupported file type '.txt'"
    ),
    # finetune: what the user owns is never overwritten
    "finetune --output {tmp}/data.csv": "--output '{tmp}/data.csv' is a file, not a folder",
    "finetune --output {tmp}/nonempty": "is not empty and holds no tiltbench checkpoint",
    "finetune --output {tmp}/old-checkpoint": "already holds a tiltbench checkpoint; pass --overwrite",
    "finetune --output {ro}/o": "is not writable",
    # offline-tune
    "offline-tune {tmp}": "is not a tiltbench checkpoint",
    "offline-tune {tmp}/missing": "does not exist",
    "offline-tune {tmp}/empty-meta": "tiltbench.json lacks 'method'",
    "offline-tune {tmp}/damaged-meta": "tiltbench.json is damaged",
    "offline-tune {ckpt} --tilt-rates ,": "grid ',' is empty",
    "offline-tune {ckpt} --tilt-rates 0,1": "tilt rate must be in [0, 1), got 1.0",
    "offline-tune {ckpt} --max-drop -1": "--max-drop must be >= 0 points",
    "offline-tune {ckpt} --task stsb": "trained on sst2, a 2-class task; stsb is a regression task",
    "offline-tune {ckpt} --max-seq-len 0": "--max-seq-len must be in [2, 512], got 0",
    "offline-tune {ckpt} --eval-file {tmp}/latin1.csv": "not UTF-8 text",
    "offline-tune {ckpt} --output {ckpt}": "is inside the checkpoint",
    "offline-tune {ckpt} --output {ckpt}/report": "is inside the checkpoint",
    "offline-tune {ckpt} --output {tmp}/nonempty": "is not empty and holds no offline-tune run",
    "offline-tune {ckpt} --output {tmp}/offline-run": "already holds an offline-tune run; pass --overwrite",
    "offline-tune {ckpt} --tilt-rates 0,0.05 --target-speedup 50 --max-eval-samples 8": "widen the grid",
    # predict
    "predict {tmp} --text hi": "is not a tiltbench checkpoint",
    "predict {tmp}/missing --text hi": "does not exist",
    "predict {tmp}/empty-meta --text hi": "tiltbench.json lacks 'method'",
    "predict {ckpt}": "nothing to predict",
    "predict {ckpt} --text hi --tilt-rate 1.5": "tilt rate must be in [0, 1), got 1.5",
    "predict {ckpt} --input {tmp}/data.csv": "--input takes a .jsonl file",
    "predict {ckpt} --input {tmp}/missing.jsonl": "does not exist",
    "predict {ckpt} --input {tmp}/bad.jsonl": "bad.jsonl:2: not a JSON object",
    "predict {ckpt} --input {tmp}/latin1.jsonl": "latin1.jsonl:2: not UTF-8 text",
    "predict {ckpt} --input {tmp}/some-pairs.jsonl": "some-pairs.jsonl:2: 'text_pair' is on some lines",
    "predict {ckpt} --input {tmp}/no-text.jsonl": "no-text.jsonl:1: each line must be a JSON object with a 'text'",
    "predict {ckpt} --input {tmp}/empty.jsonl": "empty.jsonl has no rows",
    # measure and sweep
    "measure {tmp}/missing --results-dir {tmp}/r": "does not exist",
    "measure {ckpt} --results-dir {tmp}/r --task stsb": "stsb is a regression task",
    "measure {ckpt} --results-dir {tmp}/r --max-seq-len 0": "--max-seq-len must be in [2, 512], got 0",
    "measure {ckpt} --results-dir {tmp}/r --batch-sizes 0": "batch sizes must be at least 1",
    "measure {ckpt} --results-dir {tmp}/r --batch-sizes x": "--batch-sizes must be a comma list of integers",
    "measure {ckpt} --results-dir {tmp}/r --latency-examples 0": "--latency-examples must be at least 1",
    "measure {ckpt} --results-dir {tmp}/r --tilt-rate 0.1,1": "tilt rate must be in [0, 1), got 1.0",
    "measure {ckpt} --results-dir {tmp}/r --data-dir {tmp}": "missing data file",
    "measure {ckpt} --results-dir {tmp}/r --eval-file {tmp}/latin1.csv": "latin1.csv:3: not UTF-8 text",
    "measure {ckpt} --results-dir {ro}": "is not writable",
    "measure {ckpt} --results-dir {tmp}/data.csv": "is a file, not a folder",
    "measure {ckpt} --results-dir {tmp} --run-name nonempty": "holds no tiltbench measure/sweep run",
    "sweep --checkpoint {ckpt} --results-dir {ro}": "is not writable",
    "sweep --checkpoint {ckpt} --results-dir {tmp}/r --tilt-rate 1.5": "tilt rate must be in [0, 1), got 1.5",
    "sweep --checkpoint {ckpt} --results-dir {tmp}/r --run-name ../x": "--run-name must be a plain folder name",
    "sweep --checkpoint {tmp}/missing --results-dir {tmp}/r": "does not exist",
    # speedup-predict, calibrate, check
    "speedup-predict": "pass exactly one of --tilt-rate (--knob) and --target-speedup",
    "speedup-predict --tilt-rate 0.1 --target-speedup 2": "pass exactly one of",
    "speedup-predict --hidden 768 --tilt-rate 0.1": "pass all of --hidden, --ffn and --layers",
    "speedup-predict --target-speedup 999 --seq-len 8": "out of reach",
    "speedup-predict --tilt-rate 0.1 --seq-len 0": "--seq-len must be at least 1",
    "speedup-predict --tilt-rate 0.1 --task sst3": "unknown task 'sst3'",
    "speedup-predict --tilt-rate 0.1 --profile {tmp}/data.csv": "is not a tiltbench latency profile",
    "speedup-predict --model ./no-such-folder --tilt-rate 0.1": "model folder",
    "calibrate --profile {ro}/profile.json": "is not writable",
    "calibrate --profile {tmp}/data.csv": "exists and is not a tiltbench profile; it is not overwritten",
    "calibrate --profile {tmp}/nonempty": "is a folder",
    "calibrate --profile {tmp}/p.json --reps 0": "--reps >= 1",
    "check {tmp}": "holds no report.json",
    "check {tmp}/missing": "holds no report.json",
    "check {tmp}/offline-run": "is an offline-tune run",
    "check {tmp}/offline-run --tolerance 0": "--tolerance must be positive",
    # [stack]: transforms
    "measure {ckpt} --results-dir {tmp}/r --quantize int4": "--quantize must be none or int8, got 'int4'",
    "measure {ckpt} --results-dir {tmp}/r --dtype fp16": "--dtype must be fp32 or bf16, got 'fp16'",
    "measure {ckpt} --results-dir {tmp}/r --quantize int8 --dtype bf16": "do not stack",
    "sweep --checkpoint {ckpt} --results-dir {tmp}/r --transforms fp32,int4": "unknown transform 'int4'",
    "sweep --checkpoint {ckpt} --results-dir {tmp}/r --transforms ,": "--transforms is empty",
    "sweep --checkpoint {ckpt} --results-dir {tmp}/r --transforms int8 --dtype bf16": "--transforms, or --quantize",
    "offline-tune {ckpt} --quantize int8 --dtype bf16": "do not stack",
    "offline-tune {ckpt} --dtype bf8": "--dtype must be fp32 or bf16",
    "predict {ckpt} --text hi --quantize yes": "--quantize must be none or int8",
    "calibrate --profile {tmp}/p.json --quantize int8 --dtype bf16": "do not stack",
    "check {tmp}/offline-run --quantize int4": "--quantize must be none or int8",
    # [scale]: devices, processes, shards
    "finetune --output {tmp}/o --grad-accum 0": "--grad-accum must be at least 1",
    "finetune --output {tmp}/o --mixed-precision fp8": "--mixed-precision must be one of no, bf16, fp16",
    "finetune --output {tmp}/o --device tpu": "--device must be one of auto, cpu, cuda",
    "measure {ckpt} --device tpu": "--device must be one of auto, cpu, cuda",
    "predict {ckpt} --text hi --device tpu": "--device must be one of auto, cpu, cuda",
    "offline-tune {ckpt} --device tpu": "--device must be one of auto, cpu, cuda",
    "calibrate --profile {tmp}/p.json --device tpu": "--device must be one of auto, cpu, cuda",
    "sweep --checkpoint {ckpt} --shard 3/3": "--shard must be i/N with 0 <= i < N",
    "sweep --checkpoint {ckpt} --shard x": "--shard must be i/N",
    "merge {tmp}/missing": "does not exist",
    "merge {tmp}": "not a sweep shard",
}
if not torch.cuda.is_available():  # without a GPU, asking for one is a user mistake
    BAD_INPUTS["measure {ckpt} --device cuda"] = "no CUDA GPU is visible"
    BAD_INPUTS["finetune --output {tmp}/o --mixed-precision fp16"] = "fp16 needs a CUDA GPU"
else:  # with one, int8 there is the mistake: dynamic int8 Linear has no CUDA kernel
    BAD_INPUTS["measure {ckpt} --device cuda --quantize int8"] = "runs on the CPU only"


@pytest.fixture(scope="module")
def bad_input_files(tmp_path_factory, checkpoint) -> Path:
    """The files the bad-input matrix points at, made once; each case runs on its own copy."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    texts = {
        "data.csv": "text,label\nhello,1\nbye,0\n",
        "empty.csv": "",
        "header.csv": "text,label\n",
        "bad.jsonl": '{"text": "fine", "label": 1}\n{"text": "broken", "label": \n',
        "ragged.csv": "text,label\nhello,1\nbye,0,extra\n",
        "some-pairs.jsonl": '{"text": "a", "text_pair": "b", "label": 1}\n{"text": "c", "label": 0}\n',
        "no-label.csv": "text,label\nhello,1\nbye,\n",
        "one-class.csv": "text,label\nhello,1\nbye,1\n",
        "mixed-labels.jsonl": '{"text": "a", "label": 0.5}\n{"text": "b", "label": "abc"}\n',
        "unknown-label.csv": "text,label\nhello,1\nbye,maybe\n",
        "notes.txt": "text,label\nhello,1\n",
        "no-text.jsonl": '{"review": "a"}\n',
        "empty.jsonl": "\n",
    }
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "latin1.csv").write_bytes("text,label\nhello,1\ncaf\u00e9,0\n".encode("latin-1"))
    (folder / "latin1.jsonl").write_bytes('{"text": "a"}\n{"text": "caf\u00e9"}\n'.encode("latin-1"))
    (folder / "nonempty").mkdir()
    (folder / "nonempty" / "thesis.tex").write_text("mine", encoding="utf-8")
    (folder / "old-checkpoint").mkdir()
    shutil.copy(checkpoint / "tiltbench.json", folder / "old-checkpoint")
    (folder / "empty-meta").mkdir()
    (folder / "empty-meta" / "tiltbench.json").write_text("{}", encoding="utf-8")
    (folder / "damaged-meta").mkdir()
    meta = read_json(checkpoint / "tiltbench.json")
    meta["schedule"]["tilt_rate"] = "fast"
    (folder / "damaged-meta" / "tiltbench.json").write_text(json.dumps(meta), encoding="utf-8")
    (folder / "offline-run").mkdir()
    (folder / "offline-run" / "config.json").write_text('{"command": "offline-tune"}', encoding="utf-8")
    (folder / "offline-run" / "report.json").write_text('{"rows": [], "chosen_tilt_rate": 0.1}', encoding="utf-8")
    return folder


def snapshot(*folders: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file below the folders with its size, mtime and content."""
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime_ns, path.read_bytes())
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["tiltbench", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


UNWRITABLE = Path("/sys/tiltbench-bad-input")  # sysfs refuses new files even to root


def test_the_bad_input_matrix_is_large():
    assert len(BAD_INPUTS) >= 40


@pytest.mark.parametrize("command", BAD_INPUTS)
def test_bad_input(command, bad_input_files, checkpoint, tmp_path, monkeypatch, capsys):
    if "{ro}" in command and not UNWRITABLE.parent.is_dir():
        pytest.skip("no sysfs here to stand for an unwritable folder")
    work = Path(shutil.copytree(bad_input_files, tmp_path / "in"))
    monkeypatch.setenv("TILTBENCH_DATA_DIR", str(DATA_DIR))
    monkeypatch.chdir(tmp_path)  # a stray relative write would land here and be caught
    places = {"tmp": work, "ckpt": checkpoint, "ro": UNWRITABLE}
    args = [word.format(**places) for word in command.split()]
    before = snapshot(tmp_path, checkpoint)
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2, (out, err)
    assert "Traceback" not in err and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert BAD_INPUTS[command].format(**places) in lines[0]
    assert snapshot(tmp_path, checkpoint) == before  # nothing written, nothing changed


def test_missing_data_dir_from_env(tmp_path):
    result = cli("finetune", "--output", str(tmp_path / "o"), env={"TILTBENCH_DATA_DIR": "/nonexistent"})
    assert "$TILTBENCH_DATA_DIR" in error_line(result)


def test_user_mistake_inside_progress_prints_only_the_error(tmp_path):
    result = cli("finetune", "--output", str(tmp_path / "o"), "--data-dir", "/nonexistent")
    assert result.stderr.splitlines() == [error_line(result)]


def test_invalid_checkpoint_meta(tmp_path):
    (tmp_path / "tiltbench.json").write_text("{", encoding="utf-8")
    assert "is not valid JSON" in error_line(cli("offline-tune", str(tmp_path)))


def test_debug_env_shows_the_exception():
    result = cli("speedup-predict", env={"TILTBENCH_DEBUG": "1"})
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "UserError"


# --- main() ------------------------------------------------------------------------------------------


def test_main_success(monkeypatch, capsys):
    args = "speedup-predict --hidden 8 --ffn 16 --layers 2 --tilt-rate 0.5 --json".split()
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 0
    assert json.loads(out)["layers"] == 2


def test_a_file_as_model_folder_is_one_line_error():
    assert "model folder" in error_line(cli("speedup-predict", "--model", "README.md", "--tilt-rate", "0.1"))

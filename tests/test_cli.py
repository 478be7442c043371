"""tiltbench CLI: each command's happy path on real data (one tiny fine-tune), and user mistakes -> exit 2."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import DATA_DIR
from typer.testing import CliRunner

from tiltbench.cli import app, main
from tiltbench.schedule import Schedule
from tiltbench.speedup import ModelDims, predict_speedup

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


def test_finetune_writes_a_checkpoint(checkpoint):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (checkpoint / name).is_file(), name
    meta = read_json(checkpoint / "tiltbench.json")
    assert meta["method"] == "tilted" and meta["scorer"] == "acc"
    assert meta["schedule"] == {"shape": "geometric", "tilt_rate": 0.2, "keep": None, "min_tokens": 1}
    assert meta["task"]["name"] == "sst2" and meta["task"]["label_names"] == ["negative", "positive"]
    assert meta["max_seq_len"] == 32 and meta["seed"] == 0
    assert meta["train_config"]["n_train"] == 64 and meta["train_config"]["n_eval"] == 32
    assert meta["environment"]["versions"]["torch"]
    metrics = read_json(checkpoint / "metrics.json")
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["train_seconds"] >= 0 and len(metrics["history"]) == 1
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


def test_offline_tune_records_the_choice(own_checkpoint):
    options = "--tilt-rates 0,0.2,0.4 --max-eval-samples 32 --json".split()
    report = ok_json(cli("offline-tune", str(own_checkpoint), *options))
    rows = report["rows"]
    check_rows(rows, [0.0, 0.2, 0.4])
    within_one_point = [r["tilt_rate"] for r in rows if 100 * (rows[0]["metric"] - r["metric"]) <= 1 + 1e-9]
    assert report["chosen_tilt_rate"] == max(within_one_point)
    meta = read_json(own_checkpoint / "tiltbench.json")
    assert meta["schedule"]["tilt_rate"] == report["chosen_tilt_rate"]
    assert meta["train_schedule"]["tilt_rate"] == 0.2
    assert meta["offline_tune"]["chosen_tilt_rate"] == report["chosen_tilt_rate"]
    assert meta["offline_tune"]["n_examples"] == 32


def test_offline_tune_target_speedup(checkpoint):
    before = (checkpoint / "tiltbench.json").read_bytes()
    rates = [0.0, 0.05, 0.1, 0.2, 0.4]
    options = ["--target-speedup", "1.3", "--max-eval-samples", "32", "--no-record", "--json"]
    grid = ",".join(map(str, rates))
    report = ok_json(cli("offline-tune", str(checkpoint), "--tilt-rates", grid, *options))
    check_rows(report["rows"], rates)
    reaching = [r["tilt_rate"] for r in report["rows"] if r["predicted_speedup"] >= 1.3]
    assert len(reaching) < len(rates) - 1  # some non-zero rate falls short, so the choice means something
    assert report["chosen_tilt_rate"] == min(reaching)
    assert (checkpoint / "tiltbench.json").read_bytes() == before  # --no-record


def test_offline_tune_output_folder(checkpoint, tmp_path):
    out = tmp_path / "run"
    options = "--tilt-rates 0,0.3 --max-eval-samples 16 --no-record".split()
    result = cli("offline-tune", str(checkpoint), *options, "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "chosen tilt rate" in result.stdout
    assert {"config.json", "environment.json", "report.json", "report.md"} <= {p.name for p in out.iterdir()}
    assert read_json(out / "config.json")["command"] == "offline-tune"
    assert read_json(out / "environment.json")["versions"]["transformers"]
    report = read_json(out / "report.json")
    assert report["task"] == "sst2" and report["n_examples"] == 16
    assert [r["tilt_rate"] for r in report["rows"]] == [0.0, 0.3]
    assert f"Chosen tilt rate: **{report['chosen_tilt_rate']:g}**" in (out / "report.md").read_text()


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
    path.write_text('{"text": "a great movie"}\n\n{"text": "awful"}\n', encoding="utf-8")
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


# --- user mistakes: exit 2, one 'error:' line -----------------------------------------------------

USER_MISTAKES = {  # command line (split on spaces; {tmp} is an empty folder) -> part of the message
    "finetune --output {tmp}/o --tilt-rate 1.5": "tilt rate must be in [0, 1), got 1.5",
    "finetune --output {tmp}/o --tilt-rate -0.1": "tilt rate must be in [0, 1), got -0.1",
    "finetune --output {tmp}/o --task sst3": "unknown task 'sst3'",
    "finetune --output {tmp}/o --data-dir /nonexistent": "'/nonexistent' (from --data-dir) does not exist",
    "finetune --output {tmp}/o --data-dir {tmp}": "missing data file",
    "finetune --output {tmp}/o --max-eval-samples 0": "--max-eval-samples must be at least 1",
    "finetune --output {tmp}/o --threads 0": "--threads must be at least 1",
    "finetune --output {tmp}/o --train-file {csv} --eval-file {csv} --text-column nope": (
        "no column 'nope'; columns are text, label"
    ),
    "offline-tune {tmp}": "is not a tiltbench checkpoint",
    "offline-tune {tmp}/missing": "does not exist",
    "offline-tune {ckpt} --tilt-rates ,": "grid ',' is empty",
    "offline-tune {ckpt} --tilt-rates 0,1": "tilt rate must be in [0, 1), got 1 in grid",
    "offline-tune {ckpt} --tilt-rates 0,0.05 --target-speedup 50 --max-eval-samples 8": "widen --tilt-rates",
    "predict {tmp} --text hi": "is not a tiltbench checkpoint",
    "predict {tmp}/missing --text hi": "does not exist",
    "predict {ckpt}": "nothing to predict",
    "predict {ckpt} --input {csv}": "must be a JSON object",
    "predict {ckpt} --input {tmp}/missing.jsonl": "does not exist",
    "predict {ckpt} --text hi --tilt-rate 1.5": "tilt rate must be in [0, 1), got 1.5",
    "speedup-predict": "pass exactly one of --tilt-rate and --target-speedup",
    "speedup-predict --tilt-rate 0.1 --target-speedup 2": "pass exactly one of",
    "speedup-predict --hidden 768 --tilt-rate 0.1": "pass all of --hidden, --ffn and --layers",
    "speedup-predict --target-speedup 999 --seq-len 8": "out of reach",
    "speedup-predict --tilt-rate 0.1 --seq-len 0": "--seq-len must be at least 1",
}


@pytest.mark.parametrize("command", USER_MISTAKES)
def test_user_mistake(command, tmp_path, request):
    csv_file = tmp_path / "data.csv"
    csv_file.write_text("text,label\nhello,1\nbye,0\n", encoding="utf-8")
    ckpt = request.getfixturevalue("checkpoint") if "{ckpt}" in command else None
    args = [word.format(tmp=tmp_path, csv=csv_file, ckpt=ckpt) for word in command.split()]
    assert USER_MISTAKES[command] in error_line(cli(*args))
    assert not (tmp_path / "o").exists()


def test_missing_data_dir_from_env(tmp_path):
    result = cli("finetune", "--output", str(tmp_path / "o"), env={"TILTBENCH_DATA_DIR": "/nonexistent"})
    assert "$TILTBENCH_DATA_DIR" in error_line(result)


def test_user_mistake_inside_progress_prints_only_the_error(tmp_path):
    result = cli("finetune", "--output", str(tmp_path / "o"), "--data-dir", "/nonexistent")
    assert result.stderr.splitlines() == [error_line(result)]


def test_invalid_checkpoint_meta(tmp_path):
    (tmp_path / "tiltbench.json").write_text("{", encoding="utf-8")
    assert "is not valid JSON" in error_line(cli("offline-tune", str(tmp_path)))


def test_finetune_output_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder", encoding="utf-8")
    args = "finetune --max-train-samples 4 --max-eval-samples 4 --max-seq-len 16 --json --output".split()
    assert "--output" in error_line(cli(*args, str(target)))


def test_debug_env_shows_the_exception():
    result = cli("speedup-predict", env={"TILTBENCH_DEBUG": "1"})
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "UserError"


# --- main(): click usage errors are one line too --------------------------------------------------


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["tiltbench", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["finetune", "--output", "x", "--batch-size", "abc"], "Invalid value for '--batch-size'"),
        (["finetune"], "Missing option '--output'"),
        (["no-such-command"], "No such command 'no-such-command'"),
        (["speedup-predict"], "exactly one of"),  # a UserError through main()
    ],
)
def test_main_usage_errors(monkeypatch, capsys, args, message):
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_main_success(monkeypatch, capsys):
    args = "speedup-predict --hidden 8 --ffn 16 --layers 2 --tilt-rate 0.5 --json".split()
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 0
    assert json.loads(out)["layers"] == 2


@pytest.mark.parametrize("model", ["./no-such-folder", "README.md"])
def test_missing_local_model_is_one_line_error(model):
    assert "model folder" in error_line(cli("speedup-predict", "--model", model, "--tilt-rate", "0.1"))

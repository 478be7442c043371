"""finetune through accelerate: 2 CPU processes (gloo) train what one process trains on the same global batch;
gradient accumulation; bf16 autocast; --device and --mixed-precision mistakes are one error line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import DATA_DIR
from safetensors.torch import load_file
from typer.testing import CliRunner

from tiltbench.cli import app
from tiltbench.distributed import share

ARGS = "--task sst2 --max-train-samples 72 --max-eval-samples 32 --max-seq-len 32 --batch-size 16 --device cpu --json"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    """A tiny BERT without dropout: one process and two then compute the same gradients, not just similar ones."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tiltbench.models import resolve_model

    folder = tmp_path_factory.mktemp("tiny-nodropout") / "base"
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model("minilm")).save_pretrained(folder)
    return str(folder)


def _finetune(base: str, output, *extra: str) -> dict:
    result = CliRunner().invoke(
        app,
        ["finetune", "--model", base, *ARGS.split(), "--output", str(output), *extra],
        env={"TILTBENCH_DATA_DIR": str(DATA_DIR)},
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _largest_difference(a, b, file: str = "model.safetensors") -> float:
    first, second = load_file(str(a / file)), load_file(str(b / file))
    assert first.keys() == second.keys()
    return max(float((first[k] - second[k]).abs().max()) for k in first)


def test_share_deals_every_item_once_in_order():
    items = list(range(10))
    parts = [share(items, i, 3) for i in range(3)]
    assert parts == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [share(items[:1], i, 2) for i in range(2)] == [[0], []]


def test_two_processes_train_what_one_trains(base, tmp_path):
    """`accelerate launch` with 2 processes on the same global batch of 16 (each process 8 examples per step)."""
    one = tmp_path / "one"
    single = _finetune(base, one, "--tilt-rate", "0.3")
    two = tmp_path / "two"
    env = {**os.environ, "TILTBENCH_DATA_DIR": str(DATA_DIR), "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    command = [*launch, "-m", "tiltbench", "finetune", "--model", base, *ARGS.split(), "--tilt-rate", "0.3"]
    done = subprocess.run([*command, "--output", str(two)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)  # one JSON document: the second process prints nothing
    meta = json.loads((two / "tiltbench.json").read_text())
    assert meta["distributed"]["processes"] == 2 and meta["train_config"]["batch_size"] == 16
    assert printed["accuracy"] == single["accuracy"]  # every evaluation example counted once
    assert printed["train_loss"] == pytest.approx(single["train_loss"], abs=1e-5)
    # 5 steps (72 = 4 x 16 + 8), same global batches: the weights agree to float summation order
    assert _largest_difference(one, two) < 1e-5


def test_gradient_accumulation_trains_what_one_batch_trains(base, tmp_path):
    """--grad-accum 3 cuts each global batch of 16 into micro-batches of 6, 5, 5 (the last batch of 8 into 3, 3, 2)."""
    _finetune(base, tmp_path / "one", "--knob-range", "0:0.4")
    _finetune(base, tmp_path / "accumulated", "--knob-range", "0:0.4", "--grad-accum", "3")
    assert _largest_difference(tmp_path / "one", tmp_path / "accumulated") < 1e-5


def test_bf16_autocast_trains_and_saves_fp32_weights(base, tmp_path):
    summary = _finetune(base, tmp_path / "bf16", "--tilt-rate", "0.3", "--mixed-precision", "bf16")
    assert 0.0 <= summary["accuracy"] <= 1.0 and math.isfinite(summary["train_loss"])
    weights = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in weights.values())
    assert json.loads((tmp_path / "bf16" / "tiltbench.json").read_text())["distributed"]["mixed_precision"] == "bf16"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "tpu"], "--device must be one of auto, cpu, cuda"),
        (["--mixed-precision", "fp8"], "--mixed-precision must be one of no, bf16, fp16"),
        (["--mixed-precision", "fp16"], "fp16 needs a CUDA GPU"),
        (["--grad-accum", "0"], "--grad-accum must be at least 1"),
    ],
)
def test_device_and_precision_mistakes_are_one_error_line(base, tmp_path, extra, message):
    result = CliRunner().invoke(
        app,
        ["finetune", "--model", base, *ARGS.split(), "--output", str(tmp_path / "x"), *extra],
        env={"TILTBENCH_DATA_DIR": str(DATA_DIR)},
    )
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: --device cuda is valid here")
def test_device_cuda_without_a_gpu_is_one_error_line(base, tmp_path):
    result = CliRunner().invoke(
        app,
        ["finetune", "--model", base, *ARGS.split(), "--output", str(tmp_path / "x"), "--device", "cuda"],
        env={"TILTBENCH_DATA_DIR": str(DATA_DIR)},
    )
    assert result.exit_code == 2 and "no CUDA GPU is visible" in result.stderr

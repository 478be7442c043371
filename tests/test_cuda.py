"""CUDA paths on a real GPU: fine-tuning, a sweep timed with CUDA events, half precision. Skipped without one
(nothing in `make test` needs a GPU); their CPU-checkable parts are in test_device_paths.py."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import DATA_DIR, random_batch, tiny_bert
from typer.testing import CliRunner

from tiltbench import patch, realised_counts
from tiltbench.cli import app
from tiltbench.measure import MeasureConfig
from tiltbench.sweep import SweepConfig, sweep

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")


@cuda
def test_finetune_on_cuda(tiny_checkpoint, tmp_path):
    args = "--task sst2 --max-train-samples 64 --max-eval-samples 32 --max-seq-len 32 --tilt-rate 0.3 --json"
    result = CliRunner().invoke(
        app,
        ["finetune", "--model", tiny_checkpoint, *args.split(), "--device", "cuda", "--output", str(tmp_path / "c")],
        env={"TILTBENCH_DATA_DIR": str(DATA_DIR)},
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "c" / "tiltbench.json").read_text())["distributed"]["device"] == "cuda"


@cuda
def test_sweep_on_cuda_records_device_and_peak_memory(tiny_checkpoint, tmp_path):
    measure = MeasureConfig(
        data_dir=str(DATA_DIR), max_eval_samples=16, latency_examples=16, warmup=1, min_iterations=3,
        min_seconds=0.0, fvcore=False, device="cuda",
    )  # fmt: skip
    cfg = SweepConfig((tiny_checkpoint,), knobs=(0.0, 0.3), batch_sizes=(1, 8), results_dir=str(tmp_path))
    report = sweep(SweepConfig(cfg.checkpoints, knobs=cfg.knobs, batch_sizes=cfg.batch_sizes,
                               results_dir=cfg.results_dir, measure=measure))  # fmt: skip
    assert {r.device for r in report.rows} == {"cuda"}
    assert all(r.peak_gpu_mib["tiltbench"] > 0 and r.speedup_vs_dense_dynamic > 0 for r in report.rows)
    assert report.environment["gpu"]


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_half_precision_on_cuda_with_an_all_padding_row_is_finite(dtype, impl):
    model = patch(tiny_bert(impl).to("cuda", dtype).eval(), tilt_rate=0.3)
    batch = {k: v.cuda() for k, v in random_batch([9, 5, 3]).items()}
    batch["attention_mask"][2] = 0
    with torch.inference_mode():
        assert torch.isfinite(model(**batch).logits).all()
    assert realised_counts(model)[2, 0] == 0


@cuda
def test_power_and_fp16_finetune_on_cuda(tiny_checkpoint, tmp_path):
    """PoWER's regulariser and parameters on the GPU; fp16 loss scaling across its three stages."""
    args = "--task sst2 --max-train-samples 64 --max-eval-samples 32 --max-seq-len 32 --method power --lambda 0.05"
    result = CliRunner().invoke(
        app,
        ["finetune", "--model", tiny_checkpoint, *args.split(), "--device", "cuda", "--mixed-precision", "fp16",
         "--json", "--output", str(tmp_path / "p")],
        env={"TILTBENCH_DATA_DIR": str(DATA_DIR)},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert math.isfinite(json.loads(result.stdout)["train_loss"])

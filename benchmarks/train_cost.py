"""Benchmark: the cost of a training step for each [recipe] setting, on MiniLM and SST-2 (max length 64, batch 32).

One process, nothing else running: each setting trains 40 steps (1,280 sentences) from the pretrained model, in
two interleaved rounds; the faster round's seconds per step is kept (an epoch's own time includes machine noise
that a long run cannot avoid). Projected epoch = seconds per step x the steps of an epoch over the full training
set (67,349 sentences: 2,105 steps). Writes results/recipe-train-cost/report.json.

    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/train_cost.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from tiltbench.cli.common import setup
from tiltbench.data import DataConfig
from tiltbench.environment import environment
from tiltbench.files import write_json_atomic
from tiltbench.finetune import TrainConfig, finetune

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "runs" / "recipes" / "sst2-8k-dense"  # benchmarks/recipes/sst2-8k-dense.yaml
# the ensemble of sst2-8k-tilted-range-teacher-ensemble.yaml: dense seeds 0-2 (recipe_minilm.py trains them)
ENSEMBLE = [str(TEACHER), *(f"{TEACHER}-seed{seed}" for seed in (1, 2))]
STEPS, BATCH, FULL_STEPS = 40, 32, 2105
SETTINGS = {
    "dense": {},
    "tilted τ 0.2": {"tilt_rate": 0.2},
    "tilted τ 0.2 + teacher": {"tilt_rate": 0.2, "teacher": str(TEACHER)},
    "tilted range 0:0.4 (sandwich, 1 random knob)": {"knob_range": (0.0, 0.4)},
    "tilted range 0:0.4 + teacher": {"knob_range": (0.0, 0.4), "teacher": str(TEACHER)},
    "tilted range 0:0.4 + teacher + ranking": {
        "knob_range": (0.0, 0.4),
        "teacher": str(TEACHER),
        "distill_ranking": 1.0,
    },
    "tilted range 0:0.4 + ensemble of 3 teachers": {"knob_range": (0.0, 0.4), "teacher": ENSEMBLE},
    "dense, bf16 autocast": {"mixed_precision": "bf16"},
    "tilted range 0:0.4 + teacher, bf16 autocast": {
        "knob_range": (0.0, 0.4),
        "teacher": str(TEACHER),
        "mixed_precision": "bf16",
    },
}


def main() -> None:
    setup()
    data = DataConfig("sst2", max_train_samples=STEPS * BATCH, max_eval_samples=32, max_seq_len=64)
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(2):
            for name, options in SETTINGS.items():
                out = Path(scratch) / "ckpt"
                result = finetune(TrainConfig(str(out), data, batch_size=BATCH, save_every=0, **options))
                seconds[name].append(result.history[-1]["epoch_seconds"] / STEPS)
                shutil.rmtree(out)
    dense = min(seconds["dense"])
    rows = [
        {
            "setting": name,
            "seconds_per_step": round(min(values), 4),
            "rounds": [round(v, 4) for v in values],
            "vs_dense": round(min(values) / dense, 3),
            "projected_full_epoch_minutes": round(min(values) * FULL_STEPS / 60, 1),
        }
        for name, values in seconds.items()
    ]
    write_json_atomic(
        ROOT / "results" / "recipe-train-cost" / "report.json",
        {"steps": STEPS, "batch_size": BATCH, "threads": torch.get_num_threads(), "rows": rows,
         "environment": environment(seed=0)},
    )  # fmt: skip
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()

"""Benchmark: `finetune` through accelerate with 2 CPU processes (gloo) against one process, same global batch.

MiniLM, TiltedBERT at tilt rate 0.2, SST-2: 4,000 training sentences, max length 64, global batch 32, one epoch,
evaluated on the full dev set (872); seeds 0, 1, 2. The single-process run uses both cores (2 threads); the
2-process run one thread per process. Dropout masks are drawn per process, so the two runs differ by dropout
noise only (with dropout off they agree to 1e-5: tests/test_distributed.py); the dev set's 872 sentences make
one point = 8.7 sentences, hence 3 seeds and the mean. Writes results/accelerate-minilm-sst2/report.json.

    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/accelerate_minilm.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tiltbench.environment import environment
from tiltbench.files import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "accelerate-minilm-sst2"
RUNS = ROOT / "runs" / "accelerate"
ARGS = [
    "--task", "sst2", "--max-train-samples", "4000", "--max-seq-len", "64", "--tilt-rate", "0.2",
    "--batch-size", "32", "--epochs", "1", "--device", "cpu", "--json",
]  # fmt: skip
LAUNCH = [
    sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
    "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
]  # fmt: skip


def train(processes: int, seed: int) -> dict:
    output = RUNS / f"p{processes}-seed{seed}"
    prefix = LAUNCH if processes > 1 else [sys.executable]
    command = [*prefix, "-m", "tiltbench", "finetune", *ARGS, "--seed", str(seed), "--output", str(output)]
    command += ["--overwrite"]
    env = {**os.environ, "OMP_NUM_THREADS": "1" if processes > 1 else "2"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    summary = json.loads(done.stdout)
    meta = json.loads((output / "tiltbench.json").read_text())
    return {
        "processes": meta["distributed"]["processes"],
        "seed": seed,
        "accuracy": summary["accuracy"],
        "train_loss": summary["train_loss"],
        "train_seconds": summary["train_seconds"],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "command": " ".join(c if c != sys.executable else "python" for c in command),
    }


def main() -> None:
    rows = [train(processes, seed) for seed in (0, 1, 2) for processes in (1, 2)]
    summary = {}
    for processes in (1, 2):
        accuracies = [r["accuracy"] for r in rows if r["processes"] == processes]
        summary[f"{processes}_process"] = {
            "mean_accuracy": statistics.fmean(accuracies),
            "stdev": statistics.stdev(accuracies),
            "accuracies": accuracies,
        }
    gap = 100 * (summary["2_process"]["mean_accuracy"] - summary["1_process"]["mean_accuracy"])
    report = {
        "what": "finetune through accelerate, 2 CPU processes (gloo) vs 1 process, same global batch 32",
        "recipe": " ".join(ARGS),
        "rows": rows,
        "summary": summary,
        "mean_gap_points": round(gap, 3),
        "within_half_a_point": abs(gap) <= 0.5,
        "environment": environment(seed=None),
    }
    write_json_atomic(RESULTS / "report.json", report)
    for row in rows:
        seconds = row["train_seconds"]
        print(f"{row['processes']} process(es) seed {row['seed']}: acc {row['accuracy']:.4f} ({seconds} s)")
    print(f"mean gap (2 - 1 processes): {gap:+.2f} points -> {RESULTS / 'report.json'}")


if __name__ == "__main__":
    main()

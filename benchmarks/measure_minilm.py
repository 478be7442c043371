"""Benchmark: TiltedBERT MiniLM checkpoints on SST-2 (max length 64) and IMDB (max length 512), measured.

Fine-tunes (once; skipped when the checkpoint exists) MiniLM with elimination on at tilt rate 0.1:
  SST-2: 8,000 training sentences, 1 epoch, max length 64, evaluation on the full 872-sentence dev set
  IMDB:  2,000 training reviews, 1 epoch, max length 512, evaluation on 1,000 test reviews (seeded subset),
         timing on the first 64 of them
then sweeps tilt rates 0, 0.1, ..., 0.5 at batch sizes 1, 8 and 32 against the dense baselines, into
results/measure-minilm-sst2/ and results/measure-minilm-imdb/ (checkpoints are git-ignored).

    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/measure_minilm.py [--only sst2|imdb]

Resumable: rerunning skips finished rows (`--force` measures them again). About 45 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from tiltbench.cli.common import setup
from tiltbench.console import progress_bar, table
from tiltbench.data import DataConfig
from tiltbench.finetune import TrainConfig, finetune
from tiltbench.measure import MeasureConfig
from tiltbench.results import screen_tables
from tiltbench.sweep import SweepConfig, sweep

RESULTS = Path(__file__).resolve().parents[1] / "results"
TILT_RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
RUNS = {
    "sst2": dict(
        data=DataConfig("sst2", max_train_samples=8000, max_seq_len=64),
        measure=MeasureConfig(latency_examples=256, min_iterations=10, min_seconds=2.0),
    ),
    "imdb": dict(
        data=DataConfig("imdb", max_train_samples=2000, max_eval_samples=1000, max_seq_len=512),
        measure=MeasureConfig(max_eval_samples=1000, latency_examples=64, min_iterations=6, min_seconds=2.0),
    ),
}


def run(task: str, console: Console, force: bool = False) -> None:
    folder = RESULTS / f"measure-minilm-{task}"
    checkpoint = folder / "checkpoint"
    spec = RUNS[task]
    if not (checkpoint / "tiltbench.json").is_file():
        with progress_bar() as progress:
            result = finetune(TrainConfig(str(checkpoint), spec["data"], tilt_rate=0.1), progress)
        console.print(f"fine-tuned {checkpoint}: {result.metrics}")
    cfg = SweepConfig(
        (str(checkpoint),),
        knobs=TILT_RATES,
        batch_sizes=(1, 8, 32),
        run_name=folder.name,
        results_dir=str(RESULTS),
        measure=spec["measure"],
        force=force,
    )
    with progress_bar() as progress:
        report = sweep(cfg, progress)
    for name, headers, rows in screen_tables(report.rows):
        console.print(table(f"{name} -> {folder}", headers, rows))


def main() -> None:
    setup()  # the CLI's quiet: no HF logging or "Loading weights" bars under our one progress bar
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RUNS))
    parser.add_argument("--force", action="store_true", help="measure every row again (after a change of the timer)")
    args = parser.parse_args()
    console = Console(width=200)
    for task in [args.only] if args.only else list(RUNS):
        run(task, console, args.force)


if __name__ == "__main__":
    main()

"""Benchmark: TiltedBERT against PoWER-BERT on MiniLM, in one sweep (same inputs, timer and process).

Checkpoints (fine-tuned once; each step is skipped when its checkpoint exists):
  tilted       results/measure-minilm-<task>/checkpoint (TiltedBERT at tilt rate 0.1: measure_minilm.py's
               recipe, trained here when that checkpoint is missing)
  dense        a dense fine-tune with the same recipe (tilt rate 0): PoWER's stage 1
  power-l<λ>   PoWER-BERT from `dense` (--init): configuration search with λ, then re-training, one epoch each
SST-2: 8,000 training sentences, max length 64, the full dev set. IMDB: 2,000 training reviews, max length 512,
1,000 test reviews (one λ: a PoWER run there is ~25 minutes of training on 2 cores). Then one sweep of every
checkpoint at batch 1, 8 and 32 against dense-dynamic: tilted over tilt rates 0-0.4, PoWER over retention scales,
into results/methods-minilm-<task>/ (report files, pareto.png with both methods, stages.json: the time of every stage).

    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/methods_minilm.py [--only sst2]

Resumable like `sweep` (finished rows are kept).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from tiltbench.cli.common import setup
from tiltbench.console import progress_bar, table
from tiltbench.data import DataConfig
from tiltbench.finetune import TrainConfig, finetune
from tiltbench.measure import MeasureConfig
from tiltbench.report import write_json_atomic
from tiltbench.results import screen_tables
from tiltbench.sweep import SweepConfig, sweep

RESULTS = Path(__file__).resolve().parents[1] / "results"
RUNS = {
    "sst2": dict(
        data=DataConfig("sst2", max_train_samples=8000, max_seq_len=64),
        measure=MeasureConfig(latency_examples=256, min_iterations=10, min_seconds=2.0),
        lambdas=(0.01, 0.05),
        tilted_grid=(0.0, 0.1, 0.2, 0.3, 0.4),
        power_grids={0.01: (0.5, 1.0, 1.5), 0.05: (0.5, 1.0)},
    ),
    "imdb": dict(
        data=DataConfig("imdb", max_train_samples=2000, max_eval_samples=1000, max_seq_len=512),
        measure=MeasureConfig(max_eval_samples=1000, latency_examples=64, min_iterations=6, min_seconds=2.0),
        lambdas=(0.05,),
        tilted_grid=(0.0, 0.2, 0.4),
        power_grids={0.05: (0.5, 1.0, 1.5)},
    ),
}


def _train(folder: Path, cfg: TrainConfig, console: Console) -> dict:
    """Fine-tune once; the stage times come from the checkpoint's own metrics.json either way."""
    if not (folder / "tiltbench.json").is_file():
        with progress_bar() as progress:
            result = finetune(cfg, progress)
        console.print(f"fine-tuned {folder}: {result.metrics}")
    return json.loads((folder / "metrics.json").read_text())


def run(task: str, console: Console, force: bool = False) -> None:
    spec = RUNS[task]
    out = RESULTS / f"methods-minilm-{task}"
    tilted = RESULTS / f"measure-minilm-{task}" / "checkpoint"
    # the same recipe as measure_minilm.py, so either script may train it first
    stages = {"tilted": _train(tilted, TrainConfig(str(tilted), spec["data"], tilt_rate=0.1), console)["history"]}
    dense = out / "dense"
    stages["dense (PoWER stage 1)"] = _train(dense, TrainConfig(str(dense), spec["data"]), console)["history"]
    grids = {str(tilted): spec["tilted_grid"]}
    for lam in spec["lambdas"]:
        folder = out / f"power-l{lam:g}"
        cfg = TrainConfig(str(folder), spec["data"], method="power", init=str(dense), regulariser_weight=lam)
        metrics = _train(folder, cfg, console)
        stages[f"power λ={lam:g}"] = metrics["history"]
        grids[str(folder)] = spec["power_grids"][lam]
    cfg = SweepConfig(
        checkpoints=tuple(grids),
        batch_sizes=(1, 8, 32),
        run_name=out.name,
        results_dir=str(RESULTS),
        measure=spec["measure"],
        force=force,
        grids=grids,
    )
    with progress_bar() as progress:
        report = sweep(cfg, progress)
    write_json_atomic(out / "stages.json", stages)  # after the sweep: before it, the folder must hold only checkpoints
    for name, headers, rows in screen_tables(report.rows):
        console.print(table(f"{name} -> {out}", headers, rows))


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

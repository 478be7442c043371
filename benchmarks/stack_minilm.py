"""Benchmark [stack]: elimination stacked with int8 and bf16 on MiniLM, against what users pick instead.

One sweep per task: the given checkpoints x {fp32, int8, bf16} x batch 1/8/32, each row timed in one interleaved
group with dense-dynamic fp32 (HF's model, default attention, dynamic padding) and the dense model under the same
transform (dense-int8, dense-bf16), so every row has its speedup against both; the metric on the full SST-2 dev
set (872 sentences) or 2,000 IMDB test reviews, with the total drop against HF's dense fp32 model.

    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/stack_minilm.py sst2 [--calibrate]

Default checkpoint (SST-2): the [recipe] range + teacher checkpoint, trained by
`tiltbench finetune --recipe benchmarks/recipes/sst2-full-tilted-range-teacher.yaml --output
runs/recipes/sst2-full-tilted-range-teacher` (after its teacher, sst2-full-dense.yaml); `--checkpoint CKPT@GRID`
(repeatable) measures others. Resumable like `sweep`. `--calibrate int8,bf16` fits one latency profile per named
transform (`tiltbench calibrate --quantize int8` and so on; ~4 minutes each) into the run folder and writes
check-calibrated-<transform>.json: that transform's rows predicted by its own profile, from their realised counts.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from rich.console import Console

from tiltbench.calibrate import CalibrateConfig, calibrate
from tiltbench.check import CheckConfig, check
from tiltbench.cli.common import setup
from tiltbench.console import progress_bar, table
from tiltbench.files import write_json_atomic
from tiltbench.measure import MeasureConfig
from tiltbench.results import screen_tables
from tiltbench.schedule import parse_grid
from tiltbench.sweep import SweepConfig, sweep

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
TRANSFORMS = ("fp32", "int8", "bf16")
RUNS = {
    "sst2": dict(
        checkpoints=[f"{ROOT}/runs/recipes/sst2-full-tilted-range-teacher@0,0.2,0.26,0.3"],
        measure=MeasureConfig(latency_examples=256, min_iterations=10, min_seconds=1.5),
    ),
    "imdb": dict(
        checkpoints=[f"{ROOT}/runs/recipes/imdb-5k-tilted-range-teacher@0,0.2,0.3,0.4"],
        measure=MeasureConfig(max_eval_samples=2000, latency_examples=64, min_iterations=6, min_seconds=1.5),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(RUNS))
    parser.add_argument("--checkpoint", action="append", help="CKPT@GRID (repeatable; default: the task's recipe)")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument(
        "--calibrate", default="", help="transforms to fit a profile for and check the rows of, e.g. int8,bf16"
    )
    args = parser.parse_args()
    setup()
    console = Console(width=100)
    spec = RUNS[args.task]
    entries = args.checkpoint or spec["checkpoints"]
    grids = {}
    for entry in entries:
        path, _, grid = entry.rpartition("@")
        grids[path] = tuple(parse_grid(grid))
    cfg = SweepConfig(
        tuple(grids),
        grids=grids,
        batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")),
        run_name=f"stack-minilm-{args.task}",
        results_dir=str(RESULTS),
        measure=spec["measure"],
        transforms=TRANSFORMS,
    )
    with progress_bar() as progress:
        report = sweep(cfg, progress)
    for title, headers, rows in screen_tables(report.rows):
        console.print(table(title, headers, rows))
    for transform in filter(None, args.calibrate.split(",")):
        path = cfg.folder / f"profile-{transform}.json"
        if not path.is_file():
            with progress_bar() as progress:
                calibrate(CalibrateConfig("minilm", transform=transform), progress).save(path)
        checked = check(CheckConfig(str(cfg.folder), profile=str(path), transform=transform))
        write_json_atomic(cfg.folder / f"check-calibrated-{transform}.json", checked.to_dict())
        errors = [abs(r.error) for r in checked.rows if r.counted]
        console.print(
            f"{transform}: calibrated median |error| {statistics.median(errors):.1%} over {len(errors)} rows "
            f"(tolerance 10 %: {'ok' if checked.prediction_ok else 'FAILED'})"
        )


if __name__ == "__main__":
    main()

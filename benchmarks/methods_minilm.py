"""Benchmark: TiltedBERT, PoWER-BERT, gates and LTP on MiniLM, in one sweep (same inputs, timer and process).

Checkpoints (fine-tuned once; each step is skipped when its checkpoint exists):
  tilted       results/measure-minilm-<task>/checkpoint (TiltedBERT at tilt rate 0.1: measure_minilm.py's
               recipe, trained here when that checkpoint is missing)
  dense        a dense fine-tune with the same recipe (tilt rate 0): PoWER's stage 1
  power-l<λ>   PoWER-BERT from `dense` (--init): configuration search with λ, then re-training, one epoch each
  gates-l<λ>   (--adaptive) trainable gates (Dynamic BERT) from the pretrained model: soft with λ_sparse = λ and a
               ramped λ_bimodal, then hard with the gates frozen, one epoch each
  ltp-l<λ>     (--adaptive) LTP from `dense` (--init): soft thresholds with λ, then hard, one epoch each (two λ)
SST-2: 8,000 training sentences, max length 64, the full dev set. IMDB: 2,000 training reviews, max length 512,
1,000 test reviews (one λ: a PoWER run there is ~25 minutes of training on 2 cores). Then one sweep of every
checkpoint at batch 1, 8 and 32 against dense-dynamic: tilted over tilt rates 0-0.4, PoWER over retention scales,
into results/methods-minilm-<task>/ (report files, pareto.png with both methods, stages.json: the time of every stage).
--adaptive TASK: the four methods in one sweep into results/adaptive-minilm-<task>/, with check-calibrated.json (the
calibrated latency model's prediction of every row from its realised counts); --train-only trains and stops.

    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/methods_minilm.py [--only sst2]
    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/methods_minilm.py --seeds sst2
    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/methods_minilm.py --adaptive sst2
    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/methods_minilm.py --seeds sst2 --adaptive-seeds

Resumable like `sweep` (finished rows are kept). `--seeds TASK` (after the sweep) trains the same three recipes
(tilted, dense, PoWER at the task's first λ) at seeds 1 and 2 and evaluates every checkpoint over the sweep's
knob values without timing (offline-tune): seeds.json holds each seed's accuracy and predicted FLOP speedup,
seed 0 being the sweep's own rows, with mean and sample standard deviation over the three. A small dev set
(SST-2: 872 sentences, one point = 8.7 sentences) needs them to say whether a difference is real.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from tiltbench.check import CheckConfig, check
from tiltbench.cli.common import setup
from tiltbench.console import progress_bar, table
from tiltbench.data import DataConfig
from tiltbench.environment import environment
from tiltbench.files import write_json_atomic
from tiltbench.finetune import TrainConfig, finetune
from tiltbench.measure import MeasureConfig
from tiltbench.models import read_meta
from tiltbench.offline import OfflineConfig, offline_tune
from tiltbench.results import screen_tables
from tiltbench.rows import MeasureRow, short_name
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
# --adaptive: the four methods in one sweep (results/adaptive-minilm-<task>), one checkpoint each, at the knob values
# that bracket "within a point of dense"; the checkpoints are shared with the two-method run above. Timing is
# halved (min 1 s per variant): 21 rows at the two-method settings would take ~30 minutes on 2 cores.
# The IMDB knob values (and SST-2's LTP λ = 0.02 at 1.5) were picked after training, from `offline-tune` over each
# checkpoint's grid (accuracy only, no timing): the largest value within a point of the dense fine-tune, one past it.
ADAPTIVE = {
    "sst2": dict(
        power=0.05,
        gates={0.05: (2.0, (0.5, 0.9))},  # λ_sparse: (λ_bimodal, ramped; knob grid)
        ltp={0.1: (0.5, 1.0), 0.02: (0.5, 1.0, 1.5)},  # λ: knob grid (an empty grid: trained, not swept)
        grids=dict(tilted=(0.0, 0.1, 0.2), power=(1.0,)),
        measure=MeasureConfig(latency_examples=256, min_iterations=6, min_seconds=1.0),
    ),
    "imdb": dict(
        power=0.2,  # λ 0.05 kept >= 84 % of every layer on IMDB (the two-method run): too weak a push there
        # λ_sparse 0.05 (SST-2's) keeps every review token up to t = 0.9 (every gate ended above it); 0.2 removes
        # most of them, undecided (11 % of the gates within 0.05 of 0 or 1), 9 points down at t = 0.5
        gates={0.05: (2.0, (0.95,)), 0.2: (2.0, (0.2,))},
        ltp={0.1: (1.0,), 0.02: (2.0,)},
        grids=dict(tilted=(0.2,), power=(2.0,)),  # one value each: 18 rows at length 512 take about an hour
        measure=MeasureConfig(max_eval_samples=1000, latency_examples=64, min_iterations=6, min_seconds=1.0),
    ),
}


def adaptive(task: str, console: Console, force: bool = False, train_only: bool = False) -> None:
    """TiltedBERT, PoWER-BERT, gates and LTP on one task in one sweep against dense-dynamic at batch 1, 8, 32."""
    spec, four = RUNS[task], ADAPTIVE[task]
    shared = RESULTS / f"methods-minilm-{task}"  # the two-method run's checkpoints (git-ignored)
    out = RESULTS / f"adaptive-minilm-{task}"
    data, dense = spec["data"], shared / "dense"
    tilted = RESULTS / f"measure-minilm-{task}" / "checkpoint"
    lam_power = four["power"]
    power = shared / f"power-l{lam_power:g}"
    recipes = {  # stage name -> (checkpoint, its config, its grid); trained in this order: the new methods first
        "dense (PoWER and LTP stage 1)": (dense, TrainConfig(str(dense), data), None),
        **{  # from the pretrained model: soft, then hard
            f"gates λ={sparse:g} β={bimodal:g}": (
                shared / f"gates-l{sparse:g}",
                TrainConfig(
                    str(shared / f"gates-l{sparse:g}"),
                    data,
                    method="gates",
                    regulariser_weight=sparse,
                    bimodal_weight=bimodal,
                ),
                grid,
            )
            for sparse, (bimodal, grid) in four["gates"].items()
        },
        **{
            f"ltp λ={lam:g}": (
                shared / f"ltp-l{lam:g}",
                TrainConfig(str(shared / f"ltp-l{lam:g}"), data, method="ltp", init=str(dense), regulariser_weight=lam),
                grid,
            )
            for lam, grid in four["ltp"].items()
        },
        "tilted": (tilted, TrainConfig(str(tilted), data, tilt_rate=0.1), four["grids"]["tilted"]),
        f"power λ={lam_power:g}": (
            power,
            TrainConfig(str(power), data, method="power", init=str(dense), regulariser_weight=lam_power),
            four["grids"]["power"],
        ),
    }
    stages = {name: _train(folder, cfg, console)["history"] for name, (folder, cfg, _) in recipes.items()}
    order = ["tilted", "dense (PoWER and LTP stage 1)", f"power λ={lam_power:g}"]  # the two-method run's, then the rest
    stages = {name: stages[name] for name in order + [n for n in stages if n not in order]}
    grids = {str(folder): grid for name in stages for folder, _, grid in [recipes[name]] if grid}
    if train_only:
        return
    cfg = SweepConfig(
        checkpoints=tuple(grids),
        batch_sizes=(1, 8, 32),
        run_name=out.name,
        results_dir=str(RESULTS),
        measure=four["measure"],
        force=force,
        grids=grids,
    )
    with progress_bar() as progress:
        report = sweep(cfg, progress)
    write_json_atomic(out / "stages.json", stages)
    for name, headers, rows in screen_tables(report.rows):
        console.print(table(f"{name} -> {out}", headers, rows))
    # The calibrated latency model of this machine (results/calibration) re-predicts every row from the counts it
    # realised: an adaptive method has no plan, so this is the check that its speed is understood.
    checked = check(CheckConfig(str(out), profile=str(RESULTS / "calibration" / "profile.json")))
    write_json_atomic(out / "check-calibrated.json", checked.to_dict())
    console.print(f"calibrated model: median |error| {checked.median_abs_error:.1%}, passed: {checked.passed}")


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


SEEDS = (1, 2)  # seed 0: the sweep's own checkpoints


def seeds(task: str, console: Console, adaptive_run: bool = False) -> None:
    """Accuracy over three training seeds at the sweep's knob values (timing needs only one: speed does not
    depend on the seed at fixed counts; PoWER's learned counts do, so its learned fractions are kept per seed).

    `adaptive_run`: the gates and LTP recipes of the four-method sweep (results/adaptive-minilm-<task>), with the
    gates' bi-modality figure per seed; the dense fine-tunes at seeds 1 and 2 are shared with the two-method run."""
    spec = RUNS[task]
    shared = RESULTS / f"methods-minilm-{task}"
    out = RESULTS / f"adaptive-minilm-{task}" if adaptive_run else shared
    report = json.loads((out / "report.json").read_text())
    sweep_rows = [MeasureRow.from_dict(r) for r in report["rows"]]
    if adaptive_run:
        four = ADAPTIVE[task]
        recipes = {  # name -> (sweep checkpoint, knob grid, config at a seed); every λ the sweep measured
            **{
                f"gates λ={sparse:g} β={bimodal:g}": (
                    shared / f"gates-l{sparse:g}",
                    grid,
                    lambda folder, data, _, sparse=sparse, bimodal=bimodal: TrainConfig(
                        str(folder), data, method="gates", regulariser_weight=sparse, bimodal_weight=bimodal
                    ),
                )
                for sparse, (bimodal, grid) in four["gates"].items()
            },
            **{
                f"ltp λ={lam:g}": (
                    shared / f"ltp-l{lam:g}",
                    grid,
                    lambda folder, data, dense, lam=lam: TrainConfig(
                        str(folder), data, method="ltp", init=str(dense), regulariser_weight=lam
                    ),
                )
                for lam, grid in four["ltp"].items()
                if grid
            },
        }
        stage_one = json.loads((out / "stages.json").read_text())["dense (PoWER and LTP stage 1)"][-1]
    else:
        lam = spec["lambdas"][0]
        recipes = {
            "tilted": (
                RESULTS / f"measure-minilm-{task}" / "checkpoint",
                spec["tilted_grid"],
                lambda folder, data, _: TrainConfig(str(folder), data, tilt_rate=0.1),
            ),
            f"power λ={lam:g}": (
                out / f"power-l{lam:g}",
                spec["power_grids"][lam],
                lambda folder, data, dense: TrainConfig(
                    str(folder), data, method="power", init=str(dense), regulariser_weight=lam
                ),
            ),
        }
        stage_one = json.loads((out / "stages.json").read_text())["dense (PoWER stage 1)"][-1]
    results: dict = {"task": task, "seeds": [0, *SEEDS], "dense_fine_tune": [stage_one["accuracy"]], "recipes": {}}
    for name, (checkpoint, grid, _) in recipes.items():
        own = [r for r in sweep_rows if short_name(r.checkpoint) == short_name(str(checkpoint)) and r.batch_size == 1]
        entry: dict = {  # the FLOP ratio too: an adaptive method's counts, so its speed, change with the seed
            "knobs": {
                f"{k:g}": {
                    "accuracy": [r.metric for r in own if r.knob == k][:1],
                    "flop_speedup": [round(r.predicted_speedup, 4) for r in own if r.knob == k][:1],
                }
                for k in grid
            }
        }
        at_one = [r.schedule.get("fractions") for r in own if r.knob == 1.0]
        if at_one and at_one[0]:
            entry["learned_fractions"] = [[round(f, 3) for f in at_one[0]]]
        share = json.loads((checkpoint / "metrics.json").read_text()).get("gate_bimodal_share")
        if share is not None:
            entry["gate_bimodal_share"] = [share]
        results["recipes"][name] = entry
    for seed in SEEDS:
        data = replace(spec["data"], seed=seed)
        dense = shared / f"seed{seed}" / "dense"
        results["dense_fine_tune"].append(_train(dense, TrainConfig(str(dense), data), console)["accuracy"])
        for name, (sweep_checkpoint, grid, make) in recipes.items():
            checkpoint = shared / f"seed{seed}" / ("tilted" if name == "tilted" else sweep_checkpoint.name)
            metrics = _train(checkpoint, make(checkpoint, data, dense), console)
            # the sweep's evaluation set: the same examples as seed 0's rows
            evaluation = DataConfig.for_checkpoint(
                read_meta(checkpoint), max_eval_samples=spec["measure"].max_eval_samples
            )
            with progress_bar() as progress:
                offline = offline_tune(OfflineConfig(str(checkpoint), knobs=tuple(grid), data=evaluation), progress)
            entry = results["recipes"][name]
            for row in offline.rows:
                if f"{row.knob:g}" in entry["knobs"]:
                    entry["knobs"][f"{row.knob:g}"]["accuracy"].append(row.metric)
                    entry["knobs"][f"{row.knob:g}"]["flop_speedup"].append(round(row.predicted_speedup, 4))
            fractions = json.loads((checkpoint / "tiltbench.json").read_text())["method_config"].get("fractions")
            if "learned_fractions" in entry and fractions:
                entry["learned_fractions"].append([round(f, 3) for f in fractions])
            if "gate_bimodal_share" in entry:
                entry["gate_bimodal_share"].append(metrics["gate_bimodal_share"])
    for name, entry in results["recipes"].items():
        for knob, cell in entry["knobs"].items():
            values = cell["accuracy"]
            cell["mean"], cell["sd"] = statistics.mean(values), statistics.stdev(values)
            shown = " ".join(f"{v:.3f}" for v in values)
            console.print(f"{name} {knob}: {shown} -> {cell['mean']:.3f} ± {cell['sd']:.3f}")
    results["environment"] = environment(seed=None)
    write_json_atomic(out / "seeds.json", results)


def main() -> None:
    setup()  # the CLI's quiet: no HF logging or "Loading weights" bars under our one progress bar
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RUNS))
    parser.add_argument("--seeds", choices=sorted(RUNS), help="after the sweep: accuracy at seeds 1 and 2 too")
    parser.add_argument("--force", action="store_true", help="measure every row again (after a change of the timer)")
    parser.add_argument("--adaptive", choices=sorted(ADAPTIVE), help="the four methods in one sweep (gates, ltp too)")
    parser.add_argument("--adaptive-seeds", action="store_true", help="with --seeds: the gates and LTP recipes")
    parser.add_argument("--train-only", action="store_true", help="with --adaptive: train only (to pick knobs)")
    args = parser.parse_args()
    console = Console(width=200)
    if args.adaptive:
        return adaptive(args.adaptive, console, args.force, args.train_only)
    if args.seeds:
        return seeds(args.seeds, console, adaptive_run=args.adaptive_seeds)
    for task in [args.only] if args.only else list(RUNS):
        run(task, console, args.force)


if __name__ == "__main__":
    main()

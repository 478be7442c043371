"""Benchmark [eel]: hashed input embeddings on MiniLM (no stored table), alone and stacked with elimination and int8.

For each task (SST-2 on its full training set, MRPC):
1. Trains what is missing by its committed recipe, each in its own process (resumable: an interrupted training
   continues where it stopped), into runs/recipes/<recipe>[-seed<S>]:
     <prefix>-dense.yaml                        the dense model with the table (the comparison)
     <prefix>-hashed-aligned.yaml               the same recipe with --embeddings hashed after hidden-state
                                                alignment (--hash-align-epochs); MRPC's hashed rows (on MRPC plain
                                                hashing's 3-seed mean is higher: README)
     sst2-full-hashed-aligned-hidden-distilled.yaml
                                                SST-2's hashed rows: the one above, one more epoch distilled from
                                                the dense model, its logits and hidden states (seed S continues
                                                seed S)
     <prefix>-hashed-aligned-tilted-0.2.yaml    the aligned one, fine-tuned on with TiltedBERT at τ 0.2 (seed S
                                                continues seed S)
   (<prefix>: sst2-full, mrpc). Seeds 0..--seeds-1 of every recipe (a dev set of 408 or 872: one seed is noise).
   With --no-train, a dense seed whose checkpoint is gone but whose accuracy another benchmark committed
   (COMMITTED) reads that (its fp32 row only; its int8 row then leaves the seed out).
2. One sweep (results/eel-minilm-<task>/) of seed 0's checkpoints at batch 1 and 32 under fp32 and int8, every row
   timed against its own dense-dynamic model (and dense-int8) on the task's first dev inputs, with size columns
   (model_mb: serialised weights; memory_mb; parameters by part; the embedding layer's share of the forward).
3. summary.json, the issue's table: dense; dense + int8; hashed; hashed + int8; hashed + elimination (at
   --tilt-rate); hashed + elimination + int8; each with accuracy on the whole dev set (and F1 on MRPC; the mean over
   the seeds, each evaluated under the row's transform and knob), checkpoint MB on disk (the weights file) and in
   memory, and the speedup at batch 1 and 32 against the dense *table* model's dense-dynamic fp32 (across the
   sweep's groups: the same inputs, timed in the same process).

    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/eel_minilm.py mrpc [--seeds 3] [--no-train]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

from tiltbench.cli.common import setup
from tiltbench.console import progress_bar
from tiltbench.environment import environment
from tiltbench.files import write_json_atomic
from tiltbench.latency import Latency, robust_total
from tiltbench.measure import MeasureConfig
from tiltbench.offline import OfflineConfig, offline_tune
from tiltbench.recipe import load_recipe
from tiltbench.rows import MeasureRow
from tiltbench.sweep import SweepConfig, sweep

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "benchmarks" / "recipes"
RUNS = ROOT / "runs" / "recipes"
RESULTS = ROOT / "results"
TIMING = MeasureConfig(latency_examples=256, min_iterations=10, min_seconds=1.5)
# the hashed rows' recipe (<prefix>-<hashed>.yaml). SST-2: the aligned checkpoint given a second epoch distilled
# from the dense model's logits and hidden states (README: what it is worth against dense given the same epoch).
# MRPC: the aligned one, which the elimination rows continue (plain hashing's three-seed mean is higher there)
TASKS = {
    "sst2": dict(prefix="sst2-full", hashed="hashed-aligned-hidden-distilled", measure=TIMING),
    "mrpc": dict(prefix="mrpc", hashed="hashed-aligned", measure=TIMING),
}


# Rows already measured from the same recipe and seeds by another benchmark whose checkpoints are not kept
# (runs/ is not committed): used, and labelled with their source, for each seed whose checkpoint is not at hand.
COMMITTED = {"sst2-full-dense": ("recipe-minilm-sst2-full/seeds.json", "dense")}


def committed_runs(name: str) -> dict[int, dict]:
    """Seed -> {"seed", "metrics", "source"} of `name` measured by another benchmark (COMMITTED); {} when none."""
    if name not in COMMITTED:
        return {}
    source, key = COMMITTED[name]
    found = json.loads((RESULTS / source).read_text())
    return {
        seed: {"seed": seed, "metrics": {"accuracy": round(value, 4)}, "source": f"results/{source}"}
        for seed, value in zip(found["seeds"], found[key]["accuracy"], strict=True)
    }


def checkpoint(name: str, seed: int, train_missing: bool) -> Path | None:
    """runs/recipes/<name>[-seed<S>], trained by its recipe in a separate process when missing (and allowed)."""
    output = RUNS / (name if seed == 0 else f"{name}-seed{seed}")
    if not (output / "tiltbench.json").is_file():
        if not train_missing:
            return None
        recipe = RECIPES / f"{name}.yaml"
        command = [sys.executable, "-m", "tiltbench", "finetune", "--recipe", str(recipe)]
        command += ["--seed", str(seed), "--output", str(output), "--save-every", "100"]
        # a recipe that continues another one's checkpoint (init: runs/recipes/X names seed 0's) continues the
        # same seed: seed S starts from X-seed<S>, trained by this function when missing
        init = load_recipe(recipe).get("init")
        if init:
            parent = Path(str(init)).name
            checkpoint(parent, seed, train_missing)
            if seed > 0:
                command += ["--init", str(RUNS.relative_to(ROOT) / f"{parent}-seed{seed}")]
        subprocess.run(command, check=True, cwd=ROOT)
    return output


def weights_mb(folder: Path) -> float:
    """The checkpoint's weight files on disk (model.safetensors or the hashed one, and method.safetensors), MB."""
    return round(sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 1e6, 2)


def total_ms(row: MeasureRow, variant: str) -> float:
    return robust_total(Latency.from_values(row.latency[variant]["samples"]), row.n_batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds of every recipe (accuracy)")
    parser.add_argument("--tilt-rate", type=float, default=0.2, help="the elimination rows' tilt rate")
    parser.add_argument("--no-train", action="store_true", help="use what is trained; train nothing")
    parser.add_argument("--force", action="store_true", help="measure the sweep again from scratch (else: resume)")
    args = parser.parse_args()
    setup()
    spec = TASKS[args.task]
    suffixes = {"dense": "dense", "hashed": spec["hashed"], "tilted": "hashed-aligned-tilted-0.2"}
    names = {kind: f"{spec['prefix']}-{suffix}" for kind, suffix in suffixes.items()}
    found = {kind: checkpoint(name, 0, not args.no_train) for kind, name in names.items()}
    missing = [names[k] for k, v in found.items() if v is None]
    if missing:
        sys.exit(f"error: not trained yet: {', '.join(missing)} (run without --no-train)")
    dense, hashed, tilted = (str(found[k]) for k in names)
    cfg = SweepConfig(
        (dense, hashed, tilted),
        grids={dense: (0.0,), hashed: (0.0,), tilted: (args.tilt_rate,)},
        batch_sizes=(1, 32),
        run_name=f"eel-minilm-{args.task}",
        results_dir=str(RESULTS),
        measure=spec["measure"],
        transforms=("fp32", "int8"),
        force=args.force,
    )
    with progress_bar() as progress:
        report = sweep(cfg, progress)
    rows = report.rows
    # the reference: HF's fp32 forward of the table model, timed in each of the dense checkpoint's groups (fp32 and
    # int8); the mean of those, since one group's reading can be several per cent off another's (README)
    table_dense = {
        b: statistics.mean(total_ms(r, "dense-dynamic") for r in rows if (r.checkpoint, r.batch_size) == (dense, b))
        for b in cfg.batch_sizes
    }
    # accuracy over seeds, for every row: each recipe's checkpoint at every seed under the row's transform and knob
    # (offline, no timing; tiltbench's batches, as the sweep's own evaluation). Under --no-train a dense seed whose
    # checkpoint is gone reads the committed row of the same recipe and seed (fp32 only: none was measured in int8).
    folders: dict[str, dict[int, Path]] = {kind: {} for kind in names}
    committed = {kind: committed_runs(name) for kind, name in names.items()}
    for kind, name in names.items():
        for seed in range(args.seeds):
            folder = checkpoint(name, seed, not args.no_train)
            if folder is not None:
                folders[kind][seed] = folder

    def over_seeds(kind: str, transform: str, knob: float, seed0: dict) -> list[dict]:
        """The row's metrics at every seed: seed 0's from the sweep (`seed0`), the others evaluated here."""
        runs = [{"seed": 0, "metrics": seed0}] if 0 in folders[kind] else []
        for seed in range(1, args.seeds):
            if seed in folders[kind]:
                found = offline_tune(OfflineConfig(str(folders[kind][seed]), knobs=(knob,), transform=transform))
                metrics = next(row.metrics for row in found.rows if math.isclose(row.knob, knob, abs_tol=1e-9))
                runs.append({"seed": seed, "metrics": metrics})
            elif transform == "fp32" and seed in committed[kind]:
                runs.append(committed[kind][seed])
        return runs

    variants = [
        ("dense", dense, "fp32", 0.0),
        ("dense + int8", dense, "int8", 0.0),
        ("hashed", hashed, "fp32", 0.0),
        ("hashed + int8", hashed, "int8", 0.0),
        (f"hashed + elimination (τ {args.tilt_rate:g})", tilted, "fp32", args.tilt_rate),
        (f"hashed + elimination (τ {args.tilt_rate:g}) + int8", tilted, "int8", args.tilt_rate),
    ]
    summary = []
    for label, folder, transform, knob in variants:
        cells = {r.batch_size: r for r in rows if (r.checkpoint, r.transform, r.knob) == (folder, transform, knob)}
        first = cells[1]
        entry = {
            "variant": label,
            "checkpoint": Path(folder).name,
            "transform": transform,
            "knob": knob,
            "metrics_seed0": first.metrics,
            "checkpoint_mb_on_disk": weights_mb(Path(folder)) if transform == "fp32" else None,
            "model_mb": first.model_mb,
            "memory_mb": first.memory_mb,
            "parameters": first.parameters,
            **{
                f"speedup_vs_table_dense_b{b}": round(table_dense[b] / total_ms(r, "tiltbench"), 3)
                for b, r in cells.items()
            },  # fmt: skip
            # against the row's own model's HF fp32 forward, timed interleaved in the row's own group: no drift
            # between groups in it, but for the hashed rows it leaves out what the hashed embedding costs
            **{f"speedup_vs_own_dense_b{b}": round(r.speedup_vs_dense_dynamic, 3) for b, r in cells.items()},
            **{f"embedding_share_b{b}": r.embedding_share for b, r in cells.items()},
        }
        runs = over_seeds({dense: "dense", hashed: "hashed", tilted: "tilted"}[folder], transform, knob, first.metrics)
        if runs:
            shared = [name for name in runs[0]["metrics"] if all(name in r["metrics"] for r in runs)]
            entry["metrics_over_seeds"] = {
                name: {
                    "values": [r["metrics"][name] for r in runs],
                    "seeds": [r["seed"] for r in runs],
                    "mean": statistics.mean(r["metrics"][name] for r in runs),
                }
                for name in shared
            }
            sources = sorted({r["source"] for r in runs if "source" in r})
            if sources:
                entry["metrics_over_seeds"]["sources"] = sources
        summary.append(entry)
    write_json_atomic(
        RESULTS / cfg.run_name / "summary.json",
        {"task": args.task, "seeds": args.seeds, "rows": summary, "environment": environment()},
    )
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

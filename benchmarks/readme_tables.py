"""Regenerate the README's result tables from the committed results/ folders (never typed by hand).

Each table sits between `<!-- results:NAME -->` and `<!-- /results:NAME -->` in README.md.

    .venv/bin/python benchmarks/readme_tables.py          # rewrite README.md
    .venv/bin/python benchmarks/readme_tables.py --check  # exit 1 if README.md differs (tests/test_readme.py)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from tiltbench.rows import MeasureRow

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "results"


def _load(path: str) -> dict:
    return json.loads((RESULTS / path).read_text())


def _md(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def demo() -> str:
    report = _load("demo/report.json")
    trained = _load("demo/finetune.json")["train_config"]["tilt_rate"]
    shown = [r for r in report["rows"] if round(r["knob"], 4) in (0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)]
    rate = [f"{r['knob']:g}" + (" (trained)" if r["knob"] == trained else "") for r in shown]
    return _md(
        ["Tilt-Rate at inference", *rate],
        [
            [f"dev {report['metric_name']}", *(f"{r['metric']:.3f}" for r in shown)],
            ["predicted speedup (encoder MACs)", *(f"{r['predicted_speedup']:.2f}" for r in shown)],
        ],
    )


def _rows(folder: str) -> list[MeasureRow]:
    return [MeasureRow.from_dict(r) for r in _load(f"{folder}/report.json")["rows"]]


def _grid(folder: str) -> tuple[list[MeasureRow], list[float], list[int]]:
    rows = _rows(folder)
    return rows, sorted({r.knob for r in rows}), sorted({r.batch_size for r in rows})


def _cell(rows: list[MeasureRow], knob: float, batch: int, checkpoint: str | None = None) -> MeasureRow:
    return next(r for r in rows if (r.knob, r.batch_size) == (knob, batch) and checkpoint in (None, r.checkpoint))


def measured(folder: str) -> str:
    """Speedup vs dense-dynamic (measured / FLOP-predicted) per tilt rate and batch size, and the metric."""
    rows, rates, batches = _grid(folder)
    body = []
    for rate in rates:
        cells = [_cell(rows, rate, b) for b in batches]
        body.append(
            [
                f"{rate:g}",
                *(f"{c.speedup_vs_dense_dynamic:.2f}× / {c.predicted_speedup:.2f}×" for c in cells),
                f"{cells[0].metric:.3f}",
            ]
        )
    headers = ["tilt rate", *(f"batch {b}: measured / FLOP-predicted" for b in batches), rows[0].metric_name]
    return _md(headers, body)


def attribution(folder: str) -> str:
    """The measured speedup split into padding x elimination, per tilt rate and batch size."""
    rows, rates, batches = _grid(folder)
    body = []
    for rate in (r for r in rates if r > 0):
        cells = [_cell(rows, rate, b) for b in batches]
        body.append(
            [
                f"{rate:g}",
                *(
                    f"{c.speedup_vs_dense_dynamic:.2f}× = {c.speedup_from_padding:.2f} × "
                    f"{c.speedup_from_elimination:.2f}"
                    for c in cells
                ),
            ]
        )
    return _md(["tilt rate", *(f"batch {b}: speedup = padding × elimination" for b in batches)], body)


def calibration() -> str:
    errors = _load("calibration/errors.json")["errors"]
    names = {"sst2": "SST-2", "imdb": "IMDB"}
    body = [
        [names[task], batch, f"{100 * flop:.1f} %", f"{100 * e['calibrated'][batch]:.1f} %"]
        for task, e in errors.items()
        for batch, flop in e["flop"].items()
    ]
    return _md(["task", "batch", "FLOP-ratio prediction", "calibrated prediction"], body)


def methods(folder: str) -> str:
    """TiltedBERT against PoWER-BERT in one sweep: metric and speedup vs dense-dynamic per batch size."""
    rows = _rows(folder)
    batches = sorted({r.batch_size for r in rows})
    places = sorted({(r.method, r.checkpoint, r.knob) for r in rows}, key=lambda p: (p[0] != "tilted", p))
    body = []
    for method, checkpoint, knob in places:
        cells = [_cell(rows, knob, b, checkpoint) for b in batches]
        folder_name = Path(checkpoint).name
        name = "trained at τ = 0.1" if method == "tilted" else re.sub(r"^\w+-l", "λ = ", folder_name)
        label = {"tilt_rate": "τ", "retention_scale": "s", "gate_threshold": "t", "threshold_scale": "k"}.get(
            cells[0].knob_name, cells[0].knob_name
        )
        kept = (  # an adaptive method's counts vary per input: mean ± std after each layer
            f"{cells[0].mean_kept_tokens[0]:.1f} " + cells[0].kept_summary()
            if cells[0].schedule.get("shape") == "adaptive"
            else " ".join(f"{k:.1f}" for k in cells[0].mean_kept_tokens)
        )
        body.append(
            [
                f"{method} ({name})",
                f"{label} = {knob:g}",
                f"{cells[0].metric:.3f}",
                kept,
                *(f"{c.speedup_vs_dense_dynamic:.2f}×" for c in cells),
            ]
        )
    adaptive = any(r.schedule.get("shape") == "adaptive" for r in rows)
    kept_header = "mean tokens n0..nL (batch 1" + ("; adaptive: mean±std)" if adaptive else ")")
    headers = ["checkpoint", "knob", rows[0].metric_name, kept_header]
    return _md(headers + [f"batch {b}" for b in batches], body)


def stages(folder: str) -> str:
    """Seconds and dev metric of every training stage behind the methods table."""
    data = _load(f"{folder}/stages.json")
    shares = any("gate_bimodal_share" in entry for history in data.values() for entry in history)
    body = [
        [
            name,
            entry.get("stage", "fine-tune"),
            f"{entry['epoch_seconds']:.0f} s" if "epoch_seconds" in entry else "-",
            f"{entry['accuracy']:.3f}",
            *([f"{100 * entry['gate_bimodal_share']:.1f} %" if "gate_bimodal_share" in entry else "-"] * shares),
        ]
        for name, history in data.items()
        for entry in history
    ]
    headers = ["checkpoint", "stage", "time (1 epoch)", "dev accuracy after it"]
    return _md(headers + ["gates within 0.05 of 0 or 1"] * shares, body)


def predicted(folder: str) -> str:
    """The calibrated latency model against each row of a sweep (check-calibrated.json): measured / predicted."""
    report = _load(f"{folder}/check-calibrated.json")
    rows = [r for r in report["rows"] if r["counted"]]
    batches = sorted({r["batch_size"] for r in rows})
    places = list(dict.fromkeys((r["checkpoint"], r["method"], r["knob"]) for r in rows))
    body = []
    for checkpoint, method, knob in places:
        cells = {
            r["batch_size"]: r for r in rows if (r["checkpoint"], r["method"], r["knob"]) == (checkpoint, method, knob)
        }
        shown = [
            f"{c['measured']:.2f}× / {c['predicted']:.2f}× ({100 * c['error']:+.1f} %)" if (c := cells.get(b)) else "-"
            for b in batches
        ]
        name = Path(checkpoint).name  # power-l0.05, gates-l0.05, ...; the tilted one is measure-*/checkpoint
        body.append([method if name == "checkpoint" else name, f"{knob:g}", *shown])
    medians = [statistics.median(abs(r["error"]) for r in rows if r["batch_size"] == b) for b in batches]
    body.append(["median of the absolute errors", "", *(f"{100 * m:.1f} %" for m in medians)])
    return _md(["checkpoint", "knob", *(f"batch {b}: measured / predicted" for b in batches)], body)


def seeds(folder: str) -> str:
    """Accuracy at every training seed (0 = the sweep's checkpoints) with mean and sample standard deviation; for an
    adaptive method each seed's FLOP ratio (dense / kept encoder MACs on the dev set) beside it."""
    data = _load(f"{folder}/seeds.json")

    def spread(values: list[float]) -> list[str]:
        return [*(f"{a:.3f}" for a in values), f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"]

    body = [["dense fine-tune", "-", *spread(data["dense_fine_tune"])]]
    labels = {"tilted": "τ", "power": "s", "gates": "t", "ltp": "k"}
    for name, entry in data["recipes"].items():
        label = labels[name.split()[0]]
        for knob, cell in entry["knobs"].items():
            row = spread(cell["accuracy"])
            if name.split()[0] in ("gates", "ltp"):  # adaptive: the counts, so the FLOP ratio, vary by seed
                row[:-1] = [f"{a} ({f:.2f}×)" for a, f in zip(row[:-1], cell["flop_speedup"], strict=True)]
            body.append([name, f"{label} = {knob}", *row])
        if "gate_bimodal_share" in entry:  # the regulariser's effect: gates within 0.05 of 0 or 1
            shares = entry["gate_bimodal_share"]
            shown = [f"{100 * v:.1f} %" for v in shares]
            mean = f"{100 * statistics.mean(shares):.1f} ± {100 * statistics.stdev(shares):.1f} %"
            body.append([name, "gates within 0.05 of 0 or 1", *shown, mean])
    return _md(["recipe", "knob", *(f"seed {s}" for s in data["seeds"]), "mean ± sd"], body)


def recipe_full(
    folder: str,
    names: dict[str, str],
    metric: str = "dev accuracy",
    knob: str = "tilt rate",
    tokens: bool = False,
    split: bool = False,
) -> Callable[[], str]:
    """A task's headline recipes (recipe_minilm.py [--task | --method]): accuracy and its drop against the dense
    model of the same data and epochs, measured speedup at batch 1 and 32 against dense-dynamic, and the FLOP ratio.
    <names> maps checkpoint folders to row labels; the first is the dense model. <knob> heads the knob column (each
    row's value under its `knob_name`; summaries from before that field name it tilt_rate); <tokens> adds the mean
    number of tokens entering the model and left after each layer at batch 32 (what an adaptive method kept);
    <split> adds the batch-32 speedup split into padding × elimination (report.json: dense-dynamic / keep-all, the
    same checkpoint through tiltbench's path removing nothing, × keep-all / tiltbench)."""
    dense = next(iter(names))

    def render() -> str:
        data = _load(f"{folder}/summary.json")
        parts = {
            (Path(r["checkpoint"]).name, r["knob"], r["batch_size"]): r for r in _load(f"{folder}/report.json")["rows"]
        }
        cells: dict[tuple[str, float], dict[int, dict]] = {}
        for row in data["rows"]:
            cells.setdefault((row["checkpoint"], _knob(row)), {})[row["batch_size"]] = row
        body = []
        for (checkpoint, value), by_batch in cells.items():
            one, many = by_batch[1], by_batch[32]
            body.append(
                [
                    names.get(checkpoint, checkpoint),
                    f"{value:g}",
                    f"{one['accuracy']:.3f}",
                    "—" if checkpoint == dense else f"{0.0 - one['drop_vs_dense_points']:+.1f}",
                    f"{many['speedup_vs_dense_dynamic']:.2f}×",
                    f"{one['speedup_vs_dense_dynamic']:.2f}×",
                    f"{many['predicted_flop_speedup']:.2f}×",
                    *([" ".join(f"{n:.1f}" for n in many["mean_kept_tokens"])] if tokens else []),
                    *([_padding_times_elimination(parts[(checkpoint, value, 32)])] if split else []),
                ]
            )
        header = ["checkpoint", knob, metric, "vs dense (pts)", "speedup b32", "speedup b1", "FLOP ratio"]
        header += ["mean tokens n0..nL (b32)"] if tokens else []
        return _md(header + (["b32: padding × elimination"] if split else []), body)

    return render


class MethodRun(NamedTuple):
    """One method's range checkpoint in a timed recipe sweep, for the fastest-within-a-point tables (a NamedTuple:
    tests load this file without registering it as a module, which a dataclass needs)."""

    folder: str  # results/<folder>/summary.json
    checkpoint: str
    label: str
    knob: str  # the knob's letter: τ, k, s
    epochs: int  # trained in all, the dense model it starts from included
    references: tuple[tuple[float, str], ...]  # (dense accuracy, its name): within 1 point of each


def _fastest_within_point(runs: list[MethodRun], metric: str) -> str:
    """For each run and each of its references, the knob fastest at batch 32 whose accuracy is within 1 point of the
    reference (a drop of exactly 1 point counts), with its speedups and FLOP ratio."""
    body = []
    for run in runs:
        rows = [r for r in _load(f"{run.folder}/summary.json")["rows"] if r["checkpoint"] == run.checkpoint]
        b1 = {_knob(r): r["speedup_vs_dense_dynamic"] for r in rows if r["batch_size"] == 1}
        b32 = [r for r in rows if r["batch_size"] == 32]
        for reference, name in run.references:
            kept = [r for r in b32 if r["accuracy"] >= reference - 0.01 - 1e-9]
            head = [run.label, f"{run.epochs}", f"{name} ({reference:.3f})"]
            if not kept:
                body.append(head + ["none within 1 pt", "", "", "", ""])
                continue
            best = max(kept, key=lambda r: r["speedup_vs_dense_dynamic"])
            body.append(
                head
                + [
                    f"{run.knob} {_knob(best):g}",
                    f"{best['accuracy']:.3f} ({100 * (best['accuracy'] - reference):+.1f})",
                    f"{best['speedup_vs_dense_dynamic']:.2f}×",
                    f"{b1[_knob(best)]:.2f}×",
                    f"{best['predicted_flop_speedup']:.2f}×",
                ]
            )
    header = ["method + teacher, seed 0", "epochs", "reference", "fastest knob within 1 pt", f"{metric} (pts)"]
    return _md(header + ["speedup b32", "speedup b1", "FLOP ratio"], body)


def _epochs(folder: str, checkpoint: str, on_top: bool) -> int:
    """Epochs <checkpoint> trained in all: its own, plus the dense epoch it starts from when trained on top of it."""
    return _load(f"{folder}/summary.json")["training"][checkpoint]["epochs"] + (1 if on_top else 0)


def _padding_times_elimination(row: dict) -> str:
    """A report row's speedup split, "—" where the row carries none. The dense model's own row reads 1.00 × ≈ 1: its
    "elimination" factor is the timing noise of two runs of the same model."""
    padding, elimination = row.get("speedup_from_padding"), row.get("speedup_from_elimination")
    return "—" if padding is None or elimination is None else f"{padding:.2f} × {elimination:.2f}"


def recipe_methods_sst2() -> str:
    """The full-data recipe (every pass distilled from the dense seed-0 model, the last stage across the knob) on
    each method, seed 0: for each, the fastest knob at batch 32 within 1 point of the dense model trained as many
    epochs (TiltedBERT trains one epoch from the pretrained model, so its control is the one-epoch dense model;
    LTP and PoWER-BERT train two more from it, so theirs is that model given two more epochs and the teacher,
    results/recipe-ltp-sst2-full/dense-continued.json) and the fastest within 1 point of the one-epoch model."""
    # dense-continued.json is the one-epoch model given two more epochs and the teacher: LTP's and PoWER's share it
    continued = _load("recipe-ltp-sst2-full/dense-continued.json")["accuracy_by_seed"]["0"]
    one_epoch = _load("recipe-minilm-sst2-full/summary.json")["dense_accuracy"]
    tilted = ("recipe-minilm-sst2-full", "sst2-full-tilted-range-teacher")
    runs = [
        MethodRun(*tilted, "TiltedBERT, range 0:0.4", "τ", _epochs(*tilted, False), ((one_epoch, "dense, 1 epoch"),))
    ]
    methods = (
        ("recipe-ltp-sst2-full", "sst2-full-ltp-range-teacher", "LTP λ 0.02, range 0:2", "k"),
        ("recipe-power-sst2-full", "sst2-full-power-range-teacher", "PoWER-BERT λ 0.05, range 0:2", "s"),
    )
    return _fastest_within_point(runs + _three_epoch_runs(methods, continued, one_epoch), "dev accuracy")


def _three_epoch_runs(methods: tuple[tuple[str, str, str, str], ...], control: float, one_epoch: float) -> list:
    """MethodRun rows of (folder, checkpoint, label, knob) checkpoints trained two epochs on top of the one-epoch
    dense model, read against their control (that model given the same two epochs) and against the one-epoch model."""
    runs = []
    for folder, checkpoint, label, knob in methods:
        epochs = _epochs(folder, checkpoint, True)
        assert epochs == 3, f"{checkpoint} trains {epochs} epochs in all; its control trains 3"
        references = ((control, "dense, 3 epochs"), (one_epoch, "dense, 1 epoch"))
        runs.append(MethodRun(folder, checkpoint, label, knob, epochs, references))
    return runs


def recipe_methods_imdb() -> str:
    """The same on IMDB (5,000 reviews, 2,000 test reviews), seed 0. TiltedBERT's range checkpoint trains one epoch
    from the pretrained model (its control: the one-epoch dense model of its sweep); LTP and PoWER-BERT train two
    more from that model, and their sweeps' dense model is already the control given the same two epochs and teacher
    (imdb-5k-dense-continued-2), so they are read against it and against the one-epoch model."""
    tilted = ("recipe-minilm-imdb-5k", "imdb-5k-tilted-range-teacher")
    one_epoch = _load(f"{tilted[0]}/summary.json")["dense_accuracy"]
    runs = [
        MethodRun(*tilted, "TiltedBERT, range 0:0.5", "τ", _epochs(*tilted, False), ((one_epoch, "dense, 1 epoch"),))
    ]
    methods = (
        ("recipe-ltp-imdb-5k", "imdb-5k-ltp-range-teacher", "LTP λ 0.1, range 0:3", "k"),
        ("recipe-power-imdb-5k", "imdb-5k-power-range-teacher", "PoWER-BERT λ 0.05, range 0:2", "s"),
        ("recipe-ltp-imdb-5k-specialist", "imdb-5k-ltp-1-teacher-control", LTP_IMDB_SPECIALIST, "k"),
    )
    control = _load("recipe-ltp-imdb-5k/summary.json")["dense_accuracy"]  # every method sweep's dense model
    return _fastest_within_point(runs + _three_epoch_runs(methods, control, one_epoch), "test accuracy")


def recipe_continued_imdb() -> str:
    """IMDB's second try read without timing (recipe_minilm.py --task imdb --continued --no-train): each trained
    second-epoch TiltedBERT checkpoint at its rates beside the one-epoch range checkpoint, the drop against the
    one-epoch dense model and, once trained, against the control given the same epoch."""
    data = _load("recipe-minilm-imdb-5k-continued-accuracy/accuracy.json")
    control = data["control_accuracy"]
    body = [
        [
            f"trained at τ {row['trained_tilt_rate']:g}, second epoch",
            f"{row['tilt_rate']:g}",
            f"{row['accuracy']:.3f}",
            f"{row['range_checkpoint_accuracy']:.3f}",
            f"{0.0 - row['drop_vs_dense_points']:+.1f}",
            "not trained" if control is None else f"{0.0 - row['drop_vs_control_points']:+.1f}",
            f"{row['flop_ratio']:.2f}×",
        ]
        for row in data["rows"]
    ]
    header = [
        "checkpoint",
        "tilt rate",
        "test accuracy (2,000)",
        "range 0:0.5, 1 epoch",
        f"vs dense, 1 epoch ({data['dense_accuracy']:.4f}) (pts)",
        "vs control (pts)" if control is None else f"vs control ({control:.4f}) (pts)",
        "FLOP ratio",
    ]
    return _md(header, body)


def recipe_validation_imdb(sweep: str, label: str, knob: str) -> Callable[[], str]:
    """An IMDB method checkpoint and its control on 2,000 held-out training reviews (recipe_minilm.py --task imdb
    --method M [--specialist] --validation: results/<sweep>-validation) beside the same knobs on the 2,000 test
    reviews of the timed sweep (results/<sweep>)."""

    def render() -> str:
        data = _load(f"{sweep}-validation/validation.json")
        control, test_control = data["control_accuracy"], _load(f"{sweep}/summary.json")["dense_accuracy"]
        body = [["dense, 3 epochs (control)", "—", f"{control:.4f}", "—", f"{test_control:.4f}", "—", "1.00×"]]
        for row in data["rows"]:
            test = row["test_accuracy"]
            body.append(
                [
                    label,
                    f"{row['knob']:g}",
                    f"{row['accuracy']:.4f}",
                    f"{-row['drop_vs_control_points']:+.2f}",
                    "not swept" if test is None else f"{test:.4f}",
                    "" if test is None else f"{100 * (test - test_control):+.2f}",
                    f"{row['flop_ratio']:.2f}×",
                ]
            )
        header = ["checkpoint", knob, "held-out accuracy (2,000)", "vs control (pts)", "test accuracy (2,000)"]
        return _md(header + ["vs control (pts)", "FLOP ratio"], body)

    return render


def recipe_training() -> str:
    """Seconds per training step of each recipe setting, measured alone (benchmarks/train_cost.py)."""
    data = _load("recipe-train-cost/report.json")
    host = f"{data['environment']['cpu']}, {data['threads']} threads"
    return f"Measured on {host}: two interleaved rounds, the faster one kept, nothing else running.\n\n" + _md(
        ["setting (MiniLM, SST-2, len 64, batch 32)", "s / step", "vs dense", "projected epoch, 67,349 sentences"],
        [
            [
                row["setting"],
                f"{row['seconds_per_step']:.3f}",
                f"{row['vs_dense']:.2f}×",
                f"{row['projected_full_epoch_minutes']:.0f} min",
            ]
            for row in data["rows"]
        ],  # fmt: skip
    )


def _offline_curves(folder: str, names: dict[str, str], reference: str, title: str) -> str:
    """One row of accuracy per offline-tune run in results/<folder>/<name>/, along the reference run's knob
    values, with the FLOP ratio of the reference beneath."""
    reports = {name: _load(f"{folder}/{name}/report.json") for name in names}
    rates = [r["knob"] for r in reports[reference]["rows"]]
    body = [
        [label, *(f"{r['metric']:.3f}" for r in reports[name]["rows"] if r["knob"] in rates)]
        for name, label in names.items()
    ]
    body.append(["FLOP ratio (encoder MACs)", *(f"{r['predicted_speedup']:.2f}×" for r in reports[reference]["rows"])])
    return _md([title, *(f"τ {r:g}" for r in rates)], body)


def recipe_ablation() -> str:
    """Offline-tuning curves of the 8,000-sentence ablation: accuracy at each tilt rate, one checkpoint per recipe."""
    names = {
        "tilted-0.2": "tilted at τ 0.2",
        "tilted-0.2-teacher": "tilted at τ 0.2 + teacher",
        "tilted-range": "tilted, range 0:0.4 (in-place distillation)",
        "tilted-range-teacher": "tilted, range 0:0.4 + teacher",
    }
    dense = _load("recipe-ablation-sst2-8k/dense/report.json")["rows"][0]["metric"]
    table = _offline_curves("recipe-ablation-sst2-8k", names, "tilted-0.2", "recipe (8,000 sentences, 1 epoch)")
    return f"Dense fine-tune of the same data: {dense:.3f}.\n\n" + table


def recipe_variants(*variants: tuple[str, str]) -> Callable[[], str]:
    """The 8k range + teacher recipe with and without an added term, one (label, option) per variant
    (results/recipe-ablation-sst2-8k/<label>.json, recipe_minilm.py's variant ablations): mean accuracy over the
    seeds at each tilt rate, and each variant's difference, seed-paired (every recipe of a seed trains on the same
    8,000 sentences; the plain row is the first file's)."""

    def render() -> str:
        body, seeds = [], None
        for label, option in variants:
            data = _load(f"recipe-ablation-sst2-8k/{label}.json")
            plain, variant = (data["recipes"][f"sst2-8k-tilted-range-teacher{s}"] for s in ("", f"-{label}"))
            if not body:
                rates, seeds = [row["tilt_rate"] for row in plain], len(data["seeds"])
                body.append(["range 0:0.4 + teacher", *(f"{row['mean']:.3f}" for row in plain)])
            pairs = zip(plain, variant, strict=True)
            gaps = [[100 * (b - a) for a, b in zip(p["accuracy"], v["accuracy"], strict=True)] for p, v in pairs]
            body += [
                [f"the same + `{option}`", *(f"{row['mean']:.3f}" for row in variant)],
                ["difference, mean (pts)", *(f"{statistics.mean(g):+.1f}" for g in gaps)],
                ["seeds gaining / losing", *(f"{sum(x > 0 for x in g)} / {sum(x < 0 for x in g)}" for g in gaps)],
            ]
        return _md([f"8k, {seeds} seeds", *(f"τ {r:g}" for r in rates)], body)

    return render


def _knob(row: dict) -> float:
    """A recipe summary row's knob, under its `knob_name` (summaries from before that field name it tilt_rate)."""
    return row[row.get("knob_name", "tilt_rate")]


def _speedups_b32(folder: str, checkpoint: str) -> dict[float, float]:
    """Measured speedup at batch 32 of one checkpoint of a recipe summary (seed 0), by its knob."""
    rows = _load(f"{folder}/summary.json")["rows"]
    return {
        _knob(r): r["speedup_vs_dense_dynamic"] for r in rows if r["checkpoint"] == checkpoint and r["batch_size"] == 32
    }


def recipe_full_variant(variant: str, label: str) -> Callable[[], str]:
    """The full-data range recipe with one change (results/recipe-minilm-sst2-full/seeds-<variant>.json,
    recipe_minilm.py --seeds --variant) against the committed fp32 range recipe of the same seeds: mean accuracy
    at each tilt rate, the difference, each one's drop against the dense mean of those seeds, and the speedup
    measured at batch 32 for the plain recipe's seed 0 (the counts, hence the work, do not depend on the weights)."""

    def render() -> str:
        data = _load(f"recipe-minilm-sst2-full/seeds-{variant}.json")
        rows, dense = data["rows"], data["dense"]["mean"]
        seeds = ", ".join(str(seed) for seed in data["seeds"])
        seeds = f"mean of seeds {seeds}" if len(data["seeds"]) > 1 else f"seed {seeds}"
        speed = _speedups_b32("recipe-minilm-sst2-full", "sst2-full-tilted-range-teacher")
        return _md(
            [f"full SST-2, {seeds}", *(f"τ {row['tilt_rate']:g}" for row in rows)],
            [
                ["range 0:0.4 + teacher", *(f"{row['plain_range_mean']:.3f}" for row in rows)],
                [label, *(f"{row['mean']:.3f}" for row in rows)],
                ["difference (pts)", *(f"{100 * (row['mean'] - row['plain_range_mean']):+.1f}" for row in rows)],
                [f"drop vs dense {dense:.3f} (pts)", *(f"{-row['mean_drop_vs_dense_points']:+.1f}" for row in rows)],
                ["speedup b32", *(f"{speed[row['tilt_rate']]:.2f}×" for row in rows)],
            ],
        )

    return render


def recipe_specialists(path: str, ranged_label: str) -> Callable[[], str]:
    """A range + teacher checkpoint against single-knob specialists (each trained at its rate, + teacher) at their
    rates: seed-paired means, each seed's value in brackets when there are several."""

    def render() -> str:
        data = _load(path)
        seeds = len(data["seeds"])

        def cell(values: list[float]) -> str:
            mean = f"{statistics.mean(values):.3f}"
            return mean if seeds == 1 else f"{mean} ({', '.join(f'{a:.3f}' for a in values)})"

        body = [
            [
                f"{row['tilt_rate']:g}",
                cell(row["specialist"]),
                cell(row["range"]),
                f"{row['range_minus_specialist_points']:+.1f}",
            ]
            for row in data["rows"]
        ]
        count = f"{seeds} seed" + ("s" if seeds > 1 else "")
        return _md(
            ["tilt rate", f"specialist, mean ({count})", f"{ranged_label}, mean ({count})", "range − specialist"],
            body,
        )

    return render


def accelerate() -> str:
    data = _load("accelerate-minilm-sst2/report.json")
    rows = sorted(data["rows"], key=lambda r: (r["processes"], r["seed"]))
    body = []
    for processes in (1, 2):
        own = [r for r in rows if r["processes"] == processes]
        summary = data["summary"][f"{processes}_process"]
        body.append(
            [
                f"{processes} process{'es' if processes > 1 else ''}",
                *(f"{r['accuracy']:.3f}" for r in own),
                f"{summary['mean_accuracy']:.3f} ± {summary['stdev']:.3f}",
                f"{statistics.mean(r['train_seconds'] for r in own):.0f} s",
            ]
        )
    return _md(["finetune", "seed 0", "seed 1", "seed 2", "mean ± sd", "training time"], body) + (
        f"\n\nMean gap, 2 processes − 1: {data['mean_gap_points']:+.2f} points."
    )


def _seeds_file_rows(data: dict) -> list[dict]:
    """A seeds.json's rows, each with its knob under `knob`: older files keep them under `range_teacher` with the
    knob as `tilt_rate`."""
    return [
        {"knob": row.get("knob", row.get("tilt_rate")), **row} for row in data.get("rows", data.get("range_teacher"))
    ]


def recipe_seeds(folder: str, checkpoint: str, label: str, knob: str) -> Callable[[], str]:
    """A full-SST-2 recipe checkpoint at each training seed (results/<folder>/seeds.json), against the dense model's
    seeds; the measured speedup at batch 32 is seed 0's, from the headline summary. For TiltedBERT the counts, hence
    the work, are the same for every seed; an adaptive method (LTP) learns its counts, so its rows carry each seed's
    FLOP ratio over the dev set and the table shows them. Older seeds files keep the rows under `range_teacher` with
    the knob as `tilt_rate`."""

    def render() -> str:
        data = _load(f"{folder}/seeds.json")
        speed = _speedups_b32(folder, checkpoint)

        def spread(values: list[float]) -> list[str]:
            sd = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            return [*(f"{v:.3f}" for v in values), f"{statistics.mean(values):.3f}{sd}"]

        rows = _seeds_file_rows(data)
        flops = all("flop_ratio" in row for row in rows)  # an adaptive method's realised work, seed by seed
        dense = data["dense"]
        body = [["dense", "—", *spread(dense["accuracy"]), "—", "1.00×", *(["1.00×"] if flops else [])]]
        for row in rows:
            value = row["knob"]
            measured = f"{speed[value]:.2f}×" if value in speed else "—"
            body.append([label, f"{value:g}", *spread(row["accuracy"]),
                         f"{-row['mean_drop_vs_dense_points']:+.1f}", measured,
                         *([" / ".join(f"{f:.2f}×" for f in row["flop_ratio"])] if flops else [])])  # fmt: skip
        seeds = [f"seed {s}" for s in data["seeds"]]
        header = ["checkpoint", knob, *seeds, "mean", "mean vs dense (pts)", "speedup b32 (seed 0)"]
        return _md(header + (["FLOP ratio, each seed (dev set)"] if flops else []), body)

    return render


def _seed_of(checkpoint: str) -> int:
    """The training seed of a recipe checkpoint: runs/recipes/<name> is seed 0, <name>-seed<S> seed S."""
    found = re.search(r"-seed(\d+)$", checkpoint.rstrip("/"))
    return int(found.group(1)) if found else 0


def _seed_rows(folder: str) -> tuple[list[int], list[float], dict[float, list[float]]]:
    """A recipe's seeds.json: its seeds, the dense accuracy of each and the recipe's accuracies by knob."""
    data = _load(f"{folder}/seeds.json")
    rows = {row["knob"]: row["accuracy"] for row in _seeds_file_rows(data)}
    return data["seeds"], data["dense"]["accuracy"], rows


def _mean_speedups_b32(folder: str) -> dict[float, float]:
    """The mean measured speedup at batch 32 over every seed timed in results/<folder>-seeds (recipe_minilm.py
    --method M --seeds --speed), by knob; a knob some seed lacks (an interrupted sweep) is left out."""
    if not (RESULTS / f"{folder}-seeds").is_dir():
        return {}
    rows = _rows(f"{folder}-seeds")
    checkpoints = {r.checkpoint for r in rows}  # every seed the sweep reached, at either batch size
    by_knob: dict[float, dict[str, float]] = {}
    for r in rows:
        if r.batch_size == 32:
            by_knob.setdefault(r.knob, {})[r.checkpoint] = r.speedup_vs_dense_dynamic
    return {k: statistics.fmean(v.values()) for k, v in by_knob.items() if set(v) == checkpoints}


def recipe_continued(folder: str, checkpoint: str, label: str, knob: str) -> Callable[[], str]:
    """A method's full-data recipe against the dense model trained for as many epochs (results/<folder>/
    dense-continued.json, recipe_minilm.py --method M --dense-continued) and the one-epoch dense model, on the seeds
    both files have: accuracy by seed, mean, the mean's difference from each dense model (+: higher), and the
    speedup at batch 32 of seed 0's headline sweep and, where every seed was timed, their mean."""

    def render() -> str:
        continued = {
            int(seed): acc for seed, acc in _load(f"{folder}/dense-continued.json")["accuracy_by_seed"].items()
        }
        seeds, dense, rows = _seed_rows(folder)
        shared = [seed for seed in seeds if seed in continued]
        at = [seeds.index(seed) for seed in shared]
        speed, mean_speed = _speedups_b32(folder, checkpoint), _mean_speedups_b32(folder)
        longer = statistics.fmean(continued[seed] for seed in shared)
        shorter = statistics.fmean(dense[i] for i in at)

        def line(name: str, value: str, accuracy: list[float], speedups: list[str]) -> list[str]:
            mean = statistics.fmean(accuracy)
            # round first, + 0.0: a difference that rounds to zero reads +0.0, not -0.0
            points = [f"{round(100 * (mean - dense), 1) + 0.0:+.1f}" for dense in (longer, shorter)]
            return [name, value, *(f"{a:.3f}" for a in accuracy), f"{mean:.3f}", *points, *speedups]

        body = [
            line("dense, 1 epoch (the recipe's init)", "—", [dense[i] for i in at], ["1.00×", "1.00×"]),
            line("dense, 1 + 2 epochs, the same teacher", "—", [continued[seed] for seed in shared], ["1.00×"] * 2),
        ]
        for value, accuracy in rows.items():
            measured = [f"{table[value]:.2f}×" if value in table else "—" for table in (speed, mean_speed)]
            body.append(line(label, f"{value:g}", [accuracy[i] for i in at], measured))
        header = ["checkpoint", knob, *(f"seed {seed}" for seed in shared), "mean", "vs dense 1 + 2 epochs (pts)",
                  "vs dense 1 epoch (pts)", "speedup b32 (seed 0)", "speedup b32 (mean of timed seeds)"]  # fmt: skip
        return _md(header, body)

    return render


def recipe_seeds_speed(folder: str, knob: str) -> Callable[[], str]:
    """Each seed of a recipe timed at its operating points (results/<folder>-seeds, recipe_minilm.py --method M
    --seeds --speed: one sweep, one session for every seed): measured speedup against dense-dynamic at batch 32 and
    1 per seed and their mean, the FLOP ratio per seed over the timed sentences, and the mean accuracy of the timed
    seeds against their dense mean (seeds.json). A seed missing a point (an interrupted sweep) shows "—"."""

    def render() -> str:
        rows = _rows(f"{folder}-seeds")
        seeds, dense, accuracy = _seed_rows(folder)
        checkpoints = sorted({r.checkpoint for r in rows}, key=_seed_of)
        timed = [seeds.index(_seed_of(c)) for c in checkpoints if _seed_of(c) in seeds]

        def per_seed(cells: list[MeasureRow | None], field: str) -> str:
            return " / ".join(f"{getattr(c, field):.2f}×" if c else "—" for c in cells)

        def mean(cells: list[MeasureRow | None]) -> str:
            values = [c.speedup_vs_dense_dynamic for c in cells if c]
            return f"{statistics.fmean(values):.2f}×" if len(values) == len(cells) else "—"

        body: list[list[str]] = []
        for value in sorted({r.knob for r in rows}):
            at = {(r.checkpoint, r.batch_size): r for r in rows if r.knob == value}
            b32, b1 = ([at.get((c, batch)) for c in checkpoints] for batch in (32, 1))
            drop = "—"
            if value in accuracy and timed:
                gain = statistics.fmean(accuracy[value][i] for i in timed) - statistics.fmean(dense[i] for i in timed)
                drop = f"{100 * gain:+.1f}"
            speedup = "speedup_vs_dense_dynamic"
            body.append([f"{value:g}", drop, per_seed(b32, speedup), mean(b32), per_seed(b1, speedup), mean(b1),
                         per_seed(b32, "predicted_speedup")])  # fmt: skip
        names = "/".join(str(_seed_of(c)) for c in checkpoints)
        header = [knob, f"mean accuracy vs dense, seeds {names} (pts)", f"speedup b32, seeds {names}", "mean b32",
                  f"speedup b1, seeds {names}", "mean b1", f"FLOP ratio, seeds {names} (timed sentences)"]  # fmt: skip
        return _md(header, body)

    return render


def _checkpoint_name(path: str, method: str) -> str:
    name = Path(path).name if Path(path).name != "checkpoint" else Path(path).parent.name
    return name if method in name else f"{name} ({method})"


def stack(folder: str) -> str:
    """Each checkpoint x transform x knob: metric, total drop against HF's dense fp32 model of the same checkpoint,
    speedup against the same-transform dense model at each batch size, and against dense fp32 at the largest;
    model size."""
    rows = _rows(folder)
    batches = sorted({r.batch_size for r in rows})
    body = []
    for checkpoint in dict.fromkeys(r.checkpoint for r in rows):
        for transform in ("fp32", "int8", "bf16"):
            own = [r for r in rows if (r.checkpoint, r.transform) == (checkpoint, transform)]
            for knob in sorted({r.knob for r in own}):
                cells = {r.batch_size: r for r in own if r.knob == knob}
                first = next(iter(cells.values()))
                drop = first.metric_drop_points if transform == "fp32" else first.metric_drop_vs_fp32_points
                last = cells.get(batches[-1])
                body.append(
                    [
                        _checkpoint_name(checkpoint, first.method),
                        transform,
                        f"{knob:g}",
                        f"{first.metric:.3f}",
                        f"{-drop + 0.0:+.1f}",  # + 0.0: no "-0.0"
                        *(f"{cells[b].same_transform_speedup:.2f}×" if b in cells else "—" for b in batches),
                        f"{last.speedup_vs_dense_dynamic:.2f}×" if last else "—",
                        f"{first.model_mb:.1f}" if first.model_mb else "—",
                    ]
                )
    same = [f"b{b} vs same-transform dense" for b in batches]
    headers = ["checkpoint", "transform", "knob", "metric", "vs dense fp32 (pts)", *same, f"b{batches[-1]} vs fp32"]
    return _md([*headers, "MB"], body)


def batch1() -> str:
    """Batch 1 before and after the short inference path: aten operators per forward and the speedup against the
    same-transform dense model at each knob."""
    body = []
    runs = [json.loads(p.read_text()) for p in (RESULTS / "batch1-overhead").glob("*.json")]
    runs = [r for r in runs if r.get("method", "tilted") == "tilted"]  # a PoWER schedule's knobs are not tilt rates
    order = {"before": 0, "after": 1, "blocks": 2, "head": 3, "direct": 4, "unfused": 5, "fused": 6}
    names = {
        "before": "before (a60ec89)",
        "after": "short path",
        "blocks": "+ head blocks (reverted)",
        "head": "short path, rerun (b722c23)",
        "direct": "+ direct layer calls (5bd0b0e)",
        "unfused": "torch-op attention, rerun",
        "fused": "+ fused attention kernel",
    }
    knobs: list[str] = []
    for data in runs:
        knobs += [k for k in data["speedup_vs_same_transform_dense"] if k.startswith("knob ") and k not in knobs]
    knobs.sort(key=lambda k: float(k.removeprefix("knob ")))
    for data in sorted(runs, key=lambda d: (d["task"], d["transform"], order.get(d["label"], 7))):
        ops = data["aten_ops_per_forward"]
        knob_ops = next(v for k, v in ops.items() if k.startswith("knob "))
        speed = data["speedup_vs_same_transform_dense"]
        body.append(
            [
                data["task"],
                data["transform"],
                names.get(data["label"], data["label"]),
                data["environment"]["cpu"].replace("(R)", "").replace(" Processor", ""),  # the VM's host varies
                str(data.get("runs", 1)),
                f"{ops['dense']:.0f} / {knob_ops:.0f}",
                *(f"{speed[k]:.2f}×" if k in speed else "—" for k in [*knobs, "keep-all"]),
            ]
        )
    headers = ["task", "transform", "code", "CPU", "runs (median)", "aten ops dense / eliminating"]
    return _md([*headers, *(f"τ {k.removeprefix('knob ')}" for k in knobs), "keep-all (τ 0)"], body)


def stack_offline() -> str:
    """Offline-tuning of one checkpoint under each transform: accuracy at every tilt rate (no timing)."""
    names = {
        "fp32": "fp32",
        "int8-per-tensor": "int8, one scale per tensor",
        "int8": "int8, one scale per output channel (ours)",
        "bf16": "bf16",
    }
    return _offline_curves("stack-offline-sst2", names, "fp32", "full-SST-2 range + teacher checkpoint")


def int8_backends() -> str:
    data = _load("int8-backends/report.json")
    body = []
    for r in data["rows"]:
        if "accuracy" not in r:
            body.append([r["backend"], r.get("missing") or "failed", "", "", "", ""])
            continue
        body.append(
            [
                r["backend"],
                f"{r['accuracy']:.3f}",
                f"{r['model_mb']:.1f}",
                f"{r['speedup_vs_torch_fp32_batch32']:.2f}×",
                f"{r['speedup_vs_torch_fp32_batch1']:.2f}×",
                f"{r['ms_total_batch32'] / 8:.1f} ms",
            ]
        )
    return _md(["backend (dense MiniLM, SST-2)", "accuracy", "MB", "b32 vs torch fp32", "b1 vs torch fp32",
                "ms per batch of 32"], body)  # fmt: skip


EEL_RECIPES = {  # what each recipe of benchmarks/eel_init.py is, as its README row says it
    "mrpc-dense": "dense, with its table",
    "mrpc-hashed": "hashed, fit weighted by MRPC's token counts (default)",
    "mrpc-hashed-vocabulary-fit": "hashed, fit to every table row alike",
    "mrpc-hashed-teacher": "hashed (default fit), distilled from the dense model",
    "mrpc-hashed-aligned": "hashed (default fit), 3 epochs of hidden-state alignment",
    "sst2-8k-dense": "dense, with its table",
    "sst2-8k-hashed": "hashed, fit weighted by the task's token counts (default)",
    "sst2-8k-hashed-aligned": "hashed (default fit), 2 epochs of hidden-state alignment",
    "sst2-full-dense": "dense, with its table",
    "sst2-full-hashed": "hashed, fit weighted by the task's token counts (default)",
    "sst2-full-hashed-aligned": "hashed (default fit), 1 epoch of hidden-state alignment",
    "sst2-full-dense-distilled": "dense, + a 2nd epoch distilled from dense seed 0",
    "sst2-full-hashed-aligned-distilled": "hashed, aligned, + a 2nd epoch distilled from dense seed 0",
    "sst2-full-dense-hidden-distilled": "dense, + a 2nd epoch distilled from dense seed 0, hidden states too",
    "sst2-full-hashed-aligned-hidden-distilled": "hashed, aligned, + a 2nd epoch distilled, hidden states too",
}


def eel_init(task: str) -> Callable[[], str]:
    """[eel] accuracy after fine-tuning, by how the hashed model was initialised (benchmarks/eel_init.py --task)."""

    def render() -> str:
        data = _load(f"eel-init-{task}/summary.json")
        rows = {r["recipe"]: r for r in data["rows"]}
        dense = rows[f"{task}-dense"]["mean"]
        f1 = "f1" in dense
        body = []
        for name, row in rows.items():
            # the fit does not depend on the training seed; a run that scored it per occurrence says more
            fits = [r["fit"] for r in row["runs"] if r["fit"]]
            fit = next((f for f in fits if "cosine_per_occurrence" in f), fits[0] if fits else {})
            per_occurrence = f"{fit['cosine_per_occurrence']:.2f}" if "cosine_per_occurrence" in fit else "-"
            cosine = f"{fit['cosine_mean']:.2f} / {per_occurrence}" if fit else "-"
            accuracy = ", ".join(f"{r['metrics']['accuracy']:.3f}" for r in row["runs"])
            accuracy = f"{len(row['runs'])} seed{'s' if len(row['runs']) > 1 else ''}: {accuracy}"
            mean = row["mean"]
            cells = [EEL_RECIPES.get(name, name), cosine, f"{mean['accuracy']:.3f} ({accuracy})"]
            cells += [f"{mean['f1']:.3f}"] if f1 else []
            cells += [f"{100 * (mean['accuracy'] - dense['accuracy']):+.1f}"]
            cells += [f"{100 * (mean['f1'] - dense['f1']):+.1f}"] if f1 else []
            body.append(cells)
        headers = ["model", "fit cosine: vocabulary / per occurrence", "accuracy, mean (each seed)"]
        headers += ["F1"] if f1 else []
        headers += ["acc vs dense (pts)"] + (["F1 vs dense (pts)"] if f1 else [])
        return _md(headers, body)

    return render


def eel_minilm(task: str) -> Callable[[], str]:
    """[eel] the issue's table: dense / hashed, alone and with int8 and elimination; accuracy, MB, speedups."""

    def render() -> str:
        rows = _load(f"eel-minilm-{task}/summary.json")["rows"]
        dense = rows[0]  # the table model, fp32: the comparison of every row
        names = ["accuracy"] + (["f1"] if "f1" in dense["metrics_seed0"] else [])
        body = []
        for row in rows:
            over = row.get("metrics_over_seeds")
            cells = [row["variant"]]
            for name in names:
                seed0 = f"{row['metrics_seed0'][name]:.3f}"
                if over and name in over and len(over[name]["values"]) > 1:
                    cells.append(f"{over[name]['mean']:.3f} ({len(over[name]['values'])} seeds; seed 0: {seed0})")
                else:
                    cells.append(f"{seed0} (seed 0)")
            # the drop: the row's mean against dense's mean over the same seeds, else seed 0 against dense's seed 0
            mine = dict(zip(over["accuracy"]["seeds"], over["accuracy"]["values"], strict=True)) if over else {}
            theirs = dense.get("metrics_over_seeds", {}).get("accuracy", {"seeds": [], "values": []})
            theirs = dict(zip(theirs["seeds"], theirs["values"], strict=True))
            if len(mine) > 1 and set(mine) <= set(theirs):
                value, reference = statistics.mean(mine.values()), statistics.mean(theirs[s] for s in mine)
            else:
                value, reference = row["metrics_seed0"]["accuracy"], dense["metrics_seed0"]["accuracy"]
            cells.append(f"{100 * (value - reference):+.1f}")
            disk = row["checkpoint_mb_on_disk"]
            file_mb = f" ({disk:.1f})" if disk is not None else ""
            cells += [f"{row['model_mb']:.1f}{file_mb}", f"{row['memory_mb']:.1f}"]
            cells += [f"{row[f'speedup_vs_table_dense_b{b}']:.2f}×" for b in (1, 32)]
            cells.append(" / ".join(f"{row[f'speedup_vs_own_dense_b{b}']:.2f}×" for b in (1, 32)))
            cells.append(" / ".join(f"{100 * row[f'embedding_share_b{b}']:.1f} %" for b in (1, 32)))
            body.append(cells)
        headers = ["model"] + [{"accuracy": "accuracy", "f1": "F1"}[n] for n in names] + ["acc vs dense (pts)"]
        headers += ["weights MB (file)", "in memory MB", "b1 vs dense fp32", "b32 vs dense fp32"]
        headers += ["b1 / b32 vs own fp32", "embedding share b1 / b32"]
        return _md(headers, body)

    return render


LTP_RECIPE = "LTP λ 0.02, range 0:2 + teacher"  # the full-data LTP recipe's label in every table of it
POWER_RECIPE = "PoWER λ 0.05, range 0:2 + teacher"  # the full-data PoWER-BERT recipe's label
LTP_IMDB_RECIPE = "LTP λ 0.1, range 0:3 + teacher"  # IMDB's LTP recipe (imdb-5k-ltp-range-teacher.yaml)
LTP_IMDB_SPECIALIST = "LTP λ 0.1, k 1, taught by the control"  # imdb-5k-ltp-1-teacher-control.yaml


def imdb_method_sweep(sweep: str, checkpoint: str, label: str, knob: str = "threshold scale k") -> Callable[[], str]:
    """An IMDB method's timed sweep against the control (the one-epoch model given the methods' two more epochs):
    test accuracy, speedups, tokens after each layer and the batch-32 padding x elimination split."""
    labels = {"imdb-5k-dense-continued-2": "dense, 3 epochs (control)", checkpoint: label}
    return recipe_full(sweep, labels, "test accuracy (2,000)", knob=knob, tokens=True, split=True)


TABLES: dict[str, Callable[[], str]] = {
    "eel-minilm-sst2": eel_minilm("sst2"),
    "eel-minilm-mrpc": eel_minilm("mrpc"),
    "eel-init-mrpc": eel_init("mrpc"),
    "eel-init-sst2-full": eel_init("sst2-full"),
    "stack-offline-sst2": stack_offline,
    "batch1": batch1,
    "recipe-seeds": recipe_seeds(
        "recipe-minilm-sst2-full", "sst2-full-tilted-range-teacher", "range 0:0.4 + teacher", "tilt rate"
    ),
    "recipe-ltp-seeds": recipe_seeds(
        "recipe-ltp-sst2-full", "sst2-full-ltp-range-teacher", LTP_RECIPE, "threshold scale k"
    ),
    "recipe-ltp-seeds-speed": recipe_seeds_speed("recipe-ltp-sst2-full", "threshold scale k"),
    "recipe-ltp-continued": recipe_continued(
        "recipe-ltp-sst2-full", "sst2-full-ltp-range-teacher", LTP_RECIPE, "threshold scale k"
    ),
    "int8-backends": int8_backends,
    "stack-sst2": lambda: stack("stack-minilm-sst2"),
    "stack-imdb": lambda: stack("stack-minilm-imdb"),
    "recipe-sst2-full": recipe_full(
        "recipe-minilm-sst2-full",
        {"sst2-full-dense": "dense", "sst2-full-tilted-range-teacher": "tilted, range 0:0.4 + teacher"},
    ),
    "recipe-ltp-sst2-full": recipe_full(
        "recipe-ltp-sst2-full",
        {"sst2-full-dense": "dense", "sst2-full-ltp-range-teacher": LTP_RECIPE},
        knob="threshold scale k",
        tokens=True,
    ),
    "recipe-power-sst2-full": recipe_full(
        "recipe-power-sst2-full",
        {"sst2-full-dense": "dense", "sst2-full-power-range-teacher": POWER_RECIPE},
        knob="retention scale s",
        tokens=True,
    ),
    "recipe-methods-sst2-full": recipe_methods_sst2,
    "recipe-imdb-5k": recipe_full(
        "recipe-minilm-imdb-5k",
        {"imdb-5k-dense": "dense", "imdb-5k-tilted-range-teacher": "tilted, range 0:0.5 + teacher"},
        "test accuracy (2,000)",
    ),
    "recipe-continued-imdb-5k": recipe_continued_imdb,
    "recipe-ltp-imdb-5k": imdb_method_sweep("recipe-ltp-imdb-5k", "imdb-5k-ltp-range-teacher", LTP_IMDB_RECIPE),
    "recipe-power-imdb-5k": imdb_method_sweep(
        "recipe-power-imdb-5k", "imdb-5k-power-range-teacher", POWER_RECIPE, "retention scale s"
    ),
    "recipe-ltp-imdb-5k-specialist": imdb_method_sweep(
        "recipe-ltp-imdb-5k-specialist", "imdb-5k-ltp-1-teacher-control", LTP_IMDB_SPECIALIST
    ),
    "recipe-methods-imdb-5k": recipe_methods_imdb,
    "recipe-validation-imdb-5k": recipe_validation_imdb("recipe-power-imdb-5k", POWER_RECIPE, "retention scale s"),
    "recipe-validation-ltp-imdb-5k-specialist": recipe_validation_imdb(
        "recipe-ltp-imdb-5k-specialist", LTP_IMDB_SPECIALIST, "threshold scale k"
    ),
    "recipe-specialists-imdb-5k": recipe_specialists("recipe-minilm-imdb-5k/specialists.json", "range 0:0.5"),
    "recipe-training": recipe_training,
    "recipe-ablation-sst2-8k": recipe_ablation,
    "recipe-hidden-sst2-8k": recipe_variants(("hidden", "--distill-hidden 1")),
    "recipe-alpha-sst2-8k": recipe_variants(("alpha1", "--alpha 1")),
    "recipe-ensemble-sst2-8k": recipe_variants(("ensemble", "--teacher DENSE0 --teacher DENSE1 --teacher DENSE2")),
    "recipe-bf16-sst2-8k": recipe_variants(("bf16", "--mixed-precision bf16")),
    "recipe-sandwich-sst2-8k": recipe_variants(("range-0.3", "--knob-range 0:0.3"), ("draws2", "--random-knobs 2")),
    "recipe-bf16-sst2-full": recipe_full_variant("bf16", "the same + `--mixed-precision bf16`"),
    "recipe-own-sst2-full": recipe_full_variant("own", "the same, seed S taught by dense seed S"),
    "recipe-draws2-sst2-full": recipe_full_variant("draws2", "the same + `--random-knobs 2`"),
    "recipe-ranking-sst2-8k": recipe_variants(
        ("ranking", "--distill-ranking 1"), ("ranking-0.1", "--distill-ranking 0.1")
    ),
    "recipe-specialists-sst2-8k": recipe_specialists("recipe-ablation-sst2-8k/specialists.json", "range 0:0.4"),
    "accelerate-sst2": accelerate,
    "demo": demo,
    "measure-sst2": lambda: measured("measure-minilm-sst2"),
    "measure-imdb": lambda: measured("measure-minilm-imdb"),
    "attribution-sst2": lambda: attribution("measure-minilm-sst2"),
    "attribution-imdb": lambda: attribution("measure-minilm-imdb"),
    "calibration": calibration,
    "methods-sst2": lambda: methods("methods-minilm-sst2"),
    "stages-sst2": lambda: stages("methods-minilm-sst2"),
    "seeds-sst2": lambda: seeds("methods-minilm-sst2"),
    "methods-imdb": lambda: methods("methods-minilm-imdb"),
    "adaptive-sst2": lambda: methods("adaptive-minilm-sst2"),
    "stages-adaptive-sst2": lambda: stages("adaptive-minilm-sst2"),
    "predicted-adaptive-sst2": lambda: predicted("adaptive-minilm-sst2"),
    "seeds-adaptive-sst2": lambda: seeds("adaptive-minilm-sst2"),
    "adaptive-imdb": lambda: methods("adaptive-minilm-imdb"),
    "stages-adaptive-imdb": lambda: stages("adaptive-minilm-imdb"),
    "predicted-adaptive-imdb": lambda: predicted("adaptive-minilm-imdb"),
    "stages-imdb": lambda: stages("methods-minilm-imdb"),
}


def render(text: str) -> str:
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n)(?:.*?\n)?(<!-- /results:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- results:{name} --> block")
        text = pattern.sub(lambda m, table=make(): m.group(1) + table + "\n" + m.group(2), text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is not what results/ say")
    args = parser.parse_args()
    current = README.read_text(encoding="utf-8")
    wanted = render(current)
    if args.check:
        if wanted != current:
            sys.exit("README.md tables differ from results/; run benchmarks/readme_tables.py")
        return
    README.write_text(wanted, encoding="utf-8")


if __name__ == "__main__":
    main()

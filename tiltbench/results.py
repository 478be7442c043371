"""Report files of a run folder: report.json (everything, raw samples included), report.csv (one flat line per
row), report.md (the table), environment.json, and the two PNG plots. Every file is written atomically."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path

from tiltbench.files import write_json_atomic, write_text_atomic
from tiltbench.rows import MeasureRow, short_name

Column = tuple[str, Callable[[MeasureRow], object]]


# (header, how to read it from a row): the Markdown table (report.md) holds everything a reader compares
TABLE_COLUMNS: list[Column] = [
    ("checkpoint", lambda r: short_name(r.checkpoint)),
    ("method", lambda r: r.method),
    ("transform", lambda r: r.transform),
    ("knob", lambda r: f"{r.knob_label(short=True)} {r.knob:g}"),
    ("batch", lambda r: r.batch_size),
    ("metric", lambda r: f"{r.metric_name} {r.metric:.4f}"),
    ("drop (pts)", lambda r: f"{r.metric_drop_points:.2f}"),
    (
        "drop vs dense fp32 (pts)",
        lambda r: "-" if r.metric_drop_vs_fp32_points is None else f"{r.metric_drop_vs_fp32_points:.2f}",
    ),
    ("model MB", lambda r: "-" if r.model_mb is None else f"{r.model_mb:.1f}"),
    ("tiltbench p50 ms", lambda r: f"{r.latency['tiltbench']['p50']:.2f}"),
    ("dense-dynamic p50 ms", lambda r: f"{r.latency['dense-dynamic']['p50']:.2f}"),
    ("headline baseline", lambda r: r.headline_baseline),
    ("speedup vs headline", lambda r: f"{r.headline_speedup:.3f}x"),
    ("vs same-transform dense", lambda r: f"{r.same_transform_speedup:.3f}x"),
    ("of which transform", lambda r: f"{r.speedup_from_transform:.3f}x"),
    ("of which padding", lambda r: f"{r.speedup_from_padding:.3f}x"),
    ("of which elimination", lambda r: f"{r.speedup_from_elimination:.3f}x"),
    ("vs dense-dynamic", lambda r: f"{r.speedup_vs_dense_dynamic:.3f}x"),
    ("vs dense-padded", lambda r: f"{r.speedup_vs_dense_padded:.3f}x"),
    ("vs dense-eager", lambda r: f"{r.speedup_vs_dense_eager:.3f}x"),
    ("predicted (FLOPs)", lambda r: f"{r.predicted_speedup:.3f}x"),
    ("measured / predicted", lambda r: f"{r.speedup_vs_dense_dynamic / r.predicted_speedup:.3f}"),
    ("GFLOPs / example", lambda r: f"{r.flops_per_example / 1e9:.3f}"),
    ("kept after layers 1..L (mean±std)", lambda r: r.kept_summary()),
    ("tiltbench CV", lambda r: f"{r.latency['tiltbench']['cv']:.3f}"),
    ("device", lambda r: r.device),
    ("peak GPU MiB (tiltbench / dense)", lambda r: _peak_gpu(r)),
]


def _peak_gpu(row: MeasureRow) -> str:
    if not row.peak_gpu_mib:
        return "-"
    return f"{row.peak_gpu_mib.get('tiltbench', 0):.0f} / {row.peak_gpu_mib.get(row.headline_baseline, 0):.0f}"


SHORT_METRIC = {"accuracy": "acc", "matthews_correlation": "mcc"}


def screen_tables(rows: list[MeasureRow]) -> list[tuple[str, list[str], list[list]]]:
    """(checkpoint, headers, rows) per checkpoint for the terminal: few columns, readable at 100 columns (the
    files hold everything). Speedup is against the row's headline baseline and splits into padding x elimination."""
    out = []
    for checkpoint, transform in dict.fromkeys((r.checkpoint, r.transform) for r in rows):
        own = sorted(  # one checkpoint, so one method and one knob; one transform
            (r for r in rows if (r.checkpoint, r.transform) == (checkpoint, transform)),
            key=lambda r: (r.batch_size, r.knob),
        )
        metric = SHORT_METRIC.get(own[0].metric_name, own[0].metric_name)
        # a transformed table trades the padding column for the speedup against the same-transform dense model
        third = ("padding", lambda r: r.speedup_from_padding)
        if transform != "fp32":
            third = (f"vs {own[0].transform_baseline}", lambda r: r.same_transform_speedup)
        headers = [own[0].knob_label(short=True), "batch", metric, "drop", "ms/batch", "speedup", third[0]]
        headers += ["removal", "FLOPs"]
        body = [
            [
                f"{r.knob:g}",
                r.batch_size,
                f"{r.metric:.4f}",
                f"{r.metric_drop_points if r.metric_drop_vs_fp32_points is None else r.metric_drop_vs_fp32_points:.2f}",
                f"{r.latency['tiltbench']['p50']:.2f}",
                f"{r.headline_speedup:.2f}x",
                f"{third[1](r):.2f}x",
                f"{r.speedup_from_elimination:.2f}x",
                f"{r.predicted_speedup:.2f}x",
            ]
            for r in own
        ]
        title = short_name(checkpoint) + ("" if transform == "fp32" else f" · {transform}")
        out.append((title, headers, body))
    return out


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; floats to 4 significant digits."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def table_rows(rows: list[MeasureRow]) -> tuple[list[str], list[list]]:
    ordered = sorted(rows, key=lambda r: (r.checkpoint, r.batch_size, r.knob))
    return [h for h, _ in TABLE_COLUMNS], [[get(r) for _, get in TABLE_COLUMNS] for r in ordered]


def flatten(row: dict, prefix: str = "") -> dict:
    """Nested dicts -> dotted keys; raw latency samples dropped; lists joined by spaces."""
    flat: dict = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if key == "samples":
            continue
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = " ".join(str(v) for v in value)
        else:
            flat[name] = value
    return flat


def to_csv(rows: list[dict]) -> str:
    """One flat line per row (report.json's dicts), the union of their keys as columns."""
    flat = [flatten(r) for r in rows]
    fields = list(dict.fromkeys(k for r in flat for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def to_markdown(config: dict, env: dict, rows: list[MeasureRow]) -> str:
    headers, body = table_rows(rows)
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    return (
        f"# {config.get('run_name', 'run')}\n\n"
        f"{env['cpu']}, {env['threads']} threads, {env['ram_gib']} GiB; {versions}; "
        f"attention {env.get('attn_implementation')}; git {env.get('git_commit')}; seed {env.get('seed')}.\n\n"
        "Latency is per batch (ms) on the task's real dev-set inputs in dataset order. Speedups divide each "
        "baseline's time by tiltbench's (per batch the median over rounds, summed over batches), measured "
        "interleaved in the same process: **dense-dynamic** = HF "
        "model, default attention, padded to the batch maximum (the headline baseline); **dense-padded** = padded "
        "to the max length (as papers measure; the headline baseline of --pad-to-max runs, whose inputs are all "
        "padded); **dense-eager** = eager attention. The speedup vs the headline baseline splits into **padding** "
        "(headline / keep-all, the eliminating path with nothing removed, which computes no batch padding; net of "
        "that path's own overhead of explicit attention, scoring and gather, so below 1 where there is little "
        "padding to skip, as at batch 1) x **elimination** (keep-all / tiltbench: the removed tokens). Knob: "
        "the method's (tilt rate for tilted, retention scale for power). At the dense knob value (tilt rate 0, "
        "scale 0) tiltbench is HF's own forward and the split is 1 x the speedup. Predicted = dense / eliminated "
        "encoder MACs, each example at its real length. FLOPs = 2 x MACs. **Transforms** (int8: dynamic int8 "
        "Linear layers; bf16: bfloat16 weights and activations): a transformed row's tiltbench runs under the "
        "transform and is also timed against the same HF model under it (**vs same-transform dense**, dense-int8 "
        "or dense-bf16, in tiltbench's group); its speedup vs the fp32 headline = transform (fp32 headline / "
        "same-transform dense) x padding x elimination; **drop vs dense fp32** is the total metric drop against "
        "HF's dense fp32 model. fvcore cannot count quantised Linear ops: FLOPs are the analytic count, the same "
        "for every transform. Model MB: the serialised state_dict.\n\n" + markdown_table(headers, body)
    )


def write_report(folder: Path, config: dict, env: dict, rows: list[MeasureRow], plots: bool = True) -> None:
    as_dicts = [row.to_dict() for row in rows]
    write_json_atomic(folder / "environment.json", env)
    write_json_atomic(folder / "report.json", {"config": config, "environment": env, "rows": as_dicts})
    write_text_atomic(folder / "report.csv", to_csv(as_dicts))
    write_text_atomic(folder / "report.md", to_markdown(config, env, rows))
    if plots and rows:
        from tiltbench.plot import plot_pareto, plot_pareto_size, plot_predicted_vs_measured

        plot_pareto(rows, folder / "pareto.png")
        plot_predicted_vs_measured(rows, folder / "predicted_vs_measured.png")
        plot_pareto_size(rows, folder / "pareto_size.png")

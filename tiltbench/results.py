"""Report files of a run folder: report.json (everything, raw samples included), report.csv (one flat line per
row), report.md (the table), environment.json, and the two PNG plots. Every file is written atomically."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tiltbench.report import write_json_atomic, write_text_atomic

# (header, how to read it from a row): the Markdown and terminal table
TABLE_COLUMNS: list[tuple[str, callable]] = [
    ("checkpoint", lambda r: short_name(r["checkpoint"])),
    ("tilt rate", lambda r: f"{r['tilt_rate']:g}"),
    ("batch", lambda r: r["batch_size"]),
    ("metric", lambda r: f"{r['metric_name']} {r['metric']:.4f}"),
    ("drop (pts)", lambda r: f"{r['metric_drop_points']:.2f}"),
    ("tiltbench p50 ms", lambda r: f"{r['latency']['tiltbench']['p50']:.2f}"),
    ("dense-dynamic p50 ms", lambda r: f"{r['latency']['dense-dynamic']['p50']:.2f}"),
    ("speedup vs dense-dynamic", lambda r: f"{r['speedup_vs_dense_dynamic']:.3f}x"),
    ("vs dense-padded", lambda r: f"{r['speedup_vs_dense_padded']:.3f}x"),
    ("vs dense-eager", lambda r: f"{r['speedup_vs_dense_eager']:.3f}x"),
    ("predicted (FLOPs)", lambda r: f"{r['predicted_speedup']:.3f}x"),
    ("measured / predicted", lambda r: f"{r['speedup_vs_dense_dynamic'] / r['predicted_speedup']:.3f}"),
    ("GFLOPs / example", lambda r: f"{r['flops_per_example'] / 1e9:.3f}"),
    ("tiltbench CV", lambda r: f"{r['latency']['tiltbench']['cv']:.3f}"),
]


def short_name(checkpoint: str) -> str:
    """The last two parts of a checkpoint path: 'measure-minilm-sst2/checkpoint' says more than 'checkpoint'."""
    return "/".join(Path(checkpoint).parts[-2:])


def table_rows(rows: list[dict]) -> tuple[list[str], list[list]]:
    ordered = sorted(rows, key=lambda r: (r["checkpoint"], r["batch_size"], r["tilt_rate"]))
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
    flat = [flatten(r) for r in rows]
    fields = list(dict.fromkeys(k for r in flat for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def to_markdown(report: dict) -> str:
    from tiltbench.console import markdown_table

    env = report["environment"]
    headers, body = table_rows(report["rows"])
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    return (
        f"# {report['config'].get('run_name', 'run')}\n\n"
        f"{env['cpu']}, {env['threads']} threads, {env['ram_gib']} GiB; {versions}; "
        f"attention {env.get('attn_implementation')}; git {env.get('git_commit')}; seed {env.get('seed')}.\n\n"
        "Latency is per batch (ms) on the task's real dev-set inputs in dataset order. Speedups divide each "
        "baseline's time by tiltbench's (per batch the median over rounds, summed over batches), measured "
        "interleaved in the same process: **dense-dynamic** = HF "
        "model, default attention, padded to the batch maximum (the headline); **dense-padded** = padded to the "
        "max length (as papers measure); **dense-eager** = eager attention. Predicted = dense / eliminated encoder "
        "MACs, each example at its real length. FLOPs = 2 x MACs.\n\n" + markdown_table(headers, body)
    )


def write_report(folder: Path, report: dict, plots: bool = True) -> None:
    write_json_atomic(folder / "environment.json", report["environment"])
    write_json_atomic(folder / "report.json", report)
    write_text_atomic(folder / "report.csv", to_csv(report["rows"]))
    write_text_atomic(folder / "report.md", to_markdown(report))
    if plots and report["rows"]:
        from tiltbench.plot import plot_pareto, plot_predicted_vs_measured

        plot_pareto(report["rows"], folder / "pareto.png")
        plot_predicted_vs_measured(report["rows"], folder / "predicted_vs_measured.png")

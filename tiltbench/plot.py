"""PNG plots of a run: metric vs measured speedup (Pareto), and predicted vs measured speedup."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from tiltbench.files import write_bytes_atomic  # noqa: E402
from tiltbench.rows import MeasureRow, short_name  # noqa: E402


def _save(fig, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


METHOD_STYLE = {"tilted": ("C0", "o"), "power": ("C1", "s"), "gates": ("C2", "^"), "ltp": ("C3", "D")}


TRANSFORM_MARKER = {"fp32": None, "int8": "s", "bf16": "^"}  # None: the method's own marker


def plot_pareto(rows: list[MeasureRow], path: Path) -> None:
    """Task metric vs measured speedup against dense-dynamic fp32: one panel per batch size, one curve per
    checkpoint and transform (coloured by its method, a marker per transform), each point labelled with its knob
    value; the fp32 dense knob is the black star, each transform's dense model (dense-int8, dense-bf16) a grey
    marker of that transform at its own speedup over fp32."""
    batches = sorted({row.batch_size for row in rows})
    curves: dict[tuple[int, str, str, str], list[MeasureRow]] = defaultdict(list)
    for row in rows:
        curves[(row.batch_size, row.method, short_name(row.checkpoint), row.transform)].append(row)
    fig, axes = plt.subplots(1, len(batches), figsize=(4.2 * len(batches) + 2.5, 4.5), sharey=True, squeeze=False)
    panel = {batch: ax for batch, ax in zip(batches, axes[0], strict=True)}
    labelled: set[str] = set()  # a curve's legend entry, from the first panel that draws it
    styles = ["-", "--", ":", "-."]  # checkpoints of one method: one colour, a line style each
    by_method: dict[str, list[str]] = defaultdict(list)
    for _, method, name, _ in sorted(curves):
        if name not in by_method[method]:
            by_method[method].append(name)
    for (batch, method, name, transform), points in sorted(curves.items()):
        ax = panel[batch]
        points.sort(key=lambda p: p.knob)
        colour, marker = METHOD_STYLE.get(method, ("C7", "x"))
        marker = TRANSFORM_MARKER.get(transform) or marker
        line = styles[by_method[method].index(name) % len(styles)]
        numerics = "" if transform == "fp32" else f", {transform}"
        legend = f"{method}: {name}{numerics} ({points[0].knob_label()})"
        ax.plot(
            [p.speedup_vs_dense_dynamic for p in points],
            [100 * p.metric for p in points],
            marker=marker,
            linestyle=line,
            color=colour,
            markerfacecolor="none" if transform != "fp32" else colour,
            label=None if legend in labelled else labelled.add(legend) or legend,
        )
        for p in points:
            ax.annotate(
                f"{p.knob:g}",
                (p.speedup_vs_dense_dynamic, 100 * p.metric),
                fontsize=6,
                textcoords="offset points",
                xytext=(3, 3),
            )
        if transform != "fp32":  # the same-transform dense model: what a user of int8 alone gets
            gain = sorted(p.speedup_from_transform for p in points)[len(points) // 2]
            metric = 100 * (points[0].metric + points[0].metric_drop_points / 100)
            label = f"dense-{transform}"
            ax.plot(
                [gain],
                [metric],
                marker=marker,
                color="0.3",
                markersize=9,
                linestyle="none",
                label=None if label in labelled else labelled.add(label) or label,
            )
    for batch, ax in panel.items():
        dense = [r for r in rows if r.knob == 0 and r.batch_size == batch and r.transform == "fp32"]
        if dense:  # every method's dense knob is 0
            label = None if "dense" in labelled else labelled.add("dense") or "dense fp32 (knob 0)"
            ax.plot([1.0] * len(dense), [100 * r.metric for r in dense], "k*", markersize=10, label=label)
        ax.set_title(f"batch {batch}")
        ax.set_xlabel("measured speedup vs dense-dynamic fp32 (x)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{rows[0].metric_name} (%)")
    fig.suptitle("Metric vs measured speedup (labels: knob value)")
    fig.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 0.9))  # outside: curves stay visible
    _save(fig, path)


def _vs_same_transform_dynamic(row: MeasureRow) -> float:
    """The speedup the FLOP ratio predicts: against the dense model of the row's transform, dynamically padded."""
    return row.speedup_vs_dense_dynamic if row.speedup_vs_dense_transform is None else row.speedup_vs_dense_transform


def plot_predicted_vs_measured(rows: list[MeasureRow], path: Path) -> None:
    """Measured speedup against the analytic FLOP prediction; the diagonal is a perfect prediction.

    The FLOP ratio predicts what elimination buys, so a transformed row (int8, bf16) is plotted against the dense
    model under its own transform, not against dense fp32 (whose gap is the transform's, not elimination's)."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    groups: dict[tuple[str, int], list[MeasureRow]] = defaultdict(list)
    for row in rows:
        groups[(row.transform, row.batch_size)].append(row)
    markers = {"fp32": "o", "int8": "s", "bf16": "^"}
    for (transform, batch), points in sorted(groups.items()):
        ax.plot(
            [p.predicted_speedup for p in points],
            [_vs_same_transform_dynamic(p) for p in points],
            markers.get(transform, "D"),
            label=f"batch {batch}" if transform == "fp32" else f"{transform}, batch {batch}",
        )
    top = max(max(r.predicted_speedup, _vs_same_transform_dynamic(r)) for r in rows) * 1.05
    ax.plot([0, top], [0, top], "k--", linewidth=1, label="measured = predicted")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("predicted speedup (x, dense / eliminated encoder MACs)")
    ax.set_ylabel("measured speedup vs the same-transform dense-dynamic (x)")
    ax.set_title("Predicted vs measured speedup")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_pareto_size(rows: list[MeasureRow], path: Path) -> None:
    """Task metric vs model size (MB, the serialised weights a checkpoint of it weighs): one point per checkpoint,
    transform and knob (the metric does not depend on the batch size), coloured by method, a marker per transform;
    the smaller and higher, the better. Hashed-embedding checkpoints ([eel]) are labelled so."""
    points: dict[tuple[str, str, str, float], MeasureRow] = {}
    for row in rows:
        if row.model_mb is not None:
            points.setdefault((row.method, short_name(row.checkpoint), row.transform, row.knob), row)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    labelled: set[str] = set()
    for (method, name, transform, knob), row in sorted(points.items()):
        colour, marker = METHOD_STYLE.get(method, ("C4", "o"))
        hashed = ", hashed" if row.embeddings == "hashed" else ""
        label = f"{method}: {name}{'' if transform == 'fp32' else ', ' + transform}{hashed}"
        ax.plot(
            [row.model_mb],
            [100 * row.metric],
            marker=TRANSFORM_MARKER.get(transform) or marker,
            color=colour,
            markerfacecolor="none" if transform != "fp32" else colour,
            linestyle="none",
            label=None if label in labelled else labelled.add(label) or label,
        )
        ax.annotate(f"{knob:g}", (row.model_mb, 100 * row.metric), fontsize=6, textcoords="offset points",
                    xytext=(3, 3))  # fmt: skip
    ax.set_xlabel("model size (MB, serialised weights)")
    ax.set_ylabel(f"{rows[0].metric_name} (%)")
    ax.set_title("Metric vs model size (labels: knob value)")
    ax.grid(alpha=0.3)
    fig.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 0.9))
    _save(fig, path)

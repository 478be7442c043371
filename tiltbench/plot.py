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


def plot_pareto(rows: list[MeasureRow], path: Path) -> None:
    """Task metric vs measured speedup against dense-dynamic; one curve per checkpoint (its method) and batch size,
    each point labelled with its knob value."""
    curves: dict[tuple[str, str, int], list[MeasureRow]] = defaultdict(list)
    for row in rows:
        curves[(row.method, short_name(row.checkpoint), row.batch_size)].append(row)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (method, name, batch), points in sorted(curves.items()):
        points.sort(key=lambda p: p.knob)
        ax.plot(
            [p.speedup_vs_dense_dynamic for p in points],
            [100 * p.metric for p in points],
            "o-" if method == "tilted" else "s--",
            label=f"{method}: {name}, batch {batch} ({points[0].knob_label()})",
        )
        for p in points:
            ax.annotate(
                f"{p.knob:g}",
                (p.speedup_vs_dense_dynamic, 100 * p.metric),
                fontsize=7,
                textcoords="offset points",
                xytext=(3, 3),
            )
    dense = [r for r in rows if r.knob == 0]  # every method's dense knob value is 0
    if dense:
        ax.plot([1.0] * len(dense), [100 * r.metric for r in dense], "k*", markersize=12, label="dense (knob 0)")
    ax.set_xlabel("measured speedup vs dense-dynamic (x)")
    ax.set_ylabel(f"{rows[0].metric_name} (%)")
    ax.set_title("Metric vs measured speedup (labels: knob value)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: curves stay visible
    _save(fig, path)


def plot_predicted_vs_measured(rows: list[MeasureRow], path: Path) -> None:
    """Measured speedup against the analytic FLOP prediction; the diagonal is a perfect prediction."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    by_batch: dict[int, list[MeasureRow]] = defaultdict(list)
    for row in rows:
        by_batch[row.batch_size].append(row)
    for batch, points in sorted(by_batch.items()):
        ax.plot(
            [p.predicted_speedup for p in points],
            [p.speedup_vs_dense_dynamic for p in points],
            "o",
            label=f"batch {batch}",
        )
    top = max(max(r.predicted_speedup, r.speedup_vs_dense_dynamic) for r in rows) * 1.05
    ax.plot([0, top], [0, top], "k--", linewidth=1, label="measured = predicted")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("predicted speedup (x, dense / eliminated encoder MACs)")
    ax.set_ylabel("measured speedup vs dense-dynamic (x)")
    ax.set_title("Predicted vs measured speedup")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)

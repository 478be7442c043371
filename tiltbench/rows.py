"""Reading a measured row (a dict in report.json): its knob, its headline baseline, its checkpoint's short name.

Shared by results.py (report files), plot.py (figures) and check.py, so none of them imports another. Rows from
before a field existed read as what they were then (TiltedBERT's tilt rate, dense-dynamic).
"""

from __future__ import annotations

from pathlib import Path


def knob_of(row: dict) -> float:
    """A row's knob value (rows measured before methods had knobs carry only `tilt_rate`)."""
    return float(row["knob"] if "knob" in row else row["tilt_rate"])


KNOB_SHORT = {"tilt_rate": "tilt", "retention_scale": "scale", "keep_list": "list"}


def knob_label(row: dict, short: bool = False) -> str:
    """'tilt rate' / 'retention scale' (or 'tilt' / 'scale'): what the row's knob is called."""
    name = row.get("knob_name", "tilt_rate")
    return KNOB_SHORT.get(name, name) if short else name.replace("_", " ")


def headline_baseline(row: dict) -> str:
    """The baseline timed in tiltbench's own group: dense-dynamic, or dense-padded with --pad-to-max (rows from
    before the field existed were all dense-dynamic)."""
    return row.get("headline_baseline", "dense-dynamic")


def headline_speedup(row: dict) -> float:
    return row[f"speedup_vs_{headline_baseline(row).replace('-', '_')}"]


def short_name(checkpoint: str) -> str:
    """The last two parts of a checkpoint path: 'measure-minilm-sst2/checkpoint' says more than 'checkpoint'."""
    return "/".join(Path(checkpoint).parts[-2:])

"""Build the CI regression baseline from several sweeps of one grid: each row from the sweep that read its median.

`make regress` holds every CI run to results/ci-baseline, row by row, within a few per cent. A baseline taken from
one sweep carries that sweep's luck: one committed reading of tilt 0.4 at batch 1, 1.432×, was re-measured by the
same code at 1.37–1.38×, so every later run sat near the edge of the allowance and leaned on the gate's retry.
Given an odd number (≥ 3) of sweeps of the same checkpoint and grid, this writes a run folder whose every row is
the one, among the sweeps' readings of that place in the grid (checkpoint, knob, batch, transform), with the
median headline speedup. Each row stays a real measurement with its own interleaved samples (no times are mixed
across sweeps), so `tiltbench check` reads it like any sweep. Refused, with one line: fewer than three or an even
number of sweeps, sweeps of different grids or hardware, or rows whose metrics differ (not the same checkpoint).

    .venv/bin/python benchmarks/median_baseline.py runs/regress/ci-run runs/regress/ci-run-2 runs/regress/ci-run-3 \
        --output results/ci-baseline          (what `make regress-baseline` runs)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from tiltbench.check import hardware_difference, load_hardware, load_rows
from tiltbench.errors import UserError
from tiltbench.files import normal_modes, replace_dir
from tiltbench.rows import MeasureRow
from tiltbench.sweep import SweepReport, write_report


def median_rows(runs: list[list[MeasureRow]]) -> list[MeasureRow]:
    """Per place in the grid, the row whose headline speedup is the median of the runs' readings (runs odd)."""
    places = [[row.place for row in rows] for rows in runs]
    if any(sorted(p) != sorted(places[0]) for p in places[1:]):
        raise UserError("the sweeps measured different grids (checkpoint, knob, batch or transform): nothing to pair")
    chosen = []
    for place in places[0]:
        readings = sorted(
            (next(r for r in rows if r.place == place) for rows in runs), key=lambda r: r.headline_speedup
        )
        if len({r.metric for r in readings}) > 1:
            raise UserError(f"{place}: the sweeps' metrics differ ({sorted({r.metric for r in readings})}): "
                            "not sweeps of one checkpoint")  # fmt: skip
        chosen.append(readings[len(readings) // 2])
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", help="run folders of `tiltbench sweep` over the same grid")
    parser.add_argument("--output", required=True, help="the baseline folder to write (replaced whole)")
    args = parser.parse_args()
    try:
        if len(args.sweeps) < 3 or len(args.sweeps) % 2 == 0:
            raise UserError(
                f"pass an odd number of sweeps, at least 3 (got {len(args.sweeps)}): the median must be a reading"
            )
        runs = [load_rows(folder) for folder in args.sweeps]
        first = Path(args.sweeps[0])
        for folder in args.sweeps[1:]:
            difference = hardware_difference(load_hardware(first), load_hardware(folder))
            if difference:
                raise UserError(f"{folder} was measured on other hardware than {first} ({difference})")
        rows = median_rows(runs)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    report = json.loads((first / "report.json").read_text())
    config = {**report["config"], "median_of": [str(Path(folder)) for folder in args.sweeps]}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        write_report(staged, SweepReport(config, report["environment"], rows), plots=True)
        normal_modes(staged)
        replace_dir(staged, output)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    for row in rows:
        print(f"{row.place}: {row.headline_speedup:.3f}×")


if __name__ == "__main__":
    main()

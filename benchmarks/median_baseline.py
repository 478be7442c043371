"""Build the CI regression baseline from several sweeps of one grid: each row from the sweep that read its median.

`make regress` holds every CI run to results/ci-baseline, row by row, within a few per cent. A baseline taken from
one sweep carries that sweep's luck: one committed reading of tilt 0.4 at batch 1, 1.432×, was re-measured by the
same code at 1.37–1.38×, so every later run sat near the edge of the allowance and leaned on the gate's retry.
Given an odd number (≥ 3) of sweeps of the same checkpoint and grid, this writes a run folder whose every row is
the one, among the sweeps' readings of that place in the grid (checkpoint, knob, batch, transform), with the
median headline speedup; the config keeps every reading (`speedup_readings`), whose spread `tiltbench check`
allows later runs. Each row stays a real measurement with its own interleaved samples (no times are mixed
across sweeps), so `tiltbench check` reads it like any sweep. Refused, with one line: fewer than three or an even
number of sweeps, sweeps of different grids, settings or hardware, rows whose metrics differ (not the same
checkpoint), and an --output that holds anything but an earlier run folder.

    .venv/bin/python benchmarks/median_baseline.py runs/regress/baseline-{1,2,3} --output results/ci-baseline
                                              (what `make regress-baseline` runs)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from tiltbench.check import MAX_SPREAD_ALLOWANCE, hardware_difference, identity_difference, load_hardware, load_rows
from tiltbench.errors import UserError
from tiltbench.files import check_output_dir, normal_modes, replace_dir
from tiltbench.rows import MeasureRow
from tiltbench.sweep import SweepReport, write_report


def median_rows(runs: list[list[MeasureRow]]) -> list[MeasureRow]:
    """Per place in the grid, the row whose headline speedup is the median of the runs' readings (runs odd)."""
    places = [[row.place for row in rows] for rows in runs]
    if any(sorted(p) != sorted(places[0]) for p in places[1:]):
        raise UserError("the sweeps measured different grids (checkpoint, knob, batch or transform): nothing to pair")
    chosen = []
    for place in places[0]:
        readings = [next(r for r in rows if r.place == place) for rows in runs]
        for other in readings[1:]:  # the same settings (threads, inputs, padding...), or the median mixes them
            name = identity_difference(readings[0], other)
            if name is not None:
                raise UserError(f"{place}: the sweeps differ in {name!r} ({getattr(readings[0], name)!r} and "
                                f"{getattr(other, name)!r}): measure them with the same settings")  # fmt: skip
        if len({r.metric for r in readings}) > 1:
            raise UserError(f"{place}: the sweeps' metrics differ ({sorted({r.metric for r in readings})}): "
                            "not sweeps of one checkpoint")  # fmt: skip
        readings.sort(key=lambda r: r.headline_speedup)
        chosen.append(readings[len(readings) // 2])
    return chosen


def speedup_readings(runs: list[list[MeasureRow]]) -> list[dict]:
    """Per place in the grid, every sweep's headline speedup, sorted: `tiltbench check` allows a later run the
    spread these show (between-run drift that no single run's standard error sees: on one 2-core VM three sweeps
    of one checkpoint read tilt 0.4 at batch 1 at 1.404x, 1.479x and 1.513x)."""
    return [
        {
            "place": list(rows_place),
            "readings": sorted(round(r.headline_speedup, 4) for rows in runs for r in rows if r.place == rows_place),
        }
        for rows_place in (row.place for row in runs[0])
    ]


def write_baseline(sweeps: list[str], output: str) -> list[MeasureRow]:
    """The median rows of `sweeps`, written as a run folder at `output` (replaced whole once written, when it is
    missing, empty or an earlier run folder of measure or sweep; anything else is refused)."""
    if len(sweeps) < 3 or len(sweeps) % 2 == 0:
        raise UserError(f"pass an odd number of sweeps, at least 3 (got {len(sweeps)}): the median must be a reading")
    runs = [load_rows(folder) for folder in sweeps]
    first = Path(sweeps[0])
    for folder in sweeps[1:]:
        difference = hardware_difference(load_hardware(first), load_hardware(folder))
        if difference:
            raise UserError(f"{folder} and {first} were measured on different hardware ({difference})")
    rows = median_rows(runs)
    report = json.loads((first / "report.json").read_text())
    if not isinstance(report.get("config"), dict) or "environment" not in report:
        raise UserError(f"{first / 'report.json'} is not a sweep's report (no config or environment)")
    target = check_output_dir(output, "a measure or sweep run", lambda f: (f / "report.json").is_file(), True)
    config = {
        **report["config"],
        "median_of": [str(Path(folder)) for folder in sweeps],
        "speedup_readings": speedup_readings(runs),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write_report(staged, SweepReport(config, report["environment"], rows), plots=True)
        normal_modes(staged)
        replace_dir(staged, target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", help="run folders of `tiltbench sweep` over the same grid")
    parser.add_argument("--output", required=True, help="the baseline folder to write (an earlier one is replaced)")
    args = parser.parse_args()
    try:
        rows = write_baseline(args.sweeps, args.output)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    for row in rows:
        print(f"{row.place}: {row.headline_speedup:.3f}×")
    for entry in json.loads((Path(args.output) / "config.json").read_text())["speedup_readings"]:
        readings = entry["readings"]
        spread = (readings[-1] - readings[0]) / statistics.median(readings)
        if spread > MAX_SPREAD_ALLOWANCE:  # check caps it there: one wild sweep must not switch a row's gate off
            print(f"warning: {tuple(entry['place'])}: the sweeps spread {100 * spread:.1f}%, more than the "
                  f"{100 * MAX_SPREAD_ALLOWANCE:g}% check grants (a noisy machine: measure again when quiet)",
                  file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()

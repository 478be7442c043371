import csv
import io
import json
import os

import pytest

from tiltbench.report import write_json_atomic, write_text_atomic
from tiltbench.results import flatten, to_csv


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    write_json_atomic(target, {"rows": [1]})

    def broken_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(target, "{half")
    assert json.loads(target.read_text()) == {"rows": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temp file left behind


def test_flatten_and_csv_round_trip():
    rows = [{"a": 1, "latency": {"x": {"p50": 2.0, "samples": [1, 2]}}, "kept": [3, 2]}, {"a": 2, "extra": "y"}]
    assert flatten(rows[0]) == {"a": 1, "latency.x.p50": 2.0, "kept": "3 2"}
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert parsed[0]["latency.x.p50"] == "2.0" and parsed[1]["extra"] == "y" and parsed[1]["kept"] == ""

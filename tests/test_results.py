import csv
import io
import json
import os

import pytest

from tiltbench.files import write_json_atomic, write_text_atomic
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


def test_atomic_writes_keep_normal_modes(tmp_path):
    from tiltbench.files import current_umask

    new = tmp_path / "new.json"
    write_json_atomic(new, {"a": 1})
    assert new.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # not mkstemp's 0600
    kept = tmp_path / "kept.json"
    kept.write_text("{}")
    kept.chmod(0o640)
    write_json_atomic(kept, {"b": 2})
    assert kept.stat().st_mode & 0o777 == 0o640 and json.loads(kept.read_text()) == {"b": 2}


def test_git_commit_is_dirty_for_code_changes_but_not_for_rewritten_results(tmp_path):
    import subprocess

    from tiltbench.environment import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "results" / "report.json").write_text("{}")
    (tmp_path / "pkg" / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()

    assert git_commit(tmp_path / "pkg") == sha
    (tmp_path / "results" / "report.json").write_text('{"rows": []}')  # a benchmark rewrote its results
    assert git_commit(tmp_path / "pkg") == sha
    (tmp_path / "pkg" / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path / "pkg") == sha + "-dirty"


def test_cpu_signature_tells_apart_xeons_that_share_a_model_name():
    from tiltbench.environment import cpu_signature

    def cpuinfo(model: str, flags: str) -> str:
        block = (
            f"processor\t: {{}}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: {model}\n"
            f"model name\t: Intel(R) Xeon(R) Processor\nstepping\t: 2\ncache size\t: 307200 KB\nflags\t\t: {flags}\n"
        )
        return block.format(0) + "\n" + block.format(1).replace(model, "999")  # only the first CPU is read

    emerald = cpu_signature(cpuinfo("207", "fpu avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16"))
    assert (
        emerald
        == "GenuineIntel 6/207/2, cache 307200 KB, avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16"
    )
    icelake = cpu_signature(cpuinfo("106", "fpu avx2 avx512f avx512_vnni"))
    assert icelake == "GenuineIntel 6/106/2, cache 307200 KB, avx2 avx512f avx512_vnni"
    assert cpu_signature("") == "? ?/?/?, cache ?, none of " + " ".join(
        ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]
    )
    graviton = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd sve i8mm bf16\nCPU implementer\t: 0x41\n"
    graviton += "CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd40\nCPU revision\t: 1\n"
    assert cpu_signature(graviton) == "Arm 0x41/0xd40/0x1/1, asimd sve i8mm bf16"

"""The environment of a run: hardware, threads, versions, git commit, attention implementation and seed.

Every report and checkpoint records it (`environment()`), so any number can be traced to where it was made."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The instruction sets that pick a different GEMM or attention kernel here (oneDNN, fbgemm): two hosts that differ
# in them time the same model differently even when their model names match.
_KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
_ARM_KERNEL_FEATURES = ("asimd", "asimddp", "sve", "sve2", "i8mm", "bf16")


def cpu_signature(cpuinfo: str | None = None) -> str | None:
    """Vendor, family/model/stepping, cache and kernel-relevant flags of the first CPU, e.g. 'GenuineIntel 6/207/2,
    cache 307200 KB, avx2 avx512f ...' (Arm: implementer/part/variant/revision and features). Cloud VMs often name
    every Xeon 'Intel(R) Xeon(R) Processor', and hosts of that one name trained 1.6x apart and put a CI run's
    tilt-0.4 speedup 11 % above the baseline's: the name alone cannot say whether two runs' speedups are comparable
    (tiltbench check). None where /proc/cpuinfo is unreadable (not Linux). `cpuinfo`: the text of /proc/cpuinfo,
    read here when not given."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    fields: dict[str, str] = {}
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():  # the first processor's block
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    if "CPU implementer" in fields:  # Arm: no vendor, family or flags, but implementer/part and Features
        ids = "/".join(fields.get(k, "?") for k in ("CPU implementer", "CPU part", "CPU variant", "CPU revision"))
        features = set(fields.get("Features", "").split())
        present = " ".join(f for f in _ARM_KERNEL_FEATURES if f in features) or "none of " + " ".join(
            _ARM_KERNEL_FEATURES
        )
        return f"Arm {ids}, {present}"
    flags = set(fields.get("flags", "").split())
    ids = "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping"))
    present = " ".join(f for f in _KERNEL_FLAGS if f in flags) or "none of " + " ".join(_KERNEL_FLAGS)
    return f"{fields.get('vendor_id', '?')} {ids}, cache {fields.get('cache size', '?')}, {present}"


def _ram_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def git_commit(here: Path | None = None) -> str | None:
    """HEAD of the repository tiltbench runs from (or the one holding `here`), if any.

    '-dirty' marks changes to tracked files outside results/: a benchmark rewriting its own committed
    results must not make the code it ran look modified.
    """
    here = here or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(attn_implementation: str | None = None, seed: int | None = None) -> dict:
    """Hardware, threads, versions, git commit, attention implementation and seed of this run."""
    import torch

    from tiltbench import fused
    from tiltbench.transforms import TRANSFORMS

    return {
        "cpu": _cpu_model(),
        "cpu_signature": cpu_signature(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "ram_gib": _ram_gib(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("tiltbench", "torch", "transformers", "datasets", "fvcore")},
        "git_commit": git_commit(),
        "attn_implementation": attn_implementation,
        # whether eliminating layers take the fused CPU kernel for batches without padding (tiltbench/fused.py)
        "fused_attention": fused.availability(),
        "seed": seed,
        # how each numerics transform a row may name rewrites the model here (int8: backend, engine, granularity)
        "transforms": {name: cls().config() for name, cls in sorted(TRANSFORMS.items())},
    }

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

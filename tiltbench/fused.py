"""The fused CPU attention kernel of the eliminating layer (csrc/attention_received.cpp), built on first use.

Why a kernel: ACC needs every attention probability once, summed over queries, so the eliminating layer cannot
use HF's fused sdpa; written out in torch ops (QK^T into a [H, n, n] buffer, softmax, a column sum, PV, a
transposed copy) its attention cost more than sdpa, and at batch 1 on long inputs that loss outweighed what a
small tilt rate removes (README "Batch 1"). The kernel does sdpa's blocking (a block of queries of one head at a
time, its probabilities kept in cache) and sums the probabilities as it makes them.

Built once per CPU model with torch's JIT extension builder (ninja and a C++ compiler; ~10 s), cached in
torch's extensions folder (TORCH_EXTENSIONS_DIR) under a name that carries a fingerprint of the CPU: the build
uses -march=native, so a folder shared between machines (an NFS home, shards on several nodes) must not hand one
CPU's build to another. Where it cannot be built, or with TILTBENCH_FUSED_ATTENTION=0,
`attention_received()` returns None and the eliminating layer takes the unfused torch path: the same tokens up to
rounding, only slower; `status()` says which, and `environment()` records it with every result.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "attention_received.cpp"
# -ffast-math at compile time only (never on the link line, where gcc 12 would link crtfastmath.o and turn on
# flush-to-zero for the whole process): it lets gcc vectorise the softmax's expf through glibc's libmvec.
# -march=native: the kernel is compiled on the machine that runs it. -fopenmp: at::parallel_for is OpenMP inline
# code; the extension then shares torch's already loaded libgomp (same soname), not a second runtime.
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]
QUERY_BLOCK = 128  # queries per task: a [128, 512] fp32 block is 256 KB, within the L2 cache of one core


def cpu_fingerprint() -> str:
    """8 hex digits of the CPU's model name and instruction-set flags (what -march=native compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        wanted = [line for line in lines if line.startswith(("model name", "flags"))][:2]
    except OSError:
        wanted = []
    text = "\n".join(wanted) or f"{platform.machine()} {platform.processor()}"
    return hashlib.sha1(text.encode()).hexdigest()[:8]


_op: Callable | None = None
_status: str | None = None
_held_off = 0  # depth of `held_off()` blocks


def enabled() -> bool:
    """False when TILTBENCH_FUSED_ATTENTION is 0, false, no or off, or inside `held_off()`."""
    off = os.environ.get("TILTBENCH_FUSED_ATTENTION", "1").strip().lower() in {"0", "false", "no", "off"}
    return not off and not _held_off


@contextmanager
def held_off() -> Iterator[None]:
    """The torch-op path inside the block. fvcore's traced FLOP count needs it: the kernel is one op it cannot see
    into, so the eliminating layers' attention matmuls would go uncounted."""
    global _held_off
    _held_off += 1
    try:
        yield
    finally:
        _held_off -= 1


def ninja_on_path() -> None:
    """torch's builder runs `ninja` from PATH. The ninja wheel puts its binary in this environment's bin folder,
    which is not on PATH when `.venv/bin/tiltbench` runs without the environment activated: put it there."""
    try:
        import ninja

        folder = str(ninja.BIN_DIR)
    except (ImportError, AttributeError):
        folder = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if folder not in path.split(os.pathsep):
        os.environ["PATH"] = folder + os.pathsep + path if path else folder


def attention_received() -> Callable | None:
    """torch.ops.tiltbench.attention_received, built or loaded on the first call; None where it is unavailable.

    op(q, k, v, heads, scaling, block) with q, k, v [B, n, H*d] fp32 or bf16 (attended in fp32) on the CPU, every
    position real ->
    (context [B, n, H*d], received [B, H, n]: attention each key receives summed over queries, self-attention
    [B, H, n]: each query's probability on itself)."""
    global _op, _status
    if not enabled():
        return None
    if _status is None:
        try:
            from torch.utils import cpp_extension

            ninja_on_path()
            builder_log = logging.getLogger(cpp_extension.__name__)
            level = builder_log.level
            builder_log.setLevel(logging.ERROR)  # its compiler-compatibility banners: the outcome is said below
            try:
                cpp_extension.load(
                    name=f"tiltbench_attention_{cpu_fingerprint()}",
                    sources=[str(SOURCE)],
                    extra_cflags=CFLAGS,
                    extra_ldflags=["-fopenmp"],
                    is_python_module=False,
                    verbose=False,
                )
            finally:
                builder_log.setLevel(level)
            _op, _status = torch.ops.tiltbench.attention_received, "built"
        except Exception as err:  # no compiler, no ninja, a read-only cache: fall back, say so once
            text = str(err).strip()
            first = text.splitlines()[0].split(": [1/")[0] if text else type(err).__name__  # not ninja's command
            _status = f"unavailable ({first[:200]})"
            warnings.warn(
                f"the fused attention kernel could not be built ({first[:200]}); eliminating layers use torch ops "
                "(the same tokens, slower at batch 1)",
                RuntimeWarning,
                stacklevel=2,
            )
    return _op


def status() -> str:
    """Whether this process's eliminating layers can take the kernel: 'built', 'disabled
    (TILTBENCH_FUSED_ATTENTION=0)', 'unavailable (why)', or 'not built yet' (no eliminating forward has asked)."""
    if not enabled():
        return "disabled (TILTBENCH_FUSED_ATTENTION=0)" if not _held_off else "held off"
    return _status or "not built yet"


def availability() -> str:
    """`status()` after a build attempt: what a run's environment records. Which batches then take the kernel
    follows from the batches themselves (every batch without padding, in inference, fp32 or bf16 on the CPU)."""
    attention_received()
    return status()

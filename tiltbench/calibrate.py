"""calibrate(cfg): time the real model on this machine over batch sizes, lengths and tilt rates, and fit the
latency model (speed_model.py) into a machine profile.

Inputs are real English text (a fixed passage, tokenised and cut to each length); for timing only the lengths
matter, since the schedule, not the content, sets how many tokens each layer keeps.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

import torch

from tiltbench.environment import environment
from tiltbench.errors import UserError
from tiltbench.files import check_writable
from tiltbench.inference import Progress
from tiltbench.latency import time_forward
from tiltbench.models import load_model
from tiltbench.patch import patch, set_schedule
from tiltbench.schedule import Schedule
from tiltbench.speed_model import LatencyProfile, ModelDims, batch_work, fit_profile_coefficients, fit_summary
from tiltbench.transforms import apply_spec, check_transform

PASSAGE = (
    "The film opens on a quiet harbour town where nothing much happens, and for the first half hour the director "
    "seems content to let it stay that way. The performances are warm and unhurried, the photography catches the "
    "grey light of the coast, and the score keeps a respectful distance. Then a stranger arrives with a suitcase "
    "full of letters, and the story turns into something sharper: a patient account of how a small community "
    "decides what it is willing to forget. Not every scene works, and a subplot about the lighthouse keeper feels "
    "like it wandered in from another script, but the ending earns its silence. "
)
LENGTHS = (8, 16, 32, 64, 128, 256, 384, 512)
BATCH_SIZES = (1, 4, 8, 16, 32)
RATES = (0.0, 0.1, 0.25, 0.4)


@dataclass(frozen=True)
class CalibrateConfig:
    model: str = "minilm"
    _: KW_ONLY  # the rest by name: a dozen positional settings are unreadable and easy to shift
    reps: int = 3  # timed rounds over all configurations (median per configuration), after one warm-up round
    max_tokens_per_batch: int = 16384  # skip larger configurations (time; ~3.5 min on 2 cores at 16384)
    max_len: int = 512
    device: str = "cpu"  # where the model is timed (cpu or cuda); the profile records it
    transform: str = "fp32"  # numerics of the timed model (fp32, int8, bf16); the profile records it

    def __post_init__(self) -> None:
        if self.reps < 1 or self.max_tokens_per_batch < 8 or not 8 <= self.max_len <= 512:
            raise UserError("--reps >= 1, --max-tokens-per-batch >= 8 and --max-len in [8, 512] please")
        check_transform(self.transform, self.device)


def default_profile_path(model: str, device: str = "cpu", transform: str = "fp32") -> Path:
    """Under the user's cache dir, per model, thread count, device and transform (a profile is only valid for
    all four)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tiltbench" / "profiles"
    name = "minilm" if model == "minilm" else Path(model).name.replace("/", "--")
    suffix = ("" if device == "cpu" else f"-{device}") + ("" if transform == "fp32" else f"-{transform}")
    return cache / f"{name}-{torch.get_num_threads()}threads{suffix}.json"


def check_profile_path(path: Path) -> Path:
    """Before minutes of timing: the profile can be written, and replaces nothing but an older profile."""
    if path.is_dir():
        raise UserError(f"--profile {str(path)!r} is a folder; name a .json file")
    check_writable(path.parent, "--profile")
    if path.exists():
        try:
            is_profile = "coefficients" in json.loads(path.read_text())
        except (OSError, ValueError, TypeError):
            is_profile = False
        if not is_profile:
            raise UserError(f"--profile {str(path)!r} exists and is not a tiltbench profile; it is not overwritten")
    return path


def _configs(cfg: CalibrateConfig) -> list[tuple[list[int], float]]:
    """(batch lengths, tilt rate): equal-length batches, plus mixed-length ones (padding and ragged keeps)."""
    out = []
    for size in BATCH_SIZES:
        for n in (n for n in LENGTHS if n <= cfg.max_len and size * n <= cfg.max_tokens_per_batch):
            mixed = [max(4, round(n * (0.25 + 0.75 * i / max(size - 1, 1)))) for i in range(size)]
            for rate in RATES:
                out.append(([n] * size, rate))
                if size > 1:
                    out.append((mixed, rate))
    return out


def calibrate(cfg: CalibrateConfig, progress: Progress | None = None) -> LatencyProfile:
    """Time every configuration on the real model, fit the coefficients, return the profile."""
    started = time.perf_counter()
    model, tokenizer = load_model(cfg.model)
    model.to(cfg.device)
    patch(model, 0.0)
    model, _ = apply_spec(model, cfg.transform)  # the profile models this transform's dense and eliminating times
    dims, heads = ModelDims.from_config(model.config), model.config.num_attention_heads
    passage = tokenizer(PASSAGE * 8, add_special_tokens=False)["input_ids"]
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id or 0
    configs = _configs(cfg)
    batches = []
    for lengths, _ in configs:
        ids = torch.full((len(lengths), max(lengths)), pad)
        mask = torch.zeros_like(ids)
        for row, n in enumerate(lengths):
            ids[row, :n] = torch.tensor([cls, *passage[: n - 2], sep])
            mask[row, :n] = 1
        batches.append({"input_ids": ids.to(cfg.device), "attention_mask": mask.to(cfg.device)})
    samples: list[list[float]] = [[] for _ in configs]
    # Rounds over all configurations (one warm-up round, then `reps` timed ones), as `measure` cycles its
    # batches: a configuration's samples spread over the whole run, so machine drift and a burst of noise hit
    # all alike instead of biasing the few configurations timed back to back while they lasted.
    with torch.inference_mode():
        for round_ in range(cfg.reps + 1):
            for i, ((_, rate), batch) in enumerate(zip(configs, batches, strict=True)):
                set_schedule(model, Schedule(dims.layers, rate))
                elapsed = time_forward(model, batch)
                if round_:
                    samples[i].append(elapsed)
                if progress:
                    progress("calibrating", round_ * len(configs) + i + 1, (cfg.reps + 1) * len(configs))
    times = [round(statistics.median(s), 4) for s in samples]  # as stored, so `refitted` reproduces the fit
    works = [batch_work(lengths, None if rate == 0 else Schedule(dims.layers, rate)) for lengths, rate in configs]
    timings = [[lengths, rate, t] for (lengths, rate), t in zip(configs, times, strict=True)]
    coefficients, fitted, large_batch = fit_profile_coefficients(
        works, times, dims, heads, max(sum(lengths) for lengths, _ in configs)
    )
    fit = {
        **fit_summary(fitted, times),
        "calibration_seconds": round(time.perf_counter() - started, 1),
        "device": cfg.device,
    }
    return LatencyProfile(
        cfg.model,
        dims.hidden,
        dims.ffn,
        dims.layers,
        heads,
        torch.get_num_threads(),
        coefficients,
        fit,
        environment(model.config._attn_implementation),
        timings,
        large_batch,
        cfg.transform,
    )

"""Resumable fine-tuning: a training state saved every N steps and at Ctrl-C, picked up by the same command.

The state lives beside the output, in `.<output>.resume/state.pt`, and is written whole or not at all (a temporary
file renamed over the old one), so a hard kill loses at most `save_every` steps. It holds everything the next steps
depend on: model and method weights, the stage's optimiser and scheduler, the epoch's data order and how far into
it training got, every random state (torch's, which drives dropout, the data-order generator, the sandwich's knob
draws), and the history so far. Rerunning the same command resumes from it and, on the same machine and thread
count, ends with the same weights and metric as a run that was never interrupted (tests/test_resume.py). A state
written for other settings is refused, not silently mixed in. The folder is removed once the checkpoint is saved.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tiltbench.errors import UserError

STATE_FILE = "state.pt"
# Settings that do not change what is trained: they may differ between the interrupted run and its resumption.
# a state resumes on any device; and from the same output folder however it is spelled (relative or absolute): the
# state lives beside the output (state_dir), so where it is found already says which output it belongs to
NOT_FINGERPRINTED = ("overwrite", "save_every", "device", "output")


@dataclass
class Cursor:
    """Where training stands: the stage in progress, its epoch, and the batches of that epoch already trained."""

    stage: int = 0  # index into the method's stages
    epoch: int = 1  # 1-based, within the stage
    step: int = 0  # batches of this epoch done
    order: list[int] = field(default_factory=list)  # this epoch's data order ([] before it is drawn)
    running_loss: float = 0.0
    stage_seconds: float = 0.0  # of the finished epochs of this stage
    epoch_seconds: float = 0.0  # of this epoch so far


def state_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.resume"


def fingerprint(cfg) -> dict:  # noqa: ANN001 (a finetune.TrainConfig)
    """The settings a saved state belongs to, as plain JSON values."""
    values = {k: v for k, v in asdict(cfg).items() if k not in NOT_FINGERPRINTED}
    return json.loads(json.dumps(values, default=str))


def save_state(folder: Path, cfg, state: dict) -> None:  # noqa: ANN001
    """Write `state` (plus the config fingerprint) atomically: the old state stays until the new one is whole."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{STATE_FILE}.partial-{os.getpid()}"
    torch.save({"fingerprint": fingerprint(cfg), **state}, partial)
    os.chmod(partial, 0o644)
    os.replace(partial, folder / STATE_FILE)


def load_state(folder: Path, cfg) -> dict | None:  # noqa: ANN001
    """The saved state for these settings; None when there is none; UserError when it is another run's or broken."""
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    try:
        # our own file, written by save_state; on the host, so a GPU run's state resumes anywhere
        state = torch.load(path, weights_only=False, map_location="cpu")
        saved = state["fingerprint"]
    except Exception:  # noqa: BLE001 (a truncated or foreign file: any unpickling error)
        raise UserError(f"{path} is not a readable training state; delete {folder} to start afresh") from None
    now = fingerprint(cfg)
    # a setting added after the state was saved reads as its default (states of older versions still resume)
    saved = {**{k: v for k, v in fingerprint(type(cfg)(cfg.output)).items() if k not in saved}, **saved}
    saved = {k: v for k, v in saved.items() if k not in NOT_FINGERPRINTED}  # states that recorded the output too
    if saved != now:
        differing = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
        raise UserError(
            f"{folder} holds an interrupted fine-tune with other settings ({', '.join(differing)} differ); rerun "
            f"that command to resume it, or delete {folder} to start this one"
        )
    return state


def random_states(knob_rng: random.Random, generator: torch.Generator) -> dict:
    states = {"torch": torch.get_rng_state(), "generator": generator.get_state(), "knob_rng": knob_rng.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout on a GPU draws from its own generator
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict, knob_rng: random.Random, generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    generator.set_state(states["generator"])
    knob_rng.setstate(states["knob_rng"])


@contextmanager
def interruptible() -> Iterator[dict]:
    """A flag that Ctrl-C sets instead of raising, so training can stop after a whole step and save; a second
    Ctrl-C interrupts at once (the saved state is atomic, so nothing is lost but the steps since the last save)."""
    flag = {"interrupted": False}
    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:  # not the main thread: no handler of ours
        yield flag
        return

    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    first: list[float] = []

    def handler(signum, frame):  # noqa: ANN001
        flag["interrupted"] = True
        # Under a launcher (accelerate, torchrun) the terminal's Ctrl-C reaches every worker and the launcher sends
        # its own SIGINT right after: one more within seconds is that echo, not a user asking to stop at once.
        if not several or (first and time.monotonic() - first[0] > 5):
            signal.signal(signal.SIGINT, signal.default_int_handler)
        first.append(time.monotonic())

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)

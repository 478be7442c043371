"""Resumable fine-tuning: a crash or Ctrl-C, then the same command again, ends where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import DATA_DIR
from safetensors.torch import load_file

from tiltbench.data import DataConfig
from tiltbench.errors import TrainingInterrupted, UserError
from tiltbench.finetune import TrainConfig, finetune


def _config(base: str, out: Path, **options) -> TrainConfig:
    # 48 sentences at batch 16: 3 steps per epoch
    data = DataConfig("sst2", data_dir=str(DATA_DIR), max_train_samples=48, max_eval_samples=16, max_seq_len=32)
    return TrainConfig(str(out), data, model=base, batch_size=16, **options)


class _StopAt:
    """A progress callback that does `action` once, after the training step number `step` (counted over stages)."""

    def __init__(self, step: int, action) -> None:
        self.step, self.action, self.seen = step, action, 0

    def __call__(self, description: str, completed: float, total: float) -> None:
        if " loss " in description:
            self.seen += 1
            if self.seen == self.step:
                self.action()


def _crash() -> None:
    raise RuntimeError("simulated crash")


def _weights(out: Path) -> dict:
    names = ("model.safetensors", "method.safetensors", "model-hashed-embeddings.safetensors")
    found = {name: load_file(str(out / name)) for name in names if (out / name).exists()}
    return {f"{name}:{key}": value for name, tensors in found.items() for key, value in tensors.items()}


def _same_run(a, b, out_a: Path, out_b: Path) -> None:
    wa, wb = _weights(out_a), _weights(out_b)
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    strip = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in a.history]
    assert strip == [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in b.history]


def test_a_crash_loses_at_most_save_every_steps_and_the_rerun_ends_as_if_uninterrupted(tiny_checkpoint, tmp_path):
    whole = finetune(_config(tiny_checkpoint, tmp_path / "whole", tilt_rate=0.3, epochs=2))
    cfg = _config(tiny_checkpoint, tmp_path / "out", tilt_rate=0.3, epochs=2, save_every=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, progress=_StopAt(5, _crash))  # after epoch 2 step 2: saved there (epoch 1 at step 2)
    resume = tmp_path / ".out.resume"
    assert (resume / "state.pt").is_file() and not (tmp_path / "out").exists()
    counter = _StopAt(0, lambda: None)
    resumed = finetune(cfg, progress=counter)
    assert counter.seen == 1  # only epoch 2's third step was left to train
    _same_run(whole, resumed, tmp_path / "whole", tmp_path / "out")
    assert not resume.exists()  # the checkpoint is whole: the state is gone


def test_ctrl_c_saves_and_the_rerun_resumes_inside_a_later_stage(tiny_checkpoint, tmp_path):
    options = dict(method="gates", regulariser_weight=0.05, bimodal_weight=2.0, save_every=0)
    whole = finetune(_config(tiny_checkpoint, tmp_path / "whole", **options))
    cfg = _config(tiny_checkpoint, tmp_path / "out", **options)
    # Ctrl-C during step 4 (the hard stage's first): the step in flight finishes, then the state is saved
    with pytest.raises(TrainingInterrupted, match="rerun the same command"):
        finetune(cfg, progress=_StopAt(4, lambda: os.kill(os.getpid(), signal.SIGINT)))
    assert signal.getsignal(signal.SIGINT) is not None and not (tmp_path / "out").exists()
    counter = _StopAt(0, lambda: None)
    resumed = finetune(cfg, progress=counter)
    assert counter.seen == 1  # the hard stage's third step
    _same_run(whole, resumed, tmp_path / "whole", tmp_path / "out")
    assert resumed.metrics["gate_bimodal_share"] == whole.metrics["gate_bimodal_share"]


def test_after_a_crash_in_an_earlier_stage_the_next_stage_starts_with_a_fresh_optimiser(tiny_checkpoint, tmp_path):
    """The saved optimiser belongs to the stage it was saved in: after that stage ends, the next one builds its own
    (its learning rate, warm-up and parameter groups), as in the uninterrupted run."""
    options = dict(method="gates", regulariser_weight=0.05, bimodal_weight=2.0)
    whole = finetune(_config(tiny_checkpoint, tmp_path / "whole", **options))
    cfg = _config(tiny_checkpoint, tmp_path / "out", save_every=1, **options)
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, progress=_StopAt(2, _crash))  # the soft stage's second step, saved
    resumed = finetune(cfg)
    _same_run(whole, resumed, tmp_path / "whole", tmp_path / "out")


def test_a_crash_inside_the_hashed_alignment_stage_resumes_there(tiny_checkpoint, tmp_path):
    """--hash-align-epochs is a stage like the method's: a crash in its second epoch resumes from its last save
    and ends where the uninterrupted run ends (weights, history)."""
    options = dict(embeddings="hashed", hash_dim=64, hash_align_epochs=2)
    whole = finetune(_config(tiny_checkpoint, tmp_path / "whole", **options))
    cfg = _config(tiny_checkpoint, tmp_path / "out", save_every=2, **options)
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, progress=_StopAt(4, _crash))  # alignment epoch 2, step 1: the last save was epoch 1, step 2
    counter = _StopAt(0, lambda: None)
    resumed = finetune(cfg, progress=counter)
    assert counter.seen == 7  # alignment epoch 1 step 3, its epoch 2 (3 steps), fine-tuning (3 steps)
    assert [h["stage"] for h in resumed.history] == ["align", "align", "fine-tune"]
    _same_run(whole, resumed, tmp_path / "whole", tmp_path / "out")


def test_a_state_of_other_settings_is_refused(tiny_checkpoint, tmp_path):
    cfg = _config(tiny_checkpoint, tmp_path / "out", tilt_rate=0.3, save_every=1)
    with pytest.raises(RuntimeError):
        finetune(cfg, progress=_StopAt(1, _crash))
    with pytest.raises(UserError, match="other settings .*tilt_rate"):
        finetune(_config(tiny_checkpoint, tmp_path / "out", tilt_rate=0.2))
    (tmp_path / ".out.resume" / "state.pt").write_bytes(b"not a state")
    with pytest.raises(UserError, match="not a readable training state"):
        finetune(cfg)


def test_the_same_output_spelled_relative_or_absolute_resumes(tiny_checkpoint, tmp_path, monkeypatch):
    """The state lives beside its output folder: a rerun naming that folder by a relative path resumes the state
    the absolute path saved (a state written before the output left the fingerprint resumes too)."""
    import torch

    cfg = _config(tiny_checkpoint, tmp_path / "out", tilt_rate=0.3, save_every=1)
    with pytest.raises(RuntimeError):
        finetune(cfg, progress=_StopAt(2, _crash))
    path = tmp_path / ".out.resume" / "state.pt"
    state = torch.load(path, weights_only=False)
    state["fingerprint"]["output"] = str(tmp_path / "out")  # as older versions recorded it
    torch.save(state, path)
    monkeypatch.chdir(tmp_path)
    counter = _StopAt(0, lambda: None)
    relative = _config(tiny_checkpoint, Path("out"), tilt_rate=0.3, save_every=1)
    finetune(relative, progress=counter)
    assert counter.seen == 1  # 48 sentences at batch 16: the third step only, the first two were saved
    assert not path.exists() and (tmp_path / "out" / "tiltbench.json").is_file()


def test_a_state_saved_before_a_setting_existed_resumes_with_its_default(tiny_checkpoint, tmp_path):
    """A state from an older version lacks settings added since (grad_accum, mixed_precision): they read as their
    defaults, so it resumes; with another value than the default it is refused."""
    import torch

    cfg = _config(tiny_checkpoint, tmp_path / "out", tilt_rate=0.3, save_every=1)
    with pytest.raises(RuntimeError):
        finetune(cfg, progress=_StopAt(1, _crash))
    path = tmp_path / ".out.resume" / "state.pt"
    state = torch.load(path, weights_only=False)
    for name in ("grad_accum", "mixed_precision"):
        del state["fingerprint"][name]
    torch.save(state, path)
    with pytest.raises(UserError, match="other settings .*grad_accum"):
        finetune(_config(tiny_checkpoint, tmp_path / "out", tilt_rate=0.3, save_every=1, grad_accum=2))
    assert finetune(cfg).output == tmp_path / "out"
    assert not path.exists()

"""Distillation from a teacher and training across a knob range (sandwich rule), on a tiny real model."""

from __future__ import annotations

import importlib
import json
import math
import random

import pytest
import torch
from conftest import DATA_DIR
from safetensors.torch import load_file
from typer.testing import CliRunner

from tiltbench.cli import app
from tiltbench.data import DataConfig
from tiltbench.distill import Distillation, parse_knob_range, sandwich_knobs
from tiltbench.errors import UserError
from tiltbench.finetune import TrainConfig, finetune


def test_distillation_loss_is_the_tempered_kl_from_the_teacher_plus_the_task_loss():
    student = torch.tensor([[2.0, 0.0], [0.5, 1.5]])
    teacher = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    t, alpha, task = 2.0, 0.3, torch.tensor(0.7)
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        p_t = [math.exp(x / t) / sum(math.exp(y / t) for y in t_row) for x in t_row]
        p_s = [math.exp(x / t) / sum(math.exp(y / t) for y in s_row) for x in s_row]
        expected += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True)) / len(student)
    got = Distillation(alpha, t).loss(student, teacher, task, regression=False)
    assert got.item() == pytest.approx(alpha * t**2 * expected + (1 - alpha) * 0.7, rel=1e-6)
    # the student that equals its teacher pays the task term only
    assert Distillation(alpha, t).loss(teacher, teacher, task, False).item() == pytest.approx((1 - alpha) * 0.7)
    # regression: squared error to the teacher's prediction
    mse = Distillation(1.0, t).loss(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [2.0]]), task, True)
    assert mse.item() == pytest.approx(1.0)


def test_sandwich_knobs_put_the_near_dense_end_first():
    rng = random.Random(0)
    knobs = sandwich_knobs((0.0, 0.4), 0.0, 3, rng)
    assert knobs[:2] == [0.0, 0.4] and len(knobs) == 5 and all(0.0 <= k <= 0.4 for k in knobs[2:])
    assert len(set(knobs[2:])) == 3  # drawn, not fixed
    assert sandwich_knobs((0.2, 1.0), 1.0, 0, rng) == [1.0, 0.2]  # a method whose dense knob is the top


@pytest.mark.parametrize(
    ("text", "message"), [("0.4", "LOW:HIGH"), ("0.4:0.1", "LOW < HIGH"), ("a:b", "LOW:HIGH"), ("0:0:1", "LOW:HIGH")]
)
def test_knob_range_text_is_checked(text, message):
    with pytest.raises(UserError, match=message):
        parse_knob_range(text)


def _train_file(tmp_path, name: str, flip: bool) -> str:
    """32 SST-2 training sentences, labels as given or all flipped."""
    lines = (DATA_DIR / "sst2" / "train.tsv").read_text().splitlines()[1:33]
    rows = [line.rsplit("\t", 1) for line in lines]
    path = tmp_path / f"{name}.tsv"
    path.write_text("text\tlabel\n" + "".join(f"{text}\t{1 - int(label) if flip else label}\n" for text, label in rows))
    return str(path)


def _train(tmp_path, name: str, base: str, **options) -> dict[str, torch.Tensor]:
    train_file = options.pop("train_file", None)
    data = DataConfig(
        "sst2", data_dir=str(DATA_DIR), train_file=train_file, max_train_samples=32, max_eval_samples=16, max_seq_len=32
    )
    if train_file:  # a custom file needs its evaluation file too: the dev set's first rows, as a file
        dev = (DATA_DIR / "sst2" / "dev.tsv").read_text().splitlines()
        (tmp_path / "dev.tsv").write_text("text\tlabel\n" + "\n".join(dev[1:17]) + "\n")
        data = DataConfig("sst2", train_file=train_file, eval_file=str(tmp_path / "dev.tsv"), max_seq_len=32)
    out = tmp_path / name
    finetune(TrainConfig(str(out), data, model=base, batch_size=16, **options))
    return load_file(str(out / "model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_alpha_one_learns_from_the_teacher_alone_and_alpha_zero_from_the_labels_alone(tiny_checkpoint, tmp_path):
    true, flipped = _train_file(tmp_path, "true", False), _train_file(tmp_path, "flipped", True)
    taught = dict(teacher=tiny_checkpoint, alpha=1.0, tilt_rate=0.3)
    # α = 1: the labels do not reach the weights (flipping them all changes nothing) ...
    assert _same(_train(tmp_path, "t1", tiny_checkpoint, train_file=true, **taught),
                 _train(tmp_path, "t2", tiny_checkpoint, train_file=flipped, **taught))  # fmt: skip
    # ... but the teacher does: the same run without it is another model
    plain = _train(tmp_path, "p1", tiny_checkpoint, train_file=true, tilt_rate=0.3)
    assert not _same(plain, _train(tmp_path, "t3", tiny_checkpoint, train_file=true, **taught))
    # α = 0: the teacher is computed but weighs nothing (and draws no random numbers): the plain run, bit for bit
    zero = _train(tmp_path, "z1", tiny_checkpoint, train_file=true, tilt_rate=0.3, teacher=tiny_checkpoint, alpha=0.0)
    assert _same(plain, zero)


def test_the_teacher_is_not_trained(tiny_checkpoint, tmp_path):
    before = load_file(f"{tiny_checkpoint}/model.safetensors")
    _train(tmp_path, "s", tiny_checkpoint, teacher=tiny_checkpoint, tilt_rate=0.3)
    assert _same(before, load_file(f"{tiny_checkpoint}/model.safetensors"))


def test_a_knob_range_trains_every_step_at_both_ends_and_random_knobs(tiny_checkpoint, tmp_path, monkeypatch):
    import tiltbench.finetune as finetune_module

    seen = []
    original = finetune_module.set_knob

    def spy(model, knob, **kwargs):
        seen.append(round(float(knob), 6))
        return original(model, knob, **kwargs)

    monkeypatch.setattr(finetune_module, "set_knob", spy)
    _train(tmp_path, "range", tiny_checkpoint, knob_range=(0.0, 0.4), random_knobs=2)
    meta = json.loads((tmp_path / "range" / "tiltbench.json").read_text())
    assert meta["knob"] == 0.4  # the checkpoint opens at the fastest point it was trained for
    assert meta["train_config"]["knob_range"] == [0.0, 0.4]
    # 32 sentences at batch 16: the stage opens at its knob, then 2 steps x (0, 0.4, two random draws), then back to
    # the stage's knob for the evaluation, and the saved knob
    assert seen[0] == 0.4 and seen[-2:] == [0.4, 0.4] and len(seen) == 1 + 2 * 4 + 2
    for step in (seen[1:5], seen[5:9]):
        assert step[:2] == [0.0, 0.4] and all(0 < k < 0.4 for k in step[2:])
    assert len(set(seen[3:5] + seen[7:9])) == 4


def test_bad_teacher_and_range_are_one_error_line(tiny_checkpoint, tmp_path):
    from tiltbench.models import resolve_model

    runner = CliRunner()
    base = ["finetune", "--model", tiny_checkpoint, "--max-train-samples", "16", "--max-seq-len", "16"]
    env = {"TILTBENCH_DATA_DIR": str(DATA_DIR)}
    cases = [
        (["--knob-range", "0.4"], "LOW:HIGH"),
        (["--knob-range", "0:0.4", "--tilt-rate", "0.2"], "exclude each other"),
        (["--knob-range", "0:1.5"], "tilt"),  # outside the tilt rate's range, refused before training
        (["--teacher", resolve_model("minilm")], "not a fine-tuned sequence classifier"),
        (["--teacher", tiny_checkpoint, "--task", "cola"], "was trained on 'sst2'"),
        (["--teacher", tiny_checkpoint, "--alpha", "1.5"], "--alpha"),
        (["--teacher", str(tmp_path / "missing")], "--teacher: model folder"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, [*base, "--output", str(tmp_path / "out"), *extra], env=env)
        assert result.exit_code == 2, (extra, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert lines[0].startswith("error:") and message in " ".join(result.output.split()), (extra, result.output)
        assert not (tmp_path / "out").exists()


def _hidden_gap(student: str, teacher: str) -> float:
    """finetune's --distill-hidden loss on 16 dev sentences, the student at its saved knob: every hidden state
    against the teacher's, or, for a student that removes tokens, its kept word vectors against the teacher's of
    the same tokens (real tokens only)."""
    from tiltbench.finetune import _kept_alignment_loss
    from tiltbench.models import load_checkpoint

    lines = (DATA_DIR / "sst2" / "dev.tsv").read_text().splitlines()[1:17]
    (s, tokenizer, *_), (t, *_) = load_checkpoint(student), load_checkpoint(teacher)
    batch = tokenizer([line.rsplit("\t", 1)[0] for line in lines], padding=True, return_tensors="pt")
    eliminating = s._tiltbench.record_states = s._tiltbench.eliminating
    with torch.no_grad():
        output = s(**batch, output_hidden_states=not eliminating)
        goal = t(**batch, output_hidden_states=True).hidden_states
    if eliminating:
        recorded = zip(s._tiltbench.states, s._tiltbench.valids, strict=True)
        kept = [(x, where, valid) for (x, where), valid in recorded]
    else:
        kept = [(x, None, batch["attention_mask"]) for x in output.hidden_states]
    return _kept_alignment_loss(kept, goal).item()


def test_hidden_distillation_teaches_the_teachers_hidden_states(tiny_checkpoint, tmp_path):
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    # a student of the teacher's shape, initialised elsewhere: its states start far from the teacher's
    torch.manual_seed(1)
    base = tmp_path / "base"
    BertForSequenceClassification(AutoConfig.from_pretrained(tiny_checkpoint)).save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny_checkpoint).save_pretrained(base)
    _train(tmp_path, "teacher", tiny_checkpoint)  # a teacher that removes nothing (tilt rate 0)
    teacher = str(tmp_path / "teacher")
    common = dict(teacher=teacher, alpha=0.0, epochs=6, learning_rate=1e-2)
    plain = _train(tmp_path, "plain", str(base), **common)
    hidden = _train(tmp_path, "hidden", str(base), distill_hidden=10.0, **common)
    assert not _same(plain, hidden)  # the term reaches the weights ...
    # ... and pulls the student's states towards the teacher's, which the labels alone do not
    assert _hidden_gap(str(tmp_path / "hidden"), teacher) < 0.5 * _hidden_gap(str(tmp_path / "plain"), teacher)
    meta = json.loads((tmp_path / "hidden" / "tiltbench.json").read_text())
    assert meta["train_config"]["distill_hidden"] == 10.0


@pytest.mark.parametrize("options", [dict(tilt_rate=0.3), dict(knob_range=(0.0, 0.4))], ids=["tilt", "range"])
def test_hidden_distillation_under_elimination_teaches_the_kept_word_vectors(tiny_checkpoint, tmp_path, options):
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(1)
    base = tmp_path / "base"
    BertForSequenceClassification(AutoConfig.from_pretrained(tiny_checkpoint)).save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny_checkpoint).save_pretrained(base)
    _train(tmp_path, "teacher", tiny_checkpoint)  # removes nothing
    teacher = str(tmp_path / "teacher")
    common = dict(teacher=teacher, alpha=0.0, epochs=6, learning_rate=1e-2, **options)
    plain = _train(tmp_path, "plain", str(base), **common)
    hidden = _train(tmp_path, "hidden", str(base), distill_hidden=10.0, **common)
    assert not _same(plain, hidden)
    for name in ("plain", "hidden"):  # both evaluated where they remove tokens (the range one at its top)
        meta = json.loads((tmp_path / name / "tiltbench.json").read_text())
        assert meta["schedule"]["tilt_rate"] > 0, meta["schedule"]
    assert _hidden_gap(str(tmp_path / "hidden"), teacher) < 0.5 * _hidden_gap(str(tmp_path / "plain"), teacher)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--distill-hidden", "1"], "goes with --teacher"),
        (["--distill-hidden", "-1", "--teacher", "T"], "must be >= 0"),
        (["--distill-hidden", "inf", "--teacher", "T"], "--distill-hidden must be a finite number"),
        (["--distill-hidden", "1", "--teacher", "T", "--method", "power"], "built for --method tilted"),
        (["--distill-hidden", "1", "--teacher", "T"], "removes no tokens"),  # the teacher runs at tilt rate 0.3
    ],
)
def test_bad_hidden_distillation_is_one_error_line(tiny_checkpoint, tmp_path, extra, message):
    assert_finetune_refused(tiny_checkpoint, tmp_path, extra, message)


def assert_finetune_refused(checkpoint: str, tmp_path, extra: list[str], message: str) -> None:
    """`finetune` on `checkpoint` with `extra` options ("T" standing for the checkpoint as teacher) exits 2 with
    an `error:` line saying `message`, and writes nothing."""
    base = ["finetune", "--model", checkpoint, "--max-train-samples", "16", "--max-seq-len", "16"]
    extra = [checkpoint if x == "T" else x for x in extra]
    result = CliRunner().invoke(app, [*base, "--output", str(tmp_path / "out"), *extra],
                                env={"TILTBENCH_DATA_DIR": str(DATA_DIR)})  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out").exists()


def test_hidden_distillation_refuses_a_teacher_of_another_depth(tiny_checkpoint, tmp_path):
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    # a fine-tuned SST-2 teacher that removes nothing, with one layer more than the 2-layer student
    config = AutoConfig.from_pretrained(tiny_checkpoint, num_hidden_layers=3)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "deep-base")
    AutoTokenizer.from_pretrained(tiny_checkpoint).save_pretrained(tmp_path / "deep-base")
    _train(tmp_path, "deep", str(tmp_path / "deep-base"))
    base = ["finetune", "--model", tiny_checkpoint, "--max-train-samples", "16", "--max-seq-len", "16"]
    extra = ["--teacher", str(tmp_path / "deep"), "--distill-hidden", "1", "--output", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*base, *extra], env={"TILTBENCH_DATA_DIR": str(DATA_DIR)})
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and "hidden size and depth" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()
    # the same teacher without --distill-hidden (logits only) is accepted: the refusal is the hidden term's
    result = CliRunner().invoke(app, [*base, "--teacher", str(tmp_path / "deep"), "--output", str(tmp_path / "ok")],
                                env={"TILTBENCH_DATA_DIR": str(DATA_DIR)})  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("with_teacher", [True, False])
def test_every_sandwich_pass_learns_from_the_teacher_or_the_near_dense_pass(tiny_checkpoint, tmp_path, monkeypatch,
                                                                             with_teacher):  # fmt: skip
    targets = []  # (student logits, target) of every distilled pass
    original = Distillation.loss

    def spy(self, student, teacher, task_loss, regression):
        targets.append((student.detach().clone(), teacher.detach().clone()))
        return original(self, student, teacher, task_loss, regression)

    monkeypatch.setattr(Distillation, "loss", spy)
    taught = []  # the teacher's logits, forward by forward
    finetune_module = importlib.import_module("tiltbench.finetune")  # the module (tiltbench.finetune is the function)
    load_teacher = finetune_module.load_teacher

    def watched_teacher(*args, **kwargs):
        teacher = load_teacher(*args, **kwargs)
        teacher.register_forward_hook(lambda module, inputs, output: taught.append(output.logits.detach().clone()))
        return teacher

    monkeypatch.setattr(finetune_module, "load_teacher", watched_teacher)
    options = dict(knob_range=(0.0, 0.4), random_knobs=2)
    options |= dict(teacher=tiny_checkpoint) if with_teacher else {}
    _train(tmp_path, "sandwich", tiny_checkpoint, **options)
    # 32 sentences at batch 16: 2 steps of 4 passes (0, 0.4, two draws)
    if with_teacher:  # every pass is distilled, and within a step all from that step's teacher logits
        assert len(targets) == 8 and len(taught) == 2
        for step, logits in zip((targets[:4], targets[4:]), taught, strict=True):
            assert all(torch.equal(logits.float(), t) for _, t in step)
    else:  # the near-dense pass teaches the three others of its step: its own logits, the same for all three
        assert len(targets) == 6
        for step in (targets[:3], targets[3:]):
            assert all(torch.equal(step[0][1], t) for _, t in step[1:])
            assert not any(torch.equal(s, t) for s, t in step[1:])  # a pass is never its own teacher


def test_the_hidden_term_reads_real_tokens_only(tiny_checkpoint, tmp_path, monkeypatch):
    """_kept_alignment_loss ignores whatever sits in padding and filler slots, and finetune hands it each batch's
    own validity (padding marked), dense and eliminating alike."""
    from tiltbench.finetune import _kept_alignment_loss

    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 8, generator=generator), torch.randn(2, 5, 8, generator=generator)
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    noisy = student.clone()
    noisy[1, 3:] = 1e3  # padding of row 1
    clean = _kept_alignment_loss([(student, None, valid)], (teacher,))
    assert torch.equal(clean, _kept_alignment_loss([(noisy, None, valid)], (teacher,)))
    assert not torch.equal(clean, _kept_alignment_loss([(noisy, None, torch.ones_like(valid))], (teacher,)))

    finetune_module = importlib.import_module("tiltbench.finetune")
    seen = []  # per call: every state's validity

    def spy(student_states, teacher_states):
        seen.append([valid.clone() for _, _, valid in student_states])
        return _kept_alignment_loss(student_states, teacher_states)

    monkeypatch.setattr(finetune_module, "_kept_alignment_loss", spy)
    _train(tmp_path, "teacher", tiny_checkpoint)
    for name, options in (("dense", {}), ("tilted", dict(tilt_rate=0.3))):
        seen.clear()
        _train(tmp_path, name, tiny_checkpoint, teacher=str(tmp_path / "teacher"), distill_hidden=1.0, **options)
        assert len(seen) == 2  # 32 sentences at batch 16
        for valids in seen:
            assert not valids[0].all()  # SST-2 sentences differ in length: the batch has padding, marked
            assert all(v[:, 0].all() for v in valids)  # [CLS] is real in every state
            if options:  # eliminating: fewer real tokens after the layers than in the input
                assert valids[-1].sum() < valids[0].sum()
            else:
                assert all(torch.equal(v.bool(), valids[0].bool()) for v in valids)


def test_an_ensemble_teaches_its_members_mean_distribution():
    first = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    second = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    t = 2.0
    target = Distillation(0.5, t).target([first, second], regression=False)
    for row, (a, b) in enumerate(zip(first.tolist(), second.tolist(), strict=True)):
        mean = [(math.exp(x / t) / sum(math.exp(y / t) for y in a) + math.exp(z / t) / sum(math.exp(y / t) for y in b))
                / 2 for x, z in zip(a, b, strict=True)]  # fmt: skip
        assert torch.softmax(target[row] / t, -1).tolist() == pytest.approx(mean, rel=1e-6)
    # not the mean of the logits: at T 2 the two differ
    assert not torch.allclose(torch.softmax(target / t, -1), torch.softmax((first + second) / 2 / t, -1))
    # one teacher is taught as it is; regression averages the predictions
    assert torch.equal(Distillation(0.5, t).target([first], regression=False), first)
    mean = Distillation(0.5, t).target([torch.tensor([[1.0], [4.0]]), torch.tensor([[3.0], [0.0]])], regression=True)
    assert mean.tolist() == [[2.0], [2.0]]


def test_every_pass_learns_from_the_ensembles_mean_distribution(tiny_checkpoint, tmp_path, monkeypatch):
    other = tmp_path / "other"  # a second teacher of the task: the tiny checkpoint fine-tuned once more
    _train(tmp_path, "other", tiny_checkpoint, tilt_rate=0.0, learning_rate=1e-2)
    targets, taught = [], {}
    original = Distillation.loss

    def spy(self, student, teacher, task_loss, regression):
        targets.append(teacher.detach().clone())
        return original(self, student, teacher, task_loss, regression)

    monkeypatch.setattr(Distillation, "loss", spy)
    finetune_module = importlib.import_module("tiltbench.finetune")
    load_teacher = finetune_module.load_teacher

    def watched_teacher(path, *args, **kwargs):
        teacher = load_teacher(path, *args, **kwargs)
        hook = lambda module, inputs, output: taught.setdefault(path, []).append(output.logits.detach().clone())  # noqa: E731
        teacher.register_forward_hook(hook)
        return teacher

    monkeypatch.setattr(finetune_module, "load_teacher", watched_teacher)
    _train(tmp_path, "student", tiny_checkpoint, teacher=[tiny_checkpoint, str(other)], knob_range=(0.0, 0.4),
           random_knobs=0)  # fmt: skip
    meta = json.loads((tmp_path / "student" / "tiltbench.json").read_text())
    assert meta["train_config"]["teacher"] == [tiny_checkpoint, str(other)]
    # 2 steps of 2 passes; each member ran once per step, and every pass of a step learns the members' mean
    assert len(targets) == 4 and [len(v) for v in taught.values()] == [2, 2]
    members = list(zip(taught[tiny_checkpoint], taught[str(other)], strict=True))
    assert not any(torch.allclose(a, b) for a, b in members)  # two different teachers
    for step, (a, b) in zip((targets[:2], targets[2:]), members, strict=True):
        mean = (torch.softmax(a.float() / 2, -1) + torch.softmax(b.float() / 2, -1)) / 2
        for target in step:
            assert torch.allclose(torch.softmax(target / 2, -1), mean, atol=1e-6)


def test_one_teacher_is_one_path_however_the_api_gets_it(tmp_path):
    from pathlib import Path

    data = DataConfig("sst2")
    for given in (Path("runs/t"), ("runs/t",), ["runs/t"], "runs/t"):
        assert TrainConfig(str(tmp_path / "o"), data, teacher=given).teacher == "runs/t"  # as old states recorded it
    assert TrainConfig(str(tmp_path / "o"), data, teacher=("a", Path("b"))).teacher == ["a", "b"]
    assert TrainConfig(str(tmp_path / "o"), data, teacher=[]).teacher is None
    with pytest.raises(UserError, match="given twice"):  # one folder, two spellings
        TrainConfig(str(tmp_path / "o"), data, teacher=["runs/t", "./runs/t/"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--teacher", "T", "--teacher", "T"], "is given twice"),
        (["--teacher", "T", "--teacher", "OTHER", "--distill-hidden", "1"], "not an ensemble"),
        (["--teacher", "T", "--teacher", "OTHER", "--distill-ranking", "1", "--tilt-rate", "0.2"], "not an ensemble"),
        (["--teacher", "T", "--teacher", "OTHER"], "--teacher: model folder"),  # a member that is not there
    ],
)
def test_a_bad_ensemble_is_one_error_line(tiny_checkpoint, tmp_path, extra, message):
    extra = [str(tmp_path / "missing") if x == "OTHER" else x for x in extra]
    assert_finetune_refused(tiny_checkpoint, tmp_path, extra, message)

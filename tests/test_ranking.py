"""Ranking distillation (finetune --distill-ranking, ToP's): the teacher's final-layer token ranking taught to the
scores the student's earlier layers select by."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import DATA_DIR, random_batch, tiny_bert

from tiltbench.distill import ranking_loss, teacher_final_scores
from tiltbench.eliminate import score_acc
from tiltbench.patch import patch


def _acc_from_attentions(attentions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ACC written out from HF's eager attention probabilities [B,H,n,n]: what each key receives from the real
    queries, summed over heads; padding 0."""
    received = (attentions * mask[:, None, :, None].float()).sum(dim=(1, 2))
    return received * mask.float()


def test_the_teachers_target_is_its_last_layers_acc_as_hf_computes_the_attention():
    model = tiny_bert(attn_implementation="eager", layers=3)
    batch = random_batch([12, 9, 5])
    with torch.no_grad():
        output = model(**batch, output_hidden_states=True, output_attentions=True)
    got = teacher_final_scores(model, output.hidden_states, batch["attention_mask"], score_acc)
    torch.testing.assert_close(got, _acc_from_attentions(output.attentions[-1], batch["attention_mask"]))


def test_ranking_loss_is_the_mean_pairwise_logistic_loss_over_the_teachers_best_tokens():
    # one row of five tokens, all still there, in input order; [CLS] (position 0) is never ranked
    target = torch.tensor([[9.0, 4.0, 1.0, 3.0, 2.0]])  # the teacher ranks 1 > 3 > 4 > 2
    student = torch.tensor([[5.0, 1.0, 2.0, 4.0, 3.0]])
    positions = torch.arange(5)[None]
    valid = torch.ones(1, 5, dtype=torch.bool)
    recorded = [(0, student, positions, valid)]
    # top 2 of the teacher: tokens 1 and 3; pairs (1,3) (1,4) (1,2) (3,4) (3,2), each softplus(log s_j - log s_i)
    pairs = [(1, 3), (1, 4), (1, 2), (3, 4), (3, 2)]
    s = student[0].tolist()
    expected = sum(math.log1p(s[j] / s[i]) for i, j in pairs) / len(pairs)
    assert ranking_loss(recorded, target, last_layer=2, top=2).item() == pytest.approx(expected, rel=1e-6)
    # a student ranking as the teacher does pays less than one ranking the other way round
    agreeing = torch.tensor([[5.0, 8.0, 1.0, 4.0, 2.0]])
    reversed_ = torch.tensor([[5.0, 1.0, 8.0, 2.0, 4.0]])
    loss = {name: ranking_loss([(0, s, positions, valid)], target, 2, 4).item()
            for name, s in (("agreeing", agreeing), ("reversed", reversed_))}  # fmt: skip
    assert loss["agreeing"] < math.log(2) < loss["reversed"]
    # the last layer is not taught (nothing after it reads the tokens it selects); a row with nothing to rank costs 0
    assert ranking_loss([(2, student, positions, valid)], target, last_layer=2, top=2) is None
    only_cls = torch.tensor([[True, False, False, False, False]])
    assert ranking_loss([(0, student, positions, only_cls)], target, 2, 2).item() == 0.0
    # the layers' means are averaged over the layers that have pairs
    both = [(0, student, positions, valid), (1, student, positions, only_cls), (1, agreeing, positions, valid)]
    expected_both = (expected + ranking_loss([(1, agreeing, positions, valid)], target, 2, 2).item()) / 2
    assert ranking_loss(both, target, 2, 2).item() == pytest.approx(expected_both, rel=1e-6)


def test_ranking_loss_reads_the_teachers_score_at_each_kept_tokens_input_position():
    # after a gather the row holds input tokens 0, 2 and 4, then a filler slot (it points at a removed token, 3):
    # the teacher's scores of *those* positions rank token 4 above token 2, while its scores of slots 1 and 2
    # (input tokens 1 and 2) would rank them the other way
    target = torch.tensor([[9.0, 5.0, 3.0, 8.0, 4.0]])
    positions, valid = torch.tensor([[0, 2, 4, 3]]), torch.tensor([[True, True, True, False]])
    right = torch.tensor([[1.0, 2.0, 6.0, 100.0]])  # slot 2 (token 4) above slot 1 (token 2), as the teacher has it
    wrong = torch.tensor([[1.0, 6.0, 2.0, 100.0]])
    assert ranking_loss([(0, right, positions, valid)], target, 5, 20).item() == pytest.approx(math.log1p(2 / 6))
    assert ranking_loss([(0, wrong, positions, valid)], target, 5, 20).item() == pytest.approx(math.log1p(6 / 2))


@pytest.mark.parametrize(
    ("lengths", "grad"),
    [([20, 13, 7], True), ([20, 13, 7], False), ([20], False)],
    ids=["padded-train", "padded-inference", "batch1-short-path"],
)
def test_recorded_scores_are_what_each_layer_selected_by(lengths, grad):
    """record_scores: every layer that removes tokens leaves (layer, scores, input positions, validity), at batch 1
    in inference too (where the short path would score in place); the tokens the next layer holds are each row's
    best by those scores ([CLS] always), and in training the scores carry their graph (the ranking loss needs it)."""
    model = tiny_bert(layers=4)
    patch(model, tilt_rate=0.3)
    batch = random_batch(lengths)
    model._tiltbench.record_scores = True
    with torch.enable_grad() if grad else torch.no_grad():
        model(**batch)
    state = model._tiltbench
    recorded = state.scores
    dropping = [i for i in range(4) if state.valids[i + 1].shape[1] < state.valids[i].shape[1]]
    assert [layer for layer, *_ in recorded] == dropping and len(dropping) >= 2
    for (_, scores, where, valid), (_, _, after, after_valid) in zip(recorded, recorded[1:], strict=False):
        assert scores.requires_grad == grad
        for row in range(len(lengths)):
            count = int(after_valid[row].sum())
            ranked = scores[row].detach().masked_fill(~valid[row], float("-inf"))
            ranked[0] = float("inf")
            best = set(where[row][ranked.topk(count).indices].tolist())
            assert set(after[row][after_valid[row]].tolist()) == best
    model._tiltbench.record_scores = False
    with torch.no_grad():
        model(**batch)
    assert model._tiltbench.scores is None  # nothing recorded unless asked


def _pair_agreement(student_path: str, teacher_path: str) -> float:
    """Share of token pairs (no [CLS], no padding) of 16 dev sentences that the student's first layer orders by
    ACC as the teacher's last layer does: both from HF's eager attention probabilities, not from tiltbench's."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    lines = (DATA_DIR / "sst2" / "dev.tsv").read_text().splitlines()[1:17]
    tokenizer = AutoTokenizer.from_pretrained(student_path)
    batch = tokenizer([line.rsplit("\t", 1)[0] for line in lines], padding=True, return_tensors="pt")
    accs = []
    for path, layer in ((student_path, 0), (teacher_path, -1)):
        model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager").eval()
        with torch.no_grad():
            attentions = model(**batch, output_attentions=True).attentions
        accs.append(_acc_from_attentions(attentions[layer], batch["attention_mask"]))
    agree = total = 0
    for s, t, m in zip(*accs, batch["attention_mask"], strict=True):
        n = int(m.sum())
        ds, dt = s[1:n, None] - s[None, 1:n], t[1:n, None] - t[None, 1:n]
        ordered = dt > 0
        agree += int((ds[ordered] > 0).sum())
        total += int(ordered.sum())
    return agree / total


def test_ranking_distillation_teaches_the_first_layer_the_teachers_final_ranking(tiny_checkpoint, tmp_path):
    from test_distill import _same, _train
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(1)
    base = tmp_path / "base"
    BertForSequenceClassification(AutoConfig.from_pretrained(tiny_checkpoint)).save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny_checkpoint).save_pretrained(base)
    _train(tmp_path, "teacher", tiny_checkpoint, epochs=3, learning_rate=1e-2)  # removes nothing (tilt rate 0)
    teacher = str(tmp_path / "teacher")
    common = dict(teacher=teacher, alpha=0.5, epochs=6, learning_rate=1e-2, knob_range=(0.0, 0.4))
    plain = _train(tmp_path, "plain", str(base), **common)
    ranked = _train(tmp_path, "ranked", str(base), distill_ranking=10.0, **common)
    assert not _same(plain, ranked)  # the term reaches the weights ...
    # ... and the first layer orders the tokens more as the teacher's last layer does than the same run without it
    before = _pair_agreement(str(tmp_path / "plain"), teacher)
    after = _pair_agreement(str(tmp_path / "ranked"), teacher)
    assert after > before + 0.1, (before, after)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--distill-ranking", "1"], "goes with --teacher"),
        (["--distill-ranking", "-1", "--teacher", "T"], "must be >= 0"),
        (["--distill-ranking", "1", "--ranking-top", "0", "--teacher", "T", "--tilt-rate", "0.2"], "at least 1"),
        (["--ranking-top", "20"], "goes with --distill-ranking"),
        (["--distill-ranking", "1", "--teacher", "T", "--tilt-rate", "0"], "none does"),
        (["--distill-ranking", "nan", "--teacher", "T"], "--distill-ranking must be a finite number"),
        (["--distill-ranking", "1", "--teacher", "T", "--method", "gates"], "decides from the layer's input"),
        (["--distill-ranking", "1", "--teacher", "T", "--tilt-rate", "0.2"], "removes no tokens"),  # teacher at 0.3
    ],
)
def test_bad_ranking_distillation_is_one_error_line(tiny_checkpoint, tmp_path, extra, message):
    from test_distill import assert_finetune_refused

    assert_finetune_refused(tiny_checkpoint, tmp_path, extra, message)


def test_only_stages_that_score_tokens_pay_for_the_teachers_ranking(tiny_checkpoint, tmp_path, monkeypatch):
    """PoWER's dense first stage scores no tokens: the teacher's final-layer scores are computed in its soft search
    and hard retrain stages only (2 steps each: 32 sentences at batch 16)."""
    import importlib

    from test_distill import _train

    finetune_module = importlib.import_module("tiltbench.finetune")
    original_scores, original_epoch = finetune_module.teacher_final_scores, finetune_module._train_epoch
    current, scored = {"stage": None}, []

    def counted(*args, **kwargs):
        scored.append(current["stage"])
        return original_scores(*args, **kwargs)

    def tracked(run, stage, *args, **kwargs):
        current["stage"] = stage.name
        return original_epoch(run, stage, *args, **kwargs)

    _train(tmp_path, "teacher", tiny_checkpoint)  # removes nothing (tilt rate 0)
    monkeypatch.setattr(finetune_module, "teacher_final_scores", counted)
    monkeypatch.setattr(finetune_module, "_train_epoch", tracked)
    _train(tmp_path, "power", tiny_checkpoint, method="power", teacher=str(tmp_path / "teacher"), distill_ranking=1.0)
    assert sorted(set(scored)) == ["retrain", "search"] and len(scored) == 4, scored

import pytest
import torch

from tiltbench.eliminate import (
    additive_mask,
    attention_with_scores,
    gather_tokens,
    keep_indices,
    key_valid_from_hf_mask,
    row_chunks,
    score_acc,
    score_acc_nodiag,
    score_acc_norm,
)


def test_keep_indices_cls_first_padding_first_order_kept():
    valid = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    scores = torch.tensor([[0.0, 5.0, 1.0, 4.0, 3.0, 9.0], [0.0, 1.0, 2.0, 9.0, 9.0, 9.0]])
    idx, new_valid = keep_indices(scores, valid, torch.tensor([3, 2]))
    # row 0: [CLS] + best two real (1: 5.0, 3: 4.0) in original order; the pad (9.0) is never kept
    assert idx[0].tolist() == [0, 1, 3]
    # row 1 keeps 2: [CLS] + token 2; its third slot is filler, masked
    assert idx[1, :2].tolist() == [0, 2]
    assert new_valid.tolist() == [[True, True, True], [True, True, False]]


def test_cls_kept_even_with_lowest_score():
    valid = torch.ones(1, 4, dtype=torch.bool)
    idx, _ = keep_indices(torch.tensor([[-100.0, 1.0, 2.0, 3.0]]), valid, torch.tensor([1]))
    assert idx.tolist() == [[0]]


def test_gather_removes_tokens_physically():
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float).view(2, 5, 3)
    out = gather_tokens(hidden, torch.tensor([[0, 2], [0, 4]]))
    assert out.shape == (2, 2, 3)
    assert torch.equal(out[1, 1], hidden[1, 4])


def _probs():
    torch.manual_seed(0)
    valid = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    logits = torch.randn(1, 2, 4, 4) + additive_mask(valid, torch.float)
    return logits.softmax(-1), valid


def test_acc_sums_attention_received_from_real_queries():
    probs, valid = _probs()
    expected = probs[0, :, :3, :].sum(dim=(0, 1))  # heads and real queries only
    assert torch.allclose(score_acc(probs, valid, torch.ones(1, 2, 4, 8))[0], expected)
    assert score_acc(probs, valid, torch.ones(1, 2, 4, 8))[0, 3] < 1e-6  # pads receive nothing


def test_nodiag_and_norm_variants():
    probs, valid = _probs()
    values = torch.rand(1, 2, 4, 8)
    diag = probs[0].diagonal(dim1=1, dim2=2)[:, :3].sum(0)
    assert torch.allclose(score_acc_nodiag(probs, valid, values)[0, :3], score_acc(probs, valid, values)[0, :3] - diag)
    received = probs[0, :, :3, :].sum(1)  # [H, n]
    assert torch.allclose(score_acc_norm(probs, valid, values)[0], (received * values[0].norm(dim=-1)).sum(0))


def test_key_valid_from_each_hf_mask_form():
    shape = (2, 3, torch.device("cpu"))
    valid = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    assert key_valid_from_hf_mask(None, *shape).all()
    assert torch.equal(key_valid_from_hf_mask(valid[:, None, None, :].expand(2, 1, 3, 3), *shape), valid)
    assert torch.equal(key_valid_from_hf_mask(additive_mask(valid, torch.float), *shape), valid)
    assert torch.equal(key_valid_from_hf_mask(valid.long(), *shape), valid)


def test_row_chunks_group_consecutive_rows_within_budget(monkeypatch):
    monkeypatch.setattr("tiltbench.eliminate.CHUNK_BYTES", 2 * 10 * 10 * 4 * 2)  # two 10-token rows of 2 heads
    assert row_chunks([10, 4, 10, 3], heads=2) == [(0, 2, 10), (2, 4, 10)]
    assert row_chunks([30], heads=2) == [(0, 1, 30)]  # a row over budget still gets its own chunk
    assert row_chunks([], heads=2) == []


def test_attention_matches_hf_on_real_positions_and_grad_path():
    from conftest import random_batch, tiny_bert

    model = tiny_bert("eager")
    batch = random_batch([9, 5, 2], seed=3)
    layer = model.bert.encoder.layer[0]
    valid = batch["attention_mask"].bool()
    with torch.inference_mode():
        hidden = model.bert.embeddings(batch["input_ids"])
        reference = layer.attention(hidden, additive_mask(valid, hidden.dtype))[0]
        ours, scores = attention_with_scores(layer, hidden, valid, score_acc)
    hidden = hidden.clone()  # a normal tensor: with grad enabled, the allocating (autograd) path runs
    with torch.enable_grad():
        grad_ours, grad_scores = attention_with_scores(layer, hidden, valid, score_acc)
    for row, n in enumerate([9, 5, 2]):
        assert torch.allclose(ours[row, :n], reference[row, :n], atol=1e-5)
        assert torch.allclose(grad_ours[row, :n], ours[row, :n], atol=1e-6)
        assert torch.allclose(grad_scores[row, :n], scores[row, :n], atol=1e-6)


def test_keep_indices_validity_is_what_was_gathered():
    # the second row is asked for 4 tokens but has 2 real ones: only those count as kept
    valid = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    idx, new_valid = keep_indices(torch.rand(2, 4), valid, torch.tensor([3, 4]))
    assert new_valid.sum(1).tolist() == [3, 2]
    assert idx[1, :2].tolist() == [0, 1]


@pytest.mark.parametrize("scorer", [score_acc, score_acc_nodiag, score_acc_norm])
def test_unpadded_batch_attention_and_scores_match_the_masked_path(scorer):
    """Rows without padding take the short path (no mask, scorer given valid=None): HF's attention output, and the
    scores the masked computation gives with every slot marked real."""
    from conftest import random_batch, tiny_bert

    model = tiny_bert("eager")
    batch = random_batch([8, 8], seed=5)
    layer = model.bert.encoder.layer[1]
    valid = batch["attention_mask"].bool()
    with torch.inference_mode():
        hidden = model.bert.embeddings(batch["input_ids"])
        reference = layer.attention(hidden, None)[0]
        ours, scores = attention_with_scores(layer, hidden, valid, scorer, [8, 8], scorer_takes_none=True)
        _, masked_scores = attention_with_scores(layer, hidden, valid, scorer, [8, 8], scorer_takes_none=False)
    assert torch.allclose(ours, reference, atol=1e-5)
    assert torch.allclose(scores, masked_scores, atol=1e-6)

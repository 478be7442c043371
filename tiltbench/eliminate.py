"""The shared elimination core: attention with probabilities -> scores -> keep indices -> gather.

Pure tensor functions, used by every method. Shapes: B batch, n tokens now, H heads, d head size, h hidden.

References: ../shared/methods.md §8.1 (scorer interface), §8.3 (gather step), §3.1 (PoWER-BERT significance),
§2.4 (ACC candidates); HF transformers `BertSelfAttention` / `eager_attention_forward` (the maths below is the
same, written out so the probabilities are available *before* dropout, as methods.md §8.1 recommends).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from tiltbench import fused

# scorer(probs [B,H,n,n] pre-dropout, valid [B,n] bool or None (every slot real), values [B,H,n,d]) -> importance [B,n]
Scorer = Callable[[Tensor, Tensor, Tensor], Tensor]


def _received(probs: Tensor, valid: Tensor | None) -> Tensor:
    """Attention each key receives from the real queries, per head: [B,H,n]. `valid` None: every slot is real."""
    if valid is None:  # no pad query rows to zero: one reduction
        return probs.sum(2)
    # Pad query rows are zeroed so a token's score does not depend on how much padding its batch has.
    # A [1,n] x [n,n] matmul per head reads probs once and never permutes it (einsum would copy it).
    return torch.matmul(valid.to(probs.dtype)[:, None, None, :], probs).squeeze(2)


def score_acc(probs: Tensor, valid: Tensor | None, values: Tensor) -> Tensor:
    """ACC: attention a word vector receives, summed over heads and real queries (methods.md §2.4 acc_colsum)."""
    if valid is None:  # two reductions, as the masked path rounds (one sum over both dims differs in bf16)
        return probs.sum(2).sum(1)
    return _received(probs, valid).sum(1)


def score_acc_nodiag(probs: Tensor, valid: Tensor | None, values: Tensor) -> Tensor:
    """ACC minus self-attention, as PoWER-BERT's code does (methods.md §3.1)."""
    self_attention = probs.diagonal(dim1=2, dim2=3)  # [B,H,n]
    if valid is not None:
        self_attention = self_attention * valid.to(probs.dtype)[:, None, :]
    return (_received(probs, valid) - self_attention).sum(1)


def score_acc_norm(probs: Tensor, valid: Tensor | None, values: Tensor) -> Tensor:
    """ACC with each term weighted by the value-vector norm: how much of j actually flows into the context."""
    return (_received(probs, valid) * values.norm(dim=-1)).sum(1)


SCORERS: dict[str, Scorer] = {"acc": score_acc, "acc-nodiag": score_acc_nodiag, "acc-norm": score_acc_norm}

# The same scorers from what the fused kernel (tiltbench/fused.py) returns for a batch without padding instead of
# the probabilities: received [B,H,n] (attention each key receives, summed over queries), self-attention [B,H,n]
# (each token's probability on itself) and values [B,H,n,d]. The maths of SCORERS with valid None.
ReceivedScorer = Callable[[Tensor, Tensor, Tensor], Tensor]
RECEIVED_SCORERS: dict[str, ReceivedScorer] = {
    "acc": lambda received, self_attention, values: received.sum(1),
    "acc-nodiag": lambda received, self_attention, values: (received - self_attention).sum(1),
    "acc-norm": lambda received, self_attention, values: (received * values.norm(dim=-1)).sum(1),
}


def key_valid_from_hf_mask(mask: Tensor | None, batch: int, length: int, device: torch.device) -> Tensor:
    """Recover the [B,n] key-validity mask from the mask HF hands its encoder.

    transformers 5 passes None (no padding), a bool [B,1,q,n] mask (sdpa, True = attend) or an additive
    float [B,1,q,n] mask (eager, 0 = attend); older versions pass an additive [B,1,1,n] mask. All rows of a
    bidirectional mask are equal, so row 0 suffices.
    """
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    if mask.dim() == 2:
        return mask.bool()
    row = mask[:, 0, 0, :]
    return row if row.dtype == torch.bool else row == 0


def hf_mask(
    valid: Tensor, attn_implementation: str, dtype: torch.dtype, all_valid: bool | None = None
) -> Tensor | None:
    """The [B,1,1,n] mask HF's attention functions accept, from key validity; None when nothing is masked.

    `all_valid`: whether every key is real, when the caller knows it on the host (None: ask the tensor, one host
    sync). A row with no real token (all padding) still attends to its first position: an all-False row makes
    fused sdpa kernels return NaN, and the row's output is meaningless either way."""
    if all_valid if all_valid is not None else bool(valid.all()):
        return None
    if attn_implementation == "sdpa":
        first = torch.zeros(valid.shape[1], dtype=torch.bool, device=valid.device)
        first[0] = True
        return (valid | first)[:, None, None, :]
    return additive_mask(valid, dtype)


def additive_mask(valid: Tensor, dtype: torch.dtype) -> Tensor:
    """[B,1,1,n] additive mask: 0 where valid, half the dtype's minimum elsewhere. Not -inf, and not the minimum
    itself: in fp16 the minimum plus a negative logit overflows to -inf, and a row of -inf is a NaN softmax."""
    return (~valid)[:, None, None, :].to(dtype) * (torch.finfo(dtype).min / 2)


# Probability blocks of about this many bytes: small enough to stay in cache. A fresh 400 MB [32,12,512,512]
# tensor per op costs more in page faults and memory traffic than the GEMMs.
CHUNK_BYTES = 16 * 2**20


def row_chunks(
    lengths: Sequence[int], heads: int, element_size: int = 4, whole: bool = False
) -> list[tuple[int, int, int]]:
    """Consecutive rows grouped into (start, stop, width) chunks whose [rows*H, width, width] block stays within
    CHUNK_BYTES (at least one row per chunk); width is the chunk's longest real row, so padding beyond it is
    never computed. speed_model.py mirrors this to count the attention work.

    `whole`: one chunk for the batch (on a GPU: CHUNK_BYTES is sized for CPU caches, and a GPU wants few large
    kernels, not a loop of small ones)."""
    if whole:
        return [(0, len(lengths), max(lengths, default=0))]
    chunks: list[tuple[int, int, int]] = []
    start, width = 0, 0
    for i, n in enumerate(lengths):
        wider = max(width, n)
        if i > start and (i + 1 - start) * heads * wider * wider * element_size > CHUNK_BYTES:
            chunks.append((start, i, width))
            start, wider = i, n
        width = wider
    if lengths:
        chunks.append((start, len(lengths), width))
    return chunks


# One reusable probability buffer per (device, dtype), for inference only. Why: on CPU every fresh
# [H, 512, 512] block (12 MB) is mmapped by malloc and page-faulted in on first touch; at IMDB lengths that cost
# more than the softmax itself (13 ms instead of 1 ms per block). Autograd needs its own tensors, so
# training allocates.
_WORKSPACE: dict[tuple[torch.device, torch.dtype, bool], Tensor] = {}


def _workspace(numel: int, like: Tensor) -> Tensor:
    # One buffer per mode too: a tensor made under inference_mode cannot be written in-place outside it (no_grad).
    key = (like.device, like.dtype, torch.is_inference_mode_enabled())
    buffer = _WORKSPACE.get(key)
    if buffer is None or buffer.numel() < numel:
        buffer = _WORKSPACE[key] = torch.empty(numel, dtype=like.dtype, device=like.device)
    return buffer[:numel]


def _probabilities(query: Tensor, key_t: Tensor, valid: Tensor | None, scaling: float) -> Tensor:
    """softmax(scaling * q @ k^T + mask) for [R,m,d] x [R,d,m] -> [R,m,m]; valid [c,m] masks keys per row
    (None: every key is real)."""
    R, m, _ = query.shape
    mask = None if valid is None else additive_mask(valid, query.dtype).repeat_interleave(R // len(valid), 0)[:, 0]
    if torch.is_grad_enabled():
        logits = torch.bmm(query, key_t) * scaling if mask is None else torch.baddbmm(mask, query, key_t, alpha=scaling)
        return logits.softmax(dim=-1)
    out = _workspace(R * m * m, query).view(R, m, m)
    if mask is None:  # beta=0: the GEMM writes the buffer without reading it
        torch.baddbmm(out, query, key_t, beta=0, alpha=scaling, out=out)
    else:  # scale and mask fused into the QK^T GEMM
        torch.baddbmm(mask, query, key_t, alpha=scaling, out=out)
    return torch.softmax(out, dim=-1, out=out)


def attention_with_scores(
    layer: nn.Module,
    hidden: Tensor,
    valid: Tensor,
    scorer: Scorer,
    lengths: Sequence[int] | None = None,
    scorer_takes_none: bool = False,
    received_scorer: ReceivedScorer | None = None,
    rows: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Run a BertLayer-layout self-attention sub-layer and score its keys from pre-dropout probabilities.

    Uses the layer's own Linear/LayerNorm modules (no copied weights). The maths is HF's eager attention, done
    in chunks of consecutive batch rows (`row_chunks`; scorers are per example, so chunking is exact), each only
    as wide as its longest real row: rows are right-padded (the tokenizer pads right and `keep_indices` keeps
    right-padding), so a lone row needs no mask and no padding is computed. Pad positions get a zero context;
    they are never kept. Returns (attention sub-layer output [B,n,h] after residual + LayerNorm, scores [B,n]).
    `lengths`: each row's real tokens, when the caller knows them on the host (None: read them, one host sync).
    `scorer_takes_none`: the scorer accepts valid=None for a batch without padding (the built-in ones do).
    `received_scorer`: the same scorer from the fused kernel's outputs (RECEIVED_SCORERS); with it, a batch without
    padding in inference on the CPU in fp32 or bf16 takes the fused kernel (tiltbench/fused.py) when it is available.
    `rows`: the batch's real slots (packed_rows): the projections and the output sub-layer then run on those alone.
    """
    self_attn = layer.attention.self
    B, n, _ = hidden.shape
    heads_shape = (B, n, -1, self_attn.attention_head_size)
    scaling = getattr(self_attn, "scaling", self_attn.attention_head_size**-0.5)
    # the real rows of `hidden` selected once, for the three projections and the output sub-layer's residual
    packed = hidden if rows is None else pack_rows(hidden, rows)
    query_rows, key_rows, value_rows = (
        unpack_rows(linear(packed), rows, B, n) for linear in (self_attn.query, self_attn.key, self_attn.value)
    )
    lengths = valid.sum(1).tolist() if lengths is None else list(lengths)
    if (
        received_scorer is not None
        and min(lengths, default=0) == n > 0
        and hidden.device.type == "cpu"
        and query_rows.dtype in (torch.float32, torch.bfloat16)  # bf16 is attended in fp32 (fused.py)
        and not torch.is_grad_enabled()
        and not self_attn.training
        and (kernel := fused.attention_received()) is not None
    ):
        # Context and each key's received attention in one pass, the probabilities never written out: faster
        # than sdpa here, so the scoring layer costs no more than HF's (README "Batch 1"). Same maths up to rounding.
        heads = query_rows.shape[-1] // self_attn.attention_head_size
        context, received, self_attention = kernel(
            query_rows, key_rows, value_rows, heads, float(scaling), fused.QUERY_BLOCK
        )
        scores = received_scorer(received, self_attention, value_rows.view(heads_shape).transpose(1, 2))
        return layer.attention.output(context, hidden), scores
    query = query_rows.view(heads_shape).transpose(1, 2)  # [B,H,n,d]
    key_t = key_rows.view(heads_shape).permute(0, 2, 3, 1)  # [B,H,d,n]
    value = value_rows.view(heads_shape).transpose(1, 2)  # [B,H,n,d]
    H, d = query.shape[1], query.shape[3]
    chunks = row_chunks(lengths, H, hidden.element_size(), whole=hidden.device.type != "cpu")
    if len(chunks) == 1 and min(lengths, default=0) == n:
        # No padding and one chunk (always at batch 1): no mask, no zeroed buffers, no copies into them, and the
        # scorer told every slot is real. A dozen fewer kernels per layer, which is what batch 1 pays for.
        probs = _probabilities(query.reshape(B * H, n, d), key_t.reshape(B * H, d, n), None, scaling).view(B, H, n, n)
        scores = scorer(probs, None if scorer_takes_none else valid, value)
        dropped = self_attn.dropout(probs) if self_attn.training else probs  # eval: skip the no-op call too
        context = torch.matmul(dropped, value).transpose(1, 2).reshape(B, n, H * d)
        return layer.attention.output(context, hidden), scores
    context = hidden.new_zeros(B, n, H, d)
    scores = hidden.new_zeros(B, n)
    for start, stop, m in chunks:
        c = stop - start
        rows_valid = valid[start:stop, :m]
        padded = min(lengths[start:stop]) < m  # known from the lengths: no device sync per chunk
        probs = _probabilities(
            query[start:stop, :, :m].reshape(c * H, m, d),  # a view when c == 1
            key_t[start:stop, :, :, :m].reshape(c * H, d, m),
            rows_valid if padded else None,
            scaling,
        ).view(c, H, m, m)
        rows_value = value[start:stop, :, :m]
        scores[start:stop, :m] = scorer(probs, rows_valid, rows_value)
        context[start:stop, :m] = torch.matmul(self_attn.dropout(probs), rows_value).transpose(1, 2)
    context = context.view(B, n, H * d)
    if rows is None:
        return layer.attention.output(context, hidden), scores
    return unpack_rows(layer.attention.output(pack_rows(context, rows), packed), rows, B, n), scores


def packed_rows(lengths: Sequence[int], width: int, device: torch.device) -> Tensor:
    """Flat indices [T] of the real slots of a right-padded [B, width] batch (row b's first lengths[b] slots), built
    on the host from lengths the caller already knows: no device sync."""
    real = torch.arange(width)[None, :] < torch.tensor(list(lengths))[:, None]  # [B, width] on the host
    return real.view(-1).nonzero().squeeze(1).to(device, non_blocking=True)


def per_token(fn: Callable[..., Tensor], rows: Tensor | None, *tensors: Tensor) -> Tensor:
    """fn(*tensors) for a token-wise fn (a Linear, the FFN, the attention output's dense + LayerNorm) on [B, n, *]
    tensors, computed on the real slots alone when `rows` (packed_rows) is given: a padded batch's Linear work
    then scales with its real tokens, not with B x its longest row. Why it pays: on IMDB at batch 32 nearly every
    batch holds a 512-token review while the mean is 272, so HF's layout spends about half of every GEMM on
    padding. Padding slots come back as zeros; nothing reads them (keys are masked, they are never kept)."""
    if rows is None:
        return fn(*tensors)
    B, n = tensors[0].shape[:2]
    return unpack_rows(fn(*(pack_rows(t, rows) for t in tensors)), rows, B, n)


def pack_rows(tensor: Tensor, rows: Tensor) -> Tensor:
    """[B, n, *] -> [T, *]: the real slots named by `rows` (packed_rows)."""
    return tensor.reshape(-1, tensor.shape[-1]).index_select(0, rows)


def unpack_rows(packed: Tensor, rows: Tensor | None, batch: int, width: int) -> Tensor:
    """[T, *] -> [B, n, *], zeros in the padding slots; a [B, n, *] tensor passes through when rows is None."""
    if rows is None:
        return packed
    out = packed.new_zeros(batch * width, packed.shape[-1]).index_copy_(0, rows, packed)
    return out.view(batch, width, packed.shape[-1])


def keep_indices(scores: Tensor, valid: Tensor, n_keep: Tensor, width: int | None = None) -> tuple[Tensor, Tensor]:
    """Indices of the tokens each row keeps, and the validity of the new rows.

    scores [B,n], valid [B,n] bool (right-padded), n_keep [B] tokens each row is asked to keep.
    Returns idx [B,k] with k = max(n_keep): the kept tokens in their original order, [CLS] first, then
    (for rows keeping fewer than k) filler slots; and new_valid [B,k], a right-padding mask of the real
    tokens that were actually gathered. `width`: max(n_keep) when the caller knows it on the host (None: one host
    sync). Padding goes before any real token because pads score -inf; [CLS]
    scores +inf. new_valid is the validity of what was gathered, not the plan: a row asked to keep more tokens
    than it has gets only its real ones, and `realised_counts` (new_valid.sum(1)) says so.
    """
    n = scores.shape[1]
    k = int(n_keep.max()) if width is None else width
    ranked = scores.detach().masked_fill(~valid, float("-inf"))
    ranked[:, 0] = float("inf")
    top = ranked.topk(k, dim=1).indices  # [B,k], best first
    slots = torch.arange(k, device=scores.device)[None, :] < n_keep[:, None]  # [B,k] slots within each count
    # Original order for the kept tokens; filler slots (beyond a row's count) move to the end.
    order = torch.where(slots, top, top + n).argsort(dim=1)
    idx = top.gather(1, order)
    return idx, slots & valid.gather(1, idx)


def top_tokens(scores: Tensor, k: int) -> Tensor:
    """keep_indices for a batch whose every slot is real and whose every row keeps k (always at batch 1): the k
    best tokens per row in their original order, [CLS] first. Three kernels instead of a dozen; inference only
    (it writes +inf into `scores`' [CLS] column in place)."""
    scores.select(1, 0).fill_(float("inf"))
    return scores.topk(k, dim=1, sorted=False).indices.sort(dim=1).values


def gather_tokens(hidden: Tensor, idx: Tensor) -> Tensor:
    """hidden [B,n,h], idx [B,k] -> [B,k,h]: the tokens are physically removed, not masked."""
    if hidden.shape[0] == 1:  # batch 1: whole rows copied by index_select, one kernel fewer than an expanded gather
        return hidden.index_select(1, idx[0])
    return hidden.gather(1, idx[:, :, None].expand(-1, -1, hidden.shape[-1]))

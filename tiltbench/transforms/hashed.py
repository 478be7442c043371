"""Hashed input embeddings (EELBERT, Cohn et al., arXiv 2310.20144): no stored word-embedding table.

EELBERT computes a token's input embedding from its text instead of looking it up. The paper's hash, n-gram
orders and pooling are not public (../shared/methods.md §5.3 [U]); this is our interpretation, point by point:

1. **Grams.** A vocabulary token's string, WordPiece's "##" stripped, is marked at its start ("<" for a piece that
   starts a word, "#" for a "##" continuation piece: the same letters mean different things there) and at its end
   (">"). Its grams are the characters of the token (order 1, markers left out: every token has them), the
   character bigrams and trigrams of the marked string (orders 2 and 3: prefixes and suffixes such as "<un" and
   "ed>" are what carry meaning in sub-words), and the whole marked token (so two tokens with the same n-grams,
   e.g. "ab" and "ba" at order 1, still differ). Special tokens ([CLS], [SEP], [unused17], ...) are one gram:
   their own string.
2. **Hash.** Each gram's UTF-8 bytes go through MurmurHash3 x64 128-bit (`mmh3.hash_bytes`, seeds
   `seed * 1000 + 0, 1, ...`) until there are 2 bits per dimension; every 2 bits map to 0, +1, -1, 0 (00, 01, 10,
   11), as the projection of Ravi & Kozareva does (tensorflow/models `research/seq_flow_lite`,
   SequenceStringProjection). A gram's vector has any length `dim`, and nothing is stored per gram.
3. **Pooling.** A token's feature vector is the mean of its grams' vectors.
4. **Projection.** A learned `Linear(dim -> hidden)` (with bias) maps it to the model's hidden size. HF's position
   and token-type embeddings and the embedding LayerNorm stay as they are.
5. **When it is computed.** Once, when the model is built or loaded: the pooled features of the whole vocabulary,
   held in memory as int8 sums of ternary values and a count per token (not saved: recomputed from the
   tokenizer's vocabulary, `build_seconds` says how long it took). The projection runs per batch, on the
   batch's tokens.
6. **Initialisation without pre-training.** EELBERT pre-trains with MLM, out of reach on 2 cores. We fit the
   projection by least squares so that the hashed embedding reproduces the pretrained table's rows
   (`fit_to_table`; cosine similarity and relative error recorded), then fine-tune on the task as usual. By
   default (`--hash-fit task`) each row is weighted by how often its token occurs in the task's training text,
   plus one: a linear map of random features cannot reproduce the whole table, so it reproduces the rows the task
   uses.

The checkpoint keeps the projection (dim x hidden + hidden parameters) and no table: for MiniLM 0.3 M parameters
in place of 11.7 M.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from tiltbench.errors import UserError

ORDERS = (1, 2, 3)  # character n-gram orders (the whole marked token is one more gram)
HASH = "MurmurHash3 x64 128-bit (mmh3.hash_bytes)"


@dataclass(frozen=True)
class HashedConfig:
    """What tiltbench.json records to rebuild the embedding exactly (with the tokenizer's vocabulary)."""

    dim: int = 768
    orders: tuple[int, ...] = ORDERS
    seed: int = 0
    hash: str = HASH

    def __post_init__(self) -> None:
        if not 8 <= self.dim <= 8192 or self.dim % 8:
            raise UserError(f"--hash-dim must be a multiple of 8 in [8, 8192], got {self.dim}")
        if not self.orders or any(n not in (1, 2, 3, 4, 5) for n in self.orders):
            raise UserError(f"n-gram orders must be among 1..5, got {list(self.orders)}")

    def to_dict(self) -> dict:
        return {**asdict(self), "orders": list(self.orders)}

    @classmethod
    def from_dict(cls, data: dict) -> HashedConfig:
        return cls(int(data["dim"]), tuple(int(n) for n in data["orders"]), int(data["seed"]), data.get("hash", HASH))


def token_grams(token: str, orders: Sequence[int], special: bool) -> list[str]:
    """The grams of one vocabulary token (see point 1 of the module docstring)."""
    if special or not token:
        return [token]
    body, start = (token[2:], "#") if token.startswith("##") and len(token) > 2 else (token, "<")
    marked = f"{start}{body}>"
    grams = [marked]
    for n in orders:
        text = body if n == 1 else marked  # order 1: the characters only (every token has the markers)
        grams += [text[i : i + n] for i in range(len(text) - n + 1)]
    return grams


def gram_vectors(grams: Sequence[str], dim: int, seed: int) -> np.ndarray:
    """[G, dim] int8 in {-1, 0, +1}: each gram's pseudo-random ternary vector (point 2)."""
    import mmh3

    calls = -(-2 * dim // 128)  # 128 bits per hash, 2 bits per dimension
    raw = np.frombuffer(
        b"".join(mmh3.hash_bytes(g.encode("utf-8"), seed * 1000 + s) for g in grams for s in range(calls)),
        dtype=np.uint8,
    ).reshape(len(grams), calls * 16)
    bits = np.unpackbits(raw, axis=1)[:, : 2 * dim].reshape(len(grams), dim, 2).astype(np.int8)
    return bits[:, :, 1] - bits[:, :, 0]  # 00 -> 0, 01 -> +1, 10 -> -1, 11 -> 0


def vocabulary_features(tokens: Sequence[str], special: set[str], config: HashedConfig) -> tuple[Tensor, Tensor]:
    """(sums [V, dim] int8, counts [V]): each token's summed gram vectors and its number of grams (point 3's
    mean is sums / counts; the sums are kept as int8, a quarter of a float table)."""
    import scipy.sparse

    per_token = [token_grams(t, config.orders, t in special) for t in tokens]
    index: dict[str, int] = {}
    gram_ids = [[index.setdefault(g, len(index)) for g in grams] for grams in per_token]
    vectors = gram_vectors(list(index), config.dim, config.seed)  # [G, dim] int8
    counts = np.array([len(ids) for ids in gram_ids])
    rows = np.repeat(np.arange(len(tokens)), counts)
    cols = np.fromiter((i for ids in gram_ids for i in ids), dtype=np.int64, count=int(counts.sum()))
    incidence = scipy.sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int16), (rows, cols)), shape=(len(tokens), len(index))
    )
    sums = incidence @ vectors.astype(np.int16)  # [V, dim]: each token's gram vectors summed
    if np.abs(sums).max() > 127:
        raise UserError("a vocabulary token has more than 127 grams; its hashed features do not fit int8")
    return torch.from_numpy(sums.astype(np.int8)), torch.from_numpy(counts)
    return sums.to(torch.int8), counts


class HashedEmbedding(nn.Module):
    """Drop-in for a BERT model's word-embedding `nn.Embedding`: input ids -> projected hashed features."""

    def __init__(self, tokens: Sequence[str], special: set[str], hidden: int, config: HashedConfig) -> None:
        super().__init__()
        started = time.perf_counter()
        sums, counts = vocabulary_features(tokens, special, config)
        self.build_seconds = round(time.perf_counter() - started, 3)
        self.config = config
        self.num_embeddings, self.embedding_dim = len(tokens), hidden
        # Not saved (persistent=False): recomputed from the vocabulary at load. `counts` is a float buffer, so a
        # dtype transform (bf16) casts it and the features follow the model's dtype.
        self.register_buffer("sums", sums, persistent=False)
        self.register_buffer("counts", counts.to(torch.float32), persistent=False)
        self.projection = nn.Linear(config.dim, hidden)

    def features(self, input_ids: Tensor) -> Tensor:
        """[..., dim] mean gram vectors of the given token ids (in the model's dtype)."""
        counts = self.counts[input_ids]
        return self.sums[input_ids].to(counts.dtype) / counts[..., None]

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.projection(self.features(input_ids))

    def describe(self) -> dict:
        return {"kind": "hashed", **self.config.to_dict(), "vocabulary": self.num_embeddings}

    @torch.no_grad()
    def fit_to_table(self, table: Tensor, token_counts: Tensor | None = None, weighted: bool = True) -> dict:
        """Least-squares projection W, b = argmin sum_i w_i ||F_i W + b - E_i||^2 over the vocabulary (point 6);
        returns how well the fitted embedding reproduces the table: row cosine similarity (mean over the vocabulary
        and, given counts, over token occurrences) and relative Frobenius error.

        `token_counts` [V]: how often each token occurs in the task's training text; rows are then weighted by
        count + 1. Why: 768 random features cannot reproduce 30,522 rows (a row cosine of 0.31 on MiniLM), but
        they can reproduce the few thousand rows that make up most of a task's text: on MRPC the cosine averaged
        over token occurrences rises from 0.25 to 0.74, while the vocabulary mean falls from 0.31 to 0.19 (rows
        the task never shows matter less; the +1 keeps them in the fit). None, or `weighted=False`: every row alike
        (the counts then only score the fit per occurrence)."""
        if table.shape != (self.num_embeddings, self.embedding_dim):
            raise UserError(
                f"the embedding table is {tuple(table.shape)}, the hashed embedding {self.num_embeddings} x "
                f"{self.embedding_dim}: they belong to different models"
            )
        if token_counts is not None and token_counts.shape != (self.num_embeddings,):
            raise UserError(f"token counts for {token_counts.shape[0]} ids, the vocabulary has {self.num_embeddings}")
        started = time.perf_counter()
        target = table.detach().float()
        design = torch.cat([self.features(torch.arange(self.num_embeddings)).float(),
                            torch.ones(self.num_embeddings, 1)], 1)  # fmt: skip
        weights = token_counts.float() + 1.0 if token_counts is not None and weighted else None
        scale = torch.ones(self.num_embeddings, 1) if weights is None else weights.sqrt()[:, None]
        solution = torch.linalg.lstsq(design * scale, target * scale, driver="gelsd").solution  # [dim + 1, hidden]
        self.projection.weight.copy_(solution[:-1].T)
        self.projection.bias.copy_(solution[-1])
        fitted = design @ solution
        cosine = nn.functional.cosine_similarity(fitted, target, dim=1)
        occurrences = {}
        if token_counts is not None:
            seen = token_counts.float()
            occurrences = {"cosine_per_occurrence": round(float((cosine * seen).sum() / seen.sum().clamp_min(1)), 4)}
        return {
            "weights": "vocabulary" if weights is None else "task token counts + 1",
            "cosine_mean": round(float(cosine.mean()), 4),
            "cosine_median": round(float(cosine.median()), 4),
            **occurrences,
            "relative_error": round(float((fitted - target).norm() / target.norm()), 4),
            "fit_seconds": round(time.perf_counter() - started, 2),
        }


def vocabulary_of(tokenizer) -> tuple[list[str], set[str]]:  # noqa: ANN001 (an HF tokenizer)
    """Every id's token string, in id order, and the special tokens (their own single gram)."""
    size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    special = set(tokenizer.all_special_tokens)
    special |= {t for t in tokens if t.startswith("[") and t.endswith("]")}  # [unused17] and the like
    return [t if t is not None else "" for t in tokens], special


def install(model: nn.Module, tokenizer, config: HashedConfig) -> HashedEmbedding:  # noqa: ANN001
    """Replace `model`'s word-embedding table with a hashed embedding (untrained projection); returns it."""
    table = model.get_input_embeddings()
    tokens, special = vocabulary_of(tokenizer)
    if isinstance(table, nn.Embedding) and table.num_embeddings < len(tokens):
        raise UserError(f"the tokenizer has {len(tokens)} tokens, the model's table {table.num_embeddings}")
    vocabulary = model.config.vocab_size
    tokens = (tokens + [f"[tiltbench-unused-{i}]" for i in range(vocabulary - len(tokens))])[:vocabulary]
    embedding = HashedEmbedding(tokens, special | {t for t in tokens if t.startswith("[tiltbench-")},
                                model.config.hidden_size, config)  # fmt: skip
    model.set_input_embeddings(embedding)
    return embedding


def replace_table(
    model: nn.Module,
    tokenizer,  # noqa: ANN001
    config: HashedConfig,
    token_counts: Tensor | None = None,
    weighted: bool = True,
) -> dict:
    """Swap the pretrained table for a hashed embedding fitted to it (the start of `finetune --embeddings
    hashed`; `token_counts`: weight the fit by the task's token occurrences, `fit_to_table`); returns the fit's
    quality and timings for tiltbench.json."""
    table = model.get_input_embeddings()
    if not isinstance(table, nn.Embedding):
        raise UserError(f"the model's input embedding is a {type(table).__name__}, not a table to replace")
    weight = table.weight.detach().clone()
    embedding = install(model, tokenizer, config)
    fit = embedding.fit_to_table(weight, token_counts, weighted)
    return {**embedding.describe(), "build_seconds": embedding.build_seconds, "fit": fit}


def hashed_embedding(model: nn.Module) -> HashedEmbedding | None:
    embedding = model.get_input_embeddings()
    return embedding if isinstance(embedding, HashedEmbedding) else None

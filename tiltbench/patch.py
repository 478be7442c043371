"""patch / unpatch / set_schedule: word-vector elimination on any loaded BertLayer-layout HF model.

    model = AutoModelForSequenceClassification.from_pretrained(...)
    tiltbench.patch(model, tilt_rate=0.2, scorer="acc")
    logits = model(**batch).logits             # tokens are physically removed layer by layer
    tiltbench.realised_counts(model)            # [B, L+1] tokens each example kept after each layer

Like ToMe's `tome.patch.timm`, only the encoder's `__class__` is swapped (weights and `state_dict` untouched,
so checkpoints stay plain HF folders). We own the ~30-line layer loop and call HF's untouched modules.

References: facebookresearch/ToMe `tome/patch/timm.py` (class-swap pattern); ../shared/methods.md §8.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

from tiltbench.eliminate import (
    SCORERS,
    Scorer,
    attention_with_scores,
    gather_tokens,
    hf_mask,
    keep_indices,
    key_valid_from_hf_mask,
)
from tiltbench.errors import UserError
from tiltbench.schedule import Schedule, Shape, parse_schedule

SUPPORTED_ATTENTION = ("sdpa", "eager")


@dataclass
class TiltState:
    """Everything elimination needs, in one typed place: `model._tiltbench`."""

    schedule: Schedule
    scorer_name: str
    scorer: Scorer
    original_class: type
    kept: Tensor | None = None  # realised [B, L+1] counts of the last eliminating forward
    widths: list[int] = field(default_factory=list)  # tensor width (tokens) after each layer, same forward
    dense_input: tuple | None = None  # (HF mask, hidden shape) of the last forward that eliminated nothing
    _tables: dict[torch.device, Tensor] = field(default_factory=dict)

    def counts_for(self, n0: Tensor) -> Tensor:
        """Per-example schedule [B, L+1] for real lengths n0 [B], from a lookup table built once."""
        table = self._tables.get(n0.device)
        longest = int(n0.max())
        if table is None or longest >= table.shape[0]:
            rows = [self.schedule.counts(n) for n in range(max(longest + 1, 513))]
            table = torch.tensor(rows, dtype=torch.long, device=n0.device)
            self._tables[n0.device] = table
        return table[n0]


def _eliminating_forward(encoder: nn.Module, hidden: Tensor, mask: Tensor | None) -> Tensor:
    """Layer loop: attention on n_{l-1} tokens, score, gather, FFN on n_l tokens (methods.md §3.2 placement)."""
    state: TiltState = encoder._tiltbench
    impl = encoder.config._attn_implementation
    valid = key_valid_from_hf_mask(mask, hidden.shape[0], hidden.shape[1], hidden.device)  # [B,n]
    counts = state.counts_for(valid.sum(1))  # [B,L+1]
    widths = [hidden.shape[1]]
    for i, layer in enumerate(encoder.layer):
        n_out = counts[:, i + 1]
        if torch.equal(counts[:, i], n_out):  # nothing leaves here: HF's own layer, default attention
            hidden = layer(hidden, hf_mask(valid, impl, hidden.dtype))
        else:
            attended, scores = attention_with_scores(layer, hidden, valid, state.scorer)
            idx, valid = keep_indices(scores, valid, n_out)
            attended = gather_tokens(attended, idx)  # [B,n_l,h]
            hidden = layer.output(layer.intermediate(attended), attended)
        widths.append(hidden.shape[1])
    state.kept, state.widths, state.dense_input = counts, widths, None
    return hidden


_CLASS_CACHE: dict[type, type] = {}


def _tilted_class(base: type) -> type:
    if base not in _CLASS_CACHE:

        class TiltedEncoder(base):  # type: ignore[misc, valid-type]
            """Modifications (tiltbench):
            - when the schedule drops tokens, runs its own layer loop over the untouched HF layers, gathering
              the top-ACC word vectors between each layer's attention and FFN sub-layers;
            - last_hidden_state is then [B, n_L, h], not [B, N, h]; [CLS] stays at index 0 for the pooler;
            - with tau = 0 it is HF's forward, unchanged.
            """

            def forward(self, hidden_states, attention_mask=None, *args, **kwargs):  # noqa: ANN001
                state: TiltState = self._tiltbench
                if state.schedule.is_identity:  # HF's forward; counts are derived only if someone asks
                    B, n, _ = hidden_states.shape
                    state.kept, state.dense_input = None, (attention_mask, B, n, hidden_states.device)
                    return super().forward(hidden_states, attention_mask, *args, **kwargs)
                hidden = _eliminating_forward(self, hidden_states, attention_mask)
                return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden)

        TiltedEncoder.__name__ = TiltedEncoder.__qualname__ = f"Tilted{base.__name__}"
        _CLASS_CACHE[base] = TiltedEncoder
    return _CLASS_CACHE[base]


def find_encoder(model: nn.Module) -> nn.Module:
    """The BertLayer-layout encoder inside `model` (BertModel, *ForSequenceClassification, ...)."""
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    needed = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output")
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise UserError(f"{type(model).__name__} has no BERT-layout encoder (base_model.encoder.layer)")
    names = {name for name, _ in layers[0].named_modules()}
    if not all(n in names for n in (*needed, "intermediate", "output")):
        raise UserError(f"{type(model).__name__}'s layers are not BertLayer-layout; cannot eliminate tokens")
    if getattr(encoder.config, "is_decoder", False):
        raise UserError("token elimination needs a bidirectional encoder; this model is a decoder")
    return encoder


def patch(
    model: nn.Module,
    tilt_rate: float | str | Sequence[int] | Schedule = 0.0,
    *,
    shape: Shape = "geometric",
    min_tokens: int = 1,
    scorer: str = "acc",
) -> nn.Module:
    """Patch a loaded HF model in place so its forward eliminates word vectors; returns the model.

    `tilt_rate` takes every form `parse_schedule` accepts: a float in [0, 1), "0.2:linear", a list of
    per-layer counts, or a `Schedule`. `scorer` is one of `SCORERS` (acc, acc-nodiag, acc-norm).
    Raises UserError on a non-BERT layout, an unsupported attention implementation or a second patch.
    """
    encoder = find_encoder(model)
    if hasattr(encoder, "_tiltbench"):
        raise UserError("this model is already patched; call tiltbench.set_schedule to change the schedule")
    impl = encoder.config._attn_implementation
    if impl not in SUPPORTED_ATTENTION:
        raise UserError(f"attention implementation {impl!r} is not supported; load with 'sdpa' or 'eager'")
    state = TiltState(Schedule(len(encoder.layer)), scorer, _scorer(scorer), type(encoder))
    encoder.__class__ = _tilted_class(type(encoder))
    encoder._tiltbench = state
    model._tiltbench = state
    set_schedule(model, tilt_rate, shape=shape, min_tokens=min_tokens)
    return model


def set_schedule(
    model: nn.Module,
    tilt_rate: float | str | Sequence[int] | Schedule,
    *,
    shape: Shape = "geometric",
    min_tokens: int = 1,
    scorer: str | None = None,
) -> Schedule:
    """Re-target a patched model (offline-tuning): new schedule, optionally a new scorer. No reload."""
    state = _state(model)
    schedule = parse_schedule(len(find_encoder(model).layer), tilt_rate, shape=shape, min_tokens=min_tokens)
    if schedule != state.schedule:  # unchanged: keep the count tables (this runs before timed forwards)
        state.schedule = schedule
        state._tables.clear()
        # Build the table now, so the next (perhaps timed) forward does not.
        device = next(model.parameters()).device
        state.counts_for(torch.ones(1, dtype=torch.long, device=device))
    if scorer is not None:
        state.scorer_name, state.scorer = scorer, _scorer(scorer)
    return state.schedule


def unpatch(model: nn.Module) -> nn.Module:
    """Restore the original encoder class; the model is plain HF again."""
    state = _state(model)
    encoder = find_encoder(model)
    encoder.__class__ = state.original_class
    del encoder._tiltbench, model._tiltbench
    return model


def realised_counts(model: nn.Module) -> Tensor:
    """[B, L+1] tokens each example had after each layer in the last forward ([:, 0] = real input length)."""
    state = _state(model)
    if state.dense_input is not None:  # nothing was eliminated: every layer kept the real length
        mask, batch, length, device = state.dense_input
        n0 = key_valid_from_hf_mask(mask, batch, length, device).sum(1)
        state.kept = n0[:, None].expand(-1, state.schedule.num_layers + 1)
        state.widths, state.dense_input = [length] * (state.schedule.num_layers + 1), None
    if state.kept is None:
        raise UserError("no forward pass has run since the model was patched")
    return state.kept


def _state(model: nn.Module) -> TiltState:
    state = getattr(find_encoder(model), "_tiltbench", None)
    if state is None:
        raise UserError("this model is not patched; call tiltbench.patch(model, ...) first")
    return state


def _scorer(name: str) -> Scorer:
    if name not in SCORERS:
        raise UserError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")
    return SCORERS[name]

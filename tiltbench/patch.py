"""patch / unpatch / set_schedule: word-vector elimination on any loaded BertLayer-layout HF model.

    model = AutoModelForSequenceClassification.from_pretrained(...)
    tiltbench.patch(model, tilt_rate=0.2, scorer="acc")
    logits = model(**batch).logits             # tokens are physically removed layer by layer
    tiltbench.realised_counts(model)            # [B, L+1] tokens each example kept after each layer
    tiltbench.patch(model, method=Power(...))  # any method in tiltbench/methods/ runs through the same loop
    tiltbench.set_knob(model, 1.0)             # re-target along the method's knob

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
    additive_mask,
    attention_with_scores,
    gather_tokens,
    hf_mask,
    keep_indices,
    key_valid_from_hf_mask,
    packed_rows,
    per_token,
    top_tokens,
)
from tiltbench.errors import UserError
from tiltbench.methods import LayerView, Method, get_method
from tiltbench.schedule import Schedule, Shape, parse_schedule

SUPPORTED_ATTENTION = ("sdpa", "eager")
_MAX_TABLES = 16  # count tables kept per model: a few schedules toggled by `measure` never rebuild theirs


@dataclass
class TiltState:
    """Everything elimination needs, in one typed place: `model._tiltbench`.

    The fields after `keep_all` describe the last forward only; they are not pickled with the model."""

    schedule: Schedule
    method: Method  # scores and selects; its knob sets `schedule` (set_knob), or set_schedule sets it directly
    original_class: type
    keep_all: bool = False  # every layer takes the eliminating path but keeps every token (measure's attribution)
    valids: list[Tensor] | None = None  # [B, width] validity after each layer of the last eliminating forward
    dense_input: tuple | None = None  # (HF mask, batch, length, device) of the last forward that eliminated nothing
    kept: Tensor | None = None  # realised [B, L+1] counts, derived from `valids` or `dense_input` on demand
    # Set by whoever needs every layer's kept word vectors (finetune --distill-hidden under elimination), which HF's
    # output_hidden_states cannot give once widths differ: each eliminating forward then leaves in `states` the
    # (hidden [B, width, h], original positions [B, width]) of its input and of every layer, beside `valids`.
    record_states: bool = False
    states: list[tuple[Tensor, Tensor]] | None = None
    # Set by finetune --distill-ranking: each eliminating forward then leaves in `scores` (layer index, scores [B,w]
    # before selection, with their autograd graph; input positions [B,w]; validity [B,w]) of every layer that
    # scored its tokens, so a ranking loss can teach those scores.
    record_scores: bool = False
    scores: list[tuple[int, Tensor, Tensor, Tensor]] | None = None
    _tables: dict[tuple[Schedule, torch.device], Tensor] = field(default_factory=dict)

    @property
    def eliminating(self) -> bool:
        """False when the model runs HF's own encoder forward (nothing leaves, keep-all and soft stages off)."""
        return self.keep_all or self.method.soft or not self.schedule.is_identity

    @property
    def scorer_name(self) -> str:
        return self.method.scorer_name

    @property
    def widths(self) -> list[int]:
        """Tensor width (tokens, filler included) after each layer of the last forward."""
        realised_counts_of(self)
        return [v.shape[1] for v in self.valids or ()]

    def counts_for(self, n0: Tensor) -> Tensor:
        """Planned per-example counts [B, L+1] for real lengths n0 [B], from a lookup table built once."""
        key = (self.schedule, n0.device)
        table = self._tables.get(key)
        longest = int(n0.max())
        if table is None or longest >= table.shape[0]:
            if len(self._tables) >= _MAX_TABLES:
                self._tables.clear()
            rows = [self.schedule.counts(n) for n in range(max(longest + 1, 513))]
            table = self._tables[key] = torch.tensor(rows, dtype=torch.long, device=n0.device)
        return table[n0]

    def __getstate__(self) -> dict:
        # The last forward's tensors and the count tables are caches: a pickled or deep-copied model starts clean.
        cleared = {"valids": None, "dense_input": None, "kept": None, "states": None, "scores": None, "_tables": {}}
        return {**self.__dict__, **cleared}


def _right_padded_validity(mask: Tensor | None, hidden: Tensor) -> Tensor:
    """[B,n] key validity of the encoder's mask; UserError unless every row is its real tokens, then padding.

    Why refuse left padding rather than reorder it: BERT-family heads read [CLS] at index 0 and BERT's position
    ids count from index 0, so a left-padded row is wrong in HF's own dense model too. The check costs one
    [B,n] comparison and one host sync per forward, on the tilt-0 path too (microseconds on a forward of
    milliseconds)."""
    valid = key_valid_from_hf_mask(mask, hidden.shape[0], hidden.shape[1], hidden.device)
    if mask is not None and bool((valid[:, 1:] > valid[:, :-1]).any()):
        raise UserError(LEFT_PADDED)
    return valid


LEFT_PADDED = (
    "the attention mask is not right-padded (a real token follows padding); BERT-family classifiers read "
    "[CLS] at index 0: tokenize with padding_side='right'"
)


def host_lengths(valid: Tensor, checked: bool = True) -> Tensor:
    """Each row's real tokens [B] on the host, and the right-padding check, in one device-to-host copy: the one
    host sync of a planned eliminating forward. Every later per-layer decision (which layers drop, how wide each
    gather is, where attention chunks) is read from these host counts, so on a GPU the layer loop queues kernels
    without waiting for them (methods.md §8.5; [scale])."""
    lengths = valid.sum(1)
    if checked and valid.device.type == "cpu":  # already on the host: two small ops, no copy
        if bool((valid[:, 1:] > valid[:, :-1]).any()):
            raise UserError(LEFT_PADDED)
        return lengths
    if checked:
        left_padded = (valid[:, 1:] > valid[:, :-1]).any(1).to(lengths.dtype)
        both = torch.stack([lengths, left_padded]).cpu()
        if bool(both[1].any()):
            raise UserError(LEFT_PADDED)
        return both[0]
    return lengths.cpu()


def _refuse_per_layer_outputs(encoder: nn.Module, kwargs: dict) -> None:
    """Per-layer hidden states and attentions have a different width in every layer once tokens leave: HF's
    collectors would return empty or misleading tuples, so asking for them under elimination is refused."""
    for flag in ("output_hidden_states", "output_attentions"):
        asked = kwargs.get(flag)
        if asked if asked is not None else getattr(encoder.config, flag, False):  # the call overrides the config
            raise UserError(
                f"{flag}=True is not available while tokens are eliminated (every layer has a different width); "
                "drop the flag, or set the tilt rate to 0 (HF's own forward)"
            )


def _eliminating_forward(encoder: nn.Module, hidden: Tensor, mask: Tensor | None) -> Tensor:
    """The one layer loop, for every method: attention on n_{l-1} tokens, the method's scores, its counts (or, in a
    soft stage, its weights), gather, FFN on n_l tokens (methods.md §3.2 placement).

    Counts are per example. A planned schedule gives them up front: one host sync per forward (`host_lengths`)
    says which layers drop and how wide every gather is. An adaptive one (gates, ltp) has the method's `select`
    decide them from the content at every layer, one sync per pruning layer. Either way a batch is as wide as its
    longest kept row, and the filler slots of shorter rows are masked."""
    state: TiltState = encoder._tiltbench
    method = state.method
    impl = encoder.config._attn_implementation
    valid = key_valid_from_hf_mask(mask, hidden.shape[0], hidden.shape[1], hidden.device)  # [B,n]
    real = host_lengths(valid, checked=mask is not None)  # [B] on the host: the forward's one sync
    layers = len(encoder.layer)
    adaptive = state.schedule.adaptive and not (state.keep_all or method.soft)
    counts: Tensor | None = None  # planned [B,L+1] on the device, and on the host
    host_counts: Tensor | None = None
    if state.keep_all:  # the method's own path with nothing removed: where it would run HF's layer, so does this
        host_counts = real[:, None].expand(-1, layers + 1)
        drops = [method.prunes(i) and not method.decides_before_attention for i in range(layers)]
    elif method.soft:  # every layer that may prune takes the soft path (LTP's layer 0 never prunes)
        host_counts = real[:, None].expand(-1, layers + 1)
        drops = [method.prunes(i) for i in range(layers)]
    elif adaptive:
        drops = [method.prunes(i) for i in range(layers)]  # decided per layer, from the content
    else:
        host_counts = state.counts_for(real)  # planned [B,L+1], from the host table
        drops = (host_counts[:, 1:] != host_counts[:, :-1]).any(0).tolist()
    plan: list[list[int]] | None = None  # [L+1][B] as Python ints: per-layer bookkeeping costs no tensor ops
    if host_counts is not None:
        counts = host_counts.to(hidden.device, non_blocking=True)
        plan = host_counts.T.tolist()
    lengths: list[int] = real.tolist()  # each row's real tokens now
    if method.soft and method.decides_before_attention:
        hidden = _soft_input_gated(encoder, hidden, valid)
        state.valids, state.dense_input, state.kept, state.states = [valid] * (layers + 1), None, None, None
        state.scores = None
        return hidden
    valids = [valid]
    # where each row's word vectors came from (indices into the input), followed through every gather
    follow = state.record_states or state.record_scores
    positions = torch.arange(valid.shape[1], device=hidden.device).expand_as(valid) if follow else None
    states = [(hidden, positions)] if state.record_states else None
    scored: list[tuple[int, Tensor, Tensor, Tensor]] | None = [] if state.record_scores else None
    # the fast path below: counts known on the host (planned or keep-all), no autograd (it scores in place)
    fast = plan is not None and not method.soft and not torch.is_grad_enabled() and scored is None
    unpadded_scorer = method.scores_without_valid
    received_scorer = method.received_scorer if not method.soft else None
    # Inference computes the Linear layers of a padded batch on its real slots alone (eliminate.per_token); training
    # keeps HF's padded layout (what autograd and the soft stages were checked with).
    pack = not torch.is_grad_enabled()
    rows = _real_rows(lengths, hidden, pack)  # the real slots entering each layer; each gather renews them
    for i, layer in enumerate(encoder.layer):
        width = valid.shape[1]
        everyone = min(lengths, default=width) == width  # no row has padding (known on the host)
        if not drops[i]:  # nothing leaves here: HF's own layer, its attention
            hidden = dense_layer(layer, hidden, hf_mask(valid, impl, hidden.dtype, everyone), rows)
        elif method.soft:  # weights, not removal: every token stays (PoWER's Soft-Extract, LTP's soft mask)
            attended, scores = attention_with_scores(layer, hidden, valid, method.score, lengths, unpadded_scorer)
            if scored is not None:
                scored.append((i, scores, positions, valid))
            weights = method.soft_weights(i, scores, valid)[:, :, None]
            if method.soft_after_ffn:
                hidden = layer.output(layer.intermediate(attended), attended) * weights
            else:
                attended = attended * weights
                hidden = layer.output(layer.intermediate(attended), attended)
        elif adaptive and method.decides_before_attention:
            # Scored from the layer's input, so the decision comes before the layer: HF's own attention (no
            # probabilities needed), and HF's own layer where the whole batch keeps everything.
            scores = method.input_scores(i, hidden, valid)
            n_out = method.select(LayerView(i, hidden, valid, None, state.schedule.knob), scores)
            kept = n_out.tolist()  # content decides the counts: one sync per pruning layer
            if all(k >= n for k, n in zip(kept, lengths, strict=True)):
                hidden = dense_layer(layer, hidden, hf_mask(valid, impl, hidden.dtype, everyone), rows)
            else:
                attended = layer.attention(hidden, hf_mask(valid, impl, hidden.dtype, everyone))[0]
                idx, valid = keep_indices(scores, valid, n_out, max(kept))
                attended = gather_tokens(attended, idx)  # [B,n_l,h]
                positions = None if positions is None else positions.gather(1, idx)
                lengths = [min(k, n) for k, n in zip(kept, lengths, strict=True)]  # what the gather kept
                rows = _real_rows(lengths, attended, pack)
                hidden = feed_forward(layer, attended, rows)
        elif fast and everyone and len(set(plan[i + 1])) == 1:
            # Inference, a planned method, no padding and one count for every row (always at batch 1): the
            # counts are the plan, so no select and no per-row masks; top_tokens keeps the k best in order.
            attended, scores = attention_with_scores(
                layer, hidden, valid, method.score, lengths, unpadded_scorer, received_scorer
            )
            k = plan[i + 1][0]
            idx = top_tokens(scores, k)
            attended = gather_tokens(attended, idx)  # [B,k,h]
            positions = None if positions is None else positions.gather(1, idx)
            valid, lengths = valid.narrow(1, 0, k), [k] * len(lengths)  # every slot still real
            hidden = layer.output(layer.intermediate(attended), attended)
        else:
            attended, scores = attention_with_scores(
                layer, hidden, valid, method.score, lengths, unpadded_scorer, received_scorer, rows
            )
            if scored is not None:
                scored.append((i, scores, positions, valid))
            if state.keep_all:
                n_out, kept = counts[:, i + 1], plan[i + 1]
            else:
                planned = None if counts is None else counts[:, i + 1]
                n_out = method.select(LayerView(i, attended, valid, planned, state.schedule.knob), scores)
                kept = n_out.tolist() if adaptive else plan[i + 1]  # adaptive: one sync per pruning layer
            if not adaptive or any(k < n for k, n in zip(kept, lengths, strict=True)):  # adaptive: no gather when
                idx, valid = keep_indices(scores, valid, n_out, max(kept, default=0))  # every row keeps all
                attended = gather_tokens(attended, idx)  # [B,n_l,h]
                positions = None if positions is None else positions.gather(1, idx)
                lengths = [min(k, n) for k, n in zip(kept, lengths, strict=True)]  # what the gather kept
                rows = _real_rows(lengths, attended, pack)
            hidden = feed_forward(layer, attended, rows)
        valids.append(valid)  # what the gather kept: realised counts come from these, not from the plan
        if states is not None:
            states.append((hidden, positions))
    state.valids, state.dense_input, state.kept, state.states, state.scores = valids, None, None, states, scored
    return hidden


def _real_rows(lengths: list[int], hidden: Tensor, pack: bool) -> Tensor | None:
    """packed_rows of a [B, width, h] batch whose rows hold `lengths` real tokens; None when not packing or when
    no row has padding (the padded layout then is the packed one)."""
    width = hidden.shape[1]
    return packed_rows(lengths, width, hidden.device) if pack and min(lengths, default=width) < width else None


def feed_forward(layer: nn.Module, attended: Tensor, rows: Tensor | None = None) -> Tensor:
    """A BertLayer's FFN sub-layer (intermediate, then output with its residual and LayerNorm) on the attention
    sub-layer's output; on the real slots alone when `rows` (eliminate.packed_rows) is given."""
    return per_token(lambda x: layer.output(layer.intermediate(x), x), rows, attended)


def dense_layer(layer: nn.Module, hidden: Tensor, mask: Tensor | None, rows: Tensor | None = None) -> Tensor:
    """A layer where nothing leaves: HF's own BertLayer maths, called through its sub-modules (attention, then FFN).

    Why not `layer(hidden, mask)`: BertLayer.forward runs its FFN through transformers' `apply_chunking_to_forward`,
    which calls `inspect.signature` on every call (about 64 us a layer on this CPU: 8 % of the 4.6 ms fp32 forward
    of a 14-token sentence over six layers) to support feed-forward chunking, which is off by default. Eliminating
    layers already call `output(intermediate(.))` directly; this gives the layers that keep every token the same
    saving. HF's dense model keeps paying it, and `measure` times that model as the baseline (README, batch 1).
    The layer's own call runs wherever the two could differ (`_plain_bert_layer`): a hook on a layer that keeps
    its tokens fires as it would in HF's model. `rows`: the FFN runs on the batch's real slots alone (its attention
    stays HF's, over the padded width); a hook on a sub-module (intermediate, output) then sees [T, h], not
    [B, n, h]."""
    if not _plain_bert_layer(layer):
        return layer(hidden, mask)
    attended = layer.attention(hidden, mask)[0]
    return feed_forward(layer, attended, rows)


_PLAIN_LAYOUT = frozenset({"attention", "intermediate", "output"})  # a layer's children (find_encoder checks it)


def _plain_bert_layer(layer: nn.Module) -> bool:
    """True when calling the layer's three sub-modules is exactly its own call. `find_encoder` has already refused
    layers with other children (MegatronBERT's and ESM's pre-FFN LayerNorm) and decoders; what is left to check per
    call: FFN chunking, gradient checkpointing in training, any hook `Module.__call__` would run (torch's own
    condition in `_call_impl`, global hooks included) and a per-instance `forward` (accelerate's offloading)."""
    module = nn.modules.module
    hooked = (
        layer._forward_hooks,
        layer._forward_pre_hooks,
        layer._backward_hooks,
        layer._backward_pre_hooks,
        module._global_forward_hooks,
        module._global_forward_pre_hooks,
        module._global_backward_hooks,
        module._global_backward_pre_hooks,
    )
    return not (
        getattr(layer, "chunk_size_feed_forward", 0)
        or (layer.training and getattr(layer, "gradient_checkpointing", False))
        or any(hooked)
        or "forward" in layer.__dict__
    )


def _soft_input_gated(encoder: nn.Module, hidden: Tensor, valid: Tensor) -> Tensor:
    """Soft stage of a method that decides before attention (gates): every token stays, and each layer's keep
    probabilities g enter the attention of every *later* layer as log g added to the keys' logits.

    Why this relaxation: hard removal after layer l's attention means a token is absent, as a key, from layer
    l+1 on. exp(log g) multiplies its unnormalised attention weight by g, so g = 1 is exactly keeping it and g -> 0
    exactly removing it; in between it is weighted by g. Probabilities multiply across layers, as removal
    cascades (a token removed once never returns)."""
    method = encoder._tiltbench.method
    log_keep = torch.zeros_like(valid, dtype=hidden.dtype)  # [B,n] log of the probability a token is still here
    pad_bias = additive_mask(valid, hidden.dtype)[:, 0, 0, :]  # [B,n] 0 real, dtype min for padding
    for i, layer in enumerate(encoder.layer):
        bias = (pad_bias + log_keep)[:, None, None, :]  # a float mask: HF's eager and sdpa attention add it
        keep = method.soft_weights(i, method.input_scores(i, hidden, valid), valid)  # [B,n] in (0,1]
        hidden = dense_layer(layer, hidden, bias)
        log_keep = log_keep + torch.log(keep.clamp_min(1e-6))
    return hidden


def _rebuild_encoder(base: type) -> nn.Module:
    """Unpickling: an empty instance of the patched class; pickle then restores its __dict__."""
    cls = _tilted_class(base)
    return cls.__new__(cls)


_CLASS_CACHE: dict[type, type] = {}


def _tilted_class(base: type) -> type:
    if base not in _CLASS_CACHE:

        class TiltedEncoder(base):  # type: ignore[misc, valid-type]
            """Modifications (tiltbench):
            - when the schedule drops tokens (or keep-all is on), runs its own layer loop over the untouched HF
              layers, gathering the top-ACC word vectors between each layer's attention and FFN sub-layers;
            - last_hidden_state is then [B, n_L, h], not [B, N, h]; [CLS] stays at index 0 for the pooler;
            - with tau = 0 it is HF's forward, unchanged;
            - left-padded masks are refused, and so are per-layer outputs under elimination.
            """

            def forward(self, hidden_states, attention_mask=None, *args, **kwargs):  # noqa: ANN001
                state: TiltState = self._tiltbench
                if not state.eliminating:  # HF's forward; counts are derived only if someone asks
                    B, n, _ = hidden_states.shape
                    _right_padded_validity(attention_mask, hidden_states)
                    state.valids, state.kept, state.states, state.scores = None, None, None, None
                    state.dense_input = (attention_mask, B, n, hidden_states.device)
                    return super().forward(hidden_states, attention_mask, *args, **kwargs)
                _refuse_per_layer_outputs(self, kwargs)
                hidden = _eliminating_forward(self, hidden_states, attention_mask)
                return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden)

            def __reduce_ex__(self, protocol):  # noqa: ANN001
                # The class is made at run time, so pickle cannot find it by name: rebuild it from the base class.
                return (_rebuild_encoder, (self._tiltbench.original_class,), self.__dict__.copy())

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
    if getattr(encoder.config, "is_decoder", False):  # (a cross-attention layer is a decoder's)
        raise UserError("token elimination needs a bidirectional encoder; this model is a decoder")
    extra = sorted(set(layers[0]._modules) - _PLAIN_LAYOUT)
    if extra:  # e.g. MegatronBERT's and ESM's LayerNorm before the FFN: the layer loop would skip it
        raise UserError(
            f"{type(model).__name__}'s layers hold {', '.join(extra)} besides attention, intermediate and output; "
            "the eliminating layer calls those three only, so it cannot eliminate tokens in this model"
        )
    return encoder


def patch(
    model: nn.Module,
    tilt_rate: float | str | Sequence[int] | Schedule | None = None,
    *,
    shape: Shape = "geometric",
    min_tokens: int = 1,
    scorer: str | None = None,
    method: str | Method = "tilted",
    knob: float | None = None,
) -> nn.Module:
    """Patch a loaded HF model in place so its forward eliminates word vectors; returns the model.

    `method` is a registered name (tilted, power, ...) or a `Method` instance (which then brings its own scorer
    and minimum tokens). The model starts at the method's `knob` (default: its dense value), or at an explicit
    `tilt_rate`: every form `parse_schedule` accepts (a float in [0, 1), "0.2:linear", a list of per-layer
    counts, or a `Schedule`). `scorer` is one of `SCORERS` (acc, acc-nodiag, acc-norm; default: the method's).
    Raises UserError on a non-BERT layout, an unsupported attention implementation or a second patch.
    """
    encoder = find_encoder(model)
    if hasattr(encoder, "_tiltbench"):
        raise UserError("this model is already patched; call tiltbench.set_schedule to change the schedule")
    impl = encoder.config._attn_implementation
    if impl not in SUPPORTED_ATTENTION:
        raise UserError(f"attention implementation {impl!r} is not supported; load with 'sdpa' or 'eager'")
    layers = len(encoder.layer)
    if isinstance(method, str):
        options = {}
        if method == "tilted":  # TiltedBERT's knob follows the schedule's shape (a keep list stays a list)
            planned = (
                parse_schedule(layers, tilt_rate, shape=shape, min_tokens=min_tokens) if tilt_rate is not None else None
            )
            if planned is not None and planned.shape in ("geometric", "linear", "list"):
                options = {"shape": planned.shape, "keep": planned.keep}
            else:  # no schedule yet, or one of another method's shapes: a Tilt-Rate knob of the given shape
                options = {"shape": shape}
        method = get_method(method).for_encoder(layers, encoder.config, scorer=scorer, min_tokens=min_tokens, **options)
    elif scorer is not None and scorer != method.scorer_name:
        raise UserError(f"scorer {scorer!r} conflicts with the method's own {method.scorer_name!r}")
    if method.num_layers != layers:
        raise UserError(f"the method was built for {method.num_layers} layers; this encoder has {layers}")
    method.check_encoder(encoder.config)
    state = TiltState(Schedule(layers), method, type(encoder))
    encoder.__class__ = _tilted_class(type(encoder))
    encoder._tiltbench = state
    model._tiltbench = state
    if tilt_rate is not None:
        set_schedule(model, tilt_rate, shape=shape, min_tokens=min_tokens)
    else:
        set_knob(model, method.dense_knob if knob is None else knob)
    return model


def set_knob(model: nn.Module, knob: float, *, keep_all: bool = False) -> Schedule:
    """Move a patched model along its method's knob (tilt rate for tilted, retention scale for power)."""
    state = _state(model)
    return set_schedule(model, state.method.schedule(float(knob)), keep_all=keep_all)


def method_of(model: nn.Module) -> Method:
    """The method a patched model runs."""
    return _state(model).method


def set_schedule(
    model: nn.Module,
    tilt_rate: float | str | Sequence[int] | Schedule,
    *,
    shape: Shape = "geometric",
    min_tokens: int = 1,
    scorer: str | None = None,
    keep_all: bool = False,
) -> Schedule:
    """Re-target a patched model (offline-tuning): new schedule, optionally a new scorer. No reload.

    `keep_all=True` (tilt rate 0 only) runs every layer through the eliminating path (explicit attention over
    real tokens only, scoring, gather) while keeping every token: `measure` times it to split a speedup into
    the part from skipping padding and the part from removed tokens."""
    state = _state(model)
    schedule = parse_schedule(len(find_encoder(model).layer), tilt_rate, shape=shape, min_tokens=min_tokens)
    if keep_all and not schedule.is_identity:
        raise UserError(f"keep-all keeps every token; it goes with tilt rate 0, not {schedule.describe()}")
    if not schedule.is_identity and schedule.adaptive != state.method.adaptive:
        kind = "decides each input's counts itself" if state.method.adaptive else "plans its counts"
        raise UserError(
            f"method {state.method.name!r} {kind}: {schedule.describe()} does not fit it; "
            f"move its {state.method.knob_name.replace('_', ' ')} with set_knob"
        )
    if schedule != state.schedule:
        state.schedule = schedule
    if not schedule.adaptive:
        # Build the table now, so the next (perhaps timed) forward does not. It lives on the host, where the
        # forward reads its counts (host_lengths).
        state.counts_for(torch.ones(1, dtype=torch.long))
    state.keep_all = keep_all
    if scorer is not None and scorer != state.method.scorer_name:
        if not state.method.uses_scorer:
            raise UserError(f"method {state.method.name!r} does not rank by a scorer; --scorer does not apply")
        state.method = type(state.method).from_config(
            state.method.num_layers, state.method.config(), scorer=scorer, min_tokens=state.method.min_tokens
        )
    return state.schedule


def unpatch(model: nn.Module) -> nn.Module:
    """Restore the original encoder class; the model is plain HF again."""
    state = _state(model)
    encoder = find_encoder(model)
    encoder.__class__ = state.original_class
    del encoder._tiltbench, model._tiltbench
    return model


def realised_counts(model: nn.Module) -> Tensor:
    """[B, L+1] real tokens each example had after each layer in the last forward ([:, 0] = real input length).

    Read from the validity of what each gather kept, not from the schedule, so a method whose counts depend on
    the data reports what it did."""
    counts = realised_counts_of(_state(model))
    if counts is None:
        raise UserError("no forward pass has run since the model was patched")
    return counts


def realised_counts_of(state: TiltState) -> Tensor | None:
    if state.kept is None and state.dense_input is not None:  # nothing eliminated: every layer kept n0
        valid = key_valid_from_hf_mask(*state.dense_input)
        state.valids = [valid] * (state.schedule.num_layers + 1)
        state.kept = valid.sum(1)[:, None].expand(-1, state.schedule.num_layers + 1)
    elif state.kept is None and state.valids is not None:
        state.kept = torch.stack([v.sum(1) for v in state.valids], 1)
    return state.kept


def is_patched(model: nn.Module) -> bool:
    return hasattr(model, "_tiltbench")


def _state(model: nn.Module) -> TiltState:
    state = getattr(find_encoder(model), "_tiltbench", None)
    if state is None:
        raise UserError("this model is not patched; call tiltbench.patch(model, ...) first")
    return state

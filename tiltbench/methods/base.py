"""The method interface: what an elimination method decides, and nothing else.

A method is a small `nn.Module`. `patch.py` owns the one layer loop and the shared core (attention with
probabilities, gather); at each eliminating layer it asks the method four things:

    schedule(knob)         the per-example counts as a function of n0 (a `Schedule`). A data-dependent method
                           (gates, ltp) returns an *adaptive* schedule that only records the knob: the loop then
                           asks `select` for each example's count at every layer
    score(probs, valid, values)
                           importance of every token [B,n]. `probs` [B,H,n,n] (pre-dropout) is a reused buffer:
                           it holds one chunk of rows and is valid only during this call (keep nothing from it)
    input_scores(layer, hidden, valid)
                           for a method that decides from the layer's *input* (`decides_before_attention`, gates):
                           importance [B,n] from the hidden states; the layer then runs HF's own attention (no
                           probabilities needed), and a layer where the whole batch keeps everything runs HF's
                           own layer
    select(view, scores)   a hard keep count per example [B] (default: the planned count)
    prunes(layer)          False for a layer that never removes a token (LTP's layer 0): HF's own layer runs
    soft_weights(layer, scores, valid)
                           while `soft` is on (a training stage): weights [B,n] that multiply the attention
                           output (or the layer output, `soft_after_ffn`) instead of removing tokens; for a
                           method that decides before attention, keep probabilities whose logs bias the
                           attention of every later layer (no gather, nothing leaves)
    regulariser()          a loss term finetune adds (None: nothing)
    metrics()              figures about the last evaluation (e.g. the gates' bi-modality share)

and one knob: the single axis offline-tune, measure and sweep move (`knob_name`, a float, `dense_knob` =
nothing removed, where the model runs HF's own forward). Trainable parameters live on the method, not on the HF
model, so a checkpoint stays a plain HF folder that loads as a dense model; `finetune` saves them beside it
(`method.safetensors`) and their derived settings (e.g. learned fractions) in `tiltbench.json`.

A new method is one file in this folder with a `@register` class; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from tiltbench.eliminate import RECEIVED_SCORERS, SCORERS, ReceivedScorer, Scorer
from tiltbench.errors import UserError
from tiltbench.schedule import Schedule

METHODS: dict[str, type[Method]] = {}


@dataclass(frozen=True)
class TrainStage:
    """One stage of a method's training recipe; finetune runs them in order on one progress bar."""

    name: str
    epochs: int
    knob: float | None = None  # hard elimination at this knob (None: the method's dense knob)
    soft: bool = False  # the method's soft weights instead of removal
    regulariser_weight: float = 0.0  # weight of method.regulariser() in the loss
    method_lr: float | None = None  # learning rate of the method's own parameters (None: frozen)
    # [eel] hidden-state alignment (finetune --hash-align-epochs): no labels, no elimination, every layer's hidden
    # states taught towards the table model's; not evaluated. Prepended by finetune, never a method's own stage.
    align: bool = False
    lr: float | None = None  # the stage's learning rate (None: --lr)


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by `cls.name` to every command (`--method NAME`)."""
    if not getattr(cls, "name", None) or not getattr(cls, "knob_name", None):
        raise TypeError(f"{cls.__name__} needs class attributes `name` and `knob_name`")
    METHODS[cls.name] = cls
    return cls


@dataclass
class LayerView:
    """What `select` sees at one eliminating layer (shapes: B rows, n tokens now, h hidden)."""

    index: int  # 0-based layer
    attended: Tensor  # [B,n,h] attention sub-layer output (after residual + LayerNorm), before the FFN
    valid: Tensor  # [B,n] bool, right-padded: which slots are real tokens
    planned: Tensor | None  # [B] the schedule's count for this layer's output, None when the method plans none
    knob: float | None = None  # the adaptive schedule's knob (the method's threshold), None for a planned schedule


class Method(nn.Module):
    name: ClassVar[str]
    knob_name: ClassVar[str]  # what the knob is called in tables and rows, e.g. "tilt_rate"
    knob_help: ClassVar[str] = ""
    dense_knob: ClassVar[float] = 0.0  # the knob value that removes nothing
    default_grid: ClassVar[str] = "0:0.5:0.1"  # what offline-tune / measure / sweep try when not told
    default_scorer: ClassVar[str] = "acc"
    uses_scorer: ClassVar[bool] = True  # ranks by one of SCORERS (False: its own score; --scorer is refused)
    needs_weights: ClassVar[bool] = False  # its parameters decide at inference: loaded from method.safetensors
    adaptive: ClassVar[bool] = False  # counts depend on the content: `schedule` returns an adaptive schedule
    decides_before_attention: ClassVar[bool] = False  # scores come from `input_scores`, not attention probabilities
    soft_after_ffn: ClassVar[bool] = False  # soft weights multiply the layer output (LTP), not the attention output

    def __init__(self, num_layers: int, *, scorer: str | None = None, min_tokens: int = 1) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.min_tokens = min_tokens
        self.scorer_name = scorer or self.default_scorer
        if self.scorer_name not in SCORERS:
            raise UserError(f"unknown scorer {self.scorer_name!r}; choose from {', '.join(SCORERS)}")
        self.scorer: Scorer = SCORERS[self.scorer_name]
        self.soft = False  # a soft training stage: weights instead of removal
        self.collect_metrics = False  # accumulate `metrics` during inference forwards (finetune's last evaluation)
        self.stage_progress = 1.0  # share of the current training stage done, set by finetune before every step

    # -- the knob -------------------------------------------------------------------------------------------
    def schedule(self, knob: float) -> Schedule:
        """Per-example counts at this knob value, or an adaptive schedule (UserError when out of range)."""
        raise NotImplementedError

    def knob_range(self) -> tuple[float, float]:
        """The knob's usable interval, dense end first (speedup-predict solves a target speedup on it)."""
        return (self.dense_knob, 0.9999)

    # -- per layer ------------------------------------------------------------------------------------------
    def score(self, probs: Tensor, valid: Tensor, values: Tensor) -> Tensor:
        return self.scorer(probs, valid, values)

    @property
    def scores_without_valid(self) -> bool:
        """Whether `score` takes valid=None for "every slot is real" (the built-in scorers do; a batch with no
        padding then skips the masking of pad queries). A method that overrides `score` says so itself."""
        return type(self).score is Method.score

    @property
    def received_scorer(self) -> ReceivedScorer | None:
        """`score` computed from the fused kernel's received attention (eliminate.RECEIVED_SCORERS); None for a
        method that overrides `score` and not this: it then always sees the probabilities (the unfused path)."""
        return RECEIVED_SCORERS[self.scorer_name] if type(self).score is Method.score else None

    def select(self, view: LayerView, scores: Tensor) -> Tensor:
        if view.planned is None:
            raise NotImplementedError(f"method {self.name!r} plans no counts, so it must implement select()")
        return view.planned

    def input_scores(self, layer: int, hidden: Tensor, valid: Tensor) -> Tensor:
        raise NotImplementedError(f"method {self.name!r} scores tokens from attention, not from the layer input")

    def prunes(self, layer: int) -> bool:
        return True

    def soft_weights(self, layer: int, scores: Tensor, valid: Tensor) -> Tensor:
        raise NotImplementedError(f"method {self.name!r} has no soft stage")

    def metrics(self) -> dict[str, float]:
        """Figures about the forwards since `reset_metrics` (e.g. gate statistics); {} when the method has none."""
        return {}

    def reset_metrics(self) -> None:
        """Forget what `metrics` accumulated."""

    # -- training -------------------------------------------------------------------------------------------
    @classmethod
    def for_training(cls, num_layers: int, cfg, model_config) -> Method:  # noqa: ANN001 (TrainConfig, HF config)
        """The untrained method finetune starts from (its options from the training config and the model)."""
        return cls(num_layers, scorer=cfg.scorer, min_tokens=cfg.min_tokens)

    def stages(self, cfg) -> list[TrainStage]:  # noqa: ANN001 (a finetune.TrainConfig)
        """The training recipe. Default: one stage, elimination on at the requested knob (TiltedBERT's)."""
        return [TrainStage("fine-tune", cfg.epochs, knob=cfg.knob)]

    def end_stage(self, stage: TrainStage) -> None:
        """Called after each stage (e.g. to read a configuration off the parameters it trained)."""

    def regulariser(self) -> Tensor | None:
        return None

    def after_step(self) -> None:
        """Called after every optimiser step (e.g. to clip parameters back into their range)."""

    # -- records --------------------------------------------------------------------------------------------
    def config(self) -> dict:
        """The method's own settings for tiltbench.json (beyond scorer and schedule)."""
        return {}

    @classmethod
    def for_encoder(cls, num_layers: int, model_config, **options) -> Method:  # noqa: ANN001 (an HF config)
        """An untrained method for `patch(model, method=NAME)`: sized by the encoder where it needs to be."""
        return cls(num_layers, **options)

    def check_encoder(self, model_config) -> None:  # noqa: ANN001
        """UserError when the method's own parameters do not fit this encoder (e.g. another hidden size)."""

    @classmethod
    def from_config(cls, num_layers: int, config: dict, *, scorer: str | None = None, min_tokens: int = 1) -> Method:
        return cls(num_layers, scorer=scorer, min_tokens=min_tokens)


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name]

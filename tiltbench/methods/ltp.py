"""LTP: Learned Token Pruning (Kim et al., KDD 2022; reference code kssteven418/LTP; ../shared/methods.md §6).

What follows the reference (`prune_modules.py::AbsoluteThresholdTokenPruner`, `modeling_ltp.py::LTPLayer`):
- Score of token i in layer l: the attention it receives, averaged over heads and over the real query rows, with
  the *padded* length N as divisor: s_l(i) = (1 / (H N)) Σ_h Σ_{j real} A_h[j, i]. Our N is the checkpoint's
  maximum sequence length (recorded in the method's config), never the batch's width: a batch padded to its
  longest row would otherwise change every score, and an example's logits would depend on its neighbours. The
  reference pads to the maximum length, so the two agree there (methods.md §6.4: keep N fixed between training
  and deployment; it is).
- Threshold of layer l (0-based): θ_l = θ_final · l / L + Δθ_l; layer 0 never prunes (its threshold is 0: HF's
  own layer runs). We learn Δθ_l = θ_final · δ_l with δ_l starting at 0: δ trains in units of the final
  threshold, so one learning rate serves SST-2 (N = 64) and IMDB (N = 512).
- Soft stage: the layer output (after its FFN) is multiplied by M_l(i) = σ((s_l(i) − θ_l) / T); nothing is
  removed. Loss = task loss + λ Σ_l mean_i M_l(i) (the reference's `trainer.py`; mean over the real tokens).
- Hard: a token with s_l(i) < max(1e-5, θ_l) leaves before layer l's FFN — physically (the reference only
  masks it). Placement as in the reference: layer l's attention sees the tokens that entered it, its FFN the
  kept ones.
- Recipe: (1) dense fine-tune (or `--init` a fine-tuned checkpoint), (2) soft thresholds with λ and T,
  (3) hard fine-tune with the thresholds frozen.

Ours:
- θ_final defaults to 1 / N: the score of a token under uniform attention in a full-length row, so a layer near
  the top prunes tokens that receive less than their share. The reference's RoBERTa default 0.01 at N = 128 is
  1.28 / N. T defaults to θ_final / 10, the reference's ratio (T = 1e-3 at θ_final = 0.01): a fixed T would be
  ten times softer at N = 512 than at N = 64.
- [CLS] is always kept (the reference has no explicit protection: methods.md §6.1); so are `min_tokens`.
- Offline knob: a scale k ≥ 0 on every threshold, θ_l(k) = k θ_l. k = 0 keeps every token (HF's own forward,
  no 1e-5 floor), 1 is as learned, > 1 removes more.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from tiltbench.eliminate import _received
from tiltbench.errors import UserError
from tiltbench.methods.base import LayerView, Method, TrainStage, register
from tiltbench.schedule import Schedule

FLOOR = 1e-5  # the reference's smallest hard threshold


@register
class LTP(Method):
    name = "ltp"
    knob_name = "threshold_scale"
    knob_help = "scale k >= 0 on the learned thresholds: layer l removes tokens scoring below k θ_l (1 = as learned)"
    default_scorer = "acc"  # recorded only: LTP's own normalised score is `score` below
    default_grid = "0,0.5,1,1.5,2"
    uses_scorer = False
    adaptive = True
    needs_weights = True
    soft_after_ffn = True

    def __init__(
        self,
        num_layers: int,
        *,
        scorer: str | None = None,
        min_tokens: int = 1,
        max_len: int = 128,
        final_threshold: float | None = None,
        temperature: float | None = None,
        offsets: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__(num_layers, scorer=scorer, min_tokens=min_tokens)
        if max_len < 1:
            raise UserError(f"LTP needs a maximum length >= 1, got {max_len}")
        if final_threshold is not None and not final_threshold > 0:
            raise UserError(f"--final-threshold must be positive, got {final_threshold}")
        if temperature is not None and not temperature > 0:
            raise UserError(f"--temperature must be positive, got {temperature}")
        self.max_len = max_len
        self.final_threshold = final_threshold if final_threshold is not None else 1.0 / max_len
        self.temperature = temperature if temperature is not None else self.final_threshold / 10
        # δ_l, trained in the soft stage only (θ_l = θ_final (l / L + δ_l)); layer 0's never gets a gradient
        self.offsets = nn.Parameter(torch.tensor(offsets, dtype=torch.float32) if offsets else torch.zeros(num_layers))
        self._soft_masks: list[tuple[Tensor, Tensor]] = []  # (M [B,n], real [B,n]) of the last soft forward
        self.soft_offsets: list[float] | None = None  # δ as the soft stage left them (the hard stage keeps them)

    # -- knob -----------------------------------------------------------------------------------------------
    def schedule(self, knob: float) -> Schedule:
        if not 0.0 <= knob < float("inf"):  # also NaN
            raise UserError(f"threshold scale must be finite and >= 0, got {knob}")
        if knob == 0.0:
            return Schedule(self.num_layers)  # no threshold: HF's own forward
        return Schedule(self.num_layers, shape="adaptive", min_tokens=self.min_tokens, knob=float(knob))

    def knob_range(self) -> tuple[float, float]:
        return (0.0, 4.0)

    def thresholds(self) -> Tensor:
        """[L] θ_l = θ_final (l / L + δ_l), 0-based l (layer 0: 0, it never prunes)."""
        depth = torch.arange(self.num_layers, dtype=self.offsets.dtype, device=self.offsets.device)
        theta = self.final_threshold * (depth / self.num_layers + self.offsets)
        return torch.cat([theta.new_zeros(1), theta[1:]])

    def prunes(self, layer: int) -> bool:
        return layer > 0

    # -- per layer ------------------------------------------------------------------------------------------
    scores_without_valid = True  # _received takes valid=None

    def score(self, probs: Tensor, valid: Tensor | None, values: Tensor) -> Tensor:
        """s(i) = Σ_h Σ_{j real} A_h[j, i] / (H N), N the recorded maximum length (see the module docstring)."""
        return _received(probs, valid).sum(1) / (probs.shape[1] * self.max_len)

    @property
    def received_scorer(self) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        """`score` from the fused kernel's received attention [B,H,n] (a batch without padding, inference)."""
        return lambda received, self_attention, values: received.sum(1) / (received.shape[1] * self.max_len)

    def select(self, view: LayerView, scores: Tensor) -> Tensor:
        scale = 1.0 if view.knob is None else view.knob
        # a tensor, not a float: reading it on the host would be one more GPU sync per layer
        threshold = (scale * self.thresholds()[view.index].detach()).clamp(min=FLOOR).to(scores.device, scores.dtype)
        others = view.valid.clone()
        others[:, 0] = False  # [CLS] is always kept
        kept = 1 + ((scores >= threshold) & others).sum(1)
        return torch.minimum(kept.clamp(min=self.min_tokens), view.valid.sum(1))

    def soft_weights(self, layer: int, scores: Tensor, valid: Tensor) -> Tensor:
        """[B,n] M = σ((s − θ_l) / T) on the layer output; 1 for [CLS] (always kept), 0 for padding."""
        theta = self.thresholds()[layer].to(device=scores.device, dtype=scores.dtype)
        mask = torch.sigmoid((scores - theta) / self.temperature) * valid
        if torch.is_grad_enabled():
            self._soft_masks.append((mask, valid))
        return torch.cat([torch.ones_like(mask[:, :1]), mask[:, 1:]], 1)

    # -- training recipe (methods.md §6.2) --------------------------------------------------------------------
    @classmethod
    def for_training(cls, num_layers: int, cfg, model_config) -> LTP:  # noqa: ANN001
        return cls(
            num_layers,
            scorer=cfg.scorer,
            min_tokens=cfg.min_tokens,
            max_len=cfg.data.max_seq_len,
            final_threshold=cfg.final_threshold,
            temperature=cfg.temperature,
        )

    def stages(self, cfg) -> list[TrainStage]:  # noqa: ANN001
        stages = [] if cfg.init else [TrainStage("fine-tune", cfg.epochs)]
        lr = cfg.method_lr if cfg.method_lr is not None else 2e-2
        stages.append(
            TrainStage("soft", cfg.search_epochs, soft=True, regulariser_weight=cfg.regulariser_weight, method_lr=lr)
        )
        stages.append(TrainStage("hard", cfg.retrain_epochs, knob=1.0))  # thresholds frozen (no method lr)
        return stages

    def end_stage(self, stage: TrainStage) -> None:
        if stage.soft:
            self.soft_offsets = [round(float(x), 6) for x in self.offsets.detach()]

    def regulariser(self) -> Tensor | None:
        """Σ_l mean over real tokens of M_l (pruning layers only), over the last soft forward."""
        if not self._soft_masks:
            return None
        total = sum((mask * real).sum() / real.sum().clamp(min=1) for mask, real in self._soft_masks)
        self._soft_masks = []
        return total

    def reset_metrics(self) -> None:
        self._soft_masks = []

    # -- records --------------------------------------------------------------------------------------------
    def config(self) -> dict:
        return {
            "max_len": self.max_len,
            "final_threshold": self.final_threshold,
            "temperature": self.temperature,
            "offsets": [round(float(x), 6) for x in self.offsets.detach()],
            "thresholds": [round(float(x), 8) for x in self.thresholds().detach()],
            **({"offsets_after_soft_stage": self.soft_offsets} if self.soft_offsets is not None else {}),
        }

    @classmethod
    def from_config(cls, num_layers: int, config: dict, *, scorer: str | None = None, min_tokens: int = 1) -> LTP:
        offsets = config.get("offsets")
        return cls(
            num_layers,
            scorer=scorer,
            min_tokens=min_tokens,
            max_len=int(config.get("max_len", 128)),
            final_threshold=config.get("final_threshold"),
            temperature=config.get("temperature"),
            offsets=tuple(float(x) for x in offsets) if offsets else None,
        )

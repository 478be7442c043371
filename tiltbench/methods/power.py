"""PoWER-BERT (Goyal et al., ICML 2020; reference code IBM/PoWER-BERT; ../shared/methods.md §3).

Significance = attention received minus self-attention (scorer `acc-nodiag`, §3.1). Three training stages
(finetune.py): (1) dense fine-tune, or `--init` an existing checkpoint; (2) configuration search with
Soft-Extract and the λ penalty; (3) re-training with hard extract at the learned counts (§3.4).

Our interpretations (the paper's and the code's positions index the padded length N; ours do not):
- Soft-Extract: layer l has `bins` retention parameters r_l ∈ [0, 1] (initialised to 1, clipped after every step,
  as the code does). A token whose significance rank is k among its example's n0 real tokens is multiplied by
  r_l[floor(k · bins / n0)]: the parameters index *rank as a fraction of the example's real length*, so padding
  never counts and one set of parameters serves every length. [CLS] has weight 1 (it is always kept).
- Mass: mass(r_l) = mean_k r_l[k], the share of each example the layer retains. The loss is
  task loss + λ · Σ_l l · mass(r_l) (l = 1..L, as the code's λ·j). Because our mass is a share, not a count over
  N positions, our λ ≈ the paper's λ × N (SST-2: 2e-4 × 64 ≈ 0.013).
- Configuration: f_l = mass(r_l), forced non-increasing (the code's monotone fix-up), and layer l keeps
  max(min_tokens, ceil(n0 · f_l)) tokens (the code floors a count over N; we ceil a share of n0).
- Knob (offline re-targeting without retraining): s scales the *removed* share, f_l(s) = 1 − s · (1 − f_l):
  s = 0 is dense (HF's own forward), s = 1 the learned configuration, s > 1 removes more.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tiltbench.errors import UserError
from tiltbench.methods.base import Method, TrainStage, register
from tiltbench.schedule import Schedule

MIN_FRACTION = 1e-4  # a layer never keeps a share below this (min_tokens still keeps [CLS])


@register
class Power(Method):
    name = "power"
    knob_name = "retention_scale"
    knob_help = "scale s >= 0 on the removed share: layer l keeps 1 - s (1 - f_l) of n0 (1 = as learned)"
    default_scorer = "acc-nodiag"
    default_grid = "0:1.5:0.25"

    def __init__(
        self,
        num_layers: int,
        *,
        scorer: str | None = None,
        min_tokens: int = 1,
        bins: int = 64,
        fractions: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__(num_layers, scorer=scorer, min_tokens=min_tokens)
        if bins < 1:
            raise UserError(f"--bins must be at least 1, got {bins}")
        self.bins = bins
        self.retention = nn.Parameter(torch.ones(num_layers, bins))  # r_l, trained in the search stage only
        self.fractions = tuple(fractions) if fractions is not None else None

    # -- knob -----------------------------------------------------------------------------------------------
    def schedule(self, knob: float) -> Schedule:
        if not knob >= 0:  # also NaN
            raise UserError(f"retention scale must be >= 0, got {knob}")
        if self.fractions is None or knob == 0:
            return Schedule(self.num_layers, 0.0, "geometric", None, self.min_tokens)  # nothing learned: dense
        shares = [min(1.0, max(MIN_FRACTION, 1.0 - knob * (1.0 - f))) for f in self.fractions]
        return Schedule(self.num_layers, 0.0, "fractions", None, self.min_tokens, tuple(shares))

    def knob_range(self) -> tuple[float, float]:
        """0 (dense) up to the scale where the layer that keeps least would keep nothing."""
        if not self.fractions:
            return (0.0, 0.0)
        return (0.0, round(1.0 / max(1e-6, 1.0 - min(self.fractions)), 4))

    # -- training recipe (methods.md §3.4) --------------------------------------------------------------------
    def stages(self, cfg) -> list[TrainStage]:  # noqa: ANN001
        stages = [] if cfg.init else [TrainStage("fine-tune", cfg.epochs)]  # 1: dense, unless --init reuses one
        search_lr = cfg.method_lr if cfg.method_lr is not None else 5e-3
        stages.append(
            TrainStage(
                "search", cfg.search_epochs, soft=True, regulariser_weight=cfg.regulariser_weight, method_lr=search_lr
            )
        )
        stages.append(TrainStage("retrain", cfg.retrain_epochs, knob=1.0))  # 3: hard extract at what was learned
        return stages

    def end_stage(self, stage: TrainStage) -> None:
        if stage.soft:
            self.learn_fractions()

    # -- soft stage -----------------------------------------------------------------------------------------
    def soft_weights(self, layer: int, scores: Tensor, valid: Tensor) -> Tensor:
        """[B,n] r_l at each token's significance rank, as a fraction of its example's real length."""
        ranked = scores.detach().masked_fill(~valid, float("-inf"))
        ranked[:, 0] = float("inf")  # [CLS] first
        rank = ranked.argsort(dim=1, descending=True).argsort(dim=1)  # [B,n] rank of each token
        n0 = valid.sum(1, keepdim=True).clamp(min=1)
        bins = torch.div(rank * self.bins, n0, rounding_mode="floor").clamp(max=self.bins - 1)
        # .to() keeps the gradient path; the parameters stay wherever the optimiser holds them
        weights = self.retention[layer].to(device=scores.device, dtype=scores.dtype)[bins] * valid
        return torch.cat([torch.ones_like(weights[:, :1]), weights[:, 1:]], 1)  # [CLS] is always kept

    def mass(self) -> Tensor:
        """[L] retained share of each layer: mean of its retention parameters."""
        return self.retention.mean(1)

    def regulariser(self) -> Tensor:
        depth = torch.arange(1, self.num_layers + 1, dtype=self.retention.dtype, device=self.retention.device)
        return (depth * self.mass()).sum()

    def after_step(self) -> None:
        with torch.no_grad():
            self.retention.clamp_(0.0, 1.0)

    def learn_fractions(self) -> tuple[float, ...]:
        """The configuration read off the search stage: masses, forced non-increasing (methods.md §3.3)."""
        shares, previous = [], 1.0
        for f in self.mass().tolist():
            previous = min(previous, max(MIN_FRACTION, f))
            shares.append(round(previous, 6))
        self.fractions = tuple(shares)
        return self.fractions

    # -- records --------------------------------------------------------------------------------------------
    def config(self) -> dict:
        return {"bins": self.bins, "fractions": list(self.fractions) if self.fractions is not None else None}

    @classmethod
    def from_config(cls, num_layers: int, config: dict, *, scorer: str | None = None, min_tokens: int = 1) -> Power:
        fractions = config.get("fractions")
        return cls(
            num_layers,
            scorer=scorer,
            min_tokens=min_tokens,
            bins=int(config.get("bins", 64)),
            fractions=tuple(float(f) for f in fractions) if fractions else None,
        )

"""Trainable token gates with a bi-modal regulariser (Dynamic BERT: Jeong & Kwak, arXiv 2102.09727).

The paper's formulas are not public (../shared/methods.md §4: only the abstract and part of the introduction
could be read). What is confirmed: gates sit on the input word vectors of every layer, they are learned while
fine-tuning, the loss adds a sparsity ("norm-variant") regulariser and a bi-modal one (credited to Srinivas et
al. 2017), one stage, and one user hyper-parameter sets the trade-off. Our interpretation:

- Gate: g_l(i) = sigmoid(w_l · x_i + b_l), a linear probe (h + 1 parameters per layer) on token i's hidden state
  x_i *entering* layer l. Why the hidden state and not an attention score: the decision is then known before the
  layer runs, so the layer keeps HF's own attention (fused sdpa, no probability matrix is ever formed) and a layer
  where the whole batch keeps everything is HF's own layer; the per-layer overhead is one [n,h]x[h] product. It
  also lets the content decide, not only how much attention a token receives. methods.md §4.2 guesses
  rank-indexed gates (PoWER-style); a per-token gate needs no maximum length and gives different inputs of one
  length different counts, which is what "dynamic" means. w_l starts at 0 and b_l at `init_bias` (g = 0.95):
  training starts dense.
- Placement: the same as every method here (methods.md §3.2): layer l's attention runs on the tokens that
  entered it, then the tokens with g_l < threshold leave before its FFN. [CLS] is always kept; `min_tokens` too.
- Soft (training): every token stays; log g_l(i) is added to token i's attention logits as a key in every later
  layer (patch.py `_soft_input_gated`), which is exactly removal at g = 0 and exactly keeping at g = 1, and the
  probabilities multiply over layers as removal cascades.
- Loss = task loss + λ_sparse · mean_l mean_i P_l(i) + λ_bimodal · mean_l mean_i g_l(i) (1 − g_l(i)), over real
  tokens except [CLS]. P_l(i) = Π_{j<=l} g_j(i) is the probability that token i is still there after layer l:
  the L1 ("norm-variant") sparsity term on what the next layers pay for, not on gates whose token has already
  left. g (1 − g) is Srinivas, Subramanya & Babu (2017, "Training Sparse Neural Networks", CVPR-W) bi-modal
  term: zero at 0 and 1, largest at 0.5, so gates end near 0 or 1 and thresholding them changes little.
  λ_bimodal ramps linearly from 0 to its value over the stage. Why: the gates start near 1 (keep), and a full
  bi-modal weight from step 0 pins them there before the sparsity term can tell tokens apart (measured on
  SST-2: λ_sparse 0.2, λ_bimodal 2 from the start kept every token); a weak one leaves them undecided (λ_bimodal
  0.2: 5 % of the gates within 0.05 of 0 or 1, and the hard model 23 points below the soft one).
- Two stages, not the paper's one: (1) fine-tune the model and the gates together (soft); (2) fine-tune the
  model with the gates frozen and tokens removed at the threshold 0.5 (`--retrain-epochs`), as PoWER-BERT and
  LTP re-train. Why: after the soft stage alone the hard model lost 31 points on SST-2 (soft 0.847, hard
  0.533 at t = 0.5, λ_sparse 0.1, λ_bimodal 2 ramped): the soft model leans on tokens of small but non-zero
  gates, and removing them is another model. One stage is the paper's claim; our reconstruction does not reach
  it.
- Offline knob: the threshold t ∈ [0, 1). t = 0 keeps every token (HF's own forward); a higher t removes more.
- Bi-modality figure: `metrics()` gives the share of the gates computed at inference that lie within 0.05 of 0
  or 1 ([CLS] and padding excluded).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tiltbench.errors import UserError
from tiltbench.methods.base import LayerView, Method, TrainStage, register
from tiltbench.schedule import Schedule

NEAR = 0.05  # a gate within this of 0 or 1 counts as decided (the bi-modality figure)
TRAINED_THRESHOLD = 0.5  # the hard stage and the saved checkpoint remove tokens whose gate is below this


@register
class Gates(Method):
    name = "gates"
    knob_name = "gate_threshold"
    knob_help = "threshold t in [0, 1): a token leaves layer l when its gate g_l < t (0 = dense, 0.5 = trained)"
    default_scorer = "acc"  # unused: gates score from the hidden state (recorded for the checkpoint's metadata)
    default_grid = "0,0.3,0.5,0.7,0.9"
    uses_scorer = False
    adaptive = True
    needs_weights = True
    decides_before_attention = True

    def __init__(
        self,
        num_layers: int,
        *,
        scorer: str | None = None,
        min_tokens: int = 1,
        hidden_size: int = 384,
        sparsity_weight: float = 0.0,
        bimodal_weight: float = 0.0,
        init_bias: float = 3.0,
    ) -> None:
        super().__init__(num_layers, scorer=scorer, min_tokens=min_tokens)
        self.hidden_size = hidden_size
        self.sparsity_weight = sparsity_weight
        self.bimodal_weight = bimodal_weight
        self.init_bias = init_bias
        self.weight = nn.Parameter(torch.zeros(num_layers, hidden_size))
        self.bias = nn.Parameter(torch.full((num_layers,), float(init_bias)))
        self._soft_gates: list[tuple[Tensor, Tensor]] = []  # (g [B,n], real non-[CLS] [B,n]) of the soft forward
        self._counted = torch.zeros(2, dtype=torch.float64)  # (gates near 0 or 1, gates) since reset_metrics

    # -- knob -----------------------------------------------------------------------------------------------
    def schedule(self, knob: float) -> Schedule:
        if not 0.0 <= knob < 1.0:  # also NaN
            raise UserError(f"gate threshold must be in [0, 1), got {knob}")
        if knob == 0.0:
            return Schedule(self.num_layers)  # every gate is > 0: nothing leaves, HF's own forward
        return Schedule(self.num_layers, shape="adaptive", min_tokens=self.min_tokens, knob=float(knob))

    def knob_range(self) -> tuple[float, float]:
        return (0.0, 0.99)

    # -- per layer ------------------------------------------------------------------------------------------
    def gate_logits(self, layer: int, hidden: Tensor) -> Tensor:
        """[B,n] w_l · x + b_l for every token entering `layer`."""
        weight = self.weight[layer].to(device=hidden.device, dtype=hidden.dtype)
        # [B,n,h] @ [h,1], not @ [h]: fvcore's matmul count takes a matrix as the second operand
        return (hidden @ weight[:, None]).squeeze(-1) + self.bias[layer].to(device=hidden.device, dtype=hidden.dtype)

    @classmethod
    def for_encoder(cls, num_layers: int, model_config, **options) -> Gates:  # noqa: ANN001
        return cls(num_layers, hidden_size=model_config.hidden_size, **options)

    def check_encoder(self, model_config) -> None:  # noqa: ANN001
        if self.hidden_size != model_config.hidden_size:
            raise UserError(
                f"these gates read {self.hidden_size}-wide hidden states; the encoder's are {model_config.hidden_size}"
            )

    def input_scores(self, layer: int, hidden: Tensor, valid: Tensor) -> Tensor:
        return torch.sigmoid(self.gate_logits(layer, hidden))  # [B,n] the gates; keep_indices ranks by them

    def select(self, view: LayerView, scores: Tensor) -> Tensor:
        threshold = TRAINED_THRESHOLD if view.knob is None else view.knob
        others = view.valid.clone()
        others[:, 0] = False  # [CLS] is always kept
        kept = 1 + ((scores >= threshold) & others).sum(1)
        self._count(scores, others)
        return torch.minimum(kept.clamp(min=self.min_tokens), view.valid.sum(1))

    def soft_weights(self, layer: int, scores: Tensor, valid: Tensor) -> Tensor:
        """[B,n] keep probabilities for the soft stage: the gates, 1 for [CLS] and padding (masked anyway)."""
        others = valid.clone()
        others[:, 0] = False
        if torch.is_grad_enabled():
            self._soft_gates.append((scores, others))
        self._count(scores, others)
        return torch.where(others, scores, torch.ones_like(scores))

    def _count(self, gates: Tensor, others: Tensor) -> None:
        if self.collect_metrics and not torch.is_grad_enabled():  # no host sync: summed on the gates' device
            near = ((gates <= NEAR) | (gates >= 1 - NEAR)) & others
            counts = torch.stack([near.sum(), others.sum()]).to(torch.float64)
            self._counted = self._counted.to(counts.device) + counts

    # -- training -------------------------------------------------------------------------------------------
    @classmethod
    def for_training(cls, num_layers: int, cfg, model_config) -> Gates:  # noqa: ANN001
        return cls(
            num_layers,
            scorer=cfg.scorer,
            min_tokens=cfg.min_tokens,
            hidden_size=model_config.hidden_size,
            sparsity_weight=cfg.regulariser_weight,
            bimodal_weight=cfg.bimodal_weight,
        )

    def stages(self, cfg) -> list[TrainStage]:  # noqa: ANN001
        lr = cfg.method_lr if cfg.method_lr is not None else 3e-3
        return [
            TrainStage("fine-tune+gates", cfg.epochs, soft=True, regulariser_weight=1.0, method_lr=lr),
            TrainStage("hard", cfg.retrain_epochs, knob=TRAINED_THRESHOLD),  # gates frozen, tokens removed
        ]

    def regulariser(self) -> Tensor | None:
        """λ_sparse · mean survival probability + λ_bimodal · mean g (1 − g), over the last soft forward."""
        if not self._soft_gates:
            return None
        survival, sparse, bimodal = None, [], []
        for gates, real in self._soft_gates:
            survival = gates if survival is None else survival * gates
            count = real.sum().clamp(min=1)
            sparse.append((survival * real).sum() / count)
            bimodal.append((gates * (1 - gates) * real).sum() / count)
        self._soft_gates = []
        ramp = min(1.0, self.stage_progress)  # λ_bimodal grows from 0: see the module docstring
        return (
            self.sparsity_weight * torch.stack(sparse).mean() + ramp * self.bimodal_weight * torch.stack(bimodal).mean()
        )

    def metrics(self) -> dict[str, float]:
        near, total = self._counted.cpu().tolist()
        return {"gate_bimodal_share": round(near / total, 4)} if total else {}

    def reset_metrics(self) -> None:
        self._counted = torch.zeros(2, dtype=torch.float64)
        self._soft_gates = []

    # -- records --------------------------------------------------------------------------------------------
    def config(self) -> dict:
        return {
            "hidden_size": self.hidden_size,
            "sparsity_weight": self.sparsity_weight,
            "bimodal_weight": self.bimodal_weight,
            "init_bias": self.init_bias,
        }

    @classmethod
    def from_config(cls, num_layers: int, config: dict, *, scorer: str | None = None, min_tokens: int = 1) -> Gates:
        return cls(
            num_layers,
            scorer=scorer,
            min_tokens=min_tokens,
            hidden_size=int(config.get("hidden_size", 384)),
            sparsity_weight=float(config.get("sparsity_weight", 0.0)),
            bimodal_weight=float(config.get("bimodal_weight", 0.0)),
            init_bias=float(config.get("init_bias", 3.0)),
        )

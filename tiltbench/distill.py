"""Training for accuracy at speed: distillation from a teacher, and training across a knob range (sandwich rule).

Distillation (`--teacher CKPT`): loss = α · T² · KL(teacher_T ‖ student_T) + (1 − α) · task loss, where x_T is
softmax(logits / T) (Hinton et al. 2015; the T² keeps the soft term's gradient on the task loss's scale as T
grows). The issue writes "KL(student ‖ teacher)"; we take the direction every reference uses (ToP, TR-BERT,
DistilBERT: the teacher's distribution weights the log-ratio), which is also the one whose minimum over the
student is the teacher. Regression tasks (STS-B) use the mean squared error to the teacher's prediction. The
teacher runs under `no_grad` on the same batch, in eval mode (no dropout), as saved: a tiltbench checkpoint
at its recorded knob, an HF folder as HF's own model.

Several teachers (`--teacher A --teacher B ...`): an ensemble (Hinton et al. 2015, sec. 1: a cumbersome model may
be "an ensemble of separately trained models"). The soft target is the average of the teachers' distributions at
temperature T, p = mean_i softmax(z_i / T), handed on as the logits T · log p (whose softmax at T is p exactly);
regression averages the teachers' predictions. Every teacher runs on every batch (a step pays one teacher forward
per member). The hidden-state and ranking terms need one teacher: an average of several teachers' word vectors or
token rankings is not any model's.

Knob range (`--knob-range a:b`): LengthDrop's sandwich rule (Kim & Cho 2021, "Length-Adaptive Transformer"):
every step runs the batch at the range's end nearer the dense knob, at its far end, and at `random_knobs`
knobs drawn uniformly in between, accumulating the gradients of all passes before one optimiser step. The
end nearer dense learns from the labels (and the teacher, if any); the other passes learn from the teacher,
or without one from the near-dense pass's own logits, detached ("in-place distillation", LAT's). So a step
costs about 2 + `random_knobs` forward and backward passes, fewer FLOPs each at the eliminating knobs. The
range applies to the recipe's last stage, the only one that removes tokens in every method here (tilted:
its one stage; PoWER: retrain; gates, LTP: hard); earlier stages train as before.

Ranking distillation (`--distill-ranking W`, with `--teacher`): ToP's idea (Li et al. 2023, microsoft/Moonlit
ToP/trainer/trainer.py `calculate_attention_score_distillation_loss`): the final layer ranks tokens better than the
early layers do, so the teacher's final-layer token ranking is taught to the scores the student's early layers
select by. Ours, where ToP's code differs or leaves a choice:
- the target is the method's own score (ACC for tilted, PoWER's, LTP's) computed on the dense teacher's last layer,
  from the input of that layer (`teacher_final_scores`); ToP takes the mean attention over heads and queries, which
  ranks as ACC does;
- the student's scores are those of every layer that scores its tokens in the pass, except the last layer (ToP:
  the first third of the layers, after the first), over the tokens still there, compared with the teacher's score
  of the same input positions; [CLS] is always kept and left out, as ToP leaves it out;
- the loss is RankNet's pairwise logistic loss on log-scores, over pairs (i, j) with i among the teacher's `top`
  best tokens of the row (ToP: 20) and j any token the teacher scores lower: softplus(log s_j − log s_i), the mean
  over pairs. ToP uses LambdaARP (pytorchltr) over the teacher's top 20; a pairwise logistic loss is one of the
  losses its code keeps as an option, needs no extra package, and log-scores make it blind to the scale of a
  layer's scores (early layers attend more evenly). ToP also anneals the weight over its sparsity warm-up; ours
  is constant.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from tiltbench.data import TaskInfo
from tiltbench.errors import UserError


@dataclass(frozen=True)
class Distillation:
    """How a student learns from a teacher's logits."""

    alpha: float = 0.5  # weight of the teacher term; 1 − alpha on the task loss
    temperature: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise UserError(f"--alpha must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise UserError(f"--distill-temperature must be positive, got {self.temperature}")

    def loss(self, student: Tensor, teacher: Tensor, task_loss: Tensor, regression: bool) -> Tensor:
        """α · soft term + (1 − α) · task loss (the student's logits carry the gradient, the teacher's none)."""
        teacher = teacher.detach()
        if regression:
            soft = F.mse_loss(student.float().squeeze(-1), teacher.float().squeeze(-1))
        else:
            t = self.temperature
            soft = (
                F.kl_div(
                    F.log_softmax(student.float() / t, dim=-1),
                    F.log_softmax(teacher.float() / t, dim=-1),
                    reduction="batchmean",
                    log_target=True,
                )
                * t**2
            )
        return self.alpha * soft + (1 - self.alpha) * task_loss

    def target(self, teacher_logits: list[Tensor], regression: bool) -> Tensor:
        """The logits taught towards, in fp32: one teacher's as they are; an ensemble's mean prediction
        (regression) or T · log of its members' mean distribution at temperature T (classification)."""
        if len(teacher_logits) == 1:
            return teacher_logits[0].float()
        stacked = torch.stack([logits.float() for logits in teacher_logits])
        if regression:
            return stacked.mean(0)
        t = self.temperature
        mean_log_p = torch.logsumexp(F.log_softmax(stacked / t, dim=-1), dim=0) - math.log(len(teacher_logits))
        return t * mean_log_p


def parse_knob_range(text: str | None) -> tuple[float, float] | None:
    """'0:0.4' -> (0.0, 0.4); None stays None; anything else is one UserError."""
    if text is None:
        return None
    parts = text.split(":")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise UserError(f"--knob-range takes LOW:HIGH, e.g. 0:0.4, got {text!r}") from None
    if not low < high or high == float("inf"):  # NaN fails `<` too
        raise UserError(f"--knob-range needs finite LOW < HIGH, got {text!r}")
    return low, high


def sandwich_knobs(
    knob_range: tuple[float, float], dense_knob: float, random_knobs: int, rng: random.Random
) -> list[float]:
    """The knobs of one sandwich step: the end nearer `dense_knob` first (the pass that teaches in place), then
    the far end, then `random_knobs` uniform draws in between."""
    low, high = knob_range
    near, far = (low, high) if abs(low - dense_knob) <= abs(high - dense_knob) else (high, low)
    return [near, far, *(rng.uniform(low, high) for _ in range(random_knobs))]


def far_end(knob_range: tuple[float, float], dense_knob: float) -> float:
    """The end of the range farther from the dense knob: the fastest point it trains."""
    low, high = knob_range
    return high if abs(high - dense_knob) >= abs(low - dense_knob) else low


def teacher_paths(teacher: str | os.PathLike | list | tuple | None) -> tuple[str, ...]:
    """--teacher as a tuple of paths: none, one, or an ensemble's; UserError for a folder named twice, however
    spelled (it would weigh twice in the average without saying so)."""
    if not teacher:
        return ()
    paths = tuple(os.fspath(p) for p in ((teacher,) if isinstance(teacher, str | os.PathLike) else teacher))
    seen: dict[Path, str] = {}
    for path in paths:
        folder = Path(path).resolve()
        if folder in seen:
            raise UserError(f"--teacher {path!r} is given twice (as {seen[folder]!r} too); an ensemble names each "
                            "teacher once")  # fmt: skip
        seen[folder] = path
    return paths


def load_teacher(path: str, info: TaskInfo, student_tokenizer) -> torch.nn.Module:  # noqa: ANN001
    """A teacher for `info`'s task, in eval mode with no gradients: a tiltbench checkpoint (at its recorded knob)
    or an HF sequence-classification folder. Refused (UserError) when it was trained for another task, has
    another label count, is not a classifier at all (a random head would teach noise), or reads the input ids
    with another vocabulary."""
    try:
        teacher = _load_teacher(path, info, student_tokenizer)
    except UserError as err:
        raise UserError(f"--teacher: {err}") from None
    return teacher.eval().requires_grad_(False)


def _load_teacher(path: str, info: TaskInfo, student_tokenizer) -> torch.nn.Module:  # noqa: ANN001
    from tiltbench.files import is_checkpoint
    from tiltbench.models import load_checkpoint, load_model

    if is_checkpoint(Path(path)):
        teacher, tokenizer, _, teacher_info = load_checkpoint(path)
        # a file-based task is "custom" on either side: then only its label count and kind can be checked
        other_task = teacher_info.name != info.name and "custom" not in (teacher_info.name, info.name)
        other_labels = (teacher_info.num_labels, teacher_info.regression) != (info.num_labels, info.regression)
        if other_task or other_labels:
            raise UserError(
                f"{path} was trained on {teacher_info.name!r} ({teacher_info.num_labels} labels); "
                f"this fine-tune is {info.name!r} ({info.num_labels} labels)"
            )
    else:
        teacher, tokenizer = load_model(path, None)
        architectures = getattr(teacher.config, "architectures", None) or []
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise UserError(
                f"{path} is not a fine-tuned sequence classifier (architectures: "
                f"{', '.join(architectures) or 'none recorded'}); give a tiltbench checkpoint or an HF "
                "...ForSequenceClassification folder of the same task"
            )
        if teacher.config.num_labels != info.num_labels:
            raise UserError(f"{path} has {teacher.config.num_labels} labels; {info.name!r} has {info.num_labels}")
    if tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise UserError(f"{path} has another vocabulary than the student: its input ids would be other words")
    return teacher


def teacher_final_scores(
    teacher: torch.nn.Module, hidden_states: tuple[Tensor, ...], attention_mask: Tensor, scorer
) -> Tensor:  # noqa: ANN001 (an eliminate.Scorer)
    """[B,n] the `scorer`'s scores of every input token in the teacher's last layer, from that layer's input
    (`hidden_states[-2]` of a forward with output_hidden_states and nothing removed), computed as the student's
    layers compute theirs (eliminate.attention_with_scores on the layer's own modules), in fp32 whatever autocast
    is on (close scores would tie in bf16). Padding scores 0."""
    from tiltbench.eliminate import attention_with_scores
    from tiltbench.patch import find_encoder

    last = find_encoder(teacher).layer[-1]
    valid = attention_mask.bool()
    states = hidden_states[-2]
    with torch.no_grad(), torch.autocast(states.device.type, enabled=False):
        _, scores = attention_with_scores(last, states.float(), valid, scorer)
    return scores.float().masked_fill(~valid, 0.0)


def ranking_loss(recorded: list[tuple[int, Tensor, Tensor, Tensor]], target: Tensor, last_layer: int,
                 top: int) -> Tensor | None:  # fmt: skip
    """The pairwise logistic ranking loss of the student's recorded layer scores against the teacher's final-layer
    scores `target` [B,n] (see the module's docstring): each layer's mean over its pairs, averaged over the layers
    that have pairs (0 when none has); None when no layer before `last_layer` was recorded. `recorded`:
    TiltState.scores, (layer, scores [B,w], input positions [B,w], validity [B,w]). Pairs are formed from the
    teacher's `top` best tokens of each row only ([B,top,w], not [B,w,w]), with no host sync."""
    sums, counts = [], []
    for layer, scores, positions, valid in recorded:
        if layer >= last_layer:
            continue
        goal = target.gather(1, positions)  # the teacher's score of each token still in the row
        candidate = valid & (positions != 0)  # [CLS] is always kept: nothing to rank
        ranked = goal.masked_fill(~candidate, float("-inf"))
        best, anchors = ranked.topk(min(top, ranked.shape[1]), dim=1)  # [B,k] the teacher's best tokens
        anchored = torch.isfinite(best)  # a row with fewer candidates than k has -inf anchors: not real
        pairs = anchored[:, :, None] & candidate[:, None, :] & (best[:, :, None] > goal[:, None, :])  # [B,k,w]
        z = scores.float().clamp_min(1e-12).log()
        z_anchor = z.gather(1, anchors)
        losses = F.softplus(z[:, None, :] - z_anchor[:, :, None])  # softplus(log s_j - log s_i), i an anchor
        count = pairs.sum()
        sums.append(torch.where(pairs, losses, 0.0).sum() / count.clamp(min=1))
        counts.append(count > 0)
    if not sums:
        return None
    return torch.stack(sums).sum() / torch.stack(counts).sum().clamp(min=1)

"""TiltedBERT (Kachuee & Sharifkhani, arXiv 2201.03327): ACC scores, one Tilt-Rate sets every layer's count.

The count formula is our interpretation (schedule.py; ../shared/methods.md §2.3-2.4). Knob: the Tilt-Rate in
[0, 1), 0 = dense. Training: one stage, elimination on (finetune.py).
"""

from __future__ import annotations

from tiltbench.methods.base import Method, register
from tiltbench.schedule import Schedule, Shape


@register
class Tilted(Method):
    name = "tilted"
    knob_name = "tilt_rate"
    knob_help = "Tilt-Rate in [0, 1): layer l keeps ceil(n0 (1 - rate)^l) tokens (geometric)"
    default_scorer = "acc"
    default_grid = "0:0.5:0.1"

    def __init__(self, num_layers: int, *, scorer: str | None = None, min_tokens: int = 1, shape: Shape = "geometric"):
        super().__init__(num_layers, scorer=scorer, min_tokens=min_tokens)
        self.shape = "geometric" if shape not in ("geometric", "linear") else shape

    def schedule(self, knob: float) -> Schedule:
        return Schedule(self.num_layers, float(knob), self.shape, None, self.min_tokens)

    def config(self) -> dict:
        return {"shape": self.shape}

    @classmethod
    def from_config(cls, num_layers: int, config: dict, *, scorer: str | None = None, min_tokens: int = 1) -> Tilted:
        return cls(num_layers, scorer=scorer, min_tokens=min_tokens, shape=config.get("shape", "geometric"))

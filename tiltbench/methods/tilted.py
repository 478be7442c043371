"""TiltedBERT (Kachuee & Sharifkhani, arXiv 2201.03327): ACC scores, one Tilt-Rate sets every layer's count.

The count formula is our interpretation (schedule.py; ../shared/methods.md §2.3-2.4). Knob: the Tilt-Rate in
[0, 1), 0 = dense. Training: one stage, elimination on (finetune.py).
"""

from __future__ import annotations

from tiltbench.errors import UserError
from tiltbench.methods.base import Method, register
from tiltbench.schedule import Schedule, Shape


@register
class Tilted(Method):
    name = "tilted"
    knob_name = "tilt_rate"
    knob_help = "Tilt-Rate in [0, 1): layer l keeps ceil(n0 (1 - rate)^l) tokens (geometric)"
    default_scorer = "acc"
    default_grid = "0:0.5:0.1"

    def __init__(
        self,
        num_layers: int,
        *,
        scorer: str | None = None,
        min_tokens: int = 1,
        shape: Shape = "geometric",
        keep: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(num_layers, scorer=scorer, min_tokens=min_tokens)
        self.shape = shape
        self.keep = tuple(keep) if keep else None
        if shape == "list":
            # An explicit keep list is never turned into a geometric rate: its knob has two settings, 0 (dense)
            # and 1 (the list as given).
            Schedule(num_layers, 0.0, "list", self.keep, min_tokens)  # validates the list
            self.knob_name = "keep_list"
            self.default_grid = "0,1"
        elif shape not in ("geometric", "linear"):
            raise UserError(f"TiltedBERT's schedule shape is geometric, linear or list, not {shape!r}")

    def schedule(self, knob: float) -> Schedule:
        if self.shape == "list":
            if knob not in (0, 1):
                raise UserError(
                    f"this checkpoint keeps an explicit per-layer list {list(self.keep or ())}: its knob is 0 "
                    f"(dense) or 1 (the list), not {knob:g}; fine-tune with a tilt rate for a continuous knob"
                )
            return (
                Schedule(self.num_layers, 0.0, "list", self.keep, self.min_tokens)
                if knob
                else Schedule(self.num_layers)
            )
        return Schedule(self.num_layers, float(knob), self.shape, None, self.min_tokens)

    @classmethod
    def for_training(cls, num_layers: int, cfg, model_config) -> Tilted:  # noqa: ANN001
        return cls(num_layers, scorer=cfg.scorer, min_tokens=cfg.min_tokens, shape=cfg.shape)

    def config(self) -> dict:
        return {"shape": self.shape, **({"keep": list(self.keep)} if self.keep else {})}

    @classmethod
    def from_config(cls, num_layers: int, config: dict, *, scorer: str | None = None, min_tokens: int = 1) -> Tilted:
        keep = config.get("keep")
        return cls(
            num_layers,
            scorer=scorer,
            min_tokens=min_tokens,
            shape=config.get("shape", "geometric"),
            keep=tuple(int(k) for k in keep) if keep else None,
        )

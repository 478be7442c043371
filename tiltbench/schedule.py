"""Keep schedules: how many word vectors each encoder layer outputs.

Our interpretation of TiltedBERT's Tilt-Rate (the paper's formula is not public, see ../shared/methods.md §2.3
and §2.4): for an example with n0 real tokens ([CLS] and [SEP] included), layer l = 1..L outputs

    geometric (default):  n_l = max(m, ceil(n0 * (1 - tau) ** l))
    linear:               n_l = max(m, ceil(n0 * (1 - tau * l / L)))
    explicit list:        n_l = max(m, k_l), k_1 >= ... >= k_L given by the user
    fractions:            n_l = max(m, ceil(n0 * f_l)), 1 >= f_1 >= ... >= f_L > 0 (PoWER-BERT's learned
                          retention, as shares of each example's real length: methods/power.py)
    adaptive:             no plan: the method decides each example's count from its content, layer by layer
                          (gates, ltp); `knob` records the method's knob, and `counts` refuses (no plan)

always capped at the example's own previous count (n_l <= n_{l-1} <= n0), so padding is never "kept".
m is `min_tokens` (default 1: [CLS] alone). Counts are per example, from its real length.

References: Kachuee & Sharifkhani, arXiv 2201.03327 (abstract: one Tilt-Rate sets every layer's elimination);
../shared/methods.md §2.4 (profile families) and §8.2 (clamping rules).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from tiltbench.errors import UserError

Shape = Literal["geometric", "linear", "list", "fractions", "adaptive"]
SHAPES: tuple[str, ...] = ("geometric", "linear", "list", "fractions", "adaptive")
RATE_SHAPES: tuple[str, ...] = ("geometric", "linear")  # the shapes a Tilt-Rate drives

# ceil(x - EPS): 100 * (1 - 0.1) is 90.00000000000001 in floating point and must give 90, not 91.
_EPS = 1e-9


@dataclass(frozen=True)
class Schedule:
    """A parsed keep schedule for an encoder of `num_layers` layers. Validated on construction."""

    num_layers: int
    tilt_rate: float = 0.0
    shape: Shape = "geometric"
    keep: tuple[int, ...] | None = None  # only for shape == "list": tokens output by layers 1..L
    min_tokens: int = 1
    fractions: tuple[float, ...] | None = None  # only for shape == "fractions": kept share of n0 after layers 1..L
    knob: float | None = None  # only for shape == "adaptive": the data-dependent method's knob (its threshold)

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise UserError(f"a schedule needs at least one layer, got {self.num_layers}")
        if self.shape not in SHAPES:
            raise UserError(f"unknown schedule shape {self.shape!r}; choose from {', '.join(SHAPES)}")
        if not (0.0 <= self.tilt_rate < 1.0) or math.isnan(self.tilt_rate):
            raise UserError(f"tilt rate must be in [0, 1), got {self.tilt_rate}")
        if self.min_tokens < 1:
            raise UserError(f"--min-tokens must be at least 1 ([CLS] is always kept), got {self.min_tokens}")
        if self.shape == "list":
            keep = self.keep or ()
            if len(keep) != self.num_layers:
                raise UserError(f"an explicit keep list needs one count per layer ({self.num_layers}), got {len(keep)}")
            if any(k < 1 for k in keep) or any(b > a for a, b in zip(keep, keep[1:], strict=False)):
                raise UserError(f"keep counts must be >= 1 and non-increasing, got {list(keep)}")
        elif self.keep is not None:
            raise UserError("an explicit keep list goes with shape 'list' only")
        if self.shape == "fractions":
            shares = self.fractions or ()
            if len(shares) != self.num_layers:
                raise UserError(f"kept fractions need one value per layer ({self.num_layers}), got {len(shares)}")
            if any(not 0 < f <= 1 for f in shares) or any(b > a for a, b in zip(shares, shares[1:], strict=False)):
                raise UserError(f"kept fractions must be in (0, 1] and non-increasing, got {list(shares)}")
        elif self.fractions is not None:
            raise UserError("kept fractions go with shape 'fractions' only")
        if self.shape == "adaptive":
            if self.knob is None or not math.isfinite(self.knob):
                raise UserError(f"an adaptive schedule needs a finite knob value, got {self.knob}")
        elif self.knob is not None:
            raise UserError("a knob value goes with shape 'adaptive' only")

    @property
    def adaptive(self) -> bool:
        """True when the counts depend on the content: the method's `select` decides them inside the forward."""
        return self.shape == "adaptive"

    @property
    def is_identity(self) -> bool:
        """True when no layer ever drops a token (tau = 0): the model then runs HF's own forward."""
        if self.shape == "fractions":
            return all(f >= 1.0 for f in self.fractions or ())
        if self.shape == "adaptive":
            return False  # the method's dense knob returns a plain identity schedule instead
        return self.shape != "list" and self.tilt_rate == 0.0

    def counts(self, n0: int) -> list[int]:
        """[n0, n1, ..., nL] for an example with n0 real tokens (adaptive: the cap [n0] * (L+1); the realised
        counts come from the forward, `tiltbench.realised_counts`)."""
        if self.adaptive:  # a plan would silently read as dense: predictions take realised counts instead
            raise UserError(
                f"{self.describe()}: an adaptive method's counts depend on each input; run the model and use "
                "tiltbench.realised_counts"
            )
        return list(_counts(self, n0))

    def describe(self) -> str:
        if self.shape == "list":
            return f"keep {list(self.keep or ())}"
        if self.shape == "fractions":
            return "keep fractions " + " ".join(f"{f:.3f}" for f in self.fractions or ())
        if self.shape == "adaptive":
            return f"adaptive, knob {self.knob:g}"
        return f"{self.shape} tilt rate {self.tilt_rate:g}"

    def to_dict(self) -> dict:
        return {
            "shape": self.shape,
            "tilt_rate": self.tilt_rate,
            "keep": list(self.keep) if self.keep is not None else None,
            "min_tokens": self.min_tokens,
            "fractions": list(self.fractions) if self.fractions is not None else None,
            **({"knob": self.knob} if self.knob is not None else {}),
        }

    @classmethod
    def from_dict(cls, num_layers: int, data: dict) -> Schedule:
        """Inverse of `to_dict` (older records have no "fractions")."""
        return cls(
            num_layers,
            float(data.get("tilt_rate") or 0.0),
            data["shape"],
            tuple(int(k) for k in data["keep"]) if data.get("keep") else None,
            int(data.get("min_tokens", 1)),
            tuple(float(f) for f in data["fractions"]) if data.get("fractions") else None,
            float(data["knob"]) if data.get("knob") is not None else None,
        )


@lru_cache(maxsize=65536)
def _counts(schedule: Schedule, n0: int) -> tuple[int, ...]:
    out = [n0]
    L = schedule.num_layers
    for layer in range(1, L + 1):
        if schedule.shape == "geometric":
            target = math.ceil(n0 * (1.0 - schedule.tilt_rate) ** layer - _EPS)
        elif schedule.shape == "linear":
            target = math.ceil(n0 * (1.0 - schedule.tilt_rate * layer / L) - _EPS)
        elif schedule.shape == "fractions":
            target = math.ceil(n0 * (schedule.fractions or ())[layer - 1] - _EPS)
        elif schedule.shape == "adaptive":
            target = n0
        else:
            target = (schedule.keep or ())[layer - 1]
        out.append(min(out[-1], max(schedule.min_tokens, target)))
    return tuple(out)


def parse_schedule(
    num_layers: int,
    spec: float | str | Sequence[int] | Schedule,
    *,
    shape: Shape = "geometric",
    min_tokens: int = 1,
) -> Schedule:
    """Build a `Schedule` from any accepted form.

    Accepted forms of `spec`:
      - a float tilt rate in [0, 1), e.g. 0.2 (uses `shape`, default geometric);
      - a string: "0.2", "0.2:linear", or a comma list of per-layer counts "64,48,32,24,16,8";
      - a sequence of ints, one count per layer (shape "list");
      - a `Schedule` (returned unchanged).
    """
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, str):
        text = spec.strip()
        if "," in text:
            try:
                return parse_schedule(num_layers, [int(x) for x in text.split(",")], min_tokens=min_tokens)
            except ValueError:
                raise UserError(f"keep list must be comma-separated integers, got {spec!r}") from None
        rate, _, shape_text = text.partition(":")
        try:
            value = float(rate)
        except ValueError:
            raise UserError(f"tilt rate must be a number in [0, 1), got {spec!r}") from None
        return Schedule(num_layers, value, shape_text or shape, None, min_tokens)  # type: ignore[arg-type]
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Schedule(num_layers, float(spec), shape, None, min_tokens)
    return Schedule(num_layers, 0.0, "list", tuple(int(k) for k in spec), min_tokens)


def parse_grid(text: str) -> list[float]:
    """A knob grid: "0:0.5:0.05" (start:stop:step, stop included) or "0,0.1,0.3". Values must be finite and >= 0;
    each method checks its own upper bound (a Tilt-Rate stays below 1)."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if not step > 0:
                raise UserError(f"grid step must be positive, got {text!r}")
            count = int(math.floor((stop - start) / step + 1e-9)) + 1
            values = [round(start + i * step, 10) for i in range(max(count, 0))]
        else:
            values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"a grid must look like 0:0.5:0.05 or 0,0.1,0.2, got {text!r}") from None
    if not values:
        raise UserError(f"grid {text!r} is empty")
    for value in values:
        if not 0.0 <= value < math.inf:
            raise UserError(f"grid values must be finite and >= 0, got {value:g} in {text!r}")
    return values

"""tiltbench: word-vector (token) elimination for BERT-family encoders, measured honestly.

import tiltbench
tiltbench.patch(model, tilt_rate=0.2)   # any loaded BertLayer-layout HF model
model(**batch)                          # tokens are physically removed layer by layer
tiltbench.set_knob(model, 0.3)          # move along the method's knob (tilted: the Tilt-Rate)
"""

from tiltbench.errors import UserError
from tiltbench.methods import METHODS, Method, get_method, register
from tiltbench.patch import method_of, patch, realised_counts, set_knob, set_schedule, unpatch
from tiltbench.schedule import Schedule, parse_grid, parse_schedule
from tiltbench.speed_model import ModelDims, predict_speedup, tilt_rate_for_speedup

__version__ = "0.1.0"


def finetune(cfg, progress=None):  # noqa: ANN001 - thin lazy re-export (keeps `import tiltbench` light)
    """See tiltbench.finetune.finetune."""
    from tiltbench.finetune import finetune as _finetune

    return _finetune(cfg, progress)


def resolve_model(name: str) -> str:
    """See tiltbench.models.resolve_model: 'minilm' -> the packaged folder; a local folder; else a Hub id."""
    from tiltbench.models import resolve_model as _resolve_model

    return _resolve_model(name)


def offline_tune(cfg, progress=None):  # noqa: ANN001
    """See tiltbench.offline.offline_tune."""
    from tiltbench.offline import offline_tune as _offline_tune

    return _offline_tune(cfg, progress)


__all__ = [
    "METHODS",
    "Method",
    "ModelDims",
    "Schedule",
    "UserError",
    "finetune",
    "get_method",
    "method_of",
    "offline_tune",
    "parse_grid",
    "parse_schedule",
    "patch",
    "predict_speedup",
    "realised_counts",
    "register",
    "resolve_model",
    "set_knob",
    "set_schedule",
    "tilt_rate_for_speedup",
    "unpatch",
]

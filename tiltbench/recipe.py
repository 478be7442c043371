"""Recipes as data: a JSON or YAML file naming a fine-tune's settings, so a README number can be re-trained.

A recipe is a mapping from `tiltbench finetune` option names to values, e.g.

    {"model": "minilm", "task": "sst2", "method": "tilted", "knob-range": "0:0.4", "teacher": "results/dense",
     "epochs": 1, "max-train-samples": 20000, "max-seq-len": 64, "lr": 1e-4, "seed": 0}

Dashes or underscores both work; `knob-range` may also be a two-item list, and `teacher` a list of paths (an
ensemble of teachers). `finetune --recipe FILE` takes these as its defaults: an option given on the command line
wins, so `--seed 1` re-runs a recipe at another seed. Paths inside a recipe (model, init, teacher, data files)
are read from the directory the command runs in, like the same options typed there. Where the output goes
(`--output`, `--overwrite`) is never part of a recipe. The checkpoint records every resolved setting in
tiltbench.json (`train_config`).
"""

from __future__ import annotations

import json
from pathlib import Path

from tiltbench.errors import UserError

# finetune options a recipe may not set: where the result goes, and how it is printed
NOT_IN_RECIPES = ("output", "overwrite", "recipe", "json_out")


def load_recipe(path: str | Path) -> dict:
    """The recipe's settings with option names as Python names ('knob-range' -> 'knob_range', 'lambda' ->
    'lambda_'); UserError for a missing, unreadable or malformed file."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"recipe {str(path)!r} does not exist or is not a file")
    text = file.read_text(errors="replace")
    try:
        if file.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif file.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise UserError(f"recipe {str(path)!r}: use a .json, .yaml or .yml file")
    except (json.JSONDecodeError, ValueError) as err:
        raise UserError(f"recipe {str(path)!r} is not valid {file.suffix[1:].upper()}: {err}") from None
    except Exception as err:  # noqa: BLE001 (yaml's errors: any parse failure)
        if isinstance(err, UserError):
            raise
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"recipe {str(path)!r} is not valid YAML: {first}") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"recipe {str(path)!r} must be a non-empty mapping of finetune options to values")
    settings = {}
    for key, value in data.items():
        name = str(key).strip().lstrip("-").replace("-", "_")
        name = "lambda_" if name == "lambda" else name
        if name == "knob_range" and isinstance(value, list | tuple):
            if len(value) != 2:
                raise UserError(f"recipe {str(path)!r}: knob-range takes LOW:HIGH or [LOW, HIGH], got {value!r}")
            value = f"{value[0]}:{value[1]}"
        if name == "teacher" and isinstance(value, list):  # an ensemble: several teachers
            if not value or not all(isinstance(v, str) for v in value):
                raise UserError(f"recipe {str(path)!r}: teacher takes a path or a list of paths, got {value!r}")
            settings[name] = value
            continue
        if isinstance(value, dict | list):
            raise UserError(f"recipe {str(path)!r}: {key!r} must be a single value, got {value!r}")
        settings[name] = value
    return settings

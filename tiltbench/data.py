"""Tasks and data: GLUE (SST-2, CoLA, MRPC, RTE, STS-B, QNLI, WNLI), IMDB and user files, through `datasets`.

Every split is normalised to the columns `text`, `text_pair` (None for single-sentence tasks) and `label`
(int class id, or float for regression). Sources, in order: `--train-file/--eval-file`; a local folder in the
layout of ../shared/data (`--data-dir` or $TILTBENCH_DATA_DIR); the Hugging Face Hub (`nyu-mll/glue`,
`stanfordnlp/imdb`) when no folder is given. The GLUE TSVs hold unbalanced quotes, so they are read as plain
tab-split lines (csv.QUOTE_NONE), and with utf-8-sig (MRPC's header starts with a BOM); see the data README.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import datasets
import torch

from tiltbench.errors import UserError

Split = Literal["train", "eval"]
DATA_DIR_ENV = "TILTBENCH_DATA_DIR"


@dataclass(frozen=True)
class TaskInfo:
    """What a model and its metric need to know about a task; saved into every checkpoint."""

    name: str
    label_names: tuple[str, ...]  # index = class id; () for regression
    metrics: tuple[str, ...]  # the first is the task's primary metric
    regression: bool = False

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else len(self.label_names)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TaskInfo:
        return cls(d["name"], tuple(d["label_names"]), tuple(d["metrics"]), bool(d.get("regression", False)))


@dataclass(frozen=True)
class TaskSpec:
    info: TaskInfo
    files: dict[str, str | None]  # split -> path under the data dir
    columns: tuple[str, str | None, str]  # text, text_pair, label in the local file
    hub: tuple[str, str | None, str]  # dataset id, config, eval split
    hub_columns: tuple[str, str | None]  # text, text_pair on the hub (label is "label" there)
    header: tuple[str, ...] | None = None  # column names for header-less files (CoLA)


_ACC = ("accuracy",)
_NLI = ("entailment", "not_entailment")
TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec(TaskInfo("sst2", ("negative", "positive"), _ACC),
                     {"train": "sst2/train.tsv", "eval": "sst2/dev.tsv"}, ("sentence", None, "label"),
                     ("nyu-mll/glue", "sst2", "validation"), ("sentence", None)),
    "cola": TaskSpec(TaskInfo("cola", ("unacceptable", "acceptable"), ("matthews_correlation",)),
                     {"train": "cola/train.tsv", "eval": "cola/dev.tsv"}, ("sentence", None, "label"),
                     ("nyu-mll/glue", "cola", "validation"), ("sentence", None),
                     header=("source", "label", "mark", "sentence")),
    "mrpc": TaskSpec(TaskInfo("mrpc", ("not_equivalent", "equivalent"), ("f1", "accuracy")),
                     {"train": "mrpc/train.tsv", "eval": "mrpc/dev.tsv"}, ("#1 String", "#2 String", "Quality"),
                     ("nyu-mll/glue", "mrpc", "validation"), ("sentence1", "sentence2")),
    "rte": TaskSpec(TaskInfo("rte", _NLI, _ACC), {"train": "rte/train.tsv", "eval": "rte/dev.tsv"},
                    ("sentence1", "sentence2", "label"), ("nyu-mll/glue", "rte", "validation"),
                    ("sentence1", "sentence2")),
    "stsb": TaskSpec(TaskInfo("stsb", (), ("spearman", "pearson"), regression=True),
                     {"train": "stsb/train.tsv", "eval": "stsb/dev.tsv"}, ("sentence1", "sentence2", "score"),
                     ("nyu-mll/glue", "stsb", "validation"), ("sentence1", "sentence2")),
    "qnli": TaskSpec(TaskInfo("qnli", _NLI, _ACC), {"train": None, "eval": "qnli/dev.tsv"},
                     ("question", "sentence", "label"), ("nyu-mll/glue", "qnli", "validation"),
                     ("question", "sentence")),
    "wnli": TaskSpec(TaskInfo("wnli", ("not_entailment", "entailment"), _ACC),
                     {"train": "wnli/train.tsv", "eval": "wnli/dev.tsv"}, ("sentence1", "sentence2", "label"),
                     ("nyu-mll/glue", "wnli", "validation"), ("sentence1", "sentence2")),
    "imdb": TaskSpec(TaskInfo("imdb", ("neg", "pos"), _ACC), {"train": "imdb/train.jsonl.gz",
                     "eval": "imdb/test.jsonl.gz"}, ("text", None, "label"), ("stanfordnlp/imdb", None, "test"),
                     ("text", None)),
}  # fmt: skip


@dataclass(frozen=True)
class DataConfig:
    """Where a task's examples come from and how many of them to use."""

    task: str = "sst2"
    data_dir: str | None = None
    train_file: str | None = None
    eval_file: str | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_seq_len: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.user_files and self.task not in TASKS:
            raise UserError(f"unknown task {self.task!r}; choose from {', '.join(TASKS)} or pass --eval-file")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if not 2 <= self.max_seq_len <= 512:
            raise UserError(f"--max-seq-len must be in [2, 512], got {self.max_seq_len}")

    @property
    def user_files(self) -> bool:
        return self.train_file is not None or self.eval_file is not None


def resolve_data_dir(data_dir: str | None) -> Path | None:
    """--data-dir, else $TILTBENCH_DATA_DIR, else None (the Hub). A folder that is named must exist."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        source = "--data-dir" if data_dir else f"${DATA_DIR_ENV}"
        raise UserError(
            f"data dir {str(path)!r} (from {source}) does not exist; point it at a folder like ../shared/data"
        )
    return path


def load_split(cfg: DataConfig, split: Split, info: TaskInfo | None = None) -> tuple[datasets.Dataset, TaskInfo]:
    """The `split` examples of cfg's task as (Dataset[text, text_pair, label], TaskInfo), subset and shuffled."""
    if cfg.user_files:
        rows, info = _load_user_file(cfg, split, info)
    else:
        spec = TASKS[cfg.task]
        info = spec.info
        data_dir = resolve_data_dir(cfg.data_dir)
        rows = _load_local(spec, split, data_dir) if data_dir else _load_hub(spec, split)
    dataset = datasets.Dataset.from_dict(rows)
    limit = cfg.max_train_samples if split == "train" else cfg.max_eval_samples
    if split == "train" or limit is not None:  # eval keeps dataset order unless a subset is asked for
        dataset = dataset.shuffle(seed=cfg.seed)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    if len(dataset) == 0:
        raise UserError(f"the {split} split of {info.name} is empty")
    return dataset, info


def _columns(texts: list[str], pairs: list[str] | None, labels: list) -> dict[str, list]:
    return {"text": texts, "text_pair": pairs if pairs is not None else [None] * len(texts), "label": labels}


def _label_value(info: TaskInfo, raw: object) -> int | float:
    if info.regression:
        return float(raw)
    if isinstance(raw, str) and raw in info.label_names:
        return info.label_names.index(raw)
    return int(raw)


def _load_local(spec: TaskSpec, split: Split, data_dir: Path) -> dict[str, list]:
    rel = spec.files[split]
    if rel is None:
        raise UserError(f"{spec.info.name} has no {split} split in the local data; pass --{split}-file")
    path = data_dir / rel
    if not path.is_file():
        raise UserError(f"missing data file {str(path)!r}; check --data-dir / ${DATA_DIR_ENV}")
    if path.name.endswith(".jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    else:
        with open(path, encoding="utf-8-sig", newline="") as f:
            lines = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        header, body = (list(spec.header), lines) if spec.header else (lines[0], lines[1:])
        records = [dict(zip(header, line, strict=False)) for line in body if line]
    text, pair, label = spec.columns
    return _columns(
        [r[text] for r in records],
        [r[pair] for r in records] if pair else None,
        [_label_value(spec.info, r[label]) for r in records],
    )


def _load_hub(spec: TaskSpec, split: Split) -> dict[str, list]:
    repo, config, eval_split = spec.hub
    try:
        dataset = datasets.load_dataset(repo, config, split="train" if split == "train" else eval_split)
    except Exception as err:  # no internet, unknown dataset, ...: the user fixes it with --data-dir
        raise UserError(
            f"could not load {repo} from the Hugging Face Hub ({type(err).__name__}); "
            f"pass --data-dir or set ${DATA_DIR_ENV} to a local copy"
        ) from None
    text, pair = spec.hub_columns
    return _columns(
        list(dataset[text]),
        list(dataset[pair]) if pair else None,
        [_label_value(spec.info, v) for v in dataset["label"]],
    )


def _load_user_file(cfg: DataConfig, split: Split, info: TaskInfo | None) -> tuple[dict[str, list], TaskInfo]:
    path = cfg.train_file if split == "train" else cfg.eval_file
    if path is None:
        raise UserError(f"pass --{split}-file too: user files need both --train-file and --eval-file")
    dataset = read_table(path)
    wanted = [c for c in (cfg.text_column, cfg.text_pair_column, cfg.label_column) if c]
    missing = [c for c in wanted if c not in dataset.column_names]
    if missing:
        raise UserError(f"{path}: no column {missing[0]!r}; columns are {', '.join(dataset.column_names)}")
    raw = list(dataset[cfg.label_column])
    if info is None:
        info = _infer_info(raw, cfg.task if cfg.task not in TASKS else "custom")
    names = [_label_name(v) for v in raw]
    unknown = sorted(set(names) - set(info.label_names)) if not info.regression else []
    if unknown:
        raise UserError(f"{path}: label {unknown[0]!r} is not one of {', '.join(info.label_names)}")
    labels = [float(v) for v in raw] if info.regression else [info.label_names.index(n) for n in names]
    texts = [str(t) for t in dataset[cfg.text_column]]
    pairs = [str(t) for t in dataset[cfg.text_pair_column]] if cfg.text_pair_column else None
    return _columns(texts, pairs, labels), info


def _label_name(value: object) -> str:
    """Class name of a raw label: 1.0 (pandas reads integer columns with blanks as float) names class "1"."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _infer_info(raw: list, name: str) -> TaskInfo:
    """Float labels with fractions mean regression; anything else is classes, integers in numeric order."""
    if any(isinstance(v, float) and not float(v).is_integer() for v in raw):
        return TaskInfo(name, (), ("pearson", "spearman"), regression=True)
    names = sorted(
        {_label_name(v) for v in raw},
        key=lambda n: (not n.lstrip("-").isdigit(), int(n) if n.lstrip("-").isdigit() else 0, n),
    )
    return TaskInfo(name, tuple(names), ("accuracy", "f1") if len(names) == 2 else ("accuracy",))


def read_table(path: str) -> datasets.Dataset:
    """A CSV, TSV (plain tab-split, no quoting, as GLUE) or JSONL file as a Dataset."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"data file {path!r} does not exist")
    suffix = file.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return datasets.Dataset.from_json(str(file))
    if suffix == ".tsv":
        return datasets.Dataset.from_csv(str(file), sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False)
    if suffix == ".csv":
        return datasets.Dataset.from_csv(str(file), keep_default_na=False)
    raise UserError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv or .jsonl")


def encode(dataset: datasets.Dataset, tokenizer, max_seq_len: int) -> list[dict]:
    """Tokenise without padding: one dict of input_ids (+ token_type_ids) and label per example."""
    pairs = list(dataset["text_pair"])
    has_pair = any(p is not None for p in pairs)
    enc = tokenizer(list(dataset["text"]), pairs if has_pair else None, truncation=True, max_length=max_seq_len)
    keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
    return [{**{k: enc[k][i] for k in keys}, "label": label} for i, label in enumerate(dataset["label"])]


def collate(examples: list[dict], pad_id: int, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Pad to the longest example in the batch (dynamic padding), or to `pad_to`."""
    width = pad_to or max(len(e["input_ids"]) for e in examples)
    batch: dict[str, torch.Tensor] = {}
    for key, fill in (("input_ids", pad_id), ("token_type_ids", 0)):
        if key in examples[0]:
            batch[key] = torch.tensor([e[key] + [fill] * (width - len(e[key])) for e in examples])
    batch["attention_mask"] = torch.tensor(
        [[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in examples]
    )
    label_dtype = torch.float if isinstance(examples[0]["label"], float) else torch.long
    batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=label_dtype)
    return batch


def batches(
    examples: list[dict], batch_size: int, pad_id: int, *, order: list[int] | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches in `order` (default: dataset order)."""
    order = order if order is not None else list(range(len(examples)))
    for start in range(0, len(order), batch_size):
        yield collate([examples[i] for i in order[start : start + batch_size]], pad_id)


def length_sorted(examples: list[dict]) -> list[int]:
    """Indices by length: evaluation in similar-length batches pads less (results do not depend on it)."""
    return sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))

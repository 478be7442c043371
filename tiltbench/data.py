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
import io
import json
import os
from collections.abc import Iterator
from dataclasses import KW_ONLY, asdict, dataclass
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
        if not isinstance(d["name"], str) or not all(isinstance(x, str) for x in [*d["label_names"], *d["metrics"]]):
            raise TypeError("task name, label names and metrics must be strings")
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
    _: KW_ONLY  # the rest by name: a dozen positional settings are unreadable and easy to shift
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

    @classmethod
    def for_checkpoint(
        cls, meta: dict, task: str | None = None, max_seq_len: int | None = None, **fields
    ) -> DataConfig:
        """Evaluation data for a checkpoint: its own task and max length unless given; a named task of another
        kind (regression vs classes, class count) is refused before anything loads."""
        cfg = cls(
            task=task or meta["task"]["name"],
            max_seq_len=meta["max_seq_len"] if max_seq_len is None else max_seq_len,
            **fields,
        )
        if not cfg.user_files:
            check_task_kind(TaskInfo.from_dict(meta["task"]), TASKS[cfg.task].info)
        return cfg


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
        if info is not None:
            check_task_kind(info, spec.info)
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


def check_task_kind(trained: TaskInfo, task: TaskInfo) -> None:
    """A checkpoint evaluates only on a task of its own kind: regression or classification, same class count."""

    def kind(info: TaskInfo) -> str:
        return "a regression task" if info.regression else f"a {info.num_labels}-class task"

    if (trained.regression, trained.num_labels) != (task.regression, task.num_labels):
        raise UserError(
            f"the checkpoint was trained on {trained.name}, {kind(trained)}; {task.name} is {kind(task)}: "
            "evaluate it on a task of the same kind"
        )


def _columns(texts: list[str], pairs: list[str] | None, labels: list) -> dict[str, list]:
    return {"text": texts, "text_pair": pairs if pairs is not None else [None] * len(texts), "label": labels}


def _label_value(info: TaskInfo, raw: object, where: str) -> int | float:
    try:
        if info.regression:
            return float(raw)  # type: ignore[arg-type]
        if isinstance(raw, str) and raw in info.label_names:
            return info.label_names.index(raw)
        value = int(raw)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise UserError(f"{where}: label {raw!r} is not a label of {info.name}") from None
    if not 0 <= value < info.num_labels:
        raise UserError(f"{where}: label {value} is outside 0..{info.num_labels - 1} of {info.name}")
    return value


def _load_local(spec: TaskSpec, split: Split, data_dir: Path) -> dict[str, list]:
    rel = spec.files[split]
    if rel is None:
        raise UserError(f"{spec.info.name} has no {split} split in the local data; pass --{split}-file")
    path = data_dir / rel
    if not path.is_file():
        raise UserError(f"missing data file {str(path)!r}; check --data-dir / ${DATA_DIR_ENV}")
    records = read_records(path, header=spec.header)
    text, pair, label = spec.columns
    wanted = [c for c in (text, pair, label) if c]
    texts, pairs, labels = [], [], []
    for line, record in records:
        where = f"{path}:{line}"
        missing = [c for c in wanted if record.get(c) in (None, "")]
        if missing:
            raise UserError(f"{where}: no {missing[0]!r}; the file is damaged, check --data-dir / ${DATA_DIR_ENV}")
        texts.append(str(record[text]))
        pairs.append(str(record[pair]) if pair else None)
        labels.append(_label_value(spec.info, record[label], where))
    return _columns(texts, pairs if pair else None, labels)


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
        [_label_value(spec.info, v, f"{repo} {config or ''}") for v in dataset["label"]],
    )


def _load_user_file(cfg: DataConfig, split: Split, info: TaskInfo | None) -> tuple[dict[str, list], TaskInfo]:
    path = cfg.train_file if split == "train" else cfg.eval_file
    if path is None:
        raise UserError(f"pass --{split}-file too: user files need both --train-file and --eval-file")
    records = read_table(path)
    columns = list(dict.fromkeys(k for _, r in records for k in r))
    wanted = [c for c in (cfg.text_column, cfg.text_pair_column, cfg.label_column) if c]
    absent = [c for c in wanted if c not in columns]
    if absent:
        raise UserError(f"{path}: no column {absent[0]!r}; columns are {', '.join(columns)}")
    for line, record in records:  # every line has every column, and a label: a blank is never a class
        for column in wanted:
            if record.get(column) is None or (column == cfg.label_column and str(record[column]).strip() == ""):
                raise UserError(f"{path}:{line}: no {column!r} value; every line needs one")
    raw = [record[cfg.label_column] for _, record in records]
    if info is None:
        info = _infer_info(raw, cfg.task if cfg.task not in TASKS else "custom", path)
    if info.regression:
        labels: list = [_number(v, f"{path}:{line}") for (line, _), v in zip(records, raw, strict=True)]
    else:
        names = [_label_name(v) for v in raw]
        unknown = sorted(set(names) - set(info.label_names))
        if unknown:
            raise UserError(f"{path}: label {unknown[0]!r} is not one of {', '.join(info.label_names)}")
        labels = [info.label_names.index(n) for n in names]
    texts = [str(r[cfg.text_column]) for _, r in records]
    pairs = [str(r[cfg.text_pair_column]) for _, r in records] if cfg.text_pair_column else None
    return _columns(texts, pairs, labels), info


def _number(value: object, where: str) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"{where}: label {value!r} is not a number (this is a regression task)") from None


def _label_name(value: object) -> str:
    """Class name of a raw label: 1, 1.0 and "1.0" all name class "1"."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)) or (isinstance(value, str) and _is_number(value)):
        number = float(value)
        if number.is_integer():
            return str(int(number))
    return str(value).strip()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _infer_info(raw: list, name: str, path: str) -> TaskInfo:
    """Labels with fractions mean regression (then every label must be a number); anything else is classes,
    integers in numeric order."""
    numbers = [v for v in raw if not isinstance(v, bool) and (isinstance(v, (int, float)) or _is_number(str(v)))]
    if any(not float(v).is_integer() for v in numbers):
        if len(numbers) < len(raw):
            odd = next(v for v in raw if v not in numbers)
            raise UserError(f"{path}: labels mix numbers with fractions and {odd!r}; use numbers only or classes")
        return TaskInfo(name, (), ("pearson", "spearman"), regression=True)
    names = sorted(
        {_label_name(v) for v in raw},
        key=lambda n: (not n.lstrip("-").isdigit(), int(n) if n.lstrip("-").isdigit() else 0, n),
    )
    if len(names) < 2:
        raise UserError(f"{path}: every label is {names[0]!r}; a classifier needs at least two classes")
    return TaskInfo(name, tuple(names), ("accuracy", "f1") if len(names) == 2 else ("accuracy",))


Record = tuple[int, dict]  # (line number in the file, the row)


def read_table(path: str) -> list[Record]:
    """The rows of a user's CSV, TSV (plain tab-split, no quoting, as GLUE) or JSONL file, with line numbers."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"data file {path!r} does not exist")
    if file.suffix.lower() not in (".csv", ".tsv", ".jsonl", ".json"):
        raise UserError(f"{path}: unsupported file type {file.suffix.lower()!r}; use .csv, .tsv or .jsonl")
    return read_records(file)


def read_records(path: Path, header: tuple[str, ...] | None = None) -> list[Record]:
    """Rows of a .csv, .tsv, .jsonl (or .json, .jsonl.gz) file; every defect is one UserError with its line."""
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # MRPC's header starts with a BOM
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); save the file as UTF-8"
        ) from None
    name = path.name.lower().removesuffix(".gz")
    records = _json_records(path, text) if name.endswith((".jsonl", ".json")) else _table_records(path, text, header)
    if not records:
        raise UserError(
            f"{path} has no rows" + ("" if header or name.endswith(("json", "jsonl")) else " below its header")
        )
    return records


def _json_records(path: Path, text: str) -> list[Record]:
    if text.lstrip().startswith("["):  # a .json array of objects
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        numbered = list(enumerate(rows, 1))
    else:
        numbered = []
        for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): it also splits on U+2028 and more
            if not line.strip():
                continue
            try:
                numbered.append((n, json.loads(line)))
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{n}: not a JSON object ({err.msg}); write one object per line") from None
    for n, row in numbered:
        if not isinstance(row, dict):
            raise UserError(f"{path}:{n}: not a JSON object; write one object per line")
    return numbered


def _table_records(path: Path, text: str, header: tuple[str, ...] | None) -> list[Record]:
    tsv = path.name.lower().removesuffix(".gz").endswith(".tsv")
    options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if tsv else {}
    reader = csv.reader(io.StringIO(text, newline=""), **options)
    records: list[Record] = []
    columns = list(header) if header else None
    try:
        for row in reader:
            if not row:
                continue
            if columns is None:
                columns = row
                continue
            if len(row) != len(columns):
                raise UserError(
                    f"{path}:{reader.line_num}: {len(row)} fields where the header has {len(columns)}"
                    + ("; TSV files are tab-separated, without quoting" if tsv else "")
                )
            records.append((reader.line_num, dict(zip(columns, row, strict=True))))
    except csv.Error as err:
        raise UserError(f"{path}:{reader.line_num}: {err}") from None
    return records


def encode(dataset: datasets.Dataset, tokenizer, max_seq_len: int) -> list[dict]:
    """Tokenise without padding: one dict of input_ids (+ token_type_ids) and label per example."""
    pairs = list(dataset["text_pair"])
    has_pair = any(p is not None for p in pairs)
    if has_pair and any(p is None for p in pairs):
        raise UserError("a second text (text_pair) is given for some examples but not for all; give it for all or none")
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

"""tiltbench.data: local GLUE/IMDB loading, seeded shuffling, user files, the Hub branch, encode + collate."""

from __future__ import annotations

import csv
import json

import datasets
import pytest
import torch
from conftest import DATA_DIR

from tiltbench.data import (
    DATA_DIR_ENV,
    TASKS,
    DataConfig,
    batches,
    collate,
    encode,
    length_sorted,
    load_split,
)
from tiltbench.errors import UserError

EVAL_ROWS = {"sst2": 872, "cola": 1043, "mrpc": 408, "rte": 277, "stsb": 1500, "qnli": 5463, "wnli": 71}
PAIR_TASKS = {"mrpc", "rte", "stsb", "qnli", "wnli"}


def local(task: str, **kwargs) -> DataConfig:
    return DataConfig(task=task, data_dir=str(DATA_DIR), **kwargs)


def write_lines(path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def write_jsonl(path, records: list[dict]) -> str:
    return write_lines(path, [json.dumps(r) for r in records])


# --- local GLUE / IMDB ----------------------------------------------------------------------------


def test_every_task_is_covered():
    assert set(TASKS) == set(EVAL_ROWS) | {"imdb"}


@pytest.mark.parametrize("task", sorted(EVAL_ROWS))
def test_local_eval_split(task):
    dataset, info = load_split(local(task), "eval")
    assert len(dataset) == EVAL_ROWS[task]
    assert dataset.column_names == ["text", "text_pair", "label"]
    assert info == TASKS[task].info
    assert all(isinstance(t, str) and t for t in dataset["text"])
    if task in PAIR_TASKS:
        assert all(isinstance(p, str) for p in dataset["text_pair"])
    else:
        assert all(p is None for p in dataset["text_pair"])
    labels = dataset["label"]
    if info.regression:
        assert all(isinstance(y, float) for y in labels)
        assert 0.0 <= min(labels) < max(labels) <= 5.0
    else:
        assert all(type(y) is int for y in labels)
        assert set(labels) == set(range(info.num_labels))


def test_eval_split_keeps_file_order_without_subset():
    dataset, _ = load_split(local("sst2"), "eval")
    first = {"text": "it 's a charming and often affecting journey . ", "text_pair": None, "label": 1}
    assert dataset[0] == first


def test_rte_entailment_is_label_zero():
    with open(DATA_DIR / "rte" / "dev.tsv", encoding="utf-8", newline="") as f:
        raw = [row[3] for row in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    dataset, info = load_split(local("rte"), "eval")
    assert info.label_names[0] == "entailment"
    assert dataset["label"] == [0 if r == "entailment" else 1 for r in raw]
    assert set(raw) == {"entailment", "not_entailment"}


def test_imdb_eval_subset_mixes_the_label_sorted_file():
    dataset, info = load_split(local("imdb", max_eval_samples=50), "eval")
    assert len(dataset) == 50
    assert set(dataset["label"]) == {0, 1}
    assert all(p is None for p in dataset["text_pair"])
    assert info.label_names == ("neg", "pos")


def test_data_dir_from_env(monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(DATA_DIR))
    dataset, _ = load_split(DataConfig(task="wnli"), "eval")
    assert len(dataset) == 71


# --- train split: seeded shuffle and subsetting ---------------------------------------------------


def first_texts(seed: int, n: int = 5) -> list[str]:
    dataset, _ = load_split(local("rte", max_train_samples=20, seed=seed), "train")
    return dataset["text"][:n]


def test_train_shuffle_is_seeded():
    assert first_texts(0) == first_texts(0)
    assert first_texts(0) != first_texts(1)


def test_train_shuffle_changes_file_order():
    full, _ = load_split(local("rte"), "train")
    assert len(full) == 2490
    with open(DATA_DIR / "rte" / "train.tsv", encoding="utf-8", newline="") as f:
        in_file = [row[1] for row in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    assert full["text"] != in_file
    assert sorted(full["text"]) == sorted(in_file)


@pytest.mark.parametrize(("limit", "expected"), [(20, 20), (10_000, 635)])
def test_max_train_samples(limit, expected):
    dataset, _ = load_split(local("wnli", max_train_samples=limit), "train")
    assert len(dataset) == expected


def test_qnli_has_no_local_train_split():
    with pytest.raises(UserError, match="--train-file"):
        load_split(local("qnli"), "train")


# --- user mistakes --------------------------------------------------------------------------------


def test_missing_data_dir():
    with pytest.raises(UserError, match="/nonexistent.*--data-dir"):
        load_split(DataConfig(task="sst2", data_dir="/nonexistent"), "eval")


def test_data_dir_without_the_task_files(tmp_path):
    with pytest.raises(UserError, match="missing data file .*sst2/dev.tsv"):
        load_split(DataConfig(task="sst2", data_dir=str(tmp_path)), "eval")


def test_missing_data_dir_from_env(monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, "/nonexistent")
    with pytest.raises(UserError, match=f"/nonexistent.*{DATA_DIR_ENV}"):
        load_split(DataConfig(task="sst2"), "eval")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "sst3"}, "unknown task 'sst3'"),
        ({"max_eval_samples": 0}, "--max-eval-samples"),
        ({"max_train_samples": -1}, "--max-train-samples"),
        ({"max_seq_len": 1}, "--max-seq-len"),
        ({"max_seq_len": 513}, "--max-seq-len"),
    ],
)
def test_data_config_validation(kwargs, message):
    with pytest.raises(UserError, match=message):
        DataConfig(**kwargs)


# --- user files -----------------------------------------------------------------------------------


def test_csv_string_labels_map_to_sorted_ids(tmp_path):
    train = write_lines(tmp_path / "train.csv", ["text,label", '"good, really",pos', "bad,neg", "fine,pos"])
    evaluation = write_lines(tmp_path / "eval.csv", ["text,label", "awful,neg", "great,pos"])
    cfg = DataConfig(train_file=train, eval_file=evaluation)
    train_set, info = load_split(cfg, "train")
    assert info.name == "custom" and info.label_names == ("neg", "pos") and not info.regression
    assert sorted(zip(train_set["text"], train_set["label"], strict=True)) == [
        ("bad", 0),
        ("fine", 1),
        ("good, really", 1),
    ]
    eval_set, eval_info = load_split(cfg, "eval", info)
    assert eval_info == info
    assert eval_set["text"] == ["awful", "great"] and eval_set["label"] == [0, 1]
    assert eval_set["text_pair"] == [None, None]


def test_tsv_is_read_without_quoting(tmp_path):
    path = write_lines(tmp_path / "data.tsv", ["sentence\tlabel", 'he said " hi\tb', "plain text\ta"])
    dataset, info = load_split(DataConfig(train_file=path, eval_file=path, text_column="sentence"), "eval")
    assert dataset["text"] == ['he said " hi', "plain text"]
    assert info.label_names == ("a", "b") and dataset["label"] == [1, 0]


def test_jsonl_pair_with_int_labels(tmp_path):
    records = [
        {"premise": "a cat sleeps", "hypothesis": "an animal rests", "gold": 1},
        {"premise": "it rains", "hypothesis": "it is dry", "gold": 0},
    ]
    path = write_jsonl(tmp_path / "nli.jsonl", records)
    columns = {"text_column": "premise", "text_pair_column": "hypothesis", "label_column": "gold"}
    cfg = DataConfig(train_file=path, eval_file=path, **columns)
    dataset, info = load_split(cfg, "eval")
    assert dataset["text"] == ["a cat sleeps", "it rains"]
    assert dataset["text_pair"] == ["an animal rests", "it is dry"]
    assert dataset["label"] == [1, 0]
    assert info.label_names == ("0", "1") and info.metrics == ("accuracy", "f1")


def test_fractional_float_labels_are_regression(tmp_path):
    records = [{"text": t, "label": y} for t, y in [("a", 0.5), ("b", 3), ("c", 4.25)]]
    path = write_jsonl(tmp_path / "scores.jsonl", records)
    dataset, info = load_split(DataConfig(train_file=path, eval_file=path), "eval")
    assert info.regression and info.num_labels == 1 and info.label_names == ()
    assert info.metrics == ("pearson", "spearman")
    assert dataset["label"] == [0.5, 3.0, 4.25]
    assert all(isinstance(y, float) for y in dataset["label"])


def test_integral_float_labels_are_classes(tmp_path):
    path = write_jsonl(tmp_path / "floats.jsonl", [{"text": "a", "label": 0.0}, {"text": "b", "label": 1.0}])
    dataset, info = load_split(DataConfig(train_file=path, eval_file=path), "eval")
    assert not info.regression and info.label_names == ("0", "1")
    assert dataset["label"] == [0, 1]


def test_missing_column_names_the_available_ones(tmp_path):
    path = write_lines(tmp_path / "data.csv", ["sentence,label", "hello,1"])
    with pytest.raises(UserError, match="no column 'text'; columns are sentence, label"):
        load_split(DataConfig(train_file=path, eval_file=path), "train")


def test_eval_label_unknown_to_train(tmp_path):
    train = write_lines(tmp_path / "train.csv", ["text,label", "a,pos", "b,neg"])
    evaluation = write_lines(tmp_path / "eval.csv", ["text,label", "c,neutral"])
    cfg = DataConfig(train_file=train, eval_file=evaluation)
    _, info = load_split(cfg, "train")
    with pytest.raises(UserError, match="label 'neutral' is not one of neg, pos"):
        load_split(cfg, "eval", info)


def test_user_files_need_both(tmp_path):
    path = write_lines(tmp_path / "eval.csv", ["text,label", "a,x"])
    with pytest.raises(UserError, match="--train-file"):
        load_split(DataConfig(eval_file=path), "train")


@pytest.mark.parametrize(
    ("name", "message"), [("data.txt", "unsupported file type '.txt'"), ("missing.csv", "does not exist")]
)
def test_bad_user_file(tmp_path, name, message):
    if name.endswith(".txt"):
        write_lines(tmp_path / name, ["text,label", "a,b"])
    path = str(tmp_path / name)
    with pytest.raises(UserError, match=message):
        load_split(DataConfig(train_file=path, eval_file=path), "eval")


# --- the Hugging Face Hub branch (no network: load_dataset is replaced) ---------------------------


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace datasets.load_dataset; returns the list of calls. Unsets the data dir so the Hub is used."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    calls: list[tuple] = []
    tables = {
        "sst2": {"sentence": ["good film ", "bad film "], "label": [1, 0], "idx": [0, 1]},
        "rte": {
            "sentence1": ["A dog runs.", "It rains."],
            "sentence2": ["An animal moves.", "It is dry."],
            "label": [0, 1],
            "idx": [0, 1],
        },
    }

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append(((path, name), {"split": split, **kwargs}))
        return datasets.Dataset.from_dict(tables[name])

    monkeypatch.setattr("tiltbench.data.datasets.load_dataset", load_dataset)
    return calls


def test_hub_single_sentence(fake_hub):
    dataset, info = load_split(DataConfig(task="sst2"), "eval")
    assert fake_hub == [(("nyu-mll/glue", "sst2"), {"split": "validation"})]
    assert dataset["text"] == ["good film ", "bad film "]
    assert dataset["text_pair"] == [None, None]
    assert dataset["label"] == [1, 0]
    assert info.name == "sst2"


def test_hub_pair_train_split(fake_hub):
    dataset, _ = load_split(DataConfig(task="rte", seed=3), "train")
    assert fake_hub == [(("nyu-mll/glue", "rte"), {"split": "train"})]
    assert sorted(zip(dataset["text"], dataset["text_pair"], dataset["label"], strict=True)) == [
        ("A dog runs.", "An animal moves.", 0),
        ("It rains.", "It is dry.", 1),
    ]


def test_hub_failure_is_a_user_error(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr("tiltbench.data.datasets.load_dataset", offline)
    with pytest.raises(UserError, match=r"nyu-mll/glue.*\(ConnectionError\).*--data-dir"):
        load_split(DataConfig(task="sst2"), "eval")


# --- encode + collate -----------------------------------------------------------------------------


def make_dataset(texts, pairs=None, labels=None) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"text": texts, "text_pair": pairs or [None] * len(texts), "label": labels or [0] * len(texts)}
    )


def test_collate_pads_dynamically(minilm_tokenizer):
    tok = minilm_tokenizer
    texts = ["short", "a somewhat longer sentence to pad against"]
    examples = encode(make_dataset(texts, labels=[0, 1]), tok, 128)
    lengths = [len(e["input_ids"]) for e in examples]
    assert lengths[0] == 3 and lengths[1] > lengths[0]
    assert all(e.keys() == {"input_ids", "token_type_ids", "label"} for e in examples)
    batch = collate(examples, tok.pad_token_id)
    assert batch.keys() == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["attention_mask"][0, lengths[0] :].eq(0).all()
    assert batch["input_ids"][0, lengths[0] :].eq(tok.pad_token_id).all()
    assert batch["input_ids"][0, : lengths[0]].tolist() == examples[0]["input_ids"]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [0, 1]


def test_collate_pad_to_and_regression_labels(minilm_tokenizer):
    examples = encode(make_dataset(["one", "two words"], labels=[0.5, 4.0]), minilm_tokenizer, 128)
    batch = collate(examples, minilm_tokenizer.pad_token_id, pad_to=16)
    assert batch["input_ids"].shape == (2, 16)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [0.5, 4.0]


def test_encode_pairs_and_truncation(minilm_tokenizer):
    long_text = " ".join(["word"] * 50)
    dataset = make_dataset(["first part", long_text], ["second part", long_text])
    examples = encode(dataset, minilm_tokenizer, 16)
    assert all(len(e["input_ids"]) <= 16 for e in examples) and len(examples[1]["input_ids"]) == 16
    segments = examples[0]["token_type_ids"]
    assert segments[0] == 0 and segments[-1] == 1  # [CLS] first part [SEP] second part [SEP]


def test_batches_follow_order(minilm_tokenizer):
    examples = encode(make_dataset(["a b c d e f", "a", "a b c"], labels=[0, 1, 2]), minilm_tokenizer, 128)
    order = length_sorted(examples)
    assert order == [1, 2, 0]
    out = list(batches(examples, 2, minilm_tokenizer.pad_token_id, order=order))
    assert [b["labels"].tolist() for b in out] == [[1, 2], [0]]
    assert [b["input_ids"].shape[1] for b in out] == [5, 8]

"""The method interface: PoWER-BERT's soft and hard stages, its learned counts, and a method added in one file."""

import copy
import json
import math

import pytest
import torch
from conftest import DATA_DIR, random_batch, tiny_bert

from tiltbench import Schedule, UserError, patch, realised_counts
from tiltbench.methods import METHODS, Method, get_method, register
from tiltbench.methods.power import Power
from tiltbench.patch import set_knob


def _ffn_tokens(model) -> list[int]:
    """Word vectors each layer's FFN computes (padding included, if any), from hooks on HF's own modules."""
    tokens: list[int] = []
    for layer in model.bert.encoder.layer:
        layer.intermediate.register_forward_hook(lambda m, args, out: tokens.append(args[0].shape[:-1].numel()))
    return tokens


def test_registry_holds_the_methods():
    assert {"tilted", "power"} <= set(METHODS)
    assert get_method("power") is Power
    with pytest.raises(UserError, match="unknown method 'nope'"):
        get_method("nope")


def test_power_hard_extract_removes_tokens_at_the_learned_fractions():
    fractions = (0.8, 0.6, 0.5, 0.3)
    model = patch(tiny_bert(), method=Power(4, fractions=fractions), knob=1.0)
    tokens = _ffn_tokens(model)
    lengths = [20, 9, 5]
    with torch.inference_mode():
        model(**random_batch(lengths))

    def by_hand(n0: int, shares) -> list[int]:  # layer l keeps max(1, ceil(n0 f_l)), never more than before
        counts = [n0]
        for f in shares:
            counts.append(min(counts[-1], max(1, math.ceil(n0 * f - 1e-9))))
        return counts

    expected = [by_hand(n, fractions) for n in lengths]
    assert realised_counts(model).tolist() == expected
    assert tokens == [sum(row[layer] for row in expected) for layer in range(1, 5)]  # physically removed

    set_knob(model, 0.5)  # half the removed share: f' = 1 - 0.5 (1 - f)
    tokens.clear()
    with torch.inference_mode():
        model(**random_batch(lengths))
    half = [1 - 0.5 * (1 - f) for f in fractions]
    assert realised_counts(model).tolist() == [by_hand(n, half) for n in lengths]


def test_power_at_knob_zero_is_hf_forward():
    reference = tiny_bert()
    model = patch(copy.deepcopy(reference), method=Power(4, fractions=(0.5, 0.5, 0.5, 0.5)), knob=0.0)
    batch = random_batch([12, 7])
    with torch.inference_mode():
        assert torch.equal(model(**batch).logits, reference(**batch).logits)


def test_power_soft_stage_weights_tokens_without_removing_them():
    """Retention c for every rank: every token but [CLS] is scaled by c after each attention sub-layer, none
    removed. The reference is HF's own model with that scaling hooked onto its attention outputs."""
    c = 0.6
    reference = tiny_bert("eager")
    model = copy.deepcopy(reference)
    method = Power(4)
    with torch.no_grad():
        method.retention.fill_(c)
    method.soft = True
    patch(model, method=method)
    tokens = _ffn_tokens(model)
    lengths = [11, 6]
    batch = random_batch(lengths)

    def scale(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = torch.cat([hidden[:, :1], c * hidden[:, 1:]], 1)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    for layer in reference.bert.encoder.layer:
        layer.attention.register_forward_hook(scale)
    with torch.no_grad():
        logits, expected = model(**batch).logits, reference(**batch).logits
    assert tokens == [2 * 11] * 4  # nothing leaves in the soft stage (the soft path keeps the padded layout)
    assert realised_counts(model).tolist() == [[11] * 5, [6] * 5]
    assert torch.allclose(logits, expected, atol=1e-5)


def test_power_soft_weights_follow_significance_rank_as_a_share_of_real_length():
    method = Power(1, bins=4)
    with torch.no_grad():
        method.retention[0] = torch.tensor([1.0, 0.75, 0.5, 0.25])
    scores = torch.tensor([[0.0, 5.0, 1.0, 3.0, 0.0, 0.0], [0.0, 1.0, 2.0, 9.0, 9.0, 9.0]])
    valid = torch.tensor([[True, True, True, True, False, False], [True, True, True, False, False, False]])
    weights = method.soft_weights(0, scores, valid)
    # row 0, n0 = 4: ranks CLS 0, tok1 1, tok3 2, tok2 3 -> bins 0, 1, 2, 3; pads weigh 0
    assert weights[0].tolist() == [1.0, 0.75, 0.25, 0.5, 0.0, 0.0]
    # row 1, n0 = 3: ranks CLS 0, tok2 1, tok1 2 -> bins floor(4k/3) = 0, 1, 2
    assert weights[1].tolist() == [1.0, 0.5, 0.75, 0.0, 0.0, 0.0]


def test_power_regulariser_and_configuration():
    method = Power(4, bins=2)
    with torch.no_grad():
        method.retention.copy_(torch.tensor([[0.9, 0.9], [1.0, 0.9], [0.5, 0.5], [0.7, 0.5]]))
    assert method.regulariser().item() == pytest.approx(1 * 0.9 + 2 * 0.95 + 3 * 0.5 + 4 * 0.6)
    assert method.learn_fractions() == pytest.approx((0.9, 0.9, 0.5, 0.5))  # forced non-increasing
    assert method.schedule(1.0) == Schedule(4, 0.0, "fractions", None, 1, method.fractions)
    with torch.no_grad():
        method.retention.fill_(1.7)
    method.after_step()
    assert method.retention.max().item() == 1.0  # clipped back into [0, 1]
    with pytest.raises(UserError, match="retention scale must be >= 0"):
        method.schedule(-0.5)


def test_power_soft_stage_trains_the_retention():
    model = tiny_bert()
    method = Power(4)
    method.soft = True
    patch(model, method=method)
    model.train()
    batch = random_batch([10, 8])
    loss = model(**batch, labels=torch.tensor([0, 1])).loss + 0.1 * method.regulariser()
    loss.backward()
    assert method.retention.grad is not None and method.retention.grad.abs().sum() > 0


# --- a method added as one file ---------------------------------------------------------------------


class RandomScores(Method):
    """A toy method as a user would add it (one file, one class): TiltedBERT's counts, random scores."""

    name = "random-scores"
    knob_name = "drop_rate"
    default_grid = "0,0.3"

    def schedule(self, knob: float) -> Schedule:
        return Schedule(self.num_layers, knob, "geometric", None, self.min_tokens)

    def score(self, probs, valid, values):
        return torch.rand(valid.shape, generator=torch.Generator().manual_seed(valid.shape[1]))


@pytest.fixture
def random_scores():
    register(RandomScores)  # what the decorator does when the file sits in tiltbench/methods/
    yield RandomScores
    METHODS.pop(RandomScores.name)


def test_a_method_in_one_file_works_with_every_command(tmp_path, random_scores):
    from typer.testing import CliRunner

    from tiltbench.cli import app

    base = tmp_path / "base"
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tiltbench.models import resolve_model

    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    BertForSequenceClassification(config).save_pretrained(base)
    AutoTokenizer.from_pretrained(resolve_model("minilm")).save_pretrained(base)
    runner = CliRunner()
    env = {"TILTBENCH_DATA_DIR": str(DATA_DIR)}

    def ok(*args: str) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.stdout

    ckpt = tmp_path / "ckpt"
    data = ["--task", "sst2", "--max-seq-len", "32", "--max-eval-samples", "16"]
    ok("finetune", "--method", "random-scores", "--model", str(base), *data, "--max-train-samples", "32",
       "--output", str(ckpt), "--json")  # fmt: skip
    meta = json.loads((ckpt / "tiltbench.json").read_text())
    assert meta["method"] == "random-scores" and meta["knob_name"] == "drop_rate"
    offline = json.loads(ok("offline-tune", str(ckpt), "--max-eval-samples", "16", "--json"))
    assert [r["drop_rate"] for r in offline["rows"]] == [0.0, 0.3]  # the method's own default grid
    fast = ["--latency-examples", "4", "--min-iterations", "1", "--min-seconds", "0", "--no-fvcore"]
    ok("measure", str(ckpt), "--batch-sizes", "2", *fast, "--results-dir", str(tmp_path / "r"), "--json")
    ok("sweep", "--checkpoint", f"{ckpt}@0.2", "--batch-sizes", "2", *fast, "--results-dir", str(tmp_path / "r"),
       "--run-name", "s", "--json")  # fmt: skip
    rows = json.loads((tmp_path / "r" / f"measure-{ckpt.name}" / "report.json").read_text())["rows"]
    assert {(r["method"], r["knob_name"], r["knob"]) for r in rows} == {
        ("random-scores", "drop_rate", 0.0),
        ("random-scores", "drop_rate", 0.3),
    }
    swept = json.loads((tmp_path / "r" / "s" / "report.json").read_text())["rows"]
    assert [(r["knob"], r["mean_kept_tokens"][-1] < r["mean_kept_tokens"][0]) for r in swept] == [(0.2, True)]


# --- PoWER-BERT's three stages from the command line ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tiltbench.models import resolve_model

    base = tmp_path_factory.mktemp("power") / "base"
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    BertForSequenceClassification(config).save_pretrained(base)
    AutoTokenizer.from_pretrained(resolve_model("minilm")).save_pretrained(base)
    return base


def _power(tiny_base, out, *extra: str) -> dict:
    from typer.testing import CliRunner

    from tiltbench.cli import app

    args = ["finetune", "--method", "power", "--model", str(tiny_base), "--task", "sst2", "--max-seq-len", "32"]
    args += ["--max-train-samples", "64", "--max-eval-samples", "16", "--batch-size", "16", "--method-lr", "0.05"]
    result = CliRunner().invoke(
        app, [*args, *extra, "--output", str(out), "--json"], env={"TILTBENCH_DATA_DIR": str(DATA_DIR)}
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_power_runs_three_stages_and_lambda_moves_the_counts(tiny_base, tmp_path):
    loose = _power(tiny_base, tmp_path / "loose", "--lambda", "0")
    tight = _power(tiny_base, tmp_path / "tight", "--lambda", "1")
    meta = json.loads((tmp_path / "tight" / "tiltbench.json").read_text())
    assert [s["name"] for s in meta["stages"]] == ["fine-tune", "search", "retrain"]
    assert meta["method"] == "power" and meta["scorer"] == "acc-nodiag" and meta["knob"] == 1.0
    assert meta["method_config"]["fractions"] == tight["fractions"] == meta["schedule"]["fractions"]
    assert (tmp_path / "tight" / "method.safetensors").is_file()
    assert sum(tight["fractions"]) < sum(loose["fractions"])  # λ pushes the retained shares down
    assert all(a >= b for a, b in zip(tight["fractions"], tight["fractions"][1:], strict=False))
    # the checkpoint stays a plain HF folder that loads as a dense model
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(tmp_path / "tight")
    reused = _power(tiny_base, tmp_path / "reused", "--init", str(tmp_path / "loose"), "--lambda", "1")
    stages = json.loads((tmp_path / "reused" / "tiltbench.json").read_text())["stages"]
    assert [s["name"] for s in stages] == ["search", "retrain"] and reused["fractions"]


def test_power_checkpoint_reloads_at_its_learned_counts(tiny_base, tmp_path):
    from tiltbench.models import load_checkpoint

    summary = _power(tiny_base, tmp_path / "p", "--lambda", "1")
    model, tokenizer, meta, info = load_checkpoint(tmp_path / "p")
    with torch.inference_mode():
        model(**random_batch([20, 10]))
    fractions = summary["fractions"]

    def by_hand(n0):
        counts = [n0]
        for f in fractions:
            counts.append(min(counts[-1], max(1, math.ceil(n0 * f - 1e-9))))
        return counts

    assert realised_counts(model).tolist() == [by_hand(20), by_hand(10)]


def test_an_explicit_keep_list_is_never_turned_into_a_rate():
    model = patch(tiny_bert(), tilt_rate=[8, 6, 4, 2])
    method = model._tiltbench.method
    assert method.knob_name == "keep_list" and method.config() == {"shape": "list", "keep": [8, 6, 4, 2]}
    assert set_knob(model, 1) == Schedule(4, 0.0, "list", (8, 6, 4, 2))
    assert set_knob(model, 0).is_identity
    with pytest.raises(UserError, match="its knob is 0 \\(dense\\) or 1 \\(the list\\), not 0.3"):
        set_knob(model, 0.3)


def test_models_take_per_example_counts():
    from tiltbench.speed_model import ModelDims, batch_work, predict_speedup, speedup_from_counts

    dims, schedule, lengths = ModelDims(32, 64, 4), Schedule(4, 0.3), [20, 9, 5]
    counts = [schedule.counts(n) for n in lengths]
    assert speedup_from_counts(dims, counts) == pytest.approx(
        predict_speedup(dims, schedule, lengths).predicted_speedup
    )
    assert batch_work(lengths, None, counts=counts) == batch_work(lengths, schedule)
    uneven = [[20, 20, 10, 10, 5], [9, 9, 9, 9, 9], [5, 5, 3, 3, 1]]  # what a data-dependent method might keep
    work = batch_work(lengths, None, counts=uneven)
    assert work.widths == (20, 20, 10, 10, 9) and work.eliminating == (False, True, False, True)


def test_speedup_predict_moves_a_power_checkpoints_knob(tiny_base, tmp_path):
    from typer.testing import CliRunner

    from tiltbench.cli import app

    summary = _power(tiny_base, tmp_path / "p", "--lambda", "1")
    runner = CliRunner()
    base = ["speedup-predict", "--checkpoint", str(tmp_path / "p"), "--seq-len", "40", "--json"]
    at = {k: json.loads(runner.invoke(app, [*base, "--knob", str(k)]).stdout) for k in (0, 1)}
    assert at[0]["predicted_speedup"] == 1.0 and at[1]["method"] == "power"
    assert at[1]["kept_tokens"] == [math.ceil(40 * f - 1e-9) for f in summary["fractions"]]
    solved = json.loads(runner.invoke(app, [*base, "--target-speedup", "1.1"]).stdout)
    assert solved["knob_name"] == "retention_scale" and solved["predicted_speedup"] >= 1.1

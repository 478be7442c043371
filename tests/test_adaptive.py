"""Data-dependent elimination: variable counts in the core, the gates (Dynamic BERT) and LTP methods."""

import copy
import json

import pytest
import torch
from conftest import DATA_DIR, random_batch, tiny_bert

from tiltbench import Schedule, UserError, patch, realised_counts, set_schedule
from tiltbench.methods.gates import Gates
from tiltbench.methods.ltp import LTP
from tiltbench.patch import set_knob

LENGTHS = [20, 20, 12, 7, 20, 3]  # three of one length: content, not length, must set their counts


def _gates(layers: int = 4, seed: int = 0, bias: float = 0.0) -> Gates:
    """Gates with random probes, so each token's gate depends on its hidden state."""
    gates = Gates(layers, hidden_size=32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        gates.weight.copy_(torch.randn(layers, 32, generator=generator))
        gates.bias.fill_(bias)
    return gates


@pytest.fixture
def ltp_minilm(minilm):
    """A copy of the packaged MiniLM with LTP at its default thresholds: a random tiny BERT attends almost
    uniformly, so its thresholds keep all or nothing; real weights attend unevenly, as LTP assumes."""
    model = copy.deepcopy(minilm[0])
    return patch(model, method=LTP(6, max_len=32))


def _words(lengths: list[int], seed: int = 3) -> dict[str, torch.Tensor]:
    """Rows of random real word pieces, [CLS] ... [SEP], right-padded."""
    batch = random_batch(lengths, vocab=30000, seed=seed)
    ids = batch["input_ids"]
    ids[ids == 1], ids[ids == 2] = 101, 102
    return batch


def _layer_calls(model) -> list[int]:
    """Indices of the encoder layers whose own forward (HF's BertLayer.__call__) ran."""
    calls: list[int] = []
    for i, layer in enumerate(model.bert.encoder.layer):
        layer.register_forward_hook(lambda m, args, out, i=i: calls.append(i))
    return calls


def _alone_equals_together(model, batch: dict[str, torch.Tensor], lengths: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        together = model(**batch).logits
        kept = realised_counts(model)
        for row, n in enumerate(lengths):
            alone = model(input_ids=batch["input_ids"][row : row + 1, :n]).logits
            assert torch.allclose(alone, together[row : row + 1], atol=1e-4), (row, alone, together[row])
            assert realised_counts(model)[0].tolist() == kept[row].tolist()
    return kept


def _same_length_rows_differ(kept: torch.Tensor, lengths: list[int]) -> None:
    same = [row for row, n in enumerate(lengths) if n == 20]
    assert len({tuple(kept[row].tolist()) for row in same}) > 1, kept[same]  # content, not length, decided


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_gates_logits_alone_equal_logits_in_a_mixed_batch(attn):
    model = patch(tiny_bert(attn), method=_gates())
    set_knob(model, 0.5)
    kept = _alone_equals_together(model, random_batch(LENGTHS, seed=3), LENGTHS)
    assert bool((kept[:, 1:] < kept[:, :-1]).any())  # tokens were removed
    _same_length_rows_differ(kept, LENGTHS)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_ltp_logits_alone_equal_logits_in_a_mixed_batch(ltp_minilm, attn):
    ltp_minilm.set_attn_implementation(attn)
    set_knob(ltp_minilm, 0.5)
    kept = _alone_equals_together(ltp_minilm, _words(LENGTHS), LENGTHS)
    assert bool((kept[:, 1:] < kept[:, :-1]).any())
    _same_length_rows_differ(kept, LENGTHS)


def test_counts_come_from_what_was_kept_and_the_tensor_shrinks():
    model = patch(tiny_bert(), method=_gates())
    set_knob(model, 0.5)
    tokens: list[int] = []  # word vectors each FFN computes
    for layer in model.bert.encoder.layer:
        layer.intermediate.register_forward_hook(lambda m, args, out: tokens.append(args[0].shape[:-1].numel()))
    with torch.inference_mode():
        hidden = model.bert(**random_batch(LENGTHS, seed=3)).last_hidden_state
    kept = realised_counts(model)
    assert hidden.shape[1] == int(kept[:, -1].max())  # physically removed: the batch is its longest kept row
    assert tokens == [int(kept[:, i + 1].sum()) for i in range(4)]  # and each FFN runs on the kept tokens alone
    assert bool((kept[:, 1:] <= kept[:, :-1]).all()) and bool((kept[:, 1:] >= 1).all())  # [CLS] stays


def test_a_layer_where_the_whole_batch_keeps_everything_runs_hfs_own_layer():
    gates = _gates()
    with torch.no_grad():  # layer 1's gates are all ~1: nothing leaves there, whatever the content
        gates.weight[1].zero_()
        gates.bias[1] = 20.0
    model = patch(tiny_bert(), method=gates)
    set_knob(model, 0.5)
    calls = _layer_calls(model)
    with torch.inference_mode():
        model(**random_batch(LENGTHS, seed=3))
    kept = realised_counts(model)
    assert kept[:, 2].tolist() == kept[:, 1].tolist()
    assert 1 in calls and 0 not in calls, calls  # layer 0 removed tokens, so it ran the eliminating path
    # without the layer hooks (a hooked layer runs its own call, padding and all), its FFN skips the padding
    model = patch(tiny_bert(), method=gates)
    set_knob(model, 0.5)
    tokens: list[int] = []  # word vectors layer 1's FFN computes
    model.bert.encoder.layer[1].intermediate.register_forward_hook(
        lambda m, args, out: tokens.append(args[0].shape[:-1].numel())
    )
    with torch.inference_mode():
        model(**random_batch(LENGTHS, seed=3))
    assert len(set(kept[:, 1].tolist())) > 1 and tokens == [int(kept[:, 1].sum())]
    assert realised_counts(model).tolist() == kept.tolist()


def test_ltps_first_layer_never_prunes_and_runs_hfs_own_layer(ltp_minilm):
    set_knob(ltp_minilm, 2.0)
    calls = _layer_calls(ltp_minilm)
    with torch.inference_mode():
        ltp_minilm(**_words(LENGTHS))
    assert calls == [0]  # its threshold is 0
    assert realised_counts(ltp_minilm)[:, 1].tolist() == LENGTHS


@pytest.mark.parametrize("method", [Gates(4, hidden_size=32), LTP(4, max_len=32)], ids=["gates", "ltp"])
def test_the_dense_knob_is_hfs_forward(method):
    model = patch(tiny_bert(), method=method)
    assert set_knob(model, 0).is_identity
    batch = random_batch(LENGTHS)
    with torch.inference_mode():
        ours = model(**batch).logits
        reference = tiny_bert()(**batch).logits
    assert torch.equal(ours, reference)
    assert realised_counts(model)[:, -1].tolist() == LENGTHS


def test_soft_gates_at_zero_and_one_are_hard_removal():
    """The relaxation is exact at the ends: a gate of σ(-40) (its log clamped at log 1e-6) on a key is removal,
    log 1 = 0 is keeping."""
    gates = Gates(4, hidden_size=32)
    with torch.no_grad():
        gates.weight.zero_()
        gates.bias.copy_(torch.tensor([40.0, -40.0, 40.0, 40.0]))  # every token but [CLS] leaves at layer 1
    model = patch(tiny_bert(), method=gates)
    set_knob(model, 0.5)
    batch = random_batch(LENGTHS)
    with torch.inference_mode():
        hard = model(**batch).logits
        assert realised_counts(model)[:, 2:].unique().tolist() == [1]
        gates.soft = True
        soft = model(**batch).logits
    assert torch.allclose(soft, hard, atol=1e-4)


def test_gates_regulariser_is_sparsity_plus_bimodality():
    gates = Gates(4, hidden_size=32, sparsity_weight=1.0, bimodal_weight=0.0)
    with torch.no_grad():
        gates.weight.zero_()
        gates.bias.zero_()  # g = 0.5 everywhere
    model = patch(tiny_bert(), method=gates)
    gates.soft = True
    model(**random_batch([10, 6]))
    survival = sum(0.5 ** (layer + 1) for layer in range(4)) / 4  # P_l = prod of the gates so far
    assert float(gates.regulariser().detach()) == pytest.approx(survival)
    gates.sparsity_weight, gates.bimodal_weight = 0.0, 1.0
    model(**random_batch([10, 6]))
    assert float(gates.regulariser().detach()) == pytest.approx(0.25)  # g (1 - g) at 0.5
    with torch.no_grad():
        gates.bias.fill_(40.0)
    model(**random_batch([10, 6]))
    assert float(gates.regulariser().detach()) == pytest.approx(0.0, abs=1e-6)  # decided gates cost nothing


def test_ltp_thresholds_and_knob():
    ltp = LTP(4, max_len=32, final_threshold=0.02)
    assert ltp.thresholds().tolist() == pytest.approx([0.0, 0.005, 0.01, 0.015])
    assert [ltp.prunes(i) for i in range(4)] == [False, True, True, True]
    assert LTP(4, max_len=64).final_threshold == pytest.approx(1 / 64)
    assert ltp.schedule(1.0) == Schedule(4, shape="adaptive", knob=1.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(UserError, match="threshold scale"):
            ltp.schedule(bad)
    with pytest.raises(UserError, match="gate threshold must be in"):
        Gates(4).schedule(1.0)


def test_a_planned_schedule_is_refused_on_an_adaptive_method_and_vice_versa():
    model = patch(tiny_bert(), method=_gates())
    with pytest.raises(UserError, match="decides each input's counts itself"):
        set_schedule(model, 0.3)
    tilted = patch(tiny_bert(), tilt_rate=0.2)
    with pytest.raises(UserError, match="plans its counts"):
        set_schedule(tilted, Schedule(4, shape="adaptive", knob=0.5))


def test_ltp_soft_stage_trains_the_thresholds_and_lambda_moves_them():
    def trained(weight: float) -> torch.Tensor:
        ltp = LTP(4, max_len=32, temperature=0.05)  # a random BERT's scores sit far from θ: a soft mask
        model = patch(tiny_bert(), method=ltp)
        ltp.soft = True
        model.train()
        optimizer = torch.optim.Adam(ltp.parameters(), lr=0.1)
        batch = {**random_batch(LENGTHS), "labels": torch.tensor([0, 1, 0, 1, 0, 1])}
        for _ in range(5):
            loss = model(**batch).loss + weight * ltp.regulariser()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return ltp.offsets.detach().clone()

    assert bool((trained(1.0)[1:] > trained(0.0)[1:]).all())  # λ on the kept mass raises the thresholds


def _finetune(base, out, method: str, *extra: str) -> dict:
    from typer.testing import CliRunner

    from tiltbench.cli import app

    args = ["finetune", "--method", method, "--model", str(base), "--task", "sst2", "--max-seq-len", "32"]
    args += ["--max-train-samples", "64", "--max-eval-samples", "16", "--batch-size", "16"]
    result = CliRunner().invoke(
        app, [*args, *extra, "--output", str(out), "--json"], env={"TILTBENCH_DATA_DIR": str(DATA_DIR)}
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tiltbench.models import resolve_model

    base = tmp_path_factory.mktemp("adaptive") / "base"
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    BertForSequenceClassification(config).save_pretrained(base)
    AutoTokenizer.from_pretrained(resolve_model("minilm")).save_pretrained(base)
    return base


def test_gates_train_soft_then_hard_and_reload_with_their_probes(tiny_base, tmp_path):
    from tiltbench.models import load_checkpoint

    summary = _finetune(tiny_base, tmp_path / "g", "gates", "--lambda", "2", "--bimodal", "1", "--method-lr", "0.2")
    meta = json.loads((tmp_path / "g" / "tiltbench.json").read_text())
    assert [s["name"] for s in meta["stages"]] == ["fine-tune+gates", "hard"]
    assert meta["knob"] == 0.5 and meta["schedule"]["shape"] == "adaptive"
    assert summary["stage"] == "hard" and 0.0 <= summary["gate_bimodal_share"] <= 1.0
    model, tokenizer, _, _ = load_checkpoint(tmp_path / "g")
    assert not torch.equal(model._tiltbench.method.weight, torch.zeros(2, 32))  # the trained probes came back
    with torch.inference_mode():
        model(**random_batch([20, 10]))
    assert realised_counts(model)[:, -1].max() < 20  # λ_sparse made them remove tokens
    weights = tmp_path / "g" / "method.safetensors"
    weights.write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="does not fit method 'gates'"):
        load_checkpoint(tmp_path / "g")
    weights.unlink()
    with pytest.raises(UserError, match="lacks method.safetensors"):
        load_checkpoint(tmp_path / "g")


def test_ltp_runs_its_three_stages_and_freezes_the_thresholds(tiny_base, tmp_path):
    _finetune(tiny_base, tmp_path / "l", "ltp", "--lambda", "0.5", "--temperature", "0.002")
    meta = json.loads((tmp_path / "l" / "tiltbench.json").read_text())
    assert [s["name"] for s in meta["stages"]] == ["fine-tune", "soft", "hard"]
    config = meta["method_config"]
    assert config["max_len"] == 32 and config["thresholds"][0] == 0.0 and any(config["offsets"])
    assert config["offsets"] == config["offsets_after_soft_stage"]  # the hard stage left the thresholds alone


def test_every_command_runs_an_adaptive_checkpoint(tiny_base, tmp_path):
    """offline-tune, predict, measure and sweep on gates and LTP checkpoints: counts realised, spread reported."""
    from typer.testing import CliRunner

    from tiltbench.cli import app

    runner = CliRunner()
    env = {"TILTBENCH_DATA_DIR": str(DATA_DIR)}

    def ok(*args: str) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.stdout

    fast = ["--latency-examples", "4", "--min-iterations", "1", "--min-seconds", "0", "--no-fvcore"]
    for method, extra, knob in (("gates", ["--lambda", "2", "--method-lr", "0.2"], "0.5"), ("ltp", [], "1")):
        ckpt = tmp_path / method
        _finetune(tiny_base, ckpt, method, *extra)
        offline = json.loads(
            ok("offline-tune", str(ckpt), "--knobs", f"0,{knob}", "--max-eval-samples", "16", "--json")
        )
        assert [r[offline["knob_name"]] for r in offline["rows"]] == [0.0, float(knob)]
        predicted = json.loads(ok("predict", str(ckpt), "--text", "a fine film .", "--knob", knob, "--json"))
        assert len(predicted["kept_tokens"]) == 3  # n0, n1, n2 of the 2-layer model
        fvcore = [a for a in fast if a != "--no-fvcore"]  # traced with the trained parameters in place
        ok("measure", str(ckpt), "--knobs", knob, "--batch-sizes", "2", *fvcore, "--results-dir", str(tmp_path / "r"))
        row = json.loads((tmp_path / "r" / f"measure-{method}" / "report.json").read_text())["rows"][-1]
        assert row["fvcore"]["fvcore_macs"] > 0 and row["fvcore"]["unit"] == "MAC"
        assert row["method"] == method and row["schedule"]["shape"] == "adaptive"
        assert set(row["kept_tokens_spread"]) == {"std", "min", "max"}
        assert row["explicit_attention"] == (method == "ltp")
        assert row["always_eliminating"] == ([False, True] if method == "ltp" else None)
    ok("sweep", "--checkpoint", f"{tmp_path / 'gates'}@0.5", "--checkpoint", f"{tmp_path / 'ltp'}@1",
       "--batch-sizes", "2", *fast, "--results-dir", str(tmp_path / "r"), "--run-name", "s")  # fmt: skip
    swept = json.loads((tmp_path / "r" / "s" / "report.json").read_text())["rows"]
    assert sorted(r["method"] for r in swept) == ["gates", "ltp"]
    assert (tmp_path / "r" / "s" / "pareto.png").is_file()


def test_keep_all_runs_the_methods_own_path_with_nothing_removed():
    """Gates' path with nothing removed is HF's layer; LTP's layer 0 is HF's, the others its own attention."""
    for method, hf_layers in ((_gates(), [0, 1, 2, 3]), (LTP(4, max_len=32), [0])):
        model = patch(tiny_bert(), method=method)
        set_schedule(model, 0.0, keep_all=True)
        calls = _layer_calls(model)
        with torch.inference_mode():
            model(**random_batch(LENGTHS))
        assert calls == hf_layers
        assert realised_counts(model)[:, -1].tolist() == LENGTHS


def test_an_adaptive_schedule_has_no_plan_and_scorers_do_not_apply():
    with pytest.raises(UserError, match="depend on each input"):
        Schedule(4, shape="adaptive", knob=0.5).counts(10)
    model = patch(tiny_bert(), method=_gates())
    with pytest.raises(UserError, match="does not rank by a scorer"):
        set_schedule(model, 0.0, scorer="acc-norm")
    with pytest.raises(UserError, match="read 384-wide hidden states; the encoder's are 32"):
        patch(tiny_bert(), method=Gates(4))
    assert patch(tiny_bert(), method="gates")._tiltbench.method.hidden_size == 32  # sized by the encoder


def test_method_options_belong_to_their_method(tiny_base, tmp_path):
    from typer.testing import CliRunner

    from tiltbench.cli import app

    result = CliRunner().invoke(app, ["finetune", "--output", str(tmp_path / "x"), "--bimodal", "1"])
    assert result.exit_code == 2 and "error: --bimodal goes with --method gates" in result.output
    result = CliRunner().invoke(
        app, ["finetune", "--output", str(tmp_path / "x"), "--method", "ltp", "--temperature", "0"]
    )
    assert result.exit_code == 2 and "must be positive" in result.output
    result = CliRunner().invoke(
        app, ["finetune", "--output", str(tmp_path / "x"), "--method", "gates", "--scorer", "acc"]
    )
    assert result.exit_code == 2 and "--scorer does not apply to --method gates" in result.output


def test_speedup_predict_refuses_an_adaptive_checkpoint_with_one_line(tiny_base, tmp_path):
    from typer.testing import CliRunner

    from tiltbench.cli import app

    _finetune(tiny_base, tmp_path / "g", "gates", "--lambda", "1")
    result = CliRunner().invoke(app, ["speedup-predict", "--checkpoint", str(tmp_path / "g"), "--knob", "0.5"])
    assert result.exit_code == 2 and "decides each input's counts from its content" in result.output


def test_calibrated_work_of_a_method_that_decides_before_attention():
    from tiltbench.speed_model import ModelDims, batch_work, features

    counts = [[20, 12, 6], [9, 9, 4]]
    ours = batch_work([20, 9], None, counts=counts)
    hf = batch_work([20, 9], None, counts=counts, explicit_attention=False)
    dims = ModelDims(32, 64, 2)
    a, b = features(ours, dims, 4), features(hf, dims, 4)
    assert a[3] > 0 and b[3] == 0  # gates materialise no probabilities
    assert b[1] == 2 * 32 * (2 * 20 * 20 + 2 * 12 * 12)  # HF's attention computes the padded width
    assert a[4] == b[4] == 2  # both pay the per-layer cost of eliminating
    # LTP scores layer 1 with its own attention even where nobody leaves
    still = [[20, 20, 12], [9, 9, 4]]
    assert batch_work([20, 9], None, counts=still).eliminating == (False, True)
    assert batch_work([20, 9], None, counts=still, always_eliminating=[False, True]).eliminating == (False, True)
    assert batch_work(
        [20, 9], None, counts=[[20, 20, 20], [9, 9, 9]], always_eliminating=[False, True]
    ).eliminating == (
        False,
        True,
    )

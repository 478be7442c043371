"""finetune --recipe: a committed file of settings reproduces a fine-tune; the command line still wins."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from conftest import DATA_DIR
from typer.testing import CliRunner

from tiltbench import UserError
from tiltbench.cli import app

runner = CliRunner()
ENV = {"TILTBENCH_DATA_DIR": str(DATA_DIR)}
ROOT = Path(__file__).resolve().parents[1]


def _meta(folder) -> dict:
    return json.loads((folder / "tiltbench.json").read_text())


def test_a_recipe_sets_the_fine_tune_and_the_command_line_wins(tiny_checkpoint, tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"model": tiny_checkpoint, "task": "sst2", "tilt-rate": 0.3, "seed": 3,
                                  "max_train_samples": 16, "max-eval-samples": 8, "max-seq-len": 16}))  # fmt: skip
    result = runner.invoke(app, ["finetune", "--output", str(tmp_path / "a"), "--recipe", str(recipe)], env=ENV)
    assert result.exit_code == 0, result.output
    config = _meta(tmp_path / "a")["train_config"]
    assert (config["tilt_rate"], config["data"]["seed"], config["n_train"], config["n_eval"]) == (0.3, 3, 16, 8)
    assert config["model"] == tiny_checkpoint
    override = ["finetune", "--output", str(tmp_path / "b"), "--recipe", str(recipe), "--seed", "5"]
    assert runner.invoke(app, override, env=ENV).exit_code == 0
    config = _meta(tmp_path / "b")["train_config"]
    assert (config["tilt_rate"], config["data"]["seed"]) == (0.3, 5)


def test_a_yaml_recipe_with_a_knob_range_list(tiny_checkpoint, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"model: {tiny_checkpoint}\nknob-range: [0, 0.4]\nrandom-knobs: 0\nmax-train-samples: 16\n"
        "max-eval-samples: 8\nmax-seq-len: 16\n"
    )
    result = runner.invoke(app, ["finetune", "--output", str(tmp_path / "a"), "--recipe", str(recipe)], env=ENV)
    assert result.exit_code == 0, result.output
    meta = _meta(tmp_path / "a")
    assert meta["train_config"]["knob_range"] == [0.0, 0.4] and meta["train_config"]["random_knobs"] == 0
    assert meta["knob"] == 0.4


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("r.json", '{"tilt-rat": 0.3}', "'tilt-rat' is not a finetune setting"),
        ("r.json", '{"output": "elsewhere"}', "'output' is not a finetune setting"),
        ("r.json", '{"epochs": "many"}', "epochs"),
        ("r.json", '{"epochs": ', "is not valid JSON"),
        ("r.json", "[1, 2]", "must be a non-empty mapping"),
        ("r.yaml", "epochs: [1\n", "is not valid YAML"),
        ("r.yaml", "knob-range: [0, 0.2, 0.4]\n", "knob-range takes LOW:HIGH"),
        ("r.yaml", "teacher: []\n", "teacher takes a path or a list of paths"),
        ("r.yaml", "teacher: [a, 3]\n", "teacher takes a path or a list of paths"),
        ("r.toml", "epochs = 1", "use a .json, .yaml or .yml file"),
        ("missing.json", None, "does not exist"),
    ],
)
def test_a_bad_recipe_is_one_error_line(tmp_path, name, text, message):
    recipe = tmp_path / name
    if text is not None:
        recipe.write_text(text)
    result = runner.invoke(app, ["finetune", "--output", str(tmp_path / "out"), "--recipe", str(recipe)], env=ENV)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out").exists()


def test_every_committed_recipe_names_only_finetune_settings():
    from pathlib import Path

    import typer

    from tiltbench.recipe import NOT_IN_RECIPES, load_recipe

    options = {p.name for p in typer.main.get_command(app).commands["finetune"].params} - set(NOT_IN_RECIPES)
    recipes = sorted((Path(__file__).parents[1] / "benchmarks" / "recipes").glob("*.y*ml"))
    assert recipes
    for recipe in recipes:
        assert set(load_recipe(recipe)) <= options, recipe.name


def test_a_recipe_names_an_ensemble_of_teachers_as_a_list(tiny_checkpoint, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    settings = f"model: {tiny_checkpoint}\ntilt-rate: 0.2\nmax-train-samples: 16\nmax-eval-samples: 8\n"
    recipe.write_text(settings)
    assert runner.invoke(app, ["finetune", "--output", str(tmp_path / "t"), "--recipe", str(recipe)],
                         env=ENV).exit_code == 0  # fmt: skip
    teachers = [tiny_checkpoint, str(tmp_path / "t")]
    recipe.write_text(settings + f"teacher: [{', '.join(teachers)}]\n")
    result = runner.invoke(app, ["finetune", "--output", str(tmp_path / "a"), "--recipe", str(recipe)], env=ENV)
    assert result.exit_code == 0, result.output
    assert _meta(tmp_path / "a")["train_config"]["teacher"] == teachers
    recipe.write_text(settings + f"teacher: {tiny_checkpoint}\n")  # one teacher stays one path
    result = runner.invoke(app, ["finetune", "--output", str(tmp_path / "b"), "--recipe", str(recipe)], env=ENV)
    assert result.exit_code == 0, result.output
    assert _meta(tmp_path / "b")["train_config"]["teacher"] == tiny_checkpoint


def test_the_recipe_benchmark_says_what_the_library_refuses_in_one_error_line(monkeypatch, capsys):
    # e.g. a timed sweep into a folder that holds someone else's file: the library's UserError, not a traceback
    spec = importlib.util.spec_from_file_location("recipe_minilm", ROOT / "benchmarks" / "recipe_minilm.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "recipe_minilm", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)

    def refused() -> None:
        raise UserError("results/x is not empty and holds no tiltbench measure/sweep run")

    monkeypatch.setattr(module, "main", refused)
    with pytest.raises(SystemExit) as stopped:
        module.run_main()
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: results/x is not empty and holds no tiltbench measure/sweep run\n"


def test_held_out_imdb_reviews_are_none_the_recipes_trained_on(monkeypatch):
    # --validation's reviews: the training split after the 5,000 the seed-0 recipes took, no text shared with those
    from tiltbench.data import DataConfig, load_split

    monkeypatch.setenv("TILTBENCH_DATA_DIR", str(DATA_DIR))
    spec = importlib.util.spec_from_file_location("recipe_minilm", ROOT / "benchmarks" / "recipe_minilm.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "recipe_minilm", module)
    spec.loader.exec_module(module)
    held = module.held_out_reviews(0, 5000, 300)
    trained, _ = load_split(DataConfig("imdb", data_dir=str(DATA_DIR), seed=0, max_train_samples=5000), "train")
    assert len(held) == 300 and len({r["text"] for r in held}) == 300
    assert not {r["text"] for r in held} & set(trained["text"])
    assert {r["label"] for r in held} == {"neg", "pos"}


def _recipe_benchmark(monkeypatch):
    spec = importlib.util.spec_from_file_location("recipe_minilm", ROOT / "benchmarks" / "recipe_minilm.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "recipe_minilm", module)
    spec.loader.exec_module(module)
    return module


def test_every_recipe_sweep_trains_a_recipes_init_and_teacher_before_it(monkeypatch, tmp_path):
    # from a fresh clone a sweep trains what is missing: a recipe whose teacher (the control, for IMDB's specialist)
    # or init is not trained yet would fail, or worse, pick up nothing
    from tiltbench.recipe import load_recipe

    module = _recipe_benchmark(monkeypatch)
    order: list[str] = []
    monkeypatch.setattr(module, "train", lambda name, **_: order.append(name) or tmp_path / name)
    monkeypatch.setattr(module, "sweep_summary", lambda *args, **kwargs: None)
    runs = [*module.METHOD_RUNS.values(), *module.IMDB_METHOD_RUNS.values(), *module.IMDB_SPECIALIST_RUNS.values()]
    assert any(run.taught_by_control for run in runs)
    for run in runs:
        order.clear()
        module.full(run)
        assert run.ranged in order and run.dense in order
        recipe = load_recipe(module.RECIPES / f"{run.ranged}.yaml")
        for before in (recipe.get("init"), recipe.get("teacher")):
            name = Path(before).name if before else None
            if name in {run.dense, run.init}:
                assert order.index(name) < order.index(run.ranged), (run.ranged, name, order)


@pytest.mark.parametrize(
    "arguments",
    [["--method", "ltp", "--specialist"], ["--task", "imdb", "--specialist"],
     ["--task", "imdb", "--method", "power", "--specialist"],
     ["--task", "imdb", "--method", "ltp", "--specialist", "--no-train"]],
)  # fmt: skip
def test_the_specialist_sweep_refuses_what_it_does_not_go_with(monkeypatch, capsys, arguments):
    module = _recipe_benchmark(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["recipe_minilm.py", *arguments])
    monkeypatch.setattr(module, "full", lambda run: pytest.fail("a refused command must train nothing"))
    with pytest.raises(SystemExit) as stopped:
        module.run_main()
    assert stopped.value.code == 2
    assert "--specialist" in capsys.readouterr().err


def test_the_specialist_validation_names_the_sweep_that_trains_what_it_reads(monkeypatch, capsys, tmp_path):
    module = _recipe_benchmark(monkeypatch)
    monkeypatch.setattr(module, "RUNS", tmp_path)  # nothing trained
    monkeypatch.setattr(sys, "argv", ["recipe_minilm.py", "--task", "imdb", "--method", "ltp", "--specialist",
                                      "--validation"])  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        module.run_main()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: imdb-5k-dense-continued-2 and imdb-5k-ltp-1-teacher-control are not both trained")
    assert err.rstrip().endswith("run --task imdb --method ltp --specialist first") and err.count("\n") == 1

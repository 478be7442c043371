"""Benchmark [eel]: how the hashed model is initialised, measured by accuracy after fine-tuning.

Trains (resumably, each in its own process; what is trained is reused) and evaluates, per --task:
  mrpc (408 dev pairs; all 3,668 training pairs, len 128, 3 epochs):
    mrpc-dense.yaml                   the dense model with its table (the comparison)
    mrpc-hashed.yaml                  hashed, projection fitted to the rows weighted by MRPC's token counts
                                      (--hash-fit task, the default)
    mrpc-hashed-vocabulary-fit.yaml   hashed, projection fitted to every row alike (--hash-fit vocabulary)
    mrpc-hashed-teacher.yaml          mrpc-hashed.yaml distilled from mrpc-dense (alpha 0.5, T 2)
    mrpc-hashed-aligned.yaml          mrpc-hashed.yaml after 3 epochs of hidden-state alignment (--hash-align-epochs)
  sst2-8k (872 dev sentences; 8,000 training sentences, len 64, 1 epoch):
    sst2-8k-dense.yaml, sst2-8k-hashed.yaml, sst2-8k-hashed-aligned.yaml (2 epochs of alignment)
  sst2-full (all 67,349 training sentences, len 64, 1 epoch):
    sst2-full-dense.yaml, sst2-full-hashed.yaml, sst2-full-hashed-aligned.yaml (1 epoch of alignment),
    sst2-full-hashed-aligned-distilled.yaml (the aligned checkpoint, one more epoch distilled from the dense model)
    and its comparison sst2-full-dense-distilled.yaml (the dense checkpoint given the same second epoch);
    sst2-full-hashed-aligned-hidden-distilled.yaml and sst2-full-dense-hidden-distilled.yaml, the same two with
    the teacher's hidden states distilled too (--distill-hidden 1)
and writes results/eel-init-<task>/summary.json: each one's accuracy (and F1 on MRPC), and for the hashed ones the
fit's quality before fine-tuning (row cosine over the vocabulary and per token occurrence in the training text).
Accuracy only, no timing: seeds 0..--seeds-1, trained seed by seed (every recipe's seed 0 first), so a stopped run
leaves whole seeds (408 or 872 examples: one seed is an anecdote, say so when citing one).

    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/eel_init.py [--task mrpc] [--seeds 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from eel_minilm import RESULTS, checkpoint, committed_runs

from tiltbench.cli.common import setup
from tiltbench.environment import environment
from tiltbench.files import write_json_atomic

RECIPES = {
    "mrpc": ("mrpc-dense", "mrpc-hashed", "mrpc-hashed-vocabulary-fit", "mrpc-hashed-teacher", "mrpc-hashed-aligned"),
    "sst2-8k": ("sst2-8k-dense", "sst2-8k-hashed", "sst2-8k-hashed-aligned"),
    "sst2-full": (
        "sst2-full-dense",
        "sst2-full-dense-distilled",
        "sst2-full-hashed",
        "sst2-full-hashed-aligned",
        "sst2-full-hashed-aligned-distilled",
        "sst2-full-dense-hidden-distilled",
        "sst2-full-hashed-aligned-hidden-distilled",
    ),
}
METRICS = ("accuracy", "f1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mrpc", choices=sorted(RECIPES))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--no-train", action="store_true", help="summarise the seeds already trained; train nothing")
    parser.add_argument("--train-only", default=None, help="train only these recipes (comma list; default: all)")
    args = parser.parse_args()
    setup()
    recipes = RECIPES[args.task]
    wanted = recipes if args.train_only is None else args.train_only.split(",")
    for seed in range(args.seeds):  # train what is missing, seed by seed (the teacher recipe reads mrpc-dense)
        for name in recipes:
            checkpoint(name, seed, not args.no_train and name in wanted)
    rows = []
    for name in recipes:
        committed = {seed: {**row, "fit": None} for seed, row in committed_runs(name).items()}
        runs = []
        for seed in range(args.seeds):
            folder = checkpoint(name, seed, False)
            if folder is None:  # not trained here: a committed row of the same recipe and seed, or left out
                if seed in committed:
                    runs.append(committed[seed])
                continue
            meta = json.loads((Path(folder) / "tiltbench.json").read_text())
            final = json.loads((Path(folder) / "metrics.json").read_text())  # the last epoch's evaluation
            metrics = {k: round(final[k], 4) for k in METRICS if k in final}
            fit = (meta.get("embeddings") or {}).get("fit")
            runs.append({"seed": seed, "metrics": metrics, "fit": fit, "train_seconds": final["train_seconds"]})
        if not runs:
            continue
        names = runs[0]["metrics"].keys()
        rows.append(
            {
                "recipe": name,
                "runs": runs,
                "mean": {k: round(statistics.mean(r["metrics"][k] for r in runs), 4) for k in names},
            }
        )
    out = RESULTS / f"eel-init-{args.task}" / "summary.json"
    write_json_atomic(out, {"task": args.task, "seeds": args.seeds, "rows": rows, "environment": environment()})
    print(json.dumps([{"recipe": r["recipe"], **r["mean"]} for r in rows], indent=1))


if __name__ == "__main__":
    main()

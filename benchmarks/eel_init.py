"""Benchmark [eel]: how the hashed projection is initialised, measured by accuracy after fine-tuning (MRPC).

Trains (resumably, each in its own process; what is trained is reused) and evaluates on MRPC's 408 dev pairs:
    mrpc-dense.yaml                   the dense model with its table (the comparison)
    mrpc-hashed.yaml                  hashed, projection fitted to the rows weighted by MRPC's token counts
                                      (--hash-fit task, the default)
    mrpc-hashed-vocabulary-fit.yaml   hashed, projection fitted to every row alike (--hash-fit vocabulary)
    mrpc-hashed-teacher.yaml          mrpc-hashed.yaml distilled from mrpc-dense (alpha 0.5, T 2)
and writes results/eel-init-mrpc/summary.json: each one's accuracy and F1, and for the hashed ones the fit's
quality before fine-tuning (row cosine over the vocabulary and per token occurrence in the training text).
Accuracy only, no timing: seeds 0..--seeds-1, trained seed by seed (every recipe's seed 0 first), so a stopped run
leaves whole seeds (408 pairs: one seed is an anecdote, say so when citing one).

    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/eel_init.py [--seeds 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from eel_minilm import RESULTS, checkpoint

from tiltbench.cli.common import setup
from tiltbench.environment import environment
from tiltbench.files import write_json_atomic

RECIPES = ("mrpc-dense", "mrpc-hashed", "mrpc-hashed-vocabulary-fit", "mrpc-hashed-teacher")
METRICS = ("accuracy", "f1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--no-train", action="store_true", help="summarise the seeds already trained; train nothing")
    parser.add_argument("--train-only", default=",".join(RECIPES), help="train only these recipes (comma list)")
    args = parser.parse_args()
    setup()
    for seed in range(args.seeds):  # train what is missing, seed by seed (the teacher recipe reads mrpc-dense)
        for name in RECIPES:
            checkpoint(name, seed, not args.no_train and name in args.train_only.split(","))
    rows = []
    for name in RECIPES:
        runs = []
        for seed in range(args.seeds):
            folder = checkpoint(name, seed, False)
            if folder is None:  # --no-train: a seed not trained (yet) is left out, and the row says how many
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
    out = RESULTS / "eel-init-mrpc" / "summary.json"
    write_json_atomic(out, {"task": "mrpc", "seeds": args.seeds, "rows": rows, "environment": environment()})
    print(json.dumps([{"recipe": r["recipe"], **r["mean"]} for r in rows], indent=1))


if __name__ == "__main__":
    main()

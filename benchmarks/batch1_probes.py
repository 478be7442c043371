"""Benchmark [stack]: two batch-1 probes on IMDB behind the README's "where batch 1 stands".

    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/batch1_probes.py padding CKPT
    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/batch1_probes.py layers CKPT [--tilt-rate 0.02]

- `padding`: is HF's dense model faster when each input is padded to a multiple of 8, 16 or 32 tokens (its sdpa
  CPU kernel is length-sensitive)? If so, the fastest dense baseline would pad; dynamic padding is what `measure`
  uses.
- `layers`: at a small tilt rate, does eliminating in fewer layers pay? Each input runs its plan and variants that
  hold some of the plan's drops until a later layer (the count after every layer stays >= the plan's), as explicit
  keep lists: the question behind a deferral rule in the plan (README, batch 1). Speed only: what the variants do
  to accuracy is not measured here.

Per input, every variant is timed interleaved (rounds x repeats, the median per input), and the totals over the
task's first inputs compared, as batch1_overhead.py does. Writes results/batch1-probes/<probe>-imdb.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MAX_LEN, INPUTS = 512, 16


def _time_interleaved(calls: dict[str, Callable[[], None]], rounds: int = 5, repeats: int = 3) -> dict[str, float]:
    """Median seconds per call of each variant, every round visiting every variant once (drift hits all alike)."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            call()  # this variant's shapes warm
            start = time.perf_counter()
            for _ in range(repeats):
                call()
            samples[name].append((time.perf_counter() - start) / repeats)
    return {name: statistics.median(values) for name, values in samples.items()}


def _pad_to(batch: dict, multiple: int) -> dict:
    n = batch["input_ids"].shape[1]
    width = min(MAX_LEN, -(-n // multiple) * multiple)
    return {k: torch.cat([v, v.new_zeros(1, width - n)], 1) for k, v in batch.items()}


def _fewer_layers(plan: list[int]) -> dict[str, list[int]]:
    """Keep lists (counts after layers 1..L) that eliminate in fewer layers than `plan` ([n0, n1, ..., nL])."""
    p = plan
    return {
        "plan (every layer)": p[1:],
        "every second layer": [p[0], p[2], p[2], p[4], p[4], p[6]],
        "layers 1 and 3": [p[1], p[1], p[3], p[3], p[3], p[3]],
        "layers 1, 4 and 6": [p[1], p[1], p[1], p[4], p[4], p[6]],
        "layer 2 only": [p[0], p[2], p[2], p[2], p[2], p[2]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=("padding", "layers"))
    parser.add_argument("checkpoint")
    parser.add_argument("--tilt-rate", type=float, default=0.02)
    args = parser.parse_args()

    from tiltbench.cli.common import setup
    from tiltbench.data import DataConfig, collate, encode, load_split
    from tiltbench.environment import environment
    from tiltbench.files import write_json_atomic
    from tiltbench.models import load_checkpoint, load_model
    from tiltbench.patch import set_schedule
    from tiltbench.schedule import Schedule

    setup()
    dense, tokenizer = load_model(args.checkpoint)
    model, _, _, info = load_checkpoint(args.checkpoint)
    layers = len(dense.base_model.encoder.layer)
    if args.probe == "layers" and layers != 6:
        parser.error("the layer variants are written for a 6-layer encoder")
    eval_set, info = load_split(DataConfig("imdb", max_seq_len=MAX_LEN), "eval", info)
    batches = []
    for example in encode(eval_set, tokenizer, MAX_LEN)[:INPUTS]:
        batch = collate([example], tokenizer.pad_token_id or 0)
        batch.pop("labels")
        batches.append(batch)
    totals: dict[str, float] = {}
    with torch.inference_mode():
        for batch in batches:
            if args.probe == "padding":
                variants = {"dynamic": batch, **{f"multiple of {m}": _pad_to(batch, m) for m in (8, 16, 32)}}
                calls = {name: (lambda b=b: dense(**b)) for name, b in variants.items()}
            else:
                plan = Schedule(layers, args.tilt_rate).counts(int(batch["input_ids"].shape[1]))

                def run(keep: list[int] | None, b: dict = batch) -> None:
                    if keep is None:
                        dense(**b)
                    else:
                        set_schedule(model, keep)
                        model(**b)

                calls = {"dense": lambda: run(None)}
                calls |= {name: (lambda k=keep: run(k)) for name, keep in _fewer_layers(plan).items()}
            for name, seconds in _time_interleaved(calls).items():
                totals[name] = totals.get(name, 0.0) + seconds
    reference = totals["dynamic" if args.probe == "padding" else "dense"]
    result = {
        "probe": args.probe,
        "task": "imdb",
        "checkpoint": args.checkpoint,
        "batch_size": 1,
        "inputs": len(batches),
        "tilt_rate": args.tilt_rate if args.probe == "layers" else None,
        "speedup_vs_dense_dynamic": {name: round(reference / t, 4) for name, t in totals.items()},
        "dense_ms_per_input": round(reference / len(batches) * 1e3, 3),
        "environment": environment(dense.config._attn_implementation, seed=0),
    }
    out = ROOT / "results" / "batch1-probes" / f"{args.probe}-imdb.json"
    write_json_atomic(out, result)
    print(json.dumps(result["speedup_vs_dense_dynamic"]))


if __name__ == "__main__":
    main()

"""Benchmark [stack]: the eliminating path's per-layer overhead at batch 1, where it decides the speedup.

For one checkpoint and transform: aten operators per forward (torch.profiler, top-level ops: what the dispatcher
and Python pay for, whatever their size) for HF's dense model and the patched model at each knob, and the
speedup against the same-transform dense model at batch 1 on the task's first dev inputs, all variants timed
interleaved in this one process (per input the median over rounds, summed); `--runs` such timings (default 3),
the median reported and every run kept.

    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/batch1_overhead.py sst2 CKPT --transform int8
        --label after

The fused attention kernel (tiltbench/fused.py) against the torch ops it replaces, same code, same session:
`TILTBENCH_FUSED_ATTENTION=0 ... --label unfused`, then `... --label fused`.

To compare code versions, run the same command under each (`git worktree add /tmp/before <commit>`, then
`PYTHONPATH=/tmp/before python benchmarks/batch1_overhead.py ... --label before`): each run writes
results/batch1-overhead/<label>-<task>-<transform>.json with its git commit and environment.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"sst2": (64, 96, 10), "imdb": (512, 16, 6)}  # max length, inputs timed, min iterations


def aten_ops(model: torch.nn.Module, batch: dict, repeats: int = 5) -> float:
    """Top-level aten operators per forward (an op called from inside another aten op is not counted). The fused
    attention kernel (tiltbench::attention_received) is not an aten op; the four it calls through the dispatcher
    (three buffers and the final sum) are counted, as what the dispatcher pays for."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        model(**batch)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                model(**batch)
    top = [
        e
        for e in prof.events()
        if e.name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
    ]
    return len(top) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(SETTINGS))
    parser.add_argument("checkpoint")
    parser.add_argument("--transform", default="fp32", choices=("fp32", "int8", "bf16"))
    parser.add_argument("--knobs", default="0.02,0.05,0.1,0.2,0.3")
    parser.add_argument("--label", default="now")
    parser.add_argument(
        "--power-fractions",
        help="time PoWER-BERT's path at this retention (comma list of per-layer kept shares, a PoWER checkpoint's "
        "schedule.fractions from a report) on the checkpoint's weights; --knobs are then retention scales. A planned "
        "schedule's timing does not depend on the weights, so this times a PoWER checkpoint that is not at hand",
    )
    parser.add_argument("--runs", type=int, default=3, help="independent interleaved timings; the median is reported")
    args = parser.parse_args()

    import tiltbench
    from tiltbench.cli.common import setup
    from tiltbench.data import DataConfig, collate, encode, load_split
    from tiltbench.environment import environment
    from tiltbench.files import write_json_atomic
    from tiltbench.latency import Variant, robust_total, time_interleaved
    from tiltbench.models import load_checkpoint, load_model
    from tiltbench.patch import method_of, set_knob

    setup()
    max_len, n_inputs, min_iterations = SETTINGS[args.task]
    knobs = [float(k) for k in args.knobs.split(",")]
    model, tokenizer, _, info = load_checkpoint(args.checkpoint)
    if args.power_fractions:
        from tiltbench.methods.power import Power
        from tiltbench.patch import patch, unpatch

        fractions = tuple(float(f) for f in args.power_fractions.split(","))
        layers = model.config.num_hidden_layers
        patch(unpatch(model), method=Power(layers, fractions=fractions), knob=knobs[0])
    dense, _ = load_model(args.checkpoint)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.transform != "fp32":
        from tiltbench.transforms import apply_spec

        model, _ = apply_spec(model, args.transform)
        dense, _ = apply_spec(dense, args.transform)
    eval_set, info = load_split(DataConfig(args.task, max_seq_len=max_len), "eval", info)
    batches = []
    for example in encode(eval_set, tokenizer, max_len)[:n_inputs]:
        batch = collate([example], tokenizer.pad_token_id or 0)
        batch.pop("labels")
        batches.append(batch)
    ops = {"dense": aten_ops(dense, batches[0])}
    for knob in knobs:
        set_knob(model, knob)
        ops[f"knob {knob:g}"] = aten_ops(model, batches[0])
    # keep-all: every layer takes the eliminating path (its attention and scoring) and removes nothing: what the
    # path costs, or saves, before a token leaves; each knob against it is what the removed tokens buy
    keep_all = lambda: set_knob(model, method_of(model).dense_knob, keep_all=True)  # noqa: E731
    keep_all()
    ops["keep-all"] = aten_ops(model, batches[0])
    variants = [Variant("dense", dense, batches)]
    variants += [Variant(f"knob {k:g}", model, batches, lambda k=k: set_knob(model, k)) for k in knobs]
    variants.append(Variant("keep-all", model, batches, keep_all))
    runs = []  # each run: every variant timed afresh, interleaved (per input the median over rounds, summed)
    for _ in range(args.runs):
        latency = time_interleaved(variants, warmup=5, min_iterations=min_iterations, min_seconds=1.0, min_rounds=4)
        runs.append({name: robust_total(lat, len(batches)) for name, lat in latency.items()})
    speedups = [{name: t["dense"] / total for name, total in t.items() if name != "dense"} for t in runs]
    result = {
        "label": args.label,
        "code": str(Path(tiltbench.__file__).parent),
        "task": args.task,
        "checkpoint": args.checkpoint,
        "transform": args.transform,
        "method": method_of(model).name,
        "scorer": method_of(model).scorer_name,
        "power_fractions": args.power_fractions,
        "batch_size": 1,
        "inputs": len(batches),
        "tokens_first_input": int(batches[0]["input_ids"].shape[1]),
        "aten_ops_per_forward": ops,
        "runs": len(runs),
        "speedup_vs_same_transform_dense": {  # the median over runs
            name: round(statistics.median(s[name] for s in speedups), 4) for name in speedups[0]
        },
        "speedup_per_run": [{name: round(v, 4) for name, v in s.items()} for s in speedups],
        "dense_ms_per_input": round(statistics.median(t["dense"] for t in runs) / len(batches), 3),
        "environment": environment(dense.config._attn_implementation, seed=0),
    }
    out = ROOT / "results" / "batch1-overhead" / f"{args.label}-{args.task}-{args.transform}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)
    print(json.dumps({k: result[k] for k in ("label", "task", "transform", "speedup_vs_same_transform_dense")}))
    print(json.dumps(result["speedup_per_run"]))
    print(collections.OrderedDict(ops))


if __name__ == "__main__":
    main()

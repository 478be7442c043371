"""Benchmark [stack]: which int8 backend to use on this CPU. Each backend runs in its own process (ONNX Runtime's
thread pool slows PyTorch in a shared one, and one process's allocations do not leak into another's timings),
one after another, never two at once.

Backends, all on the same fine-tuned dense MiniLM (SST-2) and the same inputs:
  torch-fp32        HF's model, default attention (the fp32 reference)
  torch-ao-int8     torch.ao.quantization.quantize_dynamic on every nn.Linear (deprecated; tiltbench's choice)
  torchao-int8      torchao's quantize_(model, Int8DynamicActivationInt8WeightConfig())
  onnxruntime-fp32  the model exported to ONNX (torch.onnx.export), run by ONNX Runtime
  onnxruntime-int8  the same, quantised by onnxruntime.quantization.quantize_dynamic (QInt8 weights)
Timing: the first 256 SST-2 dev sentences at batch 32 and batch 1, dynamic padding, warm-up then rounds over
all batches; per batch the median over rounds, summed. Accuracy on the full dev set (872). Threads: torch's
default (all cores), ONNX Runtime's intra-op pool set to the same count.

    TILTBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/int8_backends.py [--checkpoint CKPT]

Needs the optional extras: pip install onnx onnxruntime onnxscript torchao (a backend whose package is missing
is reported as such). Writes results/int8-backends/ (report.json with the environment, report.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torch-fp32", "torch-ao-int8", "torchao-int8", "onnxruntime-fp32", "onnxruntime-int8")
DEFAULT_CHECKPOINT = ROOT / "runs" / "recipes" / "sst2-full-dense"
TIMED, ROUNDS, BATCHES = 256, 3, (32, 1)


def _batches(tokenizer, sentences: list[str], size: int) -> list[dict]:
    return [
        dict(tokenizer(sentences[i : i + size], padding=True, truncation=True, max_length=64, return_tensors="pt"))
        for i in range(0, len(sentences), size)
    ]


def child(backend: str, checkpoint: str) -> dict:
    """Runs in its own process: load, transform, evaluate, time one backend."""
    import numpy as np
    import torch

    from tiltbench.cli.common import setup
    from tiltbench.data import DataConfig, load_split
    from tiltbench.models import load_model
    from tiltbench.transforms.base import model_megabytes

    setup()
    model, tokenizer = load_model(checkpoint)
    eval_set, _ = load_split(DataConfig("sst2", max_seq_len=64), "eval", None)
    sentences, labels = list(eval_set["text"]), np.array(eval_set["label"])
    size_mb = None
    if backend == "torch-ao-int8":
        from tiltbench.transforms.int8 import _quantize

        model = _quantize(model)
    elif backend == "torchao-int8":
        try:
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
        except ImportError:
            return {"backend": backend, "missing": "torchao is not installed"}
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
    if backend.startswith("torch"):
        size_mb = model_megabytes(model)

        def forward(batch: dict) -> np.ndarray:
            with torch.inference_mode():
                return model(**batch).logits.float().numpy()

    else:
        try:
            import onnxruntime as ort
            from onnxruntime.quantization import QuantType, quantize_dynamic
        except ImportError:
            return {"backend": backend, "missing": "onnxruntime (and onnx, onnxscript) is not installed"}
        folder = Path(tempfile.mkdtemp())
        fp32_file = folder / "model.onnx"
        example = _batches(tokenizer, sentences[:2], 2)[0]
        names = list(example)
        # torch.export's exporter: the TorchScript one (dynamo=False) bakes transformers 5's mask arithmetic for
        # the example's length into the graph, and its logits were wrong at any other length
        batch_dim, length_dim = torch.export.Dim("batch"), torch.export.Dim("length", max=512)
        torch.onnx.export(
            model,
            (),
            str(fp32_file),
            kwargs=example,
            input_names=names,
            output_names=["logits"],
            dynamic_shapes={n: {0: batch_dim, 1: length_dim} for n in names},
            dynamo=True,
            optimize=True,
        )
        file = fp32_file
        if backend == "onnxruntime-int8":
            file = folder / "model-int8.onnx"
            quantize_dynamic(str(fp32_file), str(file), weight_type=QuantType.QInt8)
        # the exporter keeps large weights in side files (<name>.data): count every file of the model
        size_mb = round(sum(f.stat().st_size for f in folder.iterdir() if f.name.startswith(file.name)) / 1e6, 2)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])

        def forward(batch: dict) -> np.ndarray:
            return session.run(["logits"], {k: v.numpy() for k, v in batch.items()})[0]

    logits = np.concatenate([forward(b) for b in _batches(tokenizer, sentences, 64)])
    result = {"backend": backend, "accuracy": float((logits.argmax(1) == labels).mean()), "model_mb": size_mb}
    for size in BATCHES:
        batches = _batches(tokenizer, sentences[:TIMED], size)
        for batch in batches[:3]:
            forward(batch)  # warm-up
        samples = [[0.0] * ROUNDS for _ in batches]
        for r in range(ROUNDS):
            for i, batch in enumerate(batches):
                began = time.perf_counter()
                forward(batch)
                samples[i][r] = (time.perf_counter() - began) * 1000
        result[f"ms_total_batch{size}"] = sum(statistics.median(s) for s in samples)
    result["threads"] = torch.get_num_threads()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--only", help="comma list of backends to run again; the others keep their rows")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.checkpoint)))
        return
    from tiltbench.environment import environment
    from tiltbench.files import write_json_atomic, write_text_atomic
    from tiltbench.results import markdown_table

    out = ROOT / "results" / "int8-backends"
    rows, kept = [], {}
    if args.only:  # rerun some backends, keep the rest of an earlier report
        kept = {r["backend"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    for backend in BACKENDS:
        if args.only and backend not in args.only.split(","):
            rows.append(kept[backend])
            continue
        print(f"{backend} ...", file=sys.stderr, flush=True)
        done = subprocess.run(
            [sys.executable, __file__, "--child", backend, "--checkpoint", args.checkpoint],
            capture_output=True,
            text=True,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
        if done.returncode:
            rows.append({"backend": backend, "failed": done.stderr.strip().splitlines()[-1][:300]})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    reference = next(r for r in rows if r["backend"] == "torch-fp32")
    for row in rows:
        for size in BATCHES:
            key = f"ms_total_batch{size}"
            if key in row:
                row[f"speedup_vs_torch_fp32_batch{size}"] = reference[key] / row[key]
    out.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": args.checkpoint, "timed_sentences": TIMED, "rounds": ROUNDS, "rows": rows}
    write_json_atomic(out / "report.json", {**report, "environment": environment(seed=0)})
    headers = ["backend", "accuracy", "model MB", "batch 32 ms (256 sentences)", "vs fp32", "batch 1 ms", "vs fp32"]
    body = []
    for r in rows:
        if "accuracy" not in r:
            body.append([r["backend"], r.get("missing") or r.get("failed"), "", "", "", "", ""])
            continue
        body.append(
            [
                r["backend"],
                f"{r['accuracy']:.4f}",
                f"{r['model_mb']:.1f}",
                f"{r['ms_total_batch32']:.0f}",
                f"{r['speedup_vs_torch_fp32_batch32']:.2f}x",
                f"{r['ms_total_batch1']:.0f}",
                f"{r['speedup_vs_torch_fp32_batch1']:.2f}x",
            ]
        )
    write_text_atomic(out / "report.md", "# int8 backends on this CPU\n\n" + markdown_table(headers, body))
    print(markdown_table(headers, body))


if __name__ == "__main__":
    main()

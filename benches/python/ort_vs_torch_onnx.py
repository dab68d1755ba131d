"""ONNX Runtime on graft's ONNX file against torch.onnx.export's file of the same model.

scripts/bench_native.sh part 6. One round: the two files in one process, one session
each (1 or 2 threads, no spinning, so neither loads the cores between runs), their runs
alternated (ABAB…), `--iters` timed runs each after two warm-up runs; a round prints
one JSON line of the two medians per batch and thread count. Run each round in a fresh
process, alternating which file goes first; `summary` turns the rounds' lines into a
markdown table (medians over the rounds, the range of the rounds' ratios in brackets).

    .graft-env/python benches/python/ort_vs_torch_onnx.py export DIR WEIGHTS
    .graft-env/python benches/python/ort_vs_torch_onnx.py round DIR --iters 20 >> rounds.jsonl
    .graft-env/python benches/python/ort_vs_torch_onnx.py summary rounds.jsonl
"""

import argparse
import json
import statistics
import sys
import time

CONFIGS = [(1, 1), (8, 1), (1, 2), (8, 2)]  # (batch, threads)


def export(tmp: str, weights: str) -> None:
    """torch.onnx.export (TorchScript path, opset 17) of timm's ViT-S/16 with `weights`."""
    import warnings

    import timm
    import torch
    from safetensors.torch import load_file

    # The TorchScript exporter's deprecation and tracer notes.
    warnings.filterwarnings("ignore")

    m = timm.create_model("vit_small_patch16_224", pretrained=False).eval()
    m.load_state_dict(load_file(weights))
    torch.onnx.export(
        m,
        (torch.randn(1, 3, 224, 224),),
        f"{tmp}/torch_vits.onnx",
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "B"}},
        opset_version=17,
        dynamo=False,
    )


def one_round(tmp: str, iters: int, torch_first: bool) -> dict:
    import numpy as np
    import onnxruntime as ort

    out = {}
    for threads in sorted({t for _, t in CONFIGS}):
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        o.log_severity_level = 3
        # Two sessions share this process: threads that spin after a run would load the
        # other session's cores, so neither spins (the ratio compares the two graphs).
        o.add_session_config_entry("session.intra_op.allow_spinning", "0")
        order = ("torch", "graft") if torch_first else ("graft", "torch")
        s = {k: ort.InferenceSession(f"{tmp}/{k}_vits.onnx", o, providers=["CPUExecutionProvider"]) for k in order}
        for batch in sorted(b for b, t in CONFIGS if t == threads):
            x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
            feeds = {k: {v.get_inputs()[0].name: x} for k, v in s.items()}
            outs = {k: v.run(None, feeds[k])[0] for k, v in s.items()}
            err = np.linalg.norm(outs["graft"] - outs["torch"]) / np.linalg.norm(outs["torch"])
            if err >= 1e-4:
                sys.exit(f"the two exports disagree at batch {batch}: {err:.2e}")
            ts = {k: [] for k in s}
            for _ in range(2):
                for k, v in s.items():
                    v.run(None, feeds[k])
            for _ in range(iters):
                for k, v in s.items():
                    t = time.perf_counter()
                    v.run(None, feeds[k])
                    ts[k].append((time.perf_counter() - t) * 1e3)
            out[f"{batch},{threads}"] = {k: statistics.median(v) for k, v in ts.items()}
    return out


def summary(path: str) -> None:
    with open(path) as f:
        rounds = [json.loads(line) for line in f if line.strip()]
    print("| batch | threads | ORT graft ms | ORT torch.onnx ms | graft / torch.onnx [range] |")
    print("|---|---|---|---|---|")
    for batch, threads in CONFIGS:
        k = f"{batch},{threads}"
        g = [r[k]["graft"] for r in rounds]
        t = [r[k]["torch"] for r in rounds]
        q = [a / b for a, b in zip(g, t)]
        print(
            f"| {batch} | {threads} | {statistics.median(g):.2f} | {statistics.median(t):.2f} | "
            f"{statistics.median(q):.3f} [{min(q):.3f}–{max(q):.3f}] |"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("dir")
    e.add_argument("weights")
    r = sub.add_parser("round")
    r.add_argument("dir")
    r.add_argument("--iters", type=int, default=10)
    r.add_argument("--torch-first", action="store_true", help="create and run torch's session first")
    s = sub.add_parser("summary")
    s.add_argument("rounds")
    args = ap.parse_args()
    if args.cmd == "export":
        export(args.dir, args.weights)
    elif args.cmd == "round":
        print(json.dumps(one_round(args.dir, args.iters, args.torch_first)))
    else:
        summary(args.rounds)


if __name__ == "__main__":
    main()

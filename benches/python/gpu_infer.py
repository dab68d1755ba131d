"""Inference latency of timm ViTs on a CUDA device, the PyTorch side of
scripts/bench_gpu.sh.

For each model and batch size (random weights, f32, inference mode) it times:
  eager            model(x), synchronised;
  graph            a CUDA graph of the forward (warm-up on a side stream, capture
                   with torch.cuda.graph, replay timed with a synchronize);
  compile          torch.compile(model, dynamic=False) (only for --compile-batch);
  reduce_overhead  torch.compile(model, mode="reduce-overhead", dynamic=False) (same).
Each figure is the median of --iters synchronised runs after --warmup; one JSON
object on stdout.

    python3 benches/python/gpu_infer.py --models vit_small_patch16_224 --batch 1 8 64
"""

import argparse
import json
import statistics
import time

import timm
import torch


def timed(fn, iters: int, warmup: int) -> list:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(iters):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def graphed(model, x):
    static = x.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            model(static)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        model(static)
    return g.replay


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["vit_small_patch16_224", "vit_base_patch16_224"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--compile-batch", nargs="*", default=[], help="MODEL:BATCH pairs to time with torch.compile")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device("cuda")
    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "timm": timm.__version__, "rows": []}
    for name in args.models:
        model = timm.create_model(name, pretrained=False).to(dev).eval()
        for b in args.batch:
            x = torch.randn(b, 3, 224, 224, device=dev)
            row = {"model": name, "batch": b}
            with torch.inference_mode():
                row["eager"] = statistics.median(timed(lambda: model(x), args.iters, args.warmup))
                row["graph"] = statistics.median(timed(graphed(model, x), args.iters, args.warmup))
                if f"{name}:{b}" in args.compile_batch:
                    for mode, key in ((None, "compile"), ("reduce-overhead", "reduce_overhead")):
                        torch._dynamo.reset()
                        c = torch.compile(model, mode=mode, dynamic=False)
                        t0 = time.perf_counter()
                        c(x)
                        c(x)
                        torch.cuda.synchronize()
                        row[key + "_compile_s"] = time.perf_counter() - t0
                        row[key] = statistics.median(timed(lambda: c(x), args.iters, args.warmup))
            out["rows"].append(row)
        del model
        torch.cuda.empty_cache()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

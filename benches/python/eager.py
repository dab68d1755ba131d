"""Reference timings in PyTorch eager, for side-by-side comparison with graft.

Prints one JSON object: timm.create_model time and forward latency (median of
--iters runs after --warmup) for each batch size, with the given thread count.

    .graft-env/python benches/python/eager.py --model vit_base_patch16_224 --batch 1 8 --threads 2
"""

import argparse
import json
import statistics
import time

import torch
import timm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_base_patch16_224")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    creates = []
    for _ in range(3):
        t0 = time.perf_counter()
        model = timm.create_model(args.model, pretrained=False)
        creates.append((time.perf_counter() - t0) * 1e3)
    model.eval()
    out = {
        "model": args.model,
        "threads": args.threads,
        "params": sum(p.numel() for p in model.parameters()),
        "create_model_ms": statistics.median(creates),
        "forward_ms": {},
    }
    with torch.inference_mode():
        for b in args.batch:
            x = torch.randn(b, 3, 224, 224)
            for _ in range(args.warmup):
                model(x)
            times = []
            for _ in range(args.iters):
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1e3)
            out["forward_ms"][str(b)] = statistics.median(times)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Check a `graft fuse` output against timm.

    check_fused.py --fused FUSED.safetensors --config CFG.json --inputs IN.safetensors \
                   --graft OUT.safetensors --ref REF.safetensors [--tol 1e-5] [--write TIMM.safetensors]

CFG.json holds the keyword arguments of timm's VisionTransformer. The fused file
must load into it with load_state_dict(strict=True) (every key, no extra ones,
float32), and the timm model (run in float64) on the input `image` must reproduce
graft's unfused output `logits` and the reference's, each within the tolerance.
`--write` saves the timm model's output (float64 `logits`) for the test runner's
own comparison.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer

from compare import rel_err


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fused", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--graft", required=True, help="graft's unfused output")
    ap.add_argument("--ref", required=True)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--write", help="save timm(fused)'s output here")
    a = ap.parse_args()

    fused = load_file(a.fused)
    cfg = json.load(open(a.config))
    model = VisionTransformer(**cfg).eval()
    want_keys = set(model.state_dict())
    missing = sorted(want_keys - set(fused))
    unexpected = sorted(set(fused) - want_keys)
    print(f"fused file: {len(fused)} tensors; timm VisionTransformer({cfg}) has {len(want_keys)}")
    if missing or unexpected:
        print(f"  missing keys: {missing}")
        print(f"  unexpected keys: {unexpected}")
    ok = True
    bad_dtype = sorted(k for k, v in fused.items() if v.dtype != torch.float32)
    if bad_dtype:
        print(f"  not float32: {bad_dtype}")
        ok = False
    try:
        model.load_state_dict(fused, strict=True)
    except RuntimeError as e:
        print(f"load_state_dict(strict=True) failed: {e}")
        return 1
    print("load_state_dict(strict=True): ok")

    image = load_file(a.inputs)["image"]
    with torch.no_grad():
        out = model.double()(image.double())
    if a.write:
        save_file({"logits": out.contiguous()}, a.write)
    unfused = load_file(a.graft)["logits"]
    ref = load_file(a.ref)["logits"]
    for what, other in (("graft unfused output", unfused), ("reference", ref)):
        err = rel_err(out.numpy(), other.double().numpy())
        verdict = "ok" if err <= a.tol else "FAIL"
        print(f"timm(fused) vs {what}: rel_err {err:.3e}  tol {a.tol:.0e}  {verdict}")
        ok &= err <= a.tol
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

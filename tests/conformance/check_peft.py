#!/usr/bin/env python3
"""Check a `graft export peft` directory against PEFT.

    check_peft.py --peft DIR --base BASE.safetensors --config CFG.json --inputs IN.safetensors \
                  --graft OUT.safetensors [--tol 1e-5] [--write PEFT.safetensors]

CFG.json holds the keyword arguments of timm's VisionTransformer; BASE its weights.
`peft.PeftModel.from_pretrained(model, DIR)` must load the directory and, run in
float64 on the input `image`, reproduce graft's output `logits` within the tolerance;
the adapter must change the base model's output (or the check proves nothing).
`--write` saves PEFT's output (float64 `logits`) for the test runner's own comparison.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer

from compare import rel_err


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for a in ("--peft", "--base", "--config", "--inputs", "--graft"):
        ap.add_argument(a, required=True)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--write", help="save PEFT's output here")
    a = ap.parse_args()
    with open(a.config) as f:
        cfg = json.load(f)
    model = VisionTransformer(**cfg).eval()
    model.load_state_dict(load_file(a.base), strict=True)
    image = load_file(a.inputs)["image"].double()
    with torch.no_grad():
        plain = model.double()(image)
    model = PeftModel.from_pretrained(model.float(), a.peft).eval().double()
    with torch.no_grad():
        want = model(image)
    if a.write:
        save_file({"logits": want.contiguous()}, a.write)
    got = load_file(a.graft)["logits"]
    change = rel_err(plain.numpy(), want.numpy())
    err = rel_err(got, want.numpy())
    print(f"PEFT adapter changes the output by {change:.3e}; graft vs PEFT rel_err {err:.3e} (tol {a.tol:.0e})")
    if change < 1e-3:
        print("FAIL: the exported adapter barely changes the output; the check would be vacuous")
        return 1
    return 0 if err <= a.tol else 1


if __name__ == "__main__":
    sys.exit(main())

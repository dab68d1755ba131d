#!/usr/bin/env python3
"""Compare a graft output file with a reference file.

    compare.py --graft OUT.safetensors --ref REF.safetensors [--tol 1e-5] [--label TEXT]

Every tensor NAME in the reference (other than NAME.mask entries) is a declared
output: graft's file must hold it, float32, with the same shape, finite. A
reference entry ``NAME.mask`` (a [B, T] 0/1 tensor) restricts the comparison of a
[B, T, ...] output to the rows where the mask is 1 (e.g. unpadded tokens).

Relative error = ||graft - ref|| / ||ref||, in float64. Prints one line per output
and exits 1 when any output is missing, malformed or past the tolerance. Needs only
numpy and safetensors (no torch import: it runs after every graft run).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from safetensors.numpy import load_file


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm((a - b).ravel()) / np.linalg.norm(b.ravel()))


def compare(got: dict, ref: dict, tol: float, label: str) -> bool:
    ok = True
    names = sorted(k for k in ref if not k.endswith(".mask"))
    for name in names:
        want = ref[name]
        tag = f"[{label}] {name}" if label else name
        if name not in got:
            print(f"{tag}: MISSING from graft's output (it has: {sorted(got)})")
            ok = False
            continue
        g = got[name]
        if g.dtype != np.float32:
            print(f"{tag}: dtype {g.dtype}, expected float32")
            ok = False
        if tuple(g.shape) != tuple(want.shape):
            print(f"{tag}: shape {tuple(g.shape)}, expected {tuple(want.shape)}")
            ok = False
            continue
        if not np.isfinite(g).all():
            print(f"{tag}: non-finite values in graft's output")
            ok = False
            continue
        mask = ref.get(f"{name}.mask")
        if mask is not None:
            sel = mask != 0
            g, want = g[sel], want[sel]
            what = f" over {int(sel.sum())} unmasked rows"
        else:
            what = ""
        err = rel_err(g, want)
        max_abs = float(np.abs(g.astype(np.float64) - want.astype(np.float64)).max())
        verdict = "ok" if err <= tol else "FAIL"
        print(f"{tag}: shape {tuple(got[name].shape)}{what}  rel_err {err:.3e}  "
              f"max_abs {max_abs:.3e}  tol {tol:.0e}  {verdict}")
        if err > tol:
            ok = False
    extra = sorted(set(got) - set(names))
    if extra:
        print(f"[{label}] note: graft wrote extra tensors {extra}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--graft", required=True, help="graft's output file")
    ap.add_argument("--ref", required=True, help="the reference file")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    got = load_file(a.graft)
    ref = load_file(a.ref)
    return 0 if compare(got, ref, a.tol, a.label) else 1


if __name__ == "__main__":
    sys.exit(main())

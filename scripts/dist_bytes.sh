#!/usr/bin/env bash
# On paper: the bytes each data-parallel step all-reduces for every gallery spec
# (trainable parameters x 4 bytes: graft's gradients are float32; a plain backbone,
# which trains nothing as written, counts as full fine-tuning), and what a ring
# all-reduce of that costs at a few link speeds: 2(n-1)/n x bytes / bandwidth, taken
# at its large-n bound 2 x bytes / bandwidth, at line rate (no protocol overhead, no
# overlap with the backward pass). Bandwidths: NVLink 300 GB/s (an effective
# all-reduce bus bandwidth of recent NVLink generations), 100 GbE 12.5 GB/s,
# 10 GbE 1.25 GB/s. Counts come from `graft params --json` (a debug build is enough).
# Usage: bash scripts/dist_bytes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --features distributed --quiet
g="$PWD/target/debug/graft"
echo "| spec | trainable / total parameters | bytes per step | NVLink 300 GB/s | 100 GbE | 10 GbE |"
echo "|---|---|---|---|---|---|"
for spec in specs/*.graft; do
  "$g" params "$spec" --json >"${TMPDIR:-/tmp}/graft-params.json"
  python3 - "$spec" "${TMPDIR:-/tmp}/graft-params.json" <<'PY'
import json, sys
spec, path = sys.argv[1], sys.argv[2]
p = json.load(open(path))
# A plain backbone trains nothing as written: show its full fine-tuning.
n, what = (p["trainable"], f"{p['trainable']:,} / {p['total']:,}") if p["trainable"] else (p["total"], f"{p['total']:,} (full fine-tuning)")
b = 4 * n
def t(bw):
    s = 2 * b / bw
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"
mb = f"{b / 1e6:.1f} MB" if b >= 1e5 else f"{b / 1e3:.1f} kB"
print(f"| `{spec.split('/')[-1]}` | {what} | {mb} | {t(300e9)} | {t(12.5e9)} | {t(1.25e9)} |")
PY
done

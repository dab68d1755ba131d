#!/usr/bin/env bash
# Side-by-side benchmarks, one run, one thread count (report ratios, not absolutes):
#   1. compile time, source → verified IR, ViT-Ti … ViT-L with adapters and pathways (criterion)
#   2. fused M2PT ViT-B vs the plain ViT-B: parameters and forward latency (graft bench)
#   3. graft forward vs timm in PyTorch eager, and graft compile vs timm.create_model
#   4. datasets: `graft data synth --n 2000` and reading it back (`graft data check`) per task
# Usage: bash scripts/bench.sh [THREADS]   (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
bash scripts/setup.sh
cargo build --release --features torch --quiet

echo "== machine: $(nproc) cores, $(awk '/model name/{$1=$2=$3=""; print; exit}' /proc/cpuinfo | xargs), $(date -u +%Y-%m-%d)"
echo "== 1. compile time (cargo bench --bench compile)"
cargo bench --quiet --features torch --bench compile -- --warm-up-time 1 --measurement-time 3 2>/dev/null | grep -E "time:" || true

echo "== 2+3. graft (threads $threads) vs PyTorch eager (threads $threads)"
graft_json=$(./target/release/graft bench specs/vit_base.graft specs/m2pt_image_point.graft --batch 1,8 --iters 10 --warmup 2 --threads "$threads" --json)
eager_json=$(.graft-env/python benches/python/eager.py --model vit_base_patch16_224 --batch 1 8 --threads "$threads" --iters 10 --warmup 2)
.graft-env/python - "$graft_json" "$eager_json" <<'PY'
import json, sys
g = json.loads(sys.argv[1]); e = json.loads(sys.argv[2])
plain, fused = g["specs"][0], g["specs"][1]
print(f"{'':34} {'params':>12} {'batch 1 ms':>11} {'batch 8 ms':>11}")
def row(name, params, f):
    print(f"{name:34} {params:>12,} {f['1']:>11.1f} {f['8']:>11.1f}")
pf = {str(b): ms for b, ms in plain["forward_ms"]}
ff = {str(b): ms for b, ms in fused["forward_ms"]}
row("graft ViT-B (plain)", plain["params"], pf)
row("graft M2PT ViT-B (fused)", fused["params"], ff)
row("timm ViT-B (PyTorch eager)", e["params"], e["forward_ms"])
for b in ("1", "8"):
    print(f"batch {b}: fused/plain latency {ff[b] / pf[b]:.3f}, graft/eager latency {pf[b] / e['forward_ms'][b]:.3f}")
print(f"compile: graft spec → verified IR {plain['compile_ms']:.2f} ms, timm.create_model {e['create_model_ms']:.1f} ms, ratio {plain['compile_ms'] / e['create_model_ms']:.4f}")
PY

echo "== 4. datasets: synth 2000 samples, then read and validate every shard"
data_dir=$(mktemp -d)
for task in pretrain audio_pretrain motion multimodal; do
  t0=$(date +%s.%N)
  ./target/release/graft data synth --task "$task" --n 2000 --out "$data_dir/$task" >/dev/null
  t1=$(date +%s.%N)
  ./target/release/graft data check "$data_dir/$task" >/dev/null
  t2=$(date +%s.%N)
  awk -v task="$task" -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "%-16s synth %.2f s, read %.2f s\n", task, b - a, c - b }'
done
rm -rf "$data_dir"

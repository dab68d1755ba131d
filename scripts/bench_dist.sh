#!/usr/bin/env bash
# Data-parallel training on this machine (CPU, Gloo over 127.0.0.1), measured side by
# side: 2 ranks x 1 thread vs 1 rank x 1 thread at the same per-rank batch, for
#   (a) CM3T adapter training of the demo spec specs/demo/cm3t_mhva.graft (frozen
#       video ViT, multi-head adapters + head: ~0.1 MB of gradients per step), and
#   (b) full fine-tuning of ViT-S/16 at 224² (benches/specs/vit_small_dp.graft, 22 M
#       parameters: 88 MB of gradients per step).
# Throughput = median over steps (after the first) of global samples/s from rank 0's
# metrics.jsonl; the all-reduce share is what rank 0 reports (copies + collectives +
# waiting for the slower rank, over the training time). 1-rank and 2-rank runs
# alternate (1, 2, 2, 1, ...) so a slow spell of a shared machine falls on both.
# Usage: bash scripts/bench_dist.sh    env: ROUNDS (2), STEPS_CM3T (30), STEPS_VIT (6)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-2}"
steps_cm3t="${STEPS_CM3T:-30}"
steps_vit="${STEPS_VIT:-6}"
bash scripts/setup.sh
cargo build --release --features distributed --quiet
g="$PWD/target/release/graft"
tmp="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

mkdir -p "$tmp/runs" "$tmp/results"
"$g" data synth --task pretrain --n 64 --out "$tmp/pre" >/dev/null
"$g" data synth --task multimodal --n 1024 --seed 3 --out "$tmp/mm" >/dev/null
.graft-env/python benches/python/image_dataset.py "$tmp/img" 128
# A backbone checkpoint for the demo spec (its values do not matter for speed).
"$g" train specs/demo/video_pretrain.graft --data "$tmp/pre" --steps 1 --batch 8 --lr 1e-3 --device cpu \
  --out "$tmp/backbone" >/dev/null 2>&1

free_port() { .graft-env/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run NAME WORLD SPEC DATA STEPS BATCH EXTRA...
run() {
  local name=$1 world=$2 spec=$3 data=$4 steps=$5 batch=$6
  shift 6
  local out="$tmp/runs/$name" port
  rm -rf "$out"
  local args=(train "$spec" --data "$data" --steps "$steps" --batch "$batch" --lr 1e-3 --schedule constant
              --device cpu --checkpoint-every 100000 --out "$out" "$@")
  if ((world == 1)); then
    OMP_NUM_THREADS=1 timeout 1200 "$g" "${args[@]}" >"$out.log" 2>&1
  else
    port=$(free_port)
    pids=()
    local k
    for k in $(seq 0 $((world - 1))); do
      OMP_NUM_THREADS=1 GLOO_SOCKET_IFNAME=lo WORLD_SIZE=$world RANK=$k LOCAL_RANK=$k MASTER_ADDR=127.0.0.1 \
        MASTER_PORT=$port timeout 1200 "$g" "${args[@]}" >"$out.$k.log" 2>&1 &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    pids=()
    cp "$out.0.log" "$out.log"
  fi

  cp "$out/metrics.jsonl" "$tmp/results/$name.jsonl"
  grep '^all-reduce:' "$out.log" >"$tmp/results/$name.share" || true
}

machine="$(nproc) cores, $(awk '/model name/{$1=$2=$3=""; print; exit}' /proc/cpuinfo | xargs), $(date -u +%Y-%m-%d)"
echo "== machine: $machine; $rounds rounds; 1 thread per rank"
for r in $(seq 1 "$rounds"); do
  order=(1 2)
  if ((r % 2 == 0)); then order=(2 1); fi
  for w in "${order[@]}"; do
    echo "== round $r: cm3t, $w rank(s)" >&2
    run "cm3t.$w.$r" "$w" specs/demo/cm3t_mhva.graft "$tmp/mm" "$steps_cm3t" 16 --weights "video_vit=$tmp/backbone/trainable.safetensors"
    echo "== round $r: vit-s full, $w rank(s)" >&2
    run "vit.$w.$r" "$w" benches/specs/vit_small_dp.graft "$tmp/img" "$steps_vit" 4
  done
done

.graft-env/python - "$tmp/results" "$rounds" <<'PY'
import json, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
def rates(name):
    out = []
    for r in range(1, rounds + 1):
        recs = [json.loads(l) for l in open(f"{d}/{name}.{r}.jsonl")]
        out += [x["samples_per_s"] for x in recs if x["kind"] == "train"][1:]
    return statistics.median(out)
def share(name):
    lines = [open(f"{d}/{name}.{r}.share").read().strip() for r in range(1, rounds + 1)]
    return "; ".join(l.split("(")[1].split(";")[0] for l in lines if l)
for name, label in [("cm3t", "CM3T demo adapters (cm3t_mhva), batch 16/rank"), ("vit", "ViT-S/16 full fine-tuning, batch 4/rank")]:
    one, two = rates(f"{name}.1"), rates(f"{name}.2")
    print(f"{label}: 1 rank {one:.1f} samples/s, 2 ranks {two:.1f} samples/s, speedup {two / one:.2f}x (ideal 2.0); "
          f"all-reduce share (2 ranks, per round): {share(name + '.2')}")
PY

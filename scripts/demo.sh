#!/usr/bin/env bash
# The main job, end to end on CPU with synthetic data (graft makes all of it):
#   1. synthetic datasets: moving-shape videos with a spectrogram and a keypoint track
#      (the pretraining videos written as PNG frame folders and the pretraining sounds
#      as WAV files, then imported, as real data is)
#   2. pretrain a tiny video ViT (and an audio model for M2PT)
#   3. CM3T: frozen backbone + head, + multi-head adapters, + audio and pose through
#      cross-attention adapters, and the last with a modality missing
#   4. M2PT: the video ViT learns a new task with pathways from the audio model,
#      then `graft fuse` folds W + λ·W′ and the deployed model is the plain one
#   5. deploy: the fused model on the native CPU backend (no LibTorch), its outputs
#      against LibTorch's and the latency of both, each in its own process, alternated
# Everything lands in one directory (default out/demo), with the loss plots.
# Usage: bash scripts/demo.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out/demo}"
threads="${GRAFT_THREADS:-2}"

step() { printf '\n== %s\n' "$*"; }

step "setup (first run: installs the pinned PyTorch environment, then builds)"
bash scripts/setup.sh
cargo build --release --features torch --quiet
g="$PWD/target/release/graft"
rm -rf "$out"
mkdir -p "$out/data" "$out/runs" "$out/eval"
data="$out/data"
runs="$out/runs"

step "1/7 synthetic data"
# The pretraining videos and sounds go the way real data does: PNG frame folders and
# WAV files on disk, imported into uint8 / int16 shards, decoded, normalised and (for
# the sounds) turned into Kaldi filter banks while training reads them.
"$g" data synth --task pretrain --format files --out "$data/pretrain_frames" --n 2048 --seed 1 | sed -n 1p
"$g" data import video "$data/pretrain_frames" --out "$data/pretrain" --frames 8 --sampling-rate 1 \
  --image-size 32 --crop-pct 1 --mean 0.5,0.5,0.5 --std 0.41666666,0.41666666,0.41666666 \
  --hflip 0 --min-scale 1 | sed -n 1,3p
"$g" data synth --task audio_pretrain --format files --out "$data/audio_wav" --n 2048 --seed 2 | sed -n 1p
"$g" data import audio "$data/audio_wav" --out "$data/audio" --sample-rate 16000 --mel-bins 32 --frames 64 \
  --layout 1ft | sed -n 1,3p
"$g" data synth --task multimodal --out "$data/mm_train" --n 3072 --seed 3 --drop audio:0.15 --drop pose:0.15 | tail -n 2
"$g" data synth --task multimodal --out "$data/mm_val" --n 768 --seed 4 | tail -n 2
"$g" data synth --task motion --out "$data/motion_train" --n 2048 --seed 5 | tail -n 2
"$g" data synth --task motion --out "$data/motion_val" --n 512 --seed 6 | tail -n 2

train() { # spec run-name data extra-args...
  local spec=$1 name=$2 d=$3
  shift 3
  "$g" train "specs/demo/$spec.graft" --data "$data/$d" --out "$runs/$name" --seed 0 "$@"
}

step "2/7 pretrain a tiny video ViT on shapes, and an audio model on spectrograms"
train video_pretrain video_pretrain pretrain --epochs 4 --batch 32 --lr 1e-3 --warmup 20 --schedule cosine
train audio_pretrain audio_pretrain audio --epochs 3 --batch 32 --lr 1e-3 --warmup 20 --schedule cosine
backbone="video_vit=$runs/video_pretrain/trainable.safetensors"

step "3/7 CM3T plugins on the frozen video ViT (multimodal task, 8 classes)"
for spec in cm3t_head cm3t_mhva cm3t_multimodal; do
  train "$spec" "$spec" mm_train --val "$data/mm_val" --epochs 6 --batch 32 --lr 3e-3 --warmup 20 \
    --schedule cosine --weights "$backbone"
  "$g" params "specs/demo/$spec.graft" --json > "$out/eval/$spec.params.json"
  "$g" eval "specs/demo/$spec.graft" --data "$data/mm_val" --run "$runs/$spec" --weights "$backbone" \
    --json > "$out/eval/$spec.json"
done
for missing in audio pose; do
  "$g" eval specs/demo/cm3t_multimodal.graft --data "$data/mm_val" --run "$runs/cm3t_multimodal" \
    --weights "$backbone" --without "$missing" --json > "$out/eval/cm3t_multimodal.without_$missing.json"
done

step "4/7 M2PT: video ViT on the motion task, pathways from the audio model"
train m2pt_video_audio m2pt motion_train --val "$data/motion_val" --epochs 3 --batch 32 --lr 1e-3 --warmup 20 \
  --schedule cosine --lr-for 'cmr.*=1e-2' --weights "$backbone" \
  --weights "audio_vit=$runs/audio_pretrain/trainable.safetensors" --allow-missing 'head.*'
"$g" eval specs/demo/m2pt_video_audio.graft --data "$data/motion_val" --run "$runs/m2pt" --weights "$backbone" \
  --weights "audio_vit=$runs/audio_pretrain/trainable.safetensors" --allow-missing 'head.*' \
  --json > "$out/eval/m2pt.json"

step "5/7 fuse: fold W + λ·W′, check fused = unfused, write the plain model's checkpoint"
"$g" fuse specs/demo/m2pt_video_audio.graft --run "$runs/m2pt" --weights "$backbone" \
  --weights "audio_vit=$runs/audio_pretrain/trainable.safetensors" --allow-missing 'head.*' \
  --out "$runs/m2pt/fused.safetensors"
"$g" eval specs/demo/video_plain.graft --data "$data/motion_val" --weights "video_vit=$runs/m2pt/fused.safetensors" \
  --json > "$out/eval/m2pt_fused.json"

step "6/7 deployed cost: fused.safetensors in the plain video ViT against the plain one (same run, $threads threads)"
# The deployed model is measured as deployed: the plain spec with fused.safetensors
# (spec 2), next to the plain spec with random weights (spec 1).
"$g" bench specs/demo/video_plain.graft specs/demo/video_plain.graft \
  --weights "2:video_vit=$runs/m2pt/fused.safetensors" --batch 1,32 --iters 20 --threads "$threads" \
  --json > "$out/eval/bench.json"

step "7/7 deploy: the fused model on the native CPU backend (no LibTorch) against LibTorch"
.graft-env/python - "$out/eval/deploy_in.safetensors" <<'PY'
import sys, torch
from safetensors.torch import save_file
g = torch.Generator().manual_seed(7)
save_file({"video": torch.randn(4, 3, 8, 32, 32, generator=g)}, sys.argv[1])
PY
fused_w="video_vit=$runs/m2pt/fused.safetensors"
for b in native torch; do
  "$g" run specs/demo/video_plain.graft --weights "$fused_w" --inputs "$out/eval/deploy_in.safetensors" \
    --out "$out/eval/deploy_$b.safetensors" --backend "$b" --threads "$threads"
done
# The deployed model on each backend in its own process (in one process LibTorch's
# OpenMP workers spin between its ops and take the cores from the native pool),
# alternated over three rounds; the summary takes each backend's median.
for r in 1 2 3; do
  for b in native torch; do
    "$g" bench specs/demo/video_plain.graft --weights "1:$fused_w" --backend "$b" --batch 1,32 --iters 20 \
      --threads "$threads" --json > "$out/eval/deploy_bench_${b}_$r.json"
  done
done

.graft-env/python - "$out" <<'PY'
import json, math, sys, pathlib
out = pathlib.Path(sys.argv[1]); ev = out / "eval"
load = lambda n: json.loads((ev / n).read_text())
rows = [
    ("frozen backbone + head", "cm3t_head", "cm3t_head.json"),
    ("+ multi-head adapters", "cm3t_mhva", "cm3t_mhva.json"),
    ("+ audio and pose (cross-attention)", "cm3t_multimodal", "cm3t_multimodal.json"),
    ("  same model, audio missing", "cm3t_multimodal", "cm3t_multimodal.without_audio.json"),
    ("  same model, pose missing", "cm3t_multimodal", "cm3t_multimodal.without_pose.json"),
]
lines = ["CM3T on the synthetic multimodal task (8 classes, chance 12.5%; best possible:",
         "video alone 25%, video + one modality 50%, all three 100%)", "",
         f"{'configuration':38} {'trainable':>10} {'% of backbone':>14} {'val accuracy':>13}"]
for label, spec, f in rows:
    p = load(f"{spec}.params.json"); e = load(f)
    lines.append(f"{label:38} {p['trainable']:>10,} {p['trainable_pct_of_backbone']:>13.1f}% {100 * e['accuracy']:>12.1f}%")
m2 = load("m2pt.json"); fused = load("m2pt_fused.json"); b = load("bench.json")
plain, deployed = b["specs"][0], b["specs"][1]

def file_params(path):
    """Elements of every tensor in a safetensors file, from its header."""
    raw = pathlib.Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")

in_file = file_params(out / "runs" / "m2pt" / "fused.safetensors")
lines += ["", "M2PT on the motion task (4 classes): video ViT + pathways from the audio model",
          f"  val accuracy, trained (W + λ·W′):  {100 * m2['accuracy']:.1f}%",
          f"  val accuracy, fused plain model:   {100 * fused['accuracy']:.1f}%",
          f"  parameters deployed: fused {in_file:,} = plain {plain['params']:,}: "
          f"{in_file == plain['params'] == deployed['weights_params']}"]
for (bs, a), (_, c) in zip(plain["forward_ms"], deployed["forward_ms"]):
    lines.append(f"  latency batch {bs}: plain {a:.2f} ms, fused {c:.2f} ms, ratio {c / a:.3f}")
from safetensors.torch import load_file
nat = load_file(str(ev / "deploy_native.safetensors"))["logits"].double()
tor = load_file(str(ev / "deploy_torch.safetensors"))["logits"].double()
err = ((nat - tor).norm() / tor.norm()).item()
lines += ["", "Deployed on the native CPU backend (no LibTorch), fused M2PT model:",
          f"  outputs vs LibTorch: relative error {err:.2e} (argmax agrees on {(nat.argmax(1) == tor.argmax(1)).float().mean().item() * 100:.0f}% of inputs)"]
# Each backend's median over the alternated rounds, each round in its own process.
lat = {}
for b in ("native", "torch"):
    rounds = [dict(load(f"deploy_bench_{b}_{r}.json")["specs"][0]["forward_ms"]) for r in (1, 2, 3)]
    lat[b] = {bs: sorted(x[bs] for x in rounds)[1] for bs in rounds[0]}
for bs in lat["native"]:
    lines.append(f"  latency batch {bs}: native {lat['native'][bs]:.2f} ms, LibTorch {lat['torch'][bs]:.2f} ms, "
                 f"native/LibTorch {lat['native'][bs] / lat['torch'][bs]:.3f}")
text = "\n".join(lines)
print("\n" + text)
(out / "summary.txt").write_text(text + "\n")
PY
echo
echo "everything is in $out: data/, runs/*/ (trainable.safetensors, metrics.jsonl, loss.svg), eval/, summary.txt"

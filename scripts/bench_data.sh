#!/usr/bin/env bash
# Input-pipeline throughput: images per second per worker for decode + RandomResizedCrop
# (scale 0.08–1, ratio 3/4–4/3, antialiased bilinear) + horizontal flip to 224² +
# ImageNet normalisation, on generated JPEGs of ImageNet-like size (500×375, quality 90),
#   graft:        `graft data bench DS --train --batch 64 --workers W` on `--store encoded`
#                 shards: one epoch of the training batches, every image decoded and
#                 augmented while reading, timed from opening the stream to the last
#                 batch (as the DataLoader loop below is timed)
#   torchvision:  ImageFolder + DataLoader(num_workers=W), PIL decoding + transforms
#                 (timm's / torchvision's default path), and torchvision.io.decode_jpeg
#                 + transforms.v2 (benches/python/data_loader.py)
# with the same number of workers. A second table stops each at uint8 pixels (graft's
# `--raw`, PILToTensor, v2 without ToDtype/Normalize): what training hands an input
# declared `normalized`, which the model normalises on its device. All six alternate
# round by round, so a slow spell on a shared machine falls on all of them; the median
# of the rounds is reported.
# Then the video and audio paths against theirs (below).
# Usage: bash scripts/bench_data.sh [WORKERS]   (default 1)
#   env: N images (512), VIDEOS (32), AUDIOS (64), ROUNDS (3)
set -euo pipefail
cd "$(dirname "$0")/.."
workers="${1:-1}"
n="${N:-512}"
rounds="${ROUNDS:-3}"
bash scripts/setup.sh >/dev/null
command -v nasm >/dev/null 2>&1 ||
  echo "note: no nasm: libjpeg-turbo builds without SIMD, so graft's JPEG decoding is slower (apt-get install -y nasm, then cargo clean -p mozjpeg-sys)" >&2
cargo build --release --quiet
py=.graft-env/venv/bin/python
graft=target/release/graft
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$py" benches/python/data_loader.py make "$tmp/jpegs" "$n"
"$graft" data import images "$tmp/jpegs" --out "$tmp/ds" --store encoded --image-size 224 --workers "$workers" >/dev/null

declare -A rates
for r in $(seq "$rounds"); do
  for raw in "" u8; do
    rates[graft$raw]+="$("$graft" data bench "$tmp/ds" --train --seed "$r" --batch 64 --workers "$workers" --json \
      ${raw:+--raw} | "$py" -c 'import json, sys; print("%.1f" % json.load(sys.stdin)["samples_per_s"])') "
    for path in pil v2; do
      rates[$path$raw]+="$("$py" benches/python/data_loader.py run "$tmp/jpegs" "$workers" "$path" $raw) "
    done
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for raw in "" u8; do
  case "$raw" in
    "") echo "to normalised f32: images/s per worker ($workers workers, $n JPEGs 500x375 q90, median of $rounds rounds):" ;;
    *) echo "to uint8 pixels (normalised on the model's device): images/s per worker:" ;;
  esac
  for k in graft pil v2; do
    m=$(echo "${rates[$k$raw]}" | median)
    printf '  %-6s %8.0f  (%s)\n' "$k" "$(awk -v m="$m" -v w="$workers" 'BEGIN { print m / w }')" "${rates[$k$raw]}"
  done
  g=$(echo "${rates[graft$raw]}" | median); pv=$(echo "${rates[pil$raw]}" | median); v=$(echo "${rates[v2$raw]}" | median)
  awk -v g="$g" -v p="$pv" -v v="$v" 'BEGIN { b = p > v ? p : v; printf "  graft / the faster reference: %.2fx\n", g / b }'
done
# Video and audio, each against its reference (benches/python/data_paths.py), the
# same rounds alternated: VideoMAE's training view of 16-frame clips (16 frames 2
# apart, one RandomResizedCrop box and flip per clip, 224², normalised) from 32 videos
# of 48 frames at 320×240, stored by `graft data import video` as uint8 frames, against
# the same frames read as JPEGs with PIL per clip (VideoMAE's frame-folder loader) and
# as memory-mapped uint8 arrays (the form graft stores, so the same work); and AST's
# filter bank (128 mel bins × 1024 frames) of 64 ten-second WAVs, stored as int16,
# against transformers' ASTFeatureExtractor on the same samples.
"$py" benches/python/data_paths.py make-video "$tmp/vid" "${VIDEOS:-32}"
"$graft" data import video "$tmp/vid" --out "$tmp/vds" --frames 16 --sampling-rate 2 --image-size 224 \
  --workers "$workers" >/dev/null
"$py" benches/python/data_paths.py make-audio "$tmp/aud" "${AUDIOS:-64}"
"$graft" data import audio "$tmp/aud" --out "$tmp/ads" --workers "$workers" >/dev/null
for r in $(seq "$rounds"); do
  rates[gvideo]+="$("$graft" data bench "$tmp/vds" --train --seed "$r" --batch 8 --workers "$workers" --json |
    "$py" -c 'import json, sys; print("%.2f" % json.load(sys.stdin)["samples_per_s"])') "
  for form in frames npy; do
    rates[v$form]+="$("$py" benches/python/data_paths.py run-video "$tmp/vid" "$workers" "$form") "
  done
  rates[gaudio]+="$("$graft" data bench "$tmp/ads" --train --seed "$r" --batch 16 --workers "$workers" --json |
    "$py" -c 'import json, sys; print("%.2f" % json.load(sys.stdin)["samples_per_s"])') "
  rates[aref]+="$("$py" -W ignore benches/python/data_paths.py run-audio "$tmp/aud" "$workers") "
done
echo "video clips (16 × 224²) per second per worker:"
for k in gvideo vframes vnpy; do
  m=$(echo "${rates[$k]}" | median)
  printf '  %-26s %8.2f  (%s)\n' "$(case $k in gvideo) echo graft;; vframes) echo 'PIL frames + transforms.v2';; *) echo 'uint8 arrays + transforms.v2';; esac)" \
    "$(awk -v m="$m" -v w="$workers" 'BEGIN { print m / w }')" "${rates[$k]}"
done
g=$(echo "${rates[gvideo]}" | median); f=$(echo "${rates[vframes]}" | median); a=$(echo "${rates[vnpy]}" | median)
awk -v g="$g" -v f="$f" -v a="$a" 'BEGIN { printf "  graft / PIL frames: %.2fx; graft / uint8 arrays (the same work): %.2fx\n", g / f, g / a }'
echo "audio clips (10 s, 128 × 1024 filter bank) per second per worker:"
for k in gaudio aref; do
  m=$(echo "${rates[$k]}" | median)
  printf '  %-26s %8.2f  (%s)\n' "$(case $k in gaudio) echo graft;; *) echo ASTFeatureExtractor;; esac)" \
    "$(awk -v m="$m" -v w="$workers" 'BEGIN { print m / w }')" "${rates[$k]}"
done
g=$(echo "${rates[gaudio]}" | median); a=$(echo "${rates[aref]}" | median)
awk -v g="$g" -v a="$a" 'BEGIN { printf "  graft / ASTFeatureExtractor: %.2fx\n", g / a }'
echo "load: $(cat /proc/loadavg); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

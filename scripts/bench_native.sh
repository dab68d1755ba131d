#!/usr/bin/env bash
# The native CPU backend against LibTorch: the README's figures come from this script.
#   1. ViT-S/16 224² at batch 1 and 8, 1 and 2 threads: native, LibTorch (graft
#      bench) and ONNX Runtime (CPU) on the same model with the same weights (`graft
#      export onnx`), each in its own process (in one process LibTorch's OpenMP
#      workers spin between ops and take the cores from the native pool), the three
#      processes alternated PASSES (3) times (medians of the processes' medians, in
#      brackets their range), and each one's share of the FMA peak: the forward's
#      matrix work (graft bench's count) per second over threads × one core's peak as
#      the native runs measured it
#   2. the demo's tiny video ViT and the CM3T multimodal model at batch 1 and 32, each
#      backend in its own process (processes alternated three times): in one
#      process LibTorch's OpenMP workers spin between ops and take the cores from
#      the native pool when both use 2 threads
#   3. the elementwise ablation: --elementwise unfused | blocks | jit, same binary,
#      same plan, processes alternated (ABCABC…), end-to-end medians
#   4. peak resident memory of each backend in its own process
#   5. binary size and cold start (process start to outputs written) of a native-only
#      build against the LibTorch build
#   6. ONNX Runtime (CPU) on ViT-S/16 as `graft export onnx` writes it, against the
#      same timm model through `torch.onnx.export`: batch 1 and 8, 1 and 2 threads,
#      sessions alternated run by run (in one process, so neither spins between
#      runs), ROUNDS (6) fresh processes; the ratio must stay <= 1.02. Per node:
#      benches/python/ort_profile.py
#   7. under a competing load: the demo model and ViT-S/16 at batch 1, 2 threads, each
#      backend in its own process, alone and with two busy processes on the machine's
#      cores, alternated
#   8. the attention kernels: native plain, blocked and packed attention (--attention) on
#      ViT-S/16 (197 tokens), AST (1214) and VideoMAE-B (1568), batch 1, 1 thread,
#      processes alternated
#   9. the larger models at batch 1, 1 thread: VideoMAE-B (16×224², 1568 tokens) and
#      CLIP ViT-B/32, native and LibTorch forward by forward (benches/python/paced.py
#      --no-ort, each resident in its own process of the LibTorch build; ROUNDS9 (30)
#      rounds for CLIP, a quarter as many for VideoMAE-B), and the peak resident memory
#      of each backend in its own process and build (native: the native-only build,
#      which maps no LibTorch libraries; LibTorch: the LibTorch build; 2 forwards; VmHWM)
#  10. the roofline: ViT-S/16's forward beside its block's four linear layers alone
#      (benches/specs/vit_small_linears.graft), native, batch 1 and 8, 1 and 2 threads,
#      each as a share of the FMA peak (graft bench's matrix-work count over threads ×
#      one core's measured peak), alternated twice
#  11. part 1 paired forward by forward: native and LibTorch (`graft bench --paced`, each
#      in its own resident process) and ONNX Runtime take turns one forward at a time,
#      which goes first rotating by round; before each forward the driver waits, busily,
#      until no thread of any runtime runs (pools spin after their last region; at least
#      2 ms) (benches/python/paced.py); ROUNDS1 (60) rounds at batch 1, a quarter as
#      many at batch 8; medians, and the median of the per-round ratios with quartiles
# Usage: bash scripts/bench_native.sh [ITERS]   (prints markdown; check /proc/loadavg first)
#        SECTIONS="1 7" bash scripts/bench_native.sh   runs only those sections (default: all)
#        PASSES=8 SECTIONS=1 bash scripts/bench_native.sh   part 1 alternates its processes 8 times
set -euo pipefail
cd "$(dirname "$0")/.."
iters="${1:-10}"
export LIBTORCH="${LIBTORCH:-$PWD/.graft-env/torch}"
bash scripts/setup.sh >/dev/null
cargo build --release --quiet --features torch
cp target/release/graft target/graft-torch
sections="${SECTIONS:-1 2 3 4 5 6 7 8 9 10}"
passes="${PASSES:-3}" # part 1: how many times the three processes alternate
want() { case " $sections " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if want 4 || want 5 || want 9; then
  cargo build --release --quiet --target-dir target/native-only
  cp target/native-only/release/graft target/graft-native
fi
g=target/graft-torch
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "load: $(cat /proc/loadavg); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

ratio() { # json file -> markdown rows: model, batch, native ms, torch ms, ratio
  .graft-env/python - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); t = sys.argv[2]
by = {}
for s in r["specs"]:
    by.setdefault(s["model"], {})[s["backend"]] = dict((b, ms) for b, ms in s["forward_ms"])
for model, d in by.items():
    for b in d["native"]:
        n, l = d["native"][b], d["torch"][b]
        print(f"| {model} | {b} | {t} | {n:.2f} | {l:.2f} | {n / l:.3f} |")
PY
}

# ViT-S weights (timm's layout; random values) and its ONNX export, for ONNX Runtime.
if want 1 || want 6 || want 11; then
.graft-env/python - "$tmp/vit_small.safetensors" <<'PY'
import sys, timm, torch
from safetensors.torch import save_file
torch.manual_seed(0)
save_file(timm.create_model("vit_small_patch16_224", pretrained=False).state_dict(), sys.argv[1])
PY
"$g" export onnx specs/vit_small.graft --weights "vit=$tmp/vit_small.safetensors" --dynamic-batch \
  --out "$tmp/graft_vits.onnx" >/dev/null
fi
ort() { # threads iters out.json: ONNX Runtime medians per batch, in graft bench's shape
  .graft-env/python - "$tmp/graft_vits.onnx" "$1" "$2" >"$3" <<'PY'
import json, sys, statistics, time
import numpy as np, onnxruntime as ort
path, threads, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.inter_op_num_threads = 1
s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
name, out = s.get_inputs()[0].name, []
for batch in (1, 8):
    x = {name: np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)}
    for _ in range(2):
        s.run(None, x)
    ts = []
    for _ in range(iters):
        t = time.perf_counter(); s.run(None, x); ts.append((time.perf_counter() - t) * 1e3)
    out.append([batch, statistics.median(ts)])
print(json.dumps({"specs": [{"model": "ViT-S/16 224²", "backend": "ort", "forward_ms": out}]}))
PY
}
if want 1; then
for rep in $(seq "$passes"); do
  for t in 1 2; do
    for b in native torch; do
      "$g" bench specs/vit_small.graft --backend "$b" --batch 1,8 --threads "$t" --iters "$iters" --warmup 2 \
        --json >"$tmp/vits_${t}_${b}_$rep.json"
    done
    ort "$t" "$iters" "$tmp/ort_${t}_$rep.json"
  done
done
echo
echo "| model | batch | threads | native ms | LibTorch ms | ONNX Runtime ms | native / LibTorch | native / ONNX Runtime | share of the FMA peak: native, LibTorch, ONNX Runtime |"
echo "|---|---|---|---|---|---|---|---|---|"
.graft-env/python - "$tmp" "$passes" <<'PY'
import json, sys, statistics, pathlib
d = pathlib.Path(sys.argv[1]); rows = {}; macs = {}; peaks = []
for t in (1, 2):
    for rep in range(1, int(sys.argv[2]) + 1):
        for f in (f"vits_{t}_native_{rep}.json", f"vits_{t}_torch_{rep}.json", f"ort_{t}_{rep}.json"):
            r = json.load(open(d / f))
            if r.get("fma_peak_macs_per_core"):
                peaks.append(r["fma_peak_macs_per_core"])
            for s in r["specs"]:
                macs.update((int(b), m) for b, m in s.get("forward_macs", []))
                for b, ms in s["forward_ms"]:
                    rows.setdefault((int(b), t), {}).setdefault(s["backend"], []).append(ms)
# One core's FMA peak as the native runs measured it (graft bench), times the threads.
peak = statistics.median(peaks)
def cell(ts):
    return f"{statistics.median(ts):.2f} [{min(ts):.2f}–{max(ts):.2f}]"
for (b, t), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    n, l, o = (statistics.median(r[k]) for k in ("native", "torch", "ort"))
    share = " / ".join(f"{100 * macs[b] / (ms / 1e3) / (peak * t):.0f}%" for ms in (n, l, o))
    print(f"| ViT-S/16 224² | {b} | {t} | {cell(r['native'])} | {cell(r['torch'])} | {cell(r['ort'])} | {n / l:.3f} | {n / o:.3f} | {share} |")
# Where other work shares the cores unevenly, each backend's fastest process is the one
# least disturbed: their ratios beside the medians'.
print("\nThe fastest process of each backend (of the passes above):")
print("| batch | threads | native ms | LibTorch ms | ONNX Runtime ms | native / LibTorch | native / ONNX Runtime |")
print("|---|---|---|---|---|---|---|")
for (b, t), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    n, l, o = (min(r[k]) for k in ("native", "torch", "ort"))
    print(f"| {b} | {t} | {n:.2f} | {l:.2f} | {o:.2f} | {n / l:.3f} | {n / o:.3f} |")
print(f"\nOne core's FMA peak as the native runs measured it: {peak / 1e9:.1f} GMAC/s (median of {len(peaks)});")
print(f"ViT-S/16's matrix work per image: {macs[1] / 1e9:.3f} GMAC, so its floor on one core is {macs[1] / peak * 1e3:.1f} ms.")
PY
fi
if want 2; then

echo
echo "Demo models, each backend in its own process (its threads alone on the cores: in one process,"
echo "LibTorch's OpenMP workers spin after each op and take the cores from the native pool at 2 threads),"
echo "processes alternated 3 times, medians of the three processes' medians of $((iters * 10)):"
echo "| model | batch | threads | native ms | LibTorch ms | native / LibTorch |"
echo "|---|---|---|---|---|---|"
for t in 1 2; do
  for rep in 1 2 3; do
    for b in native torch; do
      "$g" bench specs/demo/video_plain.graft specs/demo/cm3t_multimodal.graft --backend "$b" --batch 1,32 \
        --threads "$t" --iters $((iters * 10)) --warmup 5 --json >"$tmp/demo_${t}_${b}_$rep.json"
    done
  done
  .graft-env/python - "$tmp" "$t" <<'PY'
import json, sys, statistics, pathlib
d, t = pathlib.Path(sys.argv[1]), sys.argv[2]
ms = {}
for b in ("native", "torch"):
    for rep in (1, 2, 3):
        for s in json.load(open(d / f"demo_{t}_{b}_{rep}.json"))["specs"]:
            for batch, v in s["forward_ms"]:
                ms.setdefault((s["model"], int(batch)), {}).setdefault(b, []).append(v)
for (model, batch), r in ms.items():
    n, l = statistics.median(r["native"]), statistics.median(r["torch"])
    print(f"| {model} | {batch} | {t} | {n:.2f} | {l:.2f} | {n / l:.3f} |")
PY
done
fi
if want 3; then

echo
echo "Elementwise strategies (native, 1 thread, medians of $iters; processes alternated 3 times):"
echo "End to end (median of the three processes' medians), in brackets the part spent in fused elementwise groups, in"
echo "square brackets the three processes' range:"
echo "| model | batch | unfused ms | blocks ms | jit ms | groups | group bytes written | JIT kernels, compile ms (cold) |"
echo "|---|---|---|---|---|---|---|---|"
for rep in 1 2 3; do
  for e in unfused blocks jit; do
    "$g" bench specs/vit_small.graft specs/demo/cm3t_multimodal.graft --backend native --elementwise "$e" \
      --batch 1,8 --threads 1 --iters "$iters" --warmup 2 --json >"$tmp/ew_${e}_$rep.json"
  done
done
.graft-env/python - "$tmp" <<'PY'
import json, sys, statistics, pathlib
d = pathlib.Path(sys.argv[1]); rows = {}
for e in ["unfused", "blocks", "jit"]:
    for rep in (1, 2, 3):
        for s in json.load(open(d / f"ew_{e}_{rep}.json"))["specs"]:
            for (b, ms), (_, det) in zip(s["forward_ms"], s["details"]):
                det = dict(det)
                r = rows.setdefault((s["model"], b), {})
                r.setdefault(e, []).append((ms, det.get("ew_ms_per_forward", 0.0)))
                if e == "jit":
                    r["meta"] = (int(det["ew_groups"]), int(det["ew_bytes_written"]),
                                 int(det["ew_kernels_compiled"]), det["ew_compile_ms"])
for (m, b), r in rows.items():
    cell = {}
    for e in ["unfused", "blocks", "jit"]:
        ts = [t for t, _ in r[e]]
        total = statistics.median(ts); inside = statistics.median(g for _, g in r[e])
        cell[e] = f"{total:.2f} ({inside:.2f}) [{min(ts):.2f}–{max(ts):.2f}]"
    g, by, k, c = r["meta"]
    print(f"| {m} | {b} | {cell['unfused']} | {cell['blocks']} | {cell['jit']} | {g} | {by / 1e6:.1f} MB | {k}, {c:.1f} |")
PY
fi
if want 4; then

echo
echo "Peak resident memory (each backend in its own build and process, ViT-S/16, 1 thread, 3 forwards; VmHWM):"
for b in native torch; do
  for batch in 1 8; do
    "target/graft-$b" bench specs/vit_small.graft --backend "$b" --batch "$batch" --threads 1 --iters 3 --warmup 1 --json \
      >"$tmp/rss_${b}_$batch.json"
  done
done
.graft-env/python - "$tmp" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
for batch in (1, 8):
    r = {b: json.load(open(d / f"rss_{b}_{batch}.json")) for b in ("native", "torch")}
    mb = {b: r[b]["peak_rss_bytes"] / 2**20 for b in r}
    arena = dict(r["native"]["specs"][0]["details"][0][1]).get("arena_bytes", 0) / 2**20
    print(f"- batch {batch}: native {mb['native']:.0f} MiB (arena {arena:.1f} MiB), LibTorch {mb['torch']:.0f} MiB, "
          f"ratio {mb['native'] / mb['torch']:.2f}")
PY
fi
if want 5; then

echo
echo "Binary size and cold start (graft run, vit_tiny, batch 1, 1 thread; median of 5):"
.graft-env/python - "$tmp/in.safetensors" "$tmp/vit_tiny.safetensors" <<'PY'
import sys, timm, torch
from safetensors.torch import save_file
torch.manual_seed(0)
save_file({"image": torch.randn(1, 3, 224, 224)}, sys.argv[1])
# The spec binds timm's ViT-Ti checkpoint; its values do not matter here.
save_file(timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict(), sys.argv[2])
PY
for b in native torch; do
  bin=target/graft-$b
  size=$(stat -c %s "$bin")
  best=$(.graft-env/python - "$bin" "$b" "$tmp" <<'PY'
import subprocess, sys, time, statistics
bin, b, tmp = sys.argv[1:]
ts = []
for _ in range(5):
    t = time.perf_counter()
    subprocess.run([bin, "run", "specs/vit_tiny.graft", "--inputs", f"{tmp}/in.safetensors", "--out", f"{tmp}/o.safetensors",
                    "--weights", f"vit={tmp}/vit_tiny.safetensors", "--backend", b, "--threads", "1"],
                   check=True, capture_output=True)
    ts.append(time.perf_counter() - t)
print(f"{statistics.median(ts) * 1e3:.0f}")
PY
)
  echo "- $b build: $((size / 1024 / 1024)) MiB binary$([ "$b" = torch ] && echo " + LibTorch shared libraries"), cold start ${best} ms"
done
fi
if want 6; then

rounds="${ROUNDS:-6}"
echo
echo "ONNX Runtime (CPU), ViT-S/16 224², graft export onnx vs torch.onnx.export of the same timm model (same weights);"
echo "$rounds rounds, each a fresh process with both sessions, runs alternated, medians of $iters runs; which file"
echo "goes first alternates by round; medians over the rounds, in brackets the range of the rounds' ratios:"
.graft-env/python benches/python/ort_vs_torch_onnx.py export "$tmp" "$tmp/vit_small.safetensors"
for r in $(seq "$rounds"); do
  first=""; [ $((r % 2)) = 0 ] && first=--torch-first
  .graft-env/python benches/python/ort_vs_torch_onnx.py round "$tmp" --iters "$iters" $first >>"$tmp/ort_rounds.jsonl"
done
.graft-env/python benches/python/ort_vs_torch_onnx.py summary "$tmp/ort_rounds.jsonl"
fi

if want 7; then
echo
echo "Under a competing load (2 threads, batch 1, medians of $((iters * 5)); alone and with two busy processes on the"
echo "cores, alternated twice; in brackets the two runs):"
echo "| model | backend | alone ms | loaded ms | loaded / alone |"
echo "|---|---|---|---|---|"
busy() { for _ in 1 2; do sh -c 'while :; do :; done' & done; }
for rep in 1 2; do
  for load in alone loaded; do
    pids=""
    if [ "$load" = loaded ]; then busy; pids=$(jobs -p | tr '\n' ' '); sleep 1; fi
    # Each backend in its own process: LibTorch's OpenMP threads keep spinning after
    # its forwards and would load the native backend's cores themselves.
    for b in native torch; do
      "$g" bench specs/demo/cm3t_multimodal.graft specs/vit_small.graft --backend "$b" --batch 1 --threads 2 \
        --iters $((iters * 5)) --warmup 5 --json >"$tmp/load_${load}_${b}_$rep.json"
    done
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill $pids && wait $pids 2>/dev/null || true
  done
done
.graft-env/python - "$tmp" <<'PY'
import json, sys, statistics, pathlib
d = pathlib.Path(sys.argv[1]); r = {}
for load in ("alone", "loaded"):
    for rep in (1, 2):
        for b in ("native", "torch"):
            for s in json.load(open(d / f"load_{load}_{b}_{rep}.json"))["specs"]:
                r.setdefault((s["model"], s["backend"]), {}).setdefault(load, []).append(s["forward_ms"][0][1])
for (m, b), v in r.items():
    a, l = statistics.median(v["alone"]), statistics.median(v["loaded"])
    rng = lambda ts: "[" + ", ".join(f"{t:.2f}" for t in ts) + "]"
    print(f"| {m} | {b} | {a:.2f} {rng(v['alone'])} | {l:.2f} {rng(v['loaded'])} | {l / a:.2f} |")
PY
fi

if want 8; then
echo
echo "Attention kernels (native, batch 1, 1 thread; processes alternated twice, medians; in brackets the runs):"
echo "| model | tokens | plain ms | blocked ms | packed ms | blocked / plain | packed / plain |"
echo "|---|---|---|---|---|---|---|"
for rep in 1 2; do
  for a in plain blocked packed; do
    "$g" bench specs/vit_small.graft --backend native --attention "$a" --batch 1 --threads 1 --iters "$iters" --warmup 1 \
      --json >"$tmp/att_vits_${a}_$rep.json"
    for m in ast_base videomae_base; do
      "$g" bench "specs/$m.graft" --backend native --attention "$a" --batch 1 --threads 1 --iters 2 --warmup 1 \
        --json >"$tmp/att_${m}_${a}_$rep.json"
    done
  done
done
.graft-env/python - "$tmp" <<'PY'
import json, sys, statistics, pathlib
d = pathlib.Path(sys.argv[1])
for m, tokens in (("vits", 197), ("ast_base", 1214), ("videomae_base", 1568)):
    v = {a: [json.load(open(d / f"att_{m}_{a}_{r}.json"))["specs"][0]["forward_ms"][0][1] for r in (1, 2)]
         for a in ("plain", "blocked", "packed")}
    p, b, k = (statistics.median(v[a]) for a in ("plain", "blocked", "packed"))
    rng = lambda ts: "[" + ", ".join(f"{t:.1f}" for t in ts) + "]"
    name = json.load(open(d / f"att_{m}_plain_1.json"))["specs"][0]["model"]
    print(f"| {name} | {tokens} | {p:.1f} {rng(v['plain'])} | {b:.1f} {rng(v['blocked'])} | "
          f"{k:.1f} {rng(v['packed'])} | {b / p:.3f} | {k / p:.3f} |")
PY
fi
if want 9; then
rounds9="${ROUNDS9:-30}"
echo
echo "Larger models, batch 1, 1 thread, forward by forward: native and LibTorch (each resident in its own process"
echo "of the LibTorch build) take turns one forward at a time, which goes first alternating by round; medians over"
echo "the rounds and the median of the per-round ratios [quartiles] (VideoMAE-B a quarter of the rounds); peak"
echo "resident memory (VmHWM) of each backend in its own process and build: native from the native-only build (no"
echo "LibTorch mapped), LibTorch from its build:"
echo "| model | rounds | native ms | LibTorch ms | native / LibTorch | native peak MiB | LibTorch peak MiB | peak ratio |"
echo "|---|---|---|---|---|---|---|---|"
for m in clip_vit_b32 videomae_base; do
  r=$rounds9; [ "$m" = videomae_base ] && r=$(((rounds9 + 3) / 4))
  .graft-env/python benches/python/paced.py --no-ort --graft "$g" --graft-torch "$g" --spec "specs/$m.graft" \
    --threads 1 --batch 1 --rounds "$r" --json "$tmp/big_$m.json" >/dev/null
  for b in native torch; do
    "target/graft-$b" bench "specs/$m.graft" --backend "$b" --batch 1 --threads 1 --iters 2 --warmup 0 --json \
      >"$tmp/bigrss_${m}_$b.json"
  done
done
.graft-env/python - "$tmp" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
held = []
for m in ("clip_vit_b32", "videomae_base"):
    [r] = json.load(open(d / f"big_{m}.json"))
    ms, q = r["ms"], r["native/torch"]
    det = json.load(open(d / f"bigrss_{m}_native.json"))["specs"][0]
    name = det["model"]
    rss = {b: json.load(open(d / f"bigrss_{m}_{b}.json"))["peak_rss_bytes"] / 2**20 for b in ("native", "torch")}
    print(f"| {name} | {r['rounds']} | {ms['native']:.1f} | {ms['torch']:.1f} | {q[1]:.3f} [{q[0]:.3f}–{q[2]:.3f}] | "
          f"{rss['native']:.0f} | {rss['torch']:.0f} | {rss['native'] / rss['torch']:.2f} |")
    mib = lambda k: dict(det["details"][0][1]).get(k, 0) / 2**20
    held.append(f"- {name}: native holds packed weights {mib('packed_bytes'):.0f} MiB, plain parameters "
                f"{mib('param_bytes'):.0f} MiB, arena {mib('arena_bytes'):.0f} MiB")
print("\n".join(held))
PY
fi
if want 10; then
echo
echo "Roofline: each forward's matrix work per second as a share of threads × one core's FMA peak"
echo "(native, medians of $((iters * 2)), two alternated processes per row):"
echo "| spec | batch | threads | ms | GMAC/s | share of the FMA peak |"
echo "|---|---|---|---|---|---|"
for t in 1 2; do
  for rep in 1 2; do
    for s in benches/specs/vit_small_linears.graft specs/vit_small.graft; do
      "$g" bench "$s" --backend native --batch 1,8 --threads "$t" --iters $((iters * 2)) --warmup 2 --json \
        >"$tmp/roof_${t}_$(basename "$s" .graft)_$rep.json"
    done
  done
done
.graft-env/python - "$tmp" <<'PY'
import json, sys, statistics, pathlib
d = pathlib.Path(sys.argv[1])
for t in (1, 2):
    for name in ("vit_small_linears", "vit_small"):
        runs = [json.load(open(d / f"roof_{t}_{name}_{rep}.json")) for rep in (1, 2)]
        for i, (b, _) in enumerate(runs[0]["specs"][0]["forward_ms"]):
            ms = statistics.median(r["specs"][0]["forward_ms"][i][1] for r in runs)
            macs = runs[0]["specs"][0]["forward_macs"][i][1]
            peak = statistics.median(r["fma_peak_macs_per_core"] for r in runs)
            rate = macs / (ms / 1e3)
            print(f"| {name} | {b} | {t} | {ms:.2f} | {rate / 1e9:.1f} | {100 * rate / (peak * t):.0f}% |")
PY
fi
if want 11; then
rounds1="${ROUNDS1:-60}"
echo
echo "ViT-S/16 224², forward by forward: native, LibTorch and ONNX Runtime take turns one forward at a time"
echo "(each resident in its own process; which goes first rotates by round; each forward starts once no"
echo "thread of any runtime runs); medians over the rounds, and the median of the per-round ratios [quartiles]:"
echo "| batch | threads | rounds | native ms | LibTorch ms | ONNX Runtime ms | native / ONNX Runtime | native / LibTorch |"
echo "|---|---|---|---|---|---|---|---|"
for t in 1 2; do
  for b in 1 8; do
    r=$rounds1; [ "$b" = 8 ] && r=$(((rounds1 + 3) / 4))
    .graft-env/python benches/python/paced.py "$tmp/graft_vits.onnx" --graft "$g" --graft-torch "$g" \
      --spec specs/vit_small.graft --threads "$t" --batch "$b" --rounds "$r" --json "$tmp/paced_${t}_$b.json" >/dev/null
    .graft-env/python - "$tmp/paced_${t}_$b.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1])):
    ms, q, l = r["ms"], r["native/ort"], r["native/torch"]
    print(f"| {r['batch']} | {r['threads']} | {r['rounds']} | {ms['native']:.2f} | {ms['torch']:.2f} | {ms['ort']:.2f} "
          f"| {q[1]:.3f} [{q[0]:.3f}–{q[2]:.3f}] | {l[1]:.3f} [{l[0]:.3f}–{l[2]:.3f}] |")
PY
  done
done
fi

#!/usr/bin/env bash
# graft against PyTorch on one CUDA GPU, in one run (ratios, not absolutes):
#   1. inference, ViT-S/16 and ViT-B/16 at batch 1, 8, 64: graft eager and
#      `--cuda-graph` (one replay per timed forward) against PyTorch eager, PyTorch's
#      captured CUDA graph and torch.compile (default and reduce-overhead, at the
#      batches of the goals: ViT-S 1 and 64, ViT-B 64);
#   2. training steps, batch 8 and 64: full fine-tuning of ViT-S/16 and CM3T adapters
#      on a frozen ViT-S/16 (benches/specs/), graft eager and whole-step `--cuda-graph`
#      against PyTorch eager (timm + torch.optim.AdamW, its CUDA default `foreach`);
#   3. bf16 autocast against f32: ViT-B/16 full fine-tuning, batch 64;
#   4. the demo's tiny video ViT (specs/demo/video_pretrain.graft), batch 32;
#   5. `graft train` end to end on the demo's pretraining (2048 synthetic videos, 4
#      epochs of batch 32): f32 eager, f32 `--cuda-graph`, bf16 `--cuda-graph`, and f32
#      with another seed as the noise scale of the loss curve (once, after the rounds).
# graft and PyTorch run in alternating processes, ROUNDS times (medians of each
# process's timed runs; the table shows the median over rounds and the spread).
#
# Usage: bash scripts/bench_gpu.sh [OUT_JSON]     (default out/bench_gpu.json)
#   GRAFT_BIN  the graft binary (default target/release/graft; built with
#              --features cuda-graphs; it may be built on another machine and copied)
#   PYTHON     a Python with torch 2.11 and timm (default .graft-env/python, else python3)
#   ROUNDS     rounds of the alternation (default 2; 0: only part 5)
#   RAW_DIR    also keep every process's JSON there (copied after each round)
#   COMPILE    MODEL:BATCH pairs timed with torch.compile, in round 1 (default:
#              vit_small_patch16_224:1 vit_small_patch16_224:64 vit_base_patch16_224:64)
# Needs no Rust toolchain; finishes in about 3 minutes on an H200.
set -euo pipefail
cd "$(dirname "$0")/.."
out_json="${1:-out/bench_gpu.json}"
graft="${GRAFT_BIN:-target/release/graft}"
rounds="${ROUNDS:-2}"
if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"; elif [[ -x .graft-env/python ]]; then py=.graft-env/python; else py=python3; fi
[[ -x "$graft" ]] || { echo "bench_gpu: no graft binary at $graft (cargo build --release --features cuda-graphs, or set GRAFT_BIN)" >&2; exit 1; }
"$py" -c 'import torch, timm, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || { echo "bench_gpu: $py has no CUDA-enabled torch + timm, or no GPU is visible" >&2; exit 1; }
mkdir -p "$(dirname "$out_json")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

gpu="$("$py" -c 'import torch; print(torch.cuda.get_device_name(0))')"
echo "== $gpu, torch $("$py" -c 'import torch; print(torch.__version__)'), $(date -u +%Y-%m-%d), $rounds rounds"

infer_specs=(specs/vit_small.graft specs/vit_base.graft)
train_specs=(benches/specs/vit_small_full.graft benches/specs/cm3t_small.graft)
for r in $(seq 1 "$rounds"); do
  echo "-- round $r: inference"
  "$graft" bench "${infer_specs[@]}" --backend torch --device cuda --batch 1,8,64 --iters 30 --warmup 5 --json >"$tmp/g_eager_$r.json"
  "$graft" bench "${infer_specs[@]}" --backend torch --device cuda --batch 1,8,64 --iters 30 --warmup 5 --cuda-graph --json >"$tmp/g_graph_$r.json"
  compile=()
  # shellcheck disable=SC2206
  [[ "$r" == 1 ]] && compile=(--compile-batch ${COMPILE:-vit_small_patch16_224:1 vit_small_patch16_224:64 vit_base_patch16_224:64})
  "$py" benches/python/gpu_infer.py --batch 1 8 64 --iters 30 --warmup 5 "${compile[@]}" >"$tmp/p_infer_$r.json"
  echo "-- round $r: training"
  "$graft" bench --train "${train_specs[@]}" --device cuda --batch 8,64 --iters 20 --warmup 3 --json >"$tmp/g_train_$r.json"
  "$graft" bench --train "${train_specs[@]}" --device cuda --batch 8,64 --iters 20 --warmup 3 --cuda-graph --json >"$tmp/g_train_graph_$r.json"
  "$py" benches/python/train_eager.py --configs full adapter --batch 8 64 --iters 20 --warmup 3 --device cuda >"$tmp/p_train_$r.json"
  "$graft" bench --train benches/specs/vit_base_full.graft --device cuda --batch 64 --iters 10 --warmup 3 --json >"$tmp/g_b_f32_$r.json"
  "$graft" bench --train benches/specs/vit_base_full.graft --device cuda --batch 64 --iters 10 --warmup 3 --autocast bf16 --json >"$tmp/g_b_bf16_$r.json"
  "$graft" bench --train specs/demo/video_pretrain.graft --device cuda --batch 32 --iters 30 --warmup 3 --json >"$tmp/g_tiny_$r.json"
  "$graft" bench --train specs/demo/video_pretrain.graft --device cuda --batch 32 --iters 30 --warmup 3 --cuda-graph --json >"$tmp/g_tiny_graph_$r.json"
  [[ -n "${RAW_DIR:-}" ]] && mkdir -p "$RAW_DIR" && cp "$tmp"/*.json "$RAW_DIR"/
done

echo "-- graft train, the demo's pretraining"
"$graft" data synth --task pretrain --n 2048 --seed 1 --out "$tmp/pre" >/dev/null
runs=(f32:0: f32graph:0:--cuda-graph bf16graph:0:--cuda-graph,--autocast,bf16 f32seed1:1:)
for r in "${runs[@]}"; do
  IFS=: read -r name seed flags <<<"$r"
  # shellcheck disable=SC2086
  "$graft" train specs/demo/video_pretrain.graft --data "$tmp/pre" --out "$tmp/run_$name" --device cuda \
    --epochs 4 --batch 32 --lr 1e-3 --warmup 20 --schedule cosine --seed "$seed" ${flags//,/ } >"$tmp/train_$name.txt" 2>&1 \
    || { cat "$tmp/train_$name.txt" >&2; exit 1; }
  cp "$tmp/run_$name/metrics.jsonl" "$tmp/train_$name.jsonl"
done
[[ -n "${RAW_DIR:-}" ]] && cp "$tmp"/train_* "$RAW_DIR"/

"$py" - "$tmp" "$rounds" "$gpu" "$out_json" <<'PY'
import json, statistics, sys
tmp, rounds, gpu, out_json = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
load = lambda name, r: json.load(open(f"{tmp}/{name}_{r}.json"))
R = range(1, rounds + 1)

def spread(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None, None
    return statistics.median(xs), min(xs), max(xs)

def fmt(m):
    med, lo, hi = m
    if med is None:
        return "–"
    return f"{med:.2f}" if lo == hi else f"{med:.2f} ({lo:.2f}–{hi:.2f})"

def graft_fwd(kind, model_idx, batch, r):
    spec = load(kind, r)["specs"][model_idx]
    return dict((b, ms) for b, ms in spec["forward_ms"])[batch]

def graft_detail(kind, model_idx, batch, r, key):
    spec = load(kind, r)["specs"][model_idx]
    return dict(dict((b, d) for b, d in spec["details"])[batch]).get(key)

def py_fwd(name, batch, key, r):
    for row in load("p_infer", r)["rows"]:
        if row["model"] == name and row["batch"] == batch:
            return row.get(key)
    return None

report = {"gpu": gpu, "rounds": rounds, "inference": [], "training": [], "bf16": None, "tiny": None}


def timings():
    print(f"\nInference latency (ms, f32, median of 30; over {rounds} rounds: median (min–max))")
    hdr = ["model", "batch", "graft eager", "graft --cuda-graph", "replays/forward", "PyTorch eager", "PyTorch graph", "compile", "reduce-overhead", "graph/PyTorch graph", "graph/reduce-overhead"]
    print(" | ".join(hdr))
    for i, (name, label) in enumerate([("vit_small_patch16_224", "ViT-S/16"), ("vit_base_patch16_224", "ViT-B/16")]):
        for b in (1, 8, 64):
            ge = spread([graft_fwd("g_eager", i, b, r) for r in R])
            gg = spread([graft_fwd("g_graph", i, b, r) for r in R])
            reps = graft_detail("g_graph", i, b, 1, "cuda_graph_replays")
            per = None if reps is None else reps / (5 + 30)
            pe = spread([py_fwd(name, b, "eager", r) for r in R])
            pg = spread([py_fwd(name, b, "graph", r) for r in R])
            pc = spread([py_fwd(name, b, "compile", r) for r in R])
            pro = spread([py_fwd(name, b, "reduce_overhead", r) for r in R])
            ratio = lambda a, c: None if a[0] is None or c[0] is None else a[0] / c[0]
            row = {"model": label, "batch": b, "graft_eager": ge[0], "graft_graph": gg[0], "replays_per_timed_forward": per,
                   "torch_eager": pe[0], "torch_graph": pg[0], "torch_compile": pc[0], "torch_reduce_overhead": pro[0],
                   "graft_graph_over_torch_graph": ratio(gg, pg), "graft_graph_over_reduce_overhead": ratio(gg, pro),
                   "spread": {"graft_eager": ge[1:], "graft_graph": gg[1:], "torch_eager": pe[1:], "torch_graph": pg[1:]}}
            report["inference"].append(row)
            r1 = "–" if row["graft_graph_over_torch_graph"] is None else f"{row['graft_graph_over_torch_graph']:.3f}"
            r2 = "–" if row["graft_graph_over_reduce_overhead"] is None else f"{row['graft_graph_over_reduce_overhead']:.3f}"
            print(" | ".join([label, str(b), fmt(ge), fmt(gg), "–" if per is None else f"{per:.2f}", fmt(pe), fmt(pg), fmt(pc), fmt(pro), r1, r2]))

    def g_step(kind, idx, batch, r):
        spec = load(kind, r)["specs"][idx]
        return next(x["step_ms"] for x in spec["batches"] if x["batch"] == batch)

    def p_step(config, batch, r):
        c = next(c for c in load("p_train", r)["configs"] if c["config"] == config)
        return next(x["step_ms"] for x in c["batches"] if x["batch"] == batch)

    print(f"\nTraining step (ms, f32, AdamW, median of 20)")
    print(" | ".join(["config", "batch", "graft eager", "graft whole-step graph", "PyTorch eager", "eager/PyTorch", "graph/PyTorch"]))
    for idx, (config, label) in enumerate([("full", "ViT-S/16 full fine-tuning"), ("adapter", "CM3T adapters, frozen ViT-S/16")]):
        for b in (8, 64):
            ge = spread([g_step("g_train", idx, b, r) for r in R])
            gg = spread([g_step("g_train_graph", idx, b, r) for r in R])
            pe = spread([p_step(config, b, r) for r in R])
            row = {"config": label, "batch": b, "graft_eager": ge[0], "graft_graph": gg[0], "torch_eager": pe[0],
                   "eager_over_torch": ge[0] / pe[0], "graph_over_torch": gg[0] / pe[0],
                   "spread": {"graft_eager": ge[1:], "graft_graph": gg[1:], "torch_eager": pe[1:]}}
            report["training"].append(row)
            print(" | ".join([label, str(b), fmt(ge), fmt(gg), fmt(pe), f"{row['eager_over_torch']:.3f}", f"{row['graph_over_torch']:.3f}"]))
    for b in (8, 64):
        full = next(x for x in report["training"] if x["batch"] == b and x["config"].startswith("ViT-S"))
        ad = next(x for x in report["training"] if x["batch"] == b and x["config"].startswith("CM3T"))
        print(f"batch {b}: CM3T adapters / full fine-tuning, graft eager {ad['graft_eager'] / full['graft_eager']:.3f}, graph {ad['graft_graph'] / full['graft_graph']:.3f}")

    f32 = spread([g_step("g_b_f32", 0, 64, r) for r in R])
    bf = spread([g_step("g_b_bf16", 0, 64, r) for r in R])
    report["bf16"] = {"config": "ViT-B/16 full fine-tuning, batch 64", "f32_ms": f32[0], "bf16_ms": bf[0], "speedup": f32[0] / bf[0]}
    print(f"\nbf16 autocast, ViT-B/16 full fine-tuning, batch 64: f32 {fmt(f32)} ms, bf16 {fmt(bf)} ms, throughput x{f32[0] / bf[0]:.2f}")

    te = spread([g_step("g_tiny", 0, 32, r) for r in R])
    tg = spread([g_step("g_tiny_graph", 0, 32, r) for r in R])
    report["tiny"] = {"spec": "specs/demo/video_pretrain.graft", "batch": 32, "eager_ms": te[0], "graph_ms": tg[0]}
    print(f"tiny demo video ViT, batch 32: eager {fmt(te)} ms, whole-step graph {fmt(tg)} ms, x{te[0] / tg[0]:.2f}")


if rounds > 0:
    timings()

def train_run(name):
    recs = [json.loads(l) for l in open(f"{tmp}/train_{name}.jsonl")]
    steps = [r for r in recs if r.get("kind") == "train"]
    # Steady state: from the first read of the losses (after capture and warm-up) to the last.
    e0 = steps[0]["elapsed_s"]
    s0 = max(r["step"] for r in steps if r["elapsed_s"] == e0)
    ms = 1000 * (steps[-1]["elapsed_s"] - e0) / max(steps[-1]["step"] - s0, 1)
    return steps, ms

runs = {n: train_run(n) for n in ("f32", "f32graph", "bf16graph", "f32seed1")}
last = lambda steps: statistics.mean(r["loss"] for r in steps[-64:])
base = last(runs["f32"][0])
noise = abs(last(runs["f32seed1"][0]) - base)
print("\n`graft train`, demo pretraining (2048 videos, 4 epochs, batch 32; steady-state ms/step from metrics.jsonl; loss: mean of the last 64 steps)")
print(" | ".join(["run", "ms/step", "vs f32 eager", "last-epoch loss", "difference from f32"]))
report["train"] = []
for name, label in (("f32", "f32 eager"), ("f32graph", "f32 --cuda-graph"), ("bf16graph", "bf16 --cuda-graph"), ("f32seed1", "f32 eager, seed 1 (noise)")):
    steps, ms = runs[name]
    row = {"run": label, "ms_per_step": ms, "speedup": runs["f32"][1] / ms, "last_loss": last(steps), "diff": abs(last(steps) - base), "steps": len(steps)}
    report["train"].append(row)
    print(" | ".join([label, f"{ms:.2f}", f"x{row['speedup']:.2f}", f"{row['last_loss']:.4f}", f"{row['diff']:.4f}"]))
print(f"bf16 loss difference / seed noise: {abs(last(runs['bf16graph'][0]) - base) / max(noise, 1e-12):.2f}")
json.dump(report, open(out_json, "w"), indent=1)
print(f"\nwritten: {out_json}")
PY

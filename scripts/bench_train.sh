#!/usr/bin/env bash
# Training-step benchmarks, measured side by side with one thread count and one batch
# (report the ratios, not the absolute times: the machine may be shared):
#   (a) CM3T adapter training (frozen ViT-S/16 + multi-head adapters + head) vs full
#       fine-tuning of the same graph: step time and peak memory
#   (b) M2PT pathway training (W + λ·W′ recomputed every step; W′ frozen, or
#       trainable as in specs/m2pt_image_point.graft) vs the plain target's step
#   (c) graft vs the same models and freezing in PyTorch eager (timm, AdamW)
# A step is forward + cross-entropy + backward + gradient norm + AdamW, on random
# weights, inputs and labels (graft bench --train; benches/python/train_eager.py).
# Steps of the specs within each process are interleaved; graft and eager alternate
# (graft, eager, eager, graft, …) and their steps are pooled, so a slow spell falls on
# both sides. Peak memory: resident-set growth, measured once per model in a child
# process (see src/backend/torch/bench.rs).
# Usage: bash scripts/bench_train.sh [THREADS]   (default 2)
#   env: BATCH (8), ITERS steps per round (10), WARMUP (2), ROUNDS (2)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
batch="${BATCH:-8}"
iters="${ITERS:-10}"
warmup="${WARMUP:-2}"
rounds="${ROUNDS:-2}"
bash scripts/setup.sh
cargo build --release --features torch --quiet

specs=(benches/specs/vit_small_full.graft benches/specs/cm3t_small.graft benches/specs/cm3t_small_full.graft
       benches/specs/m2pt_small.graft benches/specs/m2pt_small_aux.graft)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
common=(--batch "$batch" --iters "$iters" --warmup "$warmup" --threads "$threads")
run_graft() {
  ./target/release/graft bench --train "${specs[@]}" "${common[@]}" "$@" --json >"$tmp/graft.$r.json"
}
run_eager() {
  .graft-env/python benches/python/train_eager.py --configs adapter adapter_full full "${common[@]}" "$@" \
    >"$tmp/eager.$r.json"
}

machine="$(nproc) cores, $(awk '/model name/{$1=$2=$3=""; print; exit}' /proc/cpuinfo | xargs), $(date -u +%Y-%m-%d)"
echo "== machine: $machine; threads $threads, batch $batch, $rounds rounds of $iters steps (+$warmup warmup)"
start=$SECONDS
for r in $(seq 1 "$rounds"); do
  mem=()
  if ((r > 1)); then mem=(--no-memory); fi
  echo "== round $r/$rounds ($((SECONDS - start)) s)" >&2
  if ((r % 2 == 1)); then
    run_graft "${mem[@]}"
    run_eager "${mem[@]}"
  else
    run_eager "${mem[@]}"
    run_graft "${mem[@]}"
  fi
done

.graft-env/python - "$tmp" "$rounds" <<'PY'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
graft = [json.load(open(f"{tmp}/graft.{r}.json")) for r in range(1, rounds + 1)]
eager = [json.load(open(f"{tmp}/eager.{r}.json")) for r in range(1, rounds + 1)]

def pooled(runs, key, name, field):
    """(median of every step of every round, memory of round 1, params, trainable, per-round medians)."""
    steps, first, per_round = [], None, []
    for run in runs:
        item = next(s for s in run[key] if s[field] == name)
        first = first or item
        steps += item["batches"][0]["steps_ms"]
        per_round.append(statistics.median(item["batches"][0]["steps_ms"]))
    return statistics.median(steps), first["batches"][0]["memory"], first["params"], first["trainable"], per_round

g = {s["model"]: pooled(graft, "specs", s["model"], "model") for s in graft[0]["specs"]}
e = {c["config"]: pooled(eager, "configs", c["config"], "config") for c in eager[0]["configs"]}
peak = lambda m: m["peak_mib"] if m else float("nan")
rounds_of = lambda a, b: ", ".join(f"{x / y:.3f}" for x, y in zip(a[4], b[4]))
steps = sum(len(s["specs"][0]["batches"][0]["steps_ms"]) for s in graft)
print(f"graft: threads {graft[0]['threads']}; eager: torch {eager[0]['torch']}, timm {eager[0]['timm']}, "
      f"threads {eager[0]['threads']}; step ms = median of {steps} interleaved steps; peak = resident-set growth (MiB)")
head = f"  {'':38} {'params':>11} {'trainable':>11} {'step ms':>9} {'peak MiB':>9}"

def row(label, v):
    ms, mem, params, trainable = v[:4]
    print(f"  {label:38} {params:>11,} {trainable:>11,} {ms:>9.1f} {peak(mem):>9.0f}")

# The matmul FLOP floor, counted by graft from the benchmarked specs' graphs
# (`matmul_macs`: forward + the backward a step cannot skip; a frozen weight gets no
# gradient, and nothing upstream of the first trainable value needs one).
macs = {s["model"]: s["matmul_macs"] for s in graft[0]["specs"]}
step_macs = lambda m: macs[m]["forward"] + macs[m]["backward"]
flop_ratio = step_macs("cm3t_small") / step_macs("cm3t_small_full")

print("(a) adapter training vs full fine-tuning of the same graph (graft)")
print(head)
row("cm3t_small: adapters + head train", g["cm3t_small"])
row("cm3t_small_full: everything trains", g["cm3t_small_full"])
ta = g["cm3t_small"][0] / g["cm3t_small_full"][0]
ma = peak(g["cm3t_small"][1]) / peak(g["cm3t_small_full"][1])
print(f"  adapter / full: step time {ta:.3f} (per round {rounds_of(g['cm3t_small'], g['cm3t_small_full'])}; "
      f"matmul FLOP ratio {flop_ratio:.3f}), peak memory {ma:.3f}")
print(f"  (eager: step time {e['adapter'][0] / e['adapter_full'][0]:.3f}, "
      f"peak memory {peak(e['adapter'][1]) / peak(e['adapter_full'][1]):.3f})")

print("(b) M2PT pathway (W + λ·W′ every step) vs the plain target (graft)")
print(head)
row("vit_small_full: plain ViT-S, all train", g["vit_small_full"])
row("m2pt_small: + pathways, W′ frozen", g["m2pt_small"])
row("m2pt_small_aux: + pathways, W′ trains", g["m2pt_small_aux"])
base = g["vit_small_full"]
for name, what in (("m2pt_small", "W′ frozen"), ("m2pt_small_aux", "W′ trains")):
    t = g[name][0] / base[0]
    m = peak(g[name][1]) / peak(base[1])
    print(f"  {what}: step time {t:.3f} ({100 * (t - 1):+.1f}%, {g[name][0] - base[0]:+.0f} ms/step; per round "
          f"{rounds_of(g[name], base)}), peak memory {m:.3f}")
print("  (paper: +35% training time; goal: under +10%)")

print("(c) graft vs PyTorch eager, same model, freezing, threads and batch")
print(f"  {'':38} {'graft ms':>9} {'eager ms':>9} {'ratio':>7} {'graft MiB':>10} {'eager MiB':>10} {'ratio':>7}"
      "  per-round time ratios")
for label, spec, config in (("adapters + head train (cm3t_small)", "cm3t_small", "adapter"),
                            ("same graph, all train (cm3t_small_full)", "cm3t_small_full", "adapter_full"),
                            ("plain ViT-S, all train (vit_small_full)", "vit_small_full", "full")):
    gv, ev = g[spec], e[config]
    if (gv[2], gv[3]) != (ev[2], ev[3]):
        print(f"  warning: {spec} has {gv[2]:,}/{gv[3]:,} parameters (total/trainable), eager {ev[2]:,}/{ev[3]:,}")
    print(f"  {label:38} {gv[0]:>9.1f} {ev[0]:>9.1f} {gv[0] / ev[0]:>7.3f} {peak(gv[1]):>10.0f} {peak(ev[1]):>10.0f}"
          f" {peak(gv[1]) / peak(ev[1]):>7.3f}  {rounds_of(gv, ev)}")
if any(v[1] and not v[1]["peak_reset"] for v in list(g.values()) + list(e.values())):
    print("  note: /proc/self/clear_refs was not writable: peaks count from each probe's start")
PY
echo "== done in $((SECONDS - start)) s"

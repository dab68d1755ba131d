"""Per-node ONNX Runtime profile of two ONNX files of the same model, side by side.

Runs each file in its own session (ORT_ENABLE_ALL, the given threads, no spinning),
the two alternated run by run, with ONNX Runtime's profiler on, then prints the
median time per op type, per node of a transformer block (summed over the blocks) and
the slowest nodes. `--no-arena` turns off ORT's memory arena and memory pattern (each
tensor its own allocation), to tell a kernel's cost from the placement of its tensors.
Used to find where graft's ViT-S/16 export and torch.onnx.export's file of the same timm
model spend their time (scripts/bench_native.sh part 6 times them end to end).

    .graft-env/python benches/python/ort_profile.py graft.onnx torch.onnx --batch 1 --threads 1 --runs 200
"""

import argparse
import collections
import json
import os
import re
import statistics
import tempfile

import numpy as np
import onnxruntime as ort


def session(path: str, threads: int, prefix: str, optimized: str | None, arena: bool) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.log_severity_level = 3
    # Without the arena and the memory pattern every tensor is its own allocation, not an
    # offset that ORT's planner picks in one block per run.
    o.enable_cpu_mem_arena = arena
    o.enable_mem_pattern = arena
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.enable_profiling = True
    o.profile_file_prefix = prefix
    if optimized:
        o.optimized_model_filepath = optimized
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def kernel_times(trace: str, warmup: int) -> tuple[dict, dict, list]:
    """Per node: (op type, [µs per run]); per run the whole model's µs."""
    with open(trace) as f:
        events = json.load(f)
    nodes: dict = collections.defaultdict(list)
    ops: dict = {}
    runs = []
    for e in events:
        if e.get("cat") == "Session" and e["name"] == "model_run":
            runs.append(e["dur"])
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            n = e["name"][: -len("_kernel_time")]
            nodes[n].append(e["dur"])
            ops[n] = e["args"]["op_name"]
    nodes = {n: ts[warmup:] for n, ts in nodes.items()}
    return nodes, ops, runs[warmup:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-arena", action="store_true", help="no memory arena and no memory pattern")
    ap.add_argument("--save-optimized", metavar="DIR", help="write each file's ORT-optimised graph here")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    names = [os.path.splitext(os.path.basename(f))[0] for f in args.files]
    s = {}
    for f, n in zip(args.files, names):
        opt = os.path.join(args.save_optimized, f"{n}.opt.onnx") if args.save_optimized else None
        s[n] = session(f, args.threads, os.path.join(tmp, n), opt, not args.no_arena)
    x = np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224), dtype=np.float32)
    feeds = {n: {v.get_inputs()[0].name: x} for n, v in s.items()}
    for _ in range(args.warmup + args.runs):
        for n in names:
            s[n].run(None, feeds[n])
    traces = {n: s[n].end_profiling() for n in names}
    prof = {n: kernel_times(traces[n], args.warmup) for n in names}

    a, b = names
    arena = "no arena, no memory pattern" if args.no_arena else "arena and memory pattern"
    print(f"batch {args.batch}, {args.threads} thread(s), {arena}, {args.runs} runs alternated; medians in µs")
    for n in names:
        nodes, ops, runs = prof[n]
        total = sum(statistics.median(t) for t in nodes.values())
        print(
            f"- {n}: model_run median {statistics.median(runs):.0f} µs, sum of node medians {total:.0f} µs, "
            f"{len(nodes)} nodes"
        )
    per_op = {n: collections.defaultdict(float) for n in names}
    count = {n: collections.Counter() for n in names}
    for n in names:
        nodes, ops, _ = prof[n]
        for node, ts in nodes.items():
            per_op[n][ops[node]] += statistics.median(ts)
            count[n][ops[node]] += 1
    print(f"\n| op type | {a} nodes | {a} µs | {b} nodes | {b} µs | {a} − {b} µs |")
    print("|---|---|---|---|---|---|")
    keys = sorted(set(per_op[a]) | set(per_op[b]), key=lambda k: -abs(per_op[a][k] - per_op[b][k]))
    for k in keys:
        print(
            f"| {k} | {count[a][k]} | {per_op[a][k]:.0f} | {count[b][k]} | {per_op[b][k]:.0f} | "
            f"{per_op[a][k] - per_op[b][k]:+.0f} |"
        )
    for n in names:
        # The same node of every block together: block indices and name counters dropped.
        nodes, ops, _ = prof[n]
        roles: dict = collections.defaultdict(list)
        for node, ts in nodes.items():
            role = re.sub(r"blocks\.\d+", "blocks.N", node)
            role = re.sub(r"/\d+/MatMulScaleFusion/$", "/MatMulScaleFusion", role)
            role = re.sub(r"(/\d+|_token_\d+)$", "", role)
            roles[role].append(statistics.median(ts))
        print(f"\n{n}: per node of a block, summed over the blocks (µs, nodes, name)")
        for role, ts in sorted(roles.items(), key=lambda kv: -sum(kv[1]))[: args.top]:
            print(f"  {sum(ts):8.0f}  {len(ts):3d}  {role}")
    print("\ntraces (node order = execution order):", *traces.values())
    for n in names:
        nodes, ops, _ = prof[n]
        print(f"\n{n}: the {args.top} slowest nodes (median µs, op, name)")
        for node, ts in sorted(nodes.items(), key=lambda kv: -statistics.median(kv[1]))[: args.top]:
            print(f"  {statistics.median(ts):8.1f}  {ops[node]:28s} {node}")


if __name__ == "__main__":
    main()

"""Single forwards of graft's backends and ONNX Runtime, interleaved one by one.

Alternating whole processes (part 1 of scripts/bench_native.sh) pairs each runtime's
median with another taken seconds later, and on a host shared with other work the
load moves in between. Here every runtime stays resident: graft's backends each in a
`graft bench --paced` process (one forward per line written to it), ONNX Runtime in
this process, and the runtimes take turns one forward at a time, which goes first
rotating from round to round. Before each forward the driver waits, busily, at least
`--gap-ms` and until no thread of any runtime is running (each pool spins for a while
after its last region and would share the cores with the next runtime's forward). Each round's ratios compare forwards taken within a
fraction of a second of each other; the summary gives, per batch size, each runtime's
median and the median of the per-round ratios with their interquartile range.

  paced.py MODEL.onnx --graft GRAFT --spec SPEC [--graft-torch GRAFT_TORCH] \
      [--graft-other GRAFT_B] --threads 1 --batch 1,8 --rounds 60 [--gap-ms 2] [--json OUT]
  paced.py --no-ort --graft GRAFT --graft-torch GRAFT_TORCH --spec SPEC ...

ONNX Runtime runs the ViT-S export it is given whatever the spec; `--no-ort` leaves it
out (a larger model paired between graft's backends only, part 9 of
scripts/bench_native.sh).

`--graft-other` adds a second native build (another version of a kernel, say) as the
runtime `other`, paired with `native` forward by forward (the ratio `other/native`).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import onnxruntime as ort


class Paced:
    """A `graft bench --paced` process: one forward per request."""

    def __init__(self, graft, spec, backend, threads, batches):
        cmd = [graft, "bench", spec, "--paced", "--backend", backend, "--threads", str(threads),
               "--batch", ",".join(map(str, batches)), "--warmup", "3"]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline().strip()
        if line != "ready":
            self.p.kill()
            sys.exit(f"paced.py: `{' '.join(cmd)}` did not start (said {line!r})")

    def forward(self, batch):
        self.p.stdin.write(f"{batch}\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            sys.exit("paced.py: a graft process ended early")
        return float(line)

    def close(self):
        self.p.stdin.close()
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()


class Ort:
    """ONNX Runtime (CPU) in this process."""

    def __init__(self, path, threads, batches):
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        self.s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
        name = self.s.get_inputs()[0].name
        rng = np.random.default_rng(0)
        self.x = {b: {name: rng.standard_normal((b, 3, 224, 224), dtype=np.float32)} for b in batches}
        for b in batches:
            for _ in range(3):
                self.s.run(None, self.x[b])

    def forward(self, batch):
        t = time.perf_counter()
        self.s.run(None, self.x[batch])
        return (time.perf_counter() - t) * 1e3

    def close(self):
        pass


def running(pids, me):
    """Threads of `pids` (this process's other than `me` included) that are running
    or runnable now."""
    n = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            if int(tid) == me:
                continue
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    stat = f.read()
            except (FileNotFoundError, ProcessLookupError):
                continue
            n += stat[stat.rindex(")") + 2] == "R"
    return n


def settle(pids, gap_ms, limit_ms=1000.0):
    """Wait busily for at least `gap_ms` and until no thread of the runtimes runs (a
    thread pool spins for a while after its last region: LibTorch's OpenMP workers for
    over 10 ms, and a forward started meanwhile shares its cores with them); at most
    `limit_ms`. Busily: a sleeping driver lets the machine idle, and on a virtual
    machine an idle CPU is handed to other work and comes back slowly (both runtimes ran
    a third slower after sleeps than in their own loops). Returns the milliseconds
    waited."""
    t0 = time.perf_counter()
    me = threading.get_native_id()
    quiet = 0
    while True:
        waited = (time.perf_counter() - t0) * 1e3
        quiet = quiet + 1 if running(pids, me) == 0 else 0
        if (waited >= gap_ms and quiet >= 3) or waited >= limit_ms:
            return waited


def quartiles(v):
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[0], statistics.median(v), q[2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx", nargs="?")
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--graft", required=True)
    ap.add_argument("--graft-torch")
    ap.add_argument("--graft-other")
    ap.add_argument("--spec", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--gap-ms", type=float, default=2.0)
    ap.add_argument("--json")
    a = ap.parse_args()
    if (a.onnx is None) != a.no_ort:
        ap.error("give either the ONNX model or --no-ort")
    if a.rounds < 2:
        ap.error("--rounds must be at least 2 (quartiles need two ratios)")
    batches = [int(b) for b in a.batch.split(",")]
    runtimes = {"native": Paced(a.graft, a.spec, "native", a.threads, batches)}
    if a.graft_torch:
        runtimes["torch"] = Paced(a.graft_torch, a.spec, "torch", a.threads, batches)
    if a.graft_other:
        runtimes["other"] = Paced(a.graft_other, a.spec, "native", a.threads, batches)
    if not a.no_ort:
        runtimes["ort"] = Ort(a.onnx, a.threads, batches)
    names = list(runtimes)
    pids = [os.getpid()] + [rt.p.pid for rt in runtimes.values() if isinstance(rt, Paced)]
    times = {b: {n: [] for n in names} for b in batches}
    waits = {b: [] for b in batches}
    try:
        for b in batches:
            for r in range(a.rounds):
                order = names[r % len(names):] + names[: r % len(names)]
                for n in order:
                    waits[b].append(settle(pids, a.gap_ms))
                    times[b][n].append(runtimes[n].forward(b))
    finally:
        for rt in runtimes.values():
            rt.close()
    rows = []
    for b in batches:
        t = times[b]
        row = {"batch": b, "threads": a.threads, "rounds": a.rounds,
               "ms": {n: statistics.median(t[n]) for n in names},
               "wait_ms": quartiles(waits[b])}
        for n in names:
            if n != "ort" and "ort" in t:
                row[f"{n}/ort"] = quartiles([x / y for x, y in zip(t[n], t["ort"])])
        if "torch" in t:
            row["native/torch"] = quartiles([x / y for x, y in zip(t["native"], t["torch"])])
        if "other" in t:
            row["other/native"] = quartiles([x / y for x, y in zip(t["other"], t["native"])])
        rows.append(row)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f)
    for row in rows:
        ms = ", ".join(f"{n} {v:.2f} ms" for n, v in row["ms"].items())
        ratios = ", ".join(f"{k} {q[1]:.3f} [{q[0]:.3f}–{q[2]:.3f}]" for k, q in row.items() if "/" in k)
        w = row["wait_ms"]
        print(f"batch {row['batch']}, {row['threads']} thread(s), {row['rounds']} rounds: {ms}; {ratios}; "
              f"waits {w[1]:.1f} ms [{w[0]:.1f}–{w[2]:.1f}]")


if __name__ == "__main__":
    main()

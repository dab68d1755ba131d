"""Training-step timings in PyTorch eager, the counterpart of `graft bench --train`.

Prints one JSON object: for each config and batch size the median time of a training
step (forward, cross-entropy, backward, gradient norm, torch.optim.AdamW step) and
the peak resident-set growth, measured as graft measures them:

- steps of all configs are interleaved (round i runs every config once, starting
  with config i mod n), after --warmup steps of each;
- a step is what `graft train` does per optimizer step with one batch and no
  clipping: forward, mean cross-entropy, loss.item(), gradients of exactly the
  trainable parameters, their global L2 norm (.item()), AdamW (weight decay on
  tensors of two or more dims only, betas 0.9/0.999, eps 1e-8), gradients freed;
- memory is measured per config in a fresh child process (this script with
  --memory-probe) with MALLOC_MMAP_THRESHOLD_=65536: VmHWM (reset through
  /proc/self/clear_refs just before the model is built) minus VmRSS at that point,
  over two steps.

Configs (the graft specs in benches/specs/ they mirror, parameter for parameter):

  full          timm --model, every parameter trainable          vit_small_full.graft
  adapter       timm --model without its head, frozen; a CM3T multi-head adapter
                parallel to every block's MLP (grouped linears, ReLU, scaled, as
                std/adapters.graft computes them); a new head on the mean of the
                normed tokens; the adapters and the head train    cm3t_small.graft
  adapter_full  the adapter graph with every parameter trainable  cm3t_small_full.graft

    .graft-env/python benches/python/train_eager.py --configs adapter adapter_full full --batch 8 --threads 2
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import timm
import torch
import torch.nn.functional as F
from torch import nn

CONFIGS = ("full", "adapter", "adapter_full")
# Where models and batches live (--device); AdamW takes PyTorch's default there
# (the multi-tensor `foreach` implementation on CUDA).
DEVICE = torch.device("cpu")


class GroupedLinear(nn.Module):
    """graft's `grouped_linear`: weight [out, in / groups], one block per group."""

    def __init__(self, fin: int, fout: int, groups: int, zero: bool = False):
        super().__init__()
        self.groups, self.fin, self.fout = groups, fin, fout
        self.weight = nn.Parameter(torch.empty(fout, fin // groups))
        self.bias = nn.Parameter(torch.empty(fout))
        bound = (groups / fin) ** 0.5
        for p in (self.weight, self.bias):
            if zero:
                nn.init.zeros_(p)
            else:
                nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.groups
        xg = x.reshape(-1, g, self.fin // g)
        wg = self.weight.reshape(g, self.fout // g, self.fin // g)
        y = torch.einsum("ngi,goi->ngo", xg, wg).reshape(*x.shape[:-1], self.fout)
        return y + self.bias


class MultiHeadAdapter(nn.Module):
    """std.adapters `multi_head_adapter`: scale · up(relu(down(x)))."""

    def __init__(self, dim: int, heads: int, bottleneck: int, scale: float):
        super().__init__()
        self.down = GroupedLinear(dim, heads * bottleneck, heads)
        self.up = GroupedLinear(heads * bottleneck, dim, heads, zero=True)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(F.relu(self.down(x)))


class Parallel(nn.Module):
    """`adapter … at SITE parallel`: the site's output plus the adapter of its input."""

    def __init__(self, site: nn.Module, adapter: nn.Module):
        super().__init__()
        self.site, self.adapter = site, adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.site(x) + self.adapter(x)


class AdapterModel(nn.Module):
    def __init__(self, args, freeze: bool):
        super().__init__()
        self.vit = timm.create_model(args.model, pretrained=False, num_classes=0, global_pool="")
        if freeze:
            self.vit.requires_grad_(False)
        dim = self.vit.embed_dim
        for block in self.vit.blocks:
            adapter = MultiHeadAdapter(dim, args.adapter_heads, args.adapter_bottleneck, args.adapter_scale)
            block.mlp = Parallel(block.mlp, adapter)
        self.cls = nn.Linear(dim, args.head_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # forward_features ends with the final norm; graft's mean_tokens(vit.norm).
        return self.cls(self.vit.forward_features(x).mean(dim=1))


def build(config: str, args):
    if config == "full":
        model = timm.create_model(args.model, pretrained=False)
        classes = model.num_classes
    else:
        model = AdapterModel(args, freeze=config == "adapter")
        classes = args.head_classes
    model.to(DEVICE)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    return model, opt, params, classes


class Bench:
    def __init__(self, config: str, args):
        self.config = config
        self.model, self.opt, self.params, self.classes = build(config, args)

    def bind(self, batch: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 3, self.model_size(), self.model_size(), generator=g).to(DEVICE)
        self.y = torch.randint(0, self.classes, (batch,), generator=g).to(DEVICE)

    def model_size(self) -> int:
        vit = self.model.vit if isinstance(self.model, AdapterModel) else self.model
        return vit.patch_embed.img_size[0]

    def step(self) -> float:
        loss = F.cross_entropy(self.model(self.x), self.y)
        value = loss.item()
        loss.backward()
        norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None]).item()
        if not (value == value and norm == norm and abs(value) != float("inf") and abs(norm) != float("inf")):
            raise SystemExit(f"{self.config}: loss {value}, gradient norm {norm}")
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return value


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"/proc/self/status has no {field}")


def memory_probe(args) -> None:
    base = status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    b = Bench(args.memory_probe, args)
    b.bind(args.batch[0])
    state = status_kb("VmRSS")
    for _ in range(2):
        b.step()
    peak = status_kb("VmHWM")
    mib = lambda kb: max(kb - base, 0) / 1024.0
    # state: parameters and inputs; AdamW's moments are created at the first step.
    print(json.dumps({"state_mib": mib(state), "peak_mib": mib(peak), "peak_reset": reset}))


def probe(config: str, batch: int, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-probe", config, "--batch", str(batch)]
    for flag in ("model", "threads", "lr", "weight_decay", "adapter_heads", "adapter_bottleneck", "adapter_scale",
                 "head_classes"):
        cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--batch", type=int, nargs="+", default=[8])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--adapter-heads", type=int, default=4)
    ap.add_argument("--adapter-bottleneck", type=int, default=48)
    ap.add_argument("--adapter-scale", type=float, default=0.1)
    ap.add_argument("--head-classes", type=int, default=97)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-probe", choices=CONFIGS, help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (memory is measured on the CPU only)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type != "cpu":
        args.no_memory = True
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.memory_probe:
        memory_probe(args)
        return

    benches = [Bench(c, args) for c in args.configs]
    out = {
        "model": args.model,
        "threads": torch.get_num_threads(),
        "iters": args.iters,
        "warmup": max(args.warmup, 1),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "configs": [
            {
                "config": b.config,
                "params": sum(p.numel() for p in b.model.parameters()),
                "trainable": sum(p.numel() for p in b.params),
                "batches": [],
            }
            for b in benches
        ],
    }
    n = len(benches)
    for batch in args.batch:
        first = []
        for b in benches:
            b.bind(batch)
            first.append(b.step())
        for _ in range(1, args.warmup):
            for b in benches:
                b.step()
        times = [[] for _ in benches]
        for i in range(args.iters):
            for k in range(n):
                j = (i + k) % n
                t0 = time.perf_counter()
                benches[j].step()
                times[j].append((time.perf_counter() - t0) * 1e3)
        for j, b in enumerate(benches):
            out["configs"][j]["batches"].append(
                {
                    "batch": batch,
                    "step_ms": statistics.median(times[j]),
                    "steps_ms": times[j],
                    "first_loss": first[j],
                    "memory": None if args.no_memory else probe(b.config, batch, args),
                }
            )
    print(json.dumps(out))


if __name__ == "__main__":
    main()

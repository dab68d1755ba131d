"""The reference side of scripts/bench_data.sh's video and audio tables.

    python data_paths.py make-video DIR N     # N videos as frame folders (48 JPEGs, 320x240, q90)
    python data_paths.py make-audio DIR N     # N WAVs (10 s, 16 kHz, int16), in 4 class folders
    python data_paths.py run-video DIR WORKERS frames|npy   # prints clips/s
    python data_paths.py run-audio DIR WORKERS              # prints clips/s

Video, VideoMAE's training view: 16 frames 2 apart in a random window, one
RandomResizedCrop box and one flip for the whole clip, to 224², normalised, [C, T, H, W].
`frames` reads the 16 sampled JPEG frames with PIL per clip (VideoMAE's loader for
frame folders); `npy` reads the video's frames already decoded to uint8 (a `.npy` per
video, memory-mapped: what graft's shards store), so both sides do the same work.
Audio: the WAV's int16 samples through transformers' `ASTFeatureExtractor` (128 mel
bins, 1024 frames; its numpy filter bank where torchaudio is not installed).
"""

import os
import sys
import time

import numpy as np
import torch

FRAMES, RATE, SIZE = 16, 2, 224
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_video(root, n):
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:240, 0:320].astype(np.float32)
    os.makedirs(root + "_npy", exist_ok=True)
    for i in range(n):
        d = os.path.join(root, f"c{i % 4}", f"v{i:04d}")
        os.makedirs(d, exist_ok=True)
        a, b, p = rng.uniform(0.01, 0.05, 3)
        frames = []
        for t in range(48):
            img = np.zeros((240, 320, 3), np.float32)
            for c in range(3):
                img[..., c] = 128 + 90 * np.sin(a * (x + 3 * t) + p * 6) * np.cos(b * y + c)
            img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(os.path.join(d, f"img_{t + 1:05d}.jpg"), quality=90)
            frames.append(np.asarray(Image.open(os.path.join(d, f"img_{t + 1:05d}.jpg")).convert("RGB")))
        np.save(os.path.join(root + "_npy", f"v{i:04d}.npy"), np.stack(frames))


def make_audio(root, n):
    import wave

    rng = np.random.default_rng(0)
    t = np.arange(160000) / 16000
    for i in range(n):
        d = os.path.join(root, f"c{i % 4}")
        os.makedirs(d, exist_ok=True)
        x = 0.3 * np.sin(2 * np.pi * (200 + 300 * (i % 4)) * t) + rng.normal(0, 0.05, t.shape)
        with wave.open(os.path.join(d, f"a{i:04d}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


class Videos(torch.utils.data.Dataset):
    def __init__(self, root, form):
        from torchvision.transforms import v2

        self.form = form
        self.items = sorted(
            os.path.join(root, c, v) for c in sorted(os.listdir(root)) for v in sorted(os.listdir(os.path.join(root, c)))
        )
        self.npy = root + "_npy"
        self.tf = v2.Compose(
            [
                v2.RandomResizedCrop(SIZE, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(MEAN, STD),
            ]
        )

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from PIL import Image

        total = 48
        start = np.random.randint(0, total - FRAMES * RATE + 1)
        idx = [start + k * RATE for k in range(FRAMES)]
        if self.form == "frames":
            d = self.items[i]
            clip = np.stack([np.asarray(Image.open(os.path.join(d, f"img_{t + 1:05d}.jpg")).convert("RGB")) for t in idx])
        else:
            clip = np.load(os.path.join(self.npy, os.path.basename(self.items[i]) + ".npy"), mmap_mode="r")[idx]
        x = self.tf(torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2))  # [T, C, H, W], one box
        return x.permute(1, 0, 2, 3), i % 4


class Audios(torch.utils.data.Dataset):
    def __init__(self, root):
        from transformers import ASTFeatureExtractor

        self.items = sorted(os.path.join(root, c, f) for c in sorted(os.listdir(root)) for f in sorted(os.listdir(os.path.join(root, c))))
        self.fe = ASTFeatureExtractor()

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        import wave

        with wave.open(self.items[i], "rb") as w:
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
        return self.fe(x, sampling_rate=16000, return_tensors="pt")["input_values"][0], i % 4


def run(ds, workers, batch):
    torch.set_num_threads(1)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=True)
    start = time.perf_counter()
    seen = sum(x.shape[0] for x, _ in dl)
    print(f"{seen / (time.perf_counter() - start):.2f}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make-video":
        make_video(sys.argv[2], int(sys.argv[3]))
    elif cmd == "make-audio":
        make_audio(sys.argv[2], int(sys.argv[3]))
    elif cmd == "run-video":
        run(Videos(sys.argv[2], sys.argv[4]), int(sys.argv[3]), 8)
    else:
        run(Audios(sys.argv[2]), int(sys.argv[3]), 16)

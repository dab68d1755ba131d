"""The torchvision side of scripts/bench_data.sh.

    python data_loader.py make DIR N      # N JPEGs, 500x375 quality 90, in 4 class folders
    python data_loader.py run DIR WORKERS pil|v2   # prints images/s
"""

import sys
import time

import numpy as np
import torch
from PIL import Image


def make(root, n):
    import os

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:375, 0:500].astype(np.float32)
    for i in range(n):
        d = os.path.join(root, f"c{i % 4}")
        os.makedirs(d, exist_ok=True)
        img = np.zeros((375, 500, 3), np.float32)
        for c in range(3):
            a, b, p = rng.uniform(0.005, 0.05, 3)
            img[..., c] = 128 + 90 * np.sin(a * x + p * 6) * np.cos(b * y + c)
        img += rng.normal(0, 10, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(os.path.join(d, f"{i:06d}.jpg"), quality=90)


def run(root, workers, path, raw=False):
    from torchvision import datasets, transforms
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms import v2

    torch.set_num_threads(1)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    # raw: stop at the uint8 tensor (normalised later, on the model's device).
    if path == "pil":
        tail = [transforms.PILToTensor()] if raw else [transforms.ToTensor(), transforms.Normalize(mean, std)]
        tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), *tail])
        ds = datasets.ImageFolder(root, transform=tf)
    else:
        tail = [] if raw else [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        tf = v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(), *tail])
        ds = datasets.ImageFolder(root, loader=lambda p: decode_jpeg(read_file(p)), transform=tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=workers, shuffle=True)
    start = time.perf_counter()
    seen = sum(x.shape[0] for x, _ in dl)
    print(f"{seen / (time.perf_counter() - start):.1f}")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]))
    else:
        run(sys.argv[2], int(sys.argv[3]), sys.argv[4], raw=sys.argv[5:] == ["u8"])

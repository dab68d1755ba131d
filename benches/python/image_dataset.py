"""Write a graft dataset of random 224x224 images (benchmark input, not a task).

    python benches/python/image_dataset.py OUT_DIR N [CLASSES]

Format: see src/data/mod.rs (dataset.json + shard-NNNNN.safetensors). Seeded.
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

out, n = sys.argv[1], int(sys.argv[2])
classes = int(sys.argv[3]) if len(sys.argv) > 3 else 8
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
per = 32
shards = (n + per - 1) // per
for s in range(shards):
    k = min(per, n - s * per)
    save_file(
        {
            "image": rng.standard_normal((k, 3, 224, 224), dtype=np.float32),
            "label": rng.integers(0, classes, size=(k,), dtype=np.int64),
        },
        os.path.join(out, f"shard-{s:05d}.safetensors"),
    )
meta = {
    "task": "random_images",
    "classes": classes,
    "samples": n,
    "shards": shards,
    "inputs": {"image": {"dtype": "f32", "shape": [3, 224, 224]}},
    "seed": 0,
}
with open(os.path.join(out, "dataset.json"), "w") as f:
    json.dump(meta, f, indent=2)

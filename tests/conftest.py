"""Shared pytest fixtures.

``small_broden``: a small Broden-format directory (64 x 64 images, 32 x 32
segmentations, a scalar ``scene`` label per image); made once per session.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def write_small_broden(root: Path, num_images: int = 24, size: int = 64, seg: int = 32,
                       num_scenes: int = 3, seed: int = 0) -> Path:
    """A Broden directory whose images are noisy colour fields; the scene (labels
    10 + s) decides the dominant colour, an object label (1) marks a square."""
    rng = np.random.default_rng(seed)
    cats = ["object", "scene"]
    (root / "images").mkdir(parents=True, exist_ok=True)
    with open(root / "category.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "first", "last", "count", "frequency"])
        for c in cats:
            w.writerow([c, 0, 0, 1, num_images])
    scenes = [10 + s for s in range(num_scenes)]
    with open(root / "label.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
        w.writerow([1, "box", "object(1)", 1, 0.1, ""])
        for s in scenes:
            w.writerow([s, f"scene{s}", "scene(1)", 1, 1.0, ""])
    with open(root / "c_object.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["code", "number", "name", "frequency", "coverage"])
        w.writerow([1, 1, "box", 1, 0.1])
    with open(root / "c_scene.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["code", "number", "name", "frequency", "coverage"])
        for code, s in enumerate(scenes, start=1):
            w.writerow([code, s, f"scene{s}", 1, 1.0])
    palette = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])
    rows = []
    for i in range(num_images):
        s = i % num_scenes
        img = rng.normal(palette[s % len(palette)], 40, size=(size, size, 3))
        y, x = rng.integers(0, size // 2, 2)
        img[y:y + size // 4, x:x + size // 4] = 255 - palette[s % len(palette)]
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            root / "images" / f"{i:04d}.jpg", quality=90)
        lab = np.zeros((seg, seg, 3), dtype=np.uint8)
        r = seg / size
        lab[int(y * r):int((y + size // 4) * r), int(x * r):int((x + size // 4) * r), 0] = 1
        Image.fromarray(lab).save(root / "images" / f"{i:04d}_object.png")
        scene = "" if i == num_images - 1 else str(scenes[s])   # last image: no scene
        rows.append({"image": f"{i:04d}.jpg", "split": "train", "ih": size, "iw": size,
                     "sh": seg, "sw": seg, "object": f"{i:04d}_object.png", "scene": scene})
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["image", "split", "ih", "iw", "sh", "sw"] + cats)
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture(scope="session")
def small_broden(tmp_path_factory) -> Path:
    """24 images of 64 x 64 px (seg 32 x 32), 3 scenes; do not modify it."""
    return write_small_broden(tmp_path_factory.mktemp("small_broden") / "broden")

# %% [markdown]
# # Network Dissection from a notebook
#
# A model object in memory -> activation cache -> per-unit scores as pandas DataFrames,
# with the same code and the same files as `scripts/extract.py` and `scripts/score.py`.
# Run it cell by cell in Jupyter (or VS Code), or as a script:
# `python docs/notebook_example.py` (it works in `./notebook_example/`, about 15 s).

# %%
from pathlib import Path

import torch
from torch import nn

from pipeline import api
from pipeline.synthetic.writer import write_dataset

WORK = Path("notebook_example")
WORK.mkdir(exist_ok=True)

# %% [markdown]
# ## A tiny Broden-format dataset
# The synthetic generator writes the exact Broden layout (index.csv, category and label
# tables, images, segmentation PNGs); for real work pass your `broden1_224` folder.

# %%
dataset = WORK / "broden"
if not (dataset / "index.csv").is_file():
    write_dataset(dataset, num_images=40, image_size=64, seg_size=32, seed=3, workers=1,
                  progress=False)

# %% [markdown]
# ## A model defined here
# Any `nn.Module` works; layers are its module names (`model.named_modules()`). The run
# records the module's class and a SHA-256 of its state_dict: running the same cell
# again resumes (or finds the run complete); a changed module is refused.

# %%
class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.conv2(self.conv1(x)))


torch.manual_seed(0)
model = SmallNet()

# %%
run = api.extract(model, dataset, ["conv1", "conv2"], WORK / "run", workers=0)
run, run.shapes          # {'conv1': (16, 64, 64), 'conv2': (32, 32, 32)}

# %% [markdown]
# ## Scoring
# `score` writes `run/results/<layer>.{json,csv,html}` as score.py does and returns the
# units as a DataFrame (units numbered from 0 here; the CSV numbers them from 1), the
# summary under both conventions, the IoU cube as numpy arrays and the paths written.

# %%
results = api.score(run, top_images=4, label_cache=WORK / "labels.zarr")   # every layer
conv2 = results["conv2"]
conv2.units.sort_values("iou", ascending=False).head(10)

# %%
conv2.counts             # per category: detectors, unique (top), unique (per-cat)

# %%
conv2.cube.iou.shape     # (units, labels): column j is label number j

# %% [markdown]
# ## Another IoU threshold, from the cube
# `at` recounts in memory (no replay, no file); `score(..., iou_threshold=...)` writes
# the named scoring `results/iou0.08/` as `score.py --iou-threshold 0.08` would.

# %%
strict = conv2.at(iou_threshold=0.08)
strict_written = api.score(run, "conv2", iou_threshold=0.08, top_images=0,
                           label_cache=WORK / "labels.zarr")
strict.counts

# %% [markdown]
# ## Side by side
# Layers, runs, scorings, results documents or published NetDissect CSVs, each counted
# again at one IoU threshold.

# %%
comparison = api.compare(results)                      # conv1 and conv2
comparison[comparison["category"] == "total"]

# %%
thresholds = api.sweep(conv2, thresholds="0.02:0.1:0.02")
thresholds[["iou_threshold", "detectors", "unique_top_labels", "per_category_sum"]]

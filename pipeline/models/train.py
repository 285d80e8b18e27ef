"""Train :class:`pipeline.models.demo.DemoCNN` to classify the scene of Broden images.

Images with a scalar label in index.csv's ``scene`` column are used (others are
skipped); rows whose ``split`` is ``val`` form the validation set (if there are none,
every 10th scene image is held out). Classes are the scene label numbers present,
in increasing order. Inputs use the extraction preprocessing (PIL bilinear resize to
``input_size`` when it differs from the image size, ``(x/255 - mean)/std``), with a
random horizontal flip and a random shift of up to 1/8 of the size (reflect padding)
for training. Optimiser: AdamW with a cosine learning-rate decay.

Around a training run (scripts/train_demo_model.py): :func:`prepare_dataset` generates
the synthetic training set when asked (by default the committed weights' recipe) and
returns its record, :func:`training_meta` the record of how the weights were made (the
``command`` and ``dataset`` keys of ``demo_cnn.json``), :func:`install_weights` copies a
run's final checkpoint and record to ``pipeline/demo_weights/``.
"""
from __future__ import annotations

import json
import math
import shlex
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.broden import BrodenDataset, BrodenError
from pipeline.models.demo import DEMO_WEIGHTS, DemoCNN, DemoConfig, save_demo_checkpoint
from pipeline.preprocess import (IMAGENET_MEAN, IMAGENET_STD, Preprocessing, resize_image,
                                 to_model_input)


# the committed weights' training set: 4000 synthetic images of seed 1 (demo_cnn.json)
RECIPE_DATASET = Path(__file__).resolve().parents[2] / "data" / "synthetic_train_s1_n4000"
RECIPE_IMAGES, RECIPE_SEED = 4000, 1


@dataclass
class TrainConfig:
    """Demo CNN training run. input_size None = the dataset's image size."""
    dataset: str | Path
    out_dir: str | Path
    iterations: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 5e-4
    input_size: tuple[int, int] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    save_at: Sequence[int] = ()
    eval_every: int = 0                 # 0: only at save points and the end
    seed: int = 0
    batchnorm: bool = True
    dropout: float = 0.0
    conv5_width: int = 256
    widths: tuple[int, int, int, int] = (32, 64, 128, 128)
    threads: int | None = None          # torch intra-op threads (None: torch default)

    def check(self) -> None:
        """ValueError naming the flag of train_demo_model.py whose value is nonsense."""
        bad = [(f, v, need) for f, v, ok, need in (
            ("--iterations", self.iterations, self.iterations >= 1, ">= 1"),
            ("--batch-size", self.batch_size, self.batch_size >= 1, ">= 1"),
            ("--lr", self.lr, math.isfinite(self.lr) and self.lr > 0, "a finite number > 0"),
            ("--weight-decay", self.weight_decay,
             math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             "a finite number >= 0"),
            ("--eval-every", self.eval_every, self.eval_every >= 0, ">= 0"),
            ("--dropout", self.dropout, 0.0 <= self.dropout < 1.0, "in [0, 1)"),
            ("--conv5-width", self.conv5_width, self.conv5_width >= 1, ">= 1"),
            ("--threads", self.threads, self.threads is None or self.threads >= 1, ">= 1"),
            ("--save-at", list(self.save_at), min(self.save_at, default=0) >= 0,
             "iterations >= 0")) if not ok]
        if bad:
            f, v, need = bad[0]
            raise ValueError(f"{f} {v}: must be {need}")


@dataclass
class TrainResult:
    model: DemoCNN
    classes: list[int]
    class_names: list[str]
    train_images: int
    val_images: int
    train_accuracy: float
    val_accuracy: float
    chance: float                       # 1 / number of classes
    majority: float                     # frequency of the most common val class
    seconds: float
    history: list[dict] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)


def scene_images(ds: BrodenDataset) -> tuple[list[int], list[int], list[int]]:
    """(image indices, scene label per image, is-val flags) of images with a scene."""
    if "scene" not in ds.categories:
        raise BrodenError(f"{ds.directory / 'category.csv'}: no 'scene' category; the demo "
                          f"CNN is trained to classify scenes")
    idx, labels, val = [], [], []
    for i, r in enumerate(ds.rows):
        scenes = [e for e in r.cells["scene"] if isinstance(e, int)]
        if scenes:
            idx.append(i)
            labels.append(scenes[0])
            val.append(r.split == "val")
    if not idx:
        raise BrodenError(f"{ds.directory / 'index.csv'}: no image has a scene label")
    if not any(val):
        val = [k % 10 == 9 for k in range(len(idx))]
    return idx, labels, val


def _load(ds: BrodenDataset, indices: Sequence[int], size: tuple[int, int]) -> torch.Tensor:
    """(n, H, W, 3) uint8 of the given images."""
    return torch.from_numpy(np.stack([resize_image(ds.load_image(i), size) for i in indices]))


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and shift (reflect padding) of a (B, 3, H, W) batch."""
    B, _, H, W = x.shape
    flip = torch.rand(B, generator=gen) < 0.5
    x = torch.where(flip.view(B, 1, 1, 1), x.flip(3), x)
    py, px = max(1, H // 8), max(1, W // 8)
    xp = F.pad(x, (px, px, py, py), mode="reflect")
    dy = torch.randint(0, 2 * py + 1, (B,), generator=gen)
    dx = torch.randint(0, 2 * px + 1, (B,), generator=gen)
    return torch.stack([xp[b, :, dy[b]:dy[b] + H, dx[b]:dx[b] + W] for b in range(B)])


@torch.no_grad()
def accuracy(model: torch.nn.Module, pixels: torch.Tensor, targets: torch.Tensor,
             prep: Preprocessing, batch: int = 128) -> float:
    model.eval()
    correct = 0
    for s in range(0, len(pixels), batch):
        logits = model(to_model_input(pixels[s:s + batch], prep))
        correct += int((logits.argmax(1) == targets[s:s + batch]).sum())
    return correct / max(1, len(pixels))


def train_demo(config: TrainConfig, log: Callable[[str], None] = print,
               meta: dict | None = None) -> TrainResult:
    """Train, saving ``demo_cnn_iter{it:06d}.pt`` at each ``save_at`` iteration (0 = the
    initial weights) and ``demo_cnn.pt`` + ``demo_cnn.json`` at the end in out_dir."""
    config.check()
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, log, meta)
    finally:
        torch.set_num_threads(threads)


@dataclass
class _Data:
    """The scene images of a training run: pixels (n, H, W, 3) uint8 and class indices
    (n,) int64 of the train and val sets, the classes (label numbers) and their names,
    chance (1 / classes) and majority (frequency of the most common val class)."""
    prep: Preprocessing
    classes: list[int]
    names: list[str]
    xtr: torch.Tensor
    ytr: torch.Tensor
    xva: torch.Tensor
    yva: torch.Tensor
    chance: float
    majority: float


def _load_data(config: TrainConfig, log: Callable[[str], None]) -> _Data:
    ds = BrodenDataset(config.dataset)
    size = tuple(config.input_size or ds.image_size())
    prep = Preprocessing(size, tuple(config.mean), tuple(config.std))
    idx, labels, is_val = scene_images(ds)
    classes = sorted(set(labels))
    cls_of = {c: k for k, c in enumerate(classes)}
    y = torch.tensor([cls_of[l] for l in labels])
    val_mask = torch.tensor(is_val)
    t0 = time.perf_counter()
    pixels = _load(ds, idx, size)
    log(f"loaded {len(idx)} scene images ({int(val_mask.sum())} val) at {size[0]}x{size[1]} "
        f"in {time.perf_counter() - t0:.1f} s; {len(classes)} classes")
    xtr, ytr = pixels[~val_mask], y[~val_mask]
    xva, yva = pixels[val_mask], y[val_mask]
    chance = 1.0 / len(classes)
    majority = float(torch.bincount(yva, minlength=len(classes)).max()) / max(1, len(yva))
    names = [ds.label_names[c] for c in classes]
    return _Data(prep, classes, names, xtr, ytr, xva, yva, chance, majority)


class _Recorder:
    """The evaluations (into ``result.history``, logged) and checkpoints (into
    ``result.checkpoints``) of one training run."""

    def __init__(self, model: DemoCNN, data: _Data, result: TrainResult, base_meta: dict,
                 t_start: float, log: Callable[[str], None]):
        self.model, self.data, self.result = model, data, result
        self.base_meta, self.t_start, self.log = base_meta, t_start, log

    def evaluate(self, it: int, loss: float | None) -> dict:
        """Accuracy on (a subsample of at most ~500) train and all val images; leaves the
        model in train mode."""
        d, model = self.data, self.model
        tr_sub = torch.arange(len(d.xtr))[:: max(1, len(d.xtr) // 500)]   # <= ~500 images
        rec = {"iteration": it, "loss": loss,
               "train_accuracy": accuracy(model, d.xtr[tr_sub], d.ytr[tr_sub], d.prep),
               "val_accuracy": accuracy(model, d.xva, d.yva, d.prep),
               "seconds": round(time.perf_counter() - self.t_start, 1)}
        self.result.history.append(rec)
        self.log(f"iter {it:6d}  loss {loss if loss is not None else float('nan'):.3f}  "
                 f"train acc {rec['train_accuracy']:.3f}  val acc {rec['val_accuracy']:.3f}  "
                 f"(chance {d.chance:.3f}, majority {d.majority:.3f})  {rec['seconds']:.0f} s")
        model.train()
        return rec

    def save(self, it: int, path: Path, rec: dict | None) -> None:
        save_demo_checkpoint(path, self.model, {**self.base_meta, "iteration": it,
                                                "evaluation": rec})
        self.result.checkpoints.append(str(path))


def _train(config: TrainConfig, log: Callable[[str], None], meta: dict | None
           ) -> TrainResult:
    t_start = time.perf_counter()
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    data = _load_data(config, log)
    classes = data.classes
    cfg = DemoConfig(num_classes=len(classes), widths=tuple(config.widths),
                     conv5_width=config.conv5_width, batchnorm=config.batchnorm,
                     dropout=config.dropout, classes=tuple(classes))
    model = DemoCNN(cfg)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_meta = {"classes": classes, "class_names": data.names,
                 "input_size": list(data.prep.input_size),
                 "mean": list(config.mean), "std": list(config.std),
                 "train_config": _jsonable(asdict(config)), **(meta or {})}
    result = TrainResult(model, classes, data.names, len(data.xtr), len(data.xva), 0.0, 0.0,
                         data.chance, data.majority, 0.0)
    rec = _Recorder(model, data, result, base_meta, t_start, log)
    save_at = set(int(s) for s in config.save_at)
    if 0 in save_at:
        rec.save(0, out / "demo_cnn_iter000000.pt", rec.evaluate(0, None))
    _fit(config, model, data, rec, gen, save_at, out)
    model.eval()
    final = result.history[-1]
    result.train_accuracy = final["train_accuracy"]
    result.val_accuracy = final["val_accuracy"]
    result.seconds = time.perf_counter() - t_start
    summary = {**base_meta, "iterations": config.iterations,
               "train_images": result.train_images, "val_images": result.val_images,
               "train_accuracy": result.train_accuracy, "val_accuracy": result.val_accuracy,
               "chance": data.chance, "majority_chance": data.majority,
               "seconds": round(result.seconds, 1), "torch": torch.__version__,
               "history": result.history}
    rec.save(config.iterations, out / "demo_cnn.pt", final)
    (out / "demo_cnn.json").write_text(json.dumps(summary, indent=1) + "\n")
    return result


def _fit(config: TrainConfig, model: DemoCNN, data: _Data, rec: _Recorder,
         gen: torch.Generator, save_at: set[int], out: Path) -> None:
    """The iterations: AdamW with a cosine learning-rate decay over shuffled batches,
    evaluated (and saved at ``save_at``) as configured."""
    xtr, ytr, prep = data.xtr, data.ytr, data.prep
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda it: 0.5 * (1 + np.cos(np.pi * min(it, config.iterations) /
                                          max(1, config.iterations))))
    model.train()
    perm = torch.randperm(len(xtr), generator=gen)
    pos, running = 0, []
    for it in range(1, config.iterations + 1):
        if pos + config.batch_size > len(perm):
            perm, pos = torch.randperm(len(xtr), generator=gen), 0
        b = perm[pos:pos + config.batch_size]
        pos += config.batch_size
        x = _augment(to_model_input(xtr[b], prep), gen)
        loss = F.cross_entropy(model(x), ytr[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        last = it == config.iterations
        if it in save_at or last or (config.eval_every and it % config.eval_every == 0):
            r = rec.evaluate(it, float(np.mean(running[-50:])))
            if it in save_at:
                rec.save(it, out / f"demo_cnn_iter{it:06d}.pt", r)


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    if isinstance(d, Path):
        return str(d)
    return d


# ------------------------------------------------------------- around a training run
def prepare_dataset(path: str | Path | None, generate_images: int | None = None,
                    generate_seed: int = 0, image_size: int = 224, seg_size: int = 112,
                    progress: bool = True, log: Callable[[str], None] = print
                    ) -> tuple[Path, dict]:
    """The training set's directory and its record (``meta["dataset"]``).

    With ``generate_images``, a synthetic Broden of that many images (``generate_seed``,
    ``image_size``, ``seg_size``) is written to ``path`` first if it has no index.csv,
    and the record says how (``generator``). Without ``path``: the committed weights'
    recipe, :data:`RECIPE_DATASET` of ``generate_images or 4000`` images of seed 1."""
    if path is None:
        path = RECIPE_DATASET
        generate_images, generate_seed = generate_images or RECIPE_IMAGES, RECIPE_SEED
    ds_dir = Path(path)
    if generate_images and not (ds_dir / "index.csv").is_file():
        from pipeline.synthetic.writer import write_dataset
        log(f"generating {generate_images} synthetic images into {ds_dir}")
        write_dataset(ds_dir, num_images=generate_images, image_size=image_size,
                      seg_size=seg_size, seed=generate_seed, progress=progress)
    ds = BrodenDataset(ds_dir)
    record = {"path": str(ds_dir), "fingerprint": ds.fingerprint(), "num_images": len(ds),
              "image_size": list(ds.image_size()), "seg_size": list(ds.segmentation_size())}
    if generate_images:
        record["generator"] = {
            "function": "pipeline.synthetic.writer.write_dataset",
            "num_images": generate_images, "seed": generate_seed,
            "image_size": image_size, "seg_size": seg_size}
    return ds_dir, record


def training_meta(command: Sequence[str], dataset: dict) -> dict:
    """The record of how a run was made, stored in its checkpoints and ``demo_cnn.json``:
    ``command`` (``python`` + the quoted command line, e.g. ``["scripts/train_demo_model.py",
    *sys.argv[1:]]``) and ``dataset`` (:func:`prepare_dataset`'s record)."""
    return {"command": "python " + " ".join(shlex.quote(x) for x in command),
            "dataset": dataset}


def install_weights(out_dir: str | Path) -> Path:
    """Copy ``out_dir``'s final ``demo_cnn.pt`` and ``demo_cnn.json`` to
    :data:`pipeline.models.demo.DEMO_WEIGHTS` (what ``--model demo`` loads); returns it."""
    out = Path(out_dir)
    DEMO_WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "demo_cnn.pt", DEMO_WEIGHTS)
    shutil.copyfile(out / "demo_cnn.json", DEMO_WEIGHTS.with_suffix(".json"))
    return DEMO_WEIGHTS

"""What the model is fed: Broden images decoded, resized and normalised into (B, 3, H, W)
float32 batches.

Per image: decode (PIL, RGB, in DataLoader worker processes); resize to the input
size with PIL ``Image.resize(..., BILINEAR)`` (antialiased when shrinking) only when
it differs from the dataset's image size; then on the device
``x = (pixels / 255 - mean) / std`` per channel in float32, channels in RGB order
or, with ``bgr``, reversed (mean/std are given in RGB order and reversed with them).
So ``mean=(0,0,0), std=(1,1,1)`` feeds pixels / 255 exactly, and a Caffe model with
0..255 inputs and mean (104, 117, 123) BGR takes ``bgr=True, mean=(123/255, 117/255,
104/255), std=(1/255,)*3``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from pipeline.broden import BrodenDataset, BrodenError
from pipeline.dataset_files import image_files, records
from pipeline.parallel import worker_start

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_METHOD = "PIL.Image.resize BILINEAR (only when input_size != image_size)"


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become model input: (H, W) = input_size, mean/std on the 0..1
    scale in RGB order, bgr = feed channels reversed (Caffe)."""
    input_size: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    bgr: bool = False

    def to_attrs(self) -> dict:
        return {"input_size": [int(v) for v in self.input_size],
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "bgr": bool(self.bgr), "resize": RESIZE_METHOD,
                "formula": "(pixels/255 - mean) / std, per channel"}


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(ih, iw, 3) uint8 -> (H, W, 3) uint8 by PIL bilinear; unchanged if same size."""
    if img.shape[:2] == tuple(size):
        return img
    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))


def to_model_input(pixels: torch.Tensor, prep: Preprocessing,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 on ``device``, normalised."""
    x = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(prep.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    if prep.bgr:
        x = x.flip(1)
    return x.contiguous()


class ResizedImages(torch.utils.data.Dataset):
    """Item i -> (i, (H, W, 3) uint8 or None, error message or None, (32,) uint8 record
    of the image file (pipeline/dataset_files.py), read where the file is decoded)."""

    def __init__(self, dataset: BrodenDataset, size: tuple[int, int]):
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            pixels = resize_image(self.dataset.load_image(i), self.size)
        except BrodenError as e:
            return i, None, str(e), None
        return i, pixels, None, records(self.dataset, [i], image_files)[0]


def _collate(items):
    idx = [i for i, _, _, _ in items]
    errors = [e for _, _, e, _ in items if e is not None]
    if errors:
        return idx, None, errors[0], None
    return (idx, torch.from_numpy(np.stack([im for _, im, _, _ in items])), None,
            np.stack([r for _, _, _, r in items]))


def image_loader(images: ResizedImages, batches: list[list[int]], workers: int, pin: bool):
    """DataLoader over ``batches`` of image indices, decoding in ``workers`` processes.

    Yields (indices, (B, H, W, 3) uint8 or None, the first error message or None,
    (B, 32) uint8 image-file records or None).
    """
    return torch.utils.data.DataLoader(
        images, batch_sampler=batches, num_workers=workers, collate_fn=_collate,
        pin_memory=pin, prefetch_factor=2 if workers > 0 else None,
        worker_init_fn=worker_start if workers > 0 else None)

"""The demo CNN: its architecture (DemoConfig, DemoCNN), its checkpoint format and the
committed weights.

``--model demo`` loads :data:`DEMO_WEIGHTS` (``pipeline/demo_weights/demo_cnn.pt``)
unless ``--weights`` names another checkpoint; the architecture options come from the
checkpoint's ``config``, also when another demo checkpoint is given as weights.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from pipeline.models.checkpoints import apply_state_dict, read_checkpoint, unwrap_state_dict
from pipeline.models.errors import ModelError

DEMO_WEIGHTS = Path(__file__).resolve().parent.parent / "demo_weights" / "demo_cnn.pt"
DEMO_FORMAT = "netdissect-demo-cnn"


@dataclass(frozen=True)
class DemoConfig:
    """Architecture of :class:`DemoCNN`.

    widths: channels of conv1..conv4; conv5_width: channels of conv5 (the last
    conv layer); batchnorm: BatchNorm after each conv; dropout: Dropout2d rate at
    the end of each block and before the classifier (0 = off; identity in eval);
    num_classes: classifier outputs; classes: the scene label number of each
    class index (metadata for training and reports).
    """
    num_classes: int = 10
    widths: tuple[int, int, int, int] = (32, 64, 128, 128)
    conv5_width: int = 256
    batchnorm: bool = True
    dropout: float = 0.0
    classes: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DemoConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelError(f"demo CNN config has unknown field(s) {unknown}; "
                             f"known: {sorted(known)}")
        d = dict(d)
        for k in ("widths", "classes"):
            if k in d:
                d[k] = tuple(int(v) for v in d[k])
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"], d["classes"] = list(self.widths), list(self.classes)
        return d


def _block(cin: int, cout: int, k: int, stride: int, cfg: DemoConfig) -> nn.Sequential:
    layers: dict[str, nn.Module] = {
        "conv": nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=not cfg.batchnorm)}
    if cfg.batchnorm:
        layers["bn"] = nn.BatchNorm2d(cout)
    layers["relu"] = nn.ReLU(inplace=True)
    if cfg.dropout > 0:
        layers["drop"] = nn.Dropout2d(cfg.dropout)
    return nn.Sequential(OrderedDict(layers))


class DemoCNN(nn.Module):
    """Small scene classifier; hooking ``convN`` gives post-ReLU maps.

    Input (B, 3, H, W) float32 -> logits (B, num_classes). Layer resolutions at
    H = W = 224 (K = channels with the default config):

        conv1  (32, 56, 56)   7x7 stride 4   -> pool1 (max 2x2)
        conv2  (64, 28, 28)   3x3            -> pool2
        conv3  (128, 14, 14)  3x3
        conv4  (128, 14, 14)  3x3            -> pool4
        conv5  (256, 7, 7)    3x3            -> global average pool -> fc

    Each ``convN`` is Sequential(conv, [bn], relu, [drop]).
    """

    def __init__(self, config: DemoConfig = DemoConfig()):
        super().__init__()
        self.config = config
        w1, w2, w3, w4 = config.widths
        self.conv1 = _block(3, w1, 7, 4, config)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = _block(w1, w2, 3, 1, config)
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = _block(w2, w3, 3, 1, config)
        self.conv4 = _block(w3, w4, 3, 1, config)
        self.pool4 = nn.MaxPool2d(2)
        self.conv5 = _block(w4, config.conv5_width, 3, 1, config)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.fc = nn.Linear(config.conv5_width, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = self.pool4(self.conv4(self.conv3(x)))
        x = self.conv5(x)
        return self.fc(self.drop(torch.flatten(self.gap(x), 1)))


def save_demo_checkpoint(path: str | Path, model: DemoCNN, meta: Mapping[str, Any] | None = None
                         ) -> None:
    """Write ``{"format", "config", "state_dict", "meta"}`` (torch.save, float32 weights)."""
    torch.save({"format": DEMO_FORMAT, "config": model.config.to_dict(),
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "meta": dict(meta or {})}, str(path))


def load_demo(weights: str | Path | None = None, trust: bool = False) -> DemoCNN:
    """DemoCNN with ``weights`` (default: the committed checkpoint), in eval mode;
    ``trust`` as :func:`pipeline.models.checkpoints.read_checkpoint`."""
    path = Path(weights) if weights is not None else DEMO_WEIGHTS
    if weights is None and not path.is_file():
        raise ModelError(f"{path}: the committed demo weights are missing; train them with "
                         f"scripts/train_demo_model.py or pass --weights")
    obj = read_checkpoint(path, trust)
    cfg = DemoConfig()
    if isinstance(obj, Mapping) and isinstance(obj.get("config"), Mapping):
        cfg = DemoConfig.from_dict(obj["config"])
    elif isinstance(obj, Mapping):
        sd = unwrap_state_dict(obj, path)
        if "fc.weight" in sd:   # infer the class count of a foreign demo checkpoint
            cfg = DemoConfig(num_classes=int(sd["fc.weight"].shape[0]),
                             conv5_width=int(sd["fc.weight"].shape[1]))
    model = DemoCNN(cfg)
    apply_state_dict(model, unwrap_state_dict(obj, path), path)
    return model.eval()

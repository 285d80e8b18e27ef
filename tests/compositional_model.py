"""A hand-built "network" for the compositional known answer: its layer ``units`` has
unit 1 = red-c OR yellow-c and unit 2 = red-c alone, built from the colour units of
:mod:`tests.known_answer_model` (which name colours exactly as the synthetic Broden
does). Used as ``--model tests/compositional_model.py:build --mean 0,0,0 --std 1,1,1``;
maps are at segmentation resolution (upsampling is the identity)."""
from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.known_answer_model import KnownUnits, UNITS  # noqa: E402


class ColourUnion(nn.Module):
    """(B, 3, H, W) pixels / 255 -> (B, 2, H/2, W/2): max(red, yellow) and red."""

    def __init__(self):
        super().__init__()
        self.known = KnownUnits()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.known(x)
        red, yellow = maps[:, UNITS.index("red-c")], maps[:, UNITS.index("yellow-c")]
        return torch.stack([torch.maximum(red, yellow), red], dim=1)


def build() -> nn.Module:
    """The model: its only layer is ``units`` (eval mode)."""
    return nn.Sequential(OrderedDict(units=ColourUnion())).eval()

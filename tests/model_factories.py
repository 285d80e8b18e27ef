"""Model factories for tests, used as ``--model tests/model_factories.py:NAME``."""
from __future__ import annotations

import os
import time

import torch
from torch import nn


class TinyNet(nn.Module):
    """features.0 conv (8, H, W) -> features.1 ReLU(inplace) -> features.2 conv (16, H/2, W/2)
    -> features.3 ReLU -> pool -> fc (non-4-D)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1),
                                      nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet()


class InputProbe(nn.Module):
    """``inp`` is an Identity on the model input, so its 'activations' are the input."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Identity()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.conv(self.inp(x))


def input_probe() -> nn.Module:
    torch.manual_seed(0)
    return InputProbe()


class SlowNet(TinyNet):
    """TinyNet that sleeps $SLOW_NET_SECONDS (default 0.15) per forward pass."""

    def forward(self, x):
        time.sleep(float(os.environ.get("SLOW_NET_SECONDS", "0.15")))
        return super().forward(x)


def slow_net() -> nn.Module:
    torch.manual_seed(0)
    return SlowNet()


class DictOut(nn.Module):
    """Returns its layers as a dict: the form TorchScript models use to expose layers."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)

    def forward(self, x) -> dict[str, torch.Tensor]:
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a))
        return {"c1": a, "c2": b, "logits": b.mean(dim=(2, 3))}


def dict_out() -> nn.Module:
    torch.manual_seed(0)
    return DictOut()


def not_a_model():
    return 42


class DeadUnits(nn.Module):
    """``dead``: a conv with zero weights and bias -> all-zero maps (dead units)."""

    def __init__(self):
        super().__init__()
        self.dead = nn.Conv2d(3, 4, 3, padding=1)
        nn.init.zeros_(self.dead.weight)
        nn.init.zeros_(self.dead.bias)

    def forward(self, x):
        return self.dead(x)


def dead_units() -> nn.Module:
    return DeadUnits()

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


class ChannelsLast(nn.Module):
    """``nhwc``: a conv's (B, 6, H/2, W/2) maps permuted to (B, H/2, W/2, 6), in a model of
    no known family (its layout must be declared)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.nhwc = nn.Identity()

    def forward(self, x):
        return self.nhwc(self.conv(x).permute(0, 2, 3, 1))


def channels_last() -> nn.Module:
    torch.manual_seed(0)
    return ChannelsLast()


class TokenNet(nn.Module):
    """``tokens``: (B, 1 + (H/8)(W/8), 5): a CLS token, then 8 x 8 patches as tokens (row
    major), in a model that does not say so (its layout must be declared)."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 5, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, 5))
        self.tokens = nn.Identity()

    def forward(self, x):
        p = self.patch(x).flatten(2).transpose(1, 2)                  # (B, hw, 5)
        return self.tokens(torch.cat([self.cls.expand(len(x), -1, -1), p], dim=1))


def token_net() -> nn.Module:
    torch.manual_seed(0)
    return TokenNet()


class TinyScale(nn.Module):
    """``tiny``: a conv whose maps are ~1e-9 (below float16's smallest normal)."""

    def __init__(self):
        super().__init__()
        self.tiny = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.tiny.weight.mul_(1e-9)
            self.tiny.bias.fill_(1e-9)

    def forward(self, x):
        return self.tiny(x)


def tiny_scale() -> nn.Module:
    torch.manual_seed(0)
    return TinyScale()

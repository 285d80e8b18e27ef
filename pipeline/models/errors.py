"""The exceptions of model loading and layer capture; messages say what is wrong and the fix."""
from __future__ import annotations


class ModelError(ValueError):
    """A model spec, checkpoint or weights file cannot be used (message says why)."""


class LayerError(ValueError):
    """A requested layer does not exist or does not produce (B, K, h, w) maps."""

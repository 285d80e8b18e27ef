"""Models: the forms of ``--model``, checkpoints, layer hooks and the demo CNN.

- ``errors``: the two exceptions, ModelError (spec, checkpoint, weights) and LayerError.
- ``sources``: a model spec string -> an ``nn.Module`` (the registry of model sources:
  demo, torchvision/timm zoo, factory functions, TorchScript files).
- ``checkpoints``: reading checkpoints, loading their state_dict strictly, and the
  weight fingerprint of a model.
- ``hooks``: layer hooks (the one class that registers forward hooks), listing a
  model's layer outputs and checking requested layers, capturing several layers in
  one forward pass.
- ``demo``: the demo CNN (DemoConfig, DemoCNN), its checkpoint format and weights.
- ``train``: training the demo CNN to classify the scenes of Broden images.
"""

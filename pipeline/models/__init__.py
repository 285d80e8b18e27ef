"""Models: the forms of ``--model``, checkpoints, layer hooks and the demo CNN.

- ``errors``: the two exceptions, ModelError (spec, checkpoint, weights) and LayerError.
- ``sources``: a model spec string -> an ``nn.Module`` (the registry of model sources:
  demo, torchvision/timm zoo, factory functions, TorchScript files).
- ``zoo``: torchvision and timm: importing them on a CPU torch (the op schemas), seeded
  random init, the preprocessing a model declares.
- ``layouts``: how a layer's output holds maps (channels_first, channels_last, tokens),
  declared or implied by the model family, and its adaptation to (B, K, h, w).
- ``checkpoints``: reading checkpoints, finding their state_dict (--weights-key,
  prefixes), loading it strictly, and the weight fingerprint of a model.
- ``hooks``: layer hooks (the one class that registers forward hooks), listing a
  model's layer outputs, checking requested layers and their layouts (with the in-place
  follower warning), capturing several layers in one forward pass as (B, K, h, w).
- ``demo``: the demo CNN (DemoConfig, DemoCNN), its checkpoint format and weights.
- ``train``: training the demo CNN to classify the scenes of Broden images.
"""

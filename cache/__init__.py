"""Storage layer: the Zarr layouts of runs (activation caches), label caches and IoU cubes.

``store`` (a run: open, attributes, layer groups, lock, readers), ``activations`` (creating
a run, block writes), ``labels`` and ``labelsets`` (the label cache and its canonical label
sets), ``cube`` (thresholds and cubes), ``integrity`` (damaged chunks), ``zarr_io`` (codecs,
write settings, resume flags). Nothing here imports from ``pipeline/``.
"""

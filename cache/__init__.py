"""Storage layer: Zarr layouts of label caches, activation caches and IoU cubes."""

"""Synthetic Broden: procedurally rendered images in the exact Broden on-disk format.

Real Broden (63,305 images, 1,197 concepts) cannot be downloaded everywhere, so the
demo, tests and benchmarks use this generator. It has two profiles (``profiles``):
``demo`` (the default, 81 concepts, described below) and ``broden`` (Broden's 1,197
labels, category sizes, sources and heavy-tailed frequencies, drawn fast and
schematically; see ``broden_catalogue``). In the demo profile, like Broden, images come from
*sources* that label different categories
(:data:`pipeline.synthetic.catalogue.SOURCES`):

- ``scenes``    (like ADE20K): composed scenes; object, part (two planes: parts and
  parts of parts), material, scene (scalar) and color.
- ``objects``   (like Pascal-Part): one or two large objects on clutter; object, part, color.
- ``materials`` (like OpenSurfaces): textured material regions; material, color.
- ``textures``  (like DTD): one whole-image pattern; texture (scalar), color.

Geometry is continuous (units of image height, y down); masks are rendered at image
resolution and label planes sample them at the image pixel nearest to each
segmentation pixel's centre. Colour labels name the colour of the rendered image
box-downsampled to segmentation resolution (nearest prototype in CIELAB). Every image
depends on ``(seed, index)`` alone, so output is byte-identical for any number of
workers.

Modules (import from them; this package re-exports nothing):

- ``catalogue``   the fixed label catalogue: categories, concepts, label numbers, sources.
- ``colors``      colour naming: sRGB -> CIELAB, nearest-prototype names, the 5-bit lookup.
- ``canvas``      the painter's canvas: label maps, regions (rect, ellipse, polygon),
                  textures (flat, gradient, materials, clutter), paint colours, lighting.
- ``objects``     object drawers (house, car, person, ...) and the ``objects`` source.
- ``scenes``      the ``scenes`` source: ten scene types composed of sky, ground, objects.
- ``textures``    the ``materials`` and ``textures`` sources.
- ``render``      one image and its ground truth (:class:`~.render.SyntheticImage`);
                  source and split of an image from (seed, index).
- ``profiles``    the profiles: labels, source folders, renderer, category-map rule.
- ``broden_catalogue`` the broden profile's 1,197 labels: categories, doubles, source
                  roles, expected frequencies, label numbers, looks.
- ``broden_sources`` the broden profile's source of each image and its label draws.
- ``broden_render`` one image of the broden profile and its ground truth.
- ``writer``      the dataset directory: images, label PNGs and the Broden CSV tables.
- ``activations`` runs of synthetic ReLU-like activations with real layer shapes
                  (benchmarks; no network).
"""

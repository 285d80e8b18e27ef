"""Reports of scored layers and experiments: documents, tables, charts and the HTML page
(every file written atomically through :mod:`pipeline.files`).

Modules, one job each:

- ``document``: the versioned results document ``RUN/results/<layer>.json`` (build, read,
  check; a run's documents as result tables);
- ``netdissect_csv``: the NetDissect result CSV (its column layout, written from a results
  document, and read from ours or the published files);
- ``tables``: summary tables of detector counts (one layer, sweep, rotation, comparison) as
  CSV rows and printable text, with the shared column constants;
- ``charts``: every chart (the one module that imports matplotlib);
- ``images``: the unit images of the HTML page (top images, masks, overlays, thumbnails,
  data URIs);
- ``html_page``: the per-layer HTML page;
- ``compare``: load runs and published tables and count them at one IoU threshold.
"""

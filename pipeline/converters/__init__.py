"""Converters: your own concepts in the Broden format (pipeline/broden.py reads the result).

- ``coco``     COCO-style instances (polygons, RLE) and panoptic annotations
               (:func:`convert_coco`, :class:`CocoSource`);
- ``masks``    a folder of index-PNG masks plus a class list, VOC/ADE/Cityscapes style
               (:func:`convert_masks`, :class:`MaskFolderSource`);
- ``scalars``  per-image labels from class folders or a CSV, e.g. scenes
               (:func:`convert_scalars`, :class:`ScalarSource`);
- ``writer``   the shared writer: merges sources, counts, numbers labels, writes the
               directory (:func:`convert`, :class:`ConvertOptions`);
- ``spec``     several sources described in one JSON file; ``cli`` the command line;
- ``base``     what the sources share (the source interface, class lists, masks).
"""

"""Whether the run at ``--out`` is the cache an extraction asks for: resume it, create it
anew, or refuse with what differs.

A run is resumed when its identity attributes (:attr:`ExtractSetup.attrs`: model and
dataset fingerprints, number of images, image size, dtype, layers, preprocessing, layer
shapes) match the ones asked for and its layout was completely written; it is created
(again) when it is absent, empty, only half laid out, or ``--overwrite`` is given.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import zarr

from cache import activations as cache_acts
from cache.integrity import check_run_metadata, repair_run_metadata
from cache.metadata import COPY_NAME, MetadataError
from cache.store import RUN_FORMAT, LOCK_NAME, RunError
from cache.store import tree_size as store_tree_size
from pipeline.extract_config import ExtractConfig, ExtractSetup
from pipeline.extract_grow import GrowPlan, plan_growth

Log = Callable[[str], None]


def differences(old: dict, new: dict, layers: bool = True) -> list[str]:
    """What makes an existing run another cache than the one asked for (``layers``:
    counting the set of layers; without it, a run extended by pipeline/extract_grow.py)."""
    def get(d, *keys):
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return d
    diffs = []
    checks = [
        ("model fingerprint (weights)", ("model", "fingerprint")),
        ("dataset fingerprint", ("dataset", "fingerprint")),
        ("number of images (--limit)", ("dataset", "num_images")),
        ("image size", ("dataset", "image_size")),
        ("dtype (--dtype)", ("dtype",)),
    ]
    for what, keys in checks:
        a, b = get(old, *keys), get(new, *keys)
        if a != b:
            if what.startswith("model"):
                a = f"{a[:12] if a else a} (spec {get(old, 'model', 'spec')!r}, weights " \
                    f"{get(old, 'model', 'weights')!r})"
                b = f"{b[:12]} (spec {get(new, 'model', 'spec')!r}, weights " \
                    f"{get(new, 'model', 'weights')!r})"
            diffs.append(f"{what}: run has {a}, this command {b}")
    classes = get(old, "model", "class"), get(new, "model", "class")
    if None not in classes and classes[0] != classes[1]:      # in-memory modules
        diffs.append(f"model class: run has {classes[0]}, this command {classes[1]}")
    if layers and set(old.get("layers") or []) != set(new["layers"]):
        diffs.append(f"layers (--layers): run has {old.get('layers')}, this command "
                     f"{new['layers']}")
    op, np_ = old.get("preprocessing") or {}, new["preprocessing"]
    for k in ("input_size", "mean", "std", "bgr", "resize"):
        if op.get(k) != np_.get(k):
            diffs.append(f"preprocessing {k}: run has {op.get(k)}, this command {np_.get(k)}")
    old_shapes, new_shapes = old.get("layer_shapes") or {}, new["layer_shapes"]
    if not layers:                                  # the layers both have
        old_shapes = {n: v for n, v in old_shapes.items() if n in new_shapes}
        new_shapes = {n: v for n, v in new_shapes.items() if n in old_shapes}
    if not diffs and old_shapes != new_shapes:
        diffs.append(f"layer shapes: run has {old_shapes}, this command {new_shapes}")
    return diffs


def inspects_run(out: Path, c: ExtractConfig) -> bool:
    """Whether :func:`growth` reads the run at ``out`` (checking its metadata first)."""
    return not (c.overwrite or c.repair) and (out / "zarr.json").is_file()


def growth(out: Path, s: ExtractSetup, c: ExtractConfig, log: Log) -> GrowPlan | None:
    """The layers this extraction adds to the complete run at ``out``
    (pipeline/extract_grow.py), or None when it resumes, creates or is refused as usual
    (:func:`open_or_create`)."""
    if not inspects_run(out, c):
        return None
    _check_metadata(out, False, log)
    try:
        old = dict(zarr.open_group(out, mode="r").attrs)
    except Exception:
        return None                                   # open_or_create names the problem
    if old.get("format") != RUN_FORMAT or not old.get("layout_complete"):
        return None
    return plan_growth(out, old, s, c, differences(old, s.attrs, layers=False))


def open_or_create(out: Path, s: ExtractSetup, c: ExtractConfig, log: Log,
                   metadata_checked: bool = False) -> tuple[zarr.Group, int, bool]:
    """(group, block_images, created); ``metadata_checked``: :func:`growth` already
    checked the run's metadata."""
    if c.overwrite and ((out / "zarr.json").is_file() or (out / COPY_NAME).is_file()):
        _confirm_overwrite(out, c, log)
    if (out / "zarr.json").is_file() or (out / COPY_NAME).is_file():
        try:
            if not c.overwrite and not metadata_checked:
                _check_metadata(out, c.repair, log)
            group = zarr.open_group(out, mode="r+")
            old = dict(group.attrs)
        except MetadataError:
            raise
        except Exception as e:
            if not c.overwrite:
                raise RunError(f"--out {out}: zarr.json is unreadable ({type(e).__name__}: "
                               f"{e}); pass --overwrite to start the cache again") from e
            old = None
        if old is not None and old.get("format") != RUN_FORMAT and not c.overwrite:
            raise RunError(f"--out {out}: a Zarr group that is not a netdissect run; "
                           f"choose another --out")
        if old is not None and not c.overwrite:
            diffs = differences(old, s.attrs)
            if diffs:
                raise RunError(f"--out {out} holds a cache made differently:\n  - "
                               + "\n  - ".join(diffs)
                               + "\npass --overwrite to replace it, or choose another --out")
            block = int(old["block_images"])
            if old.get("layout_complete"):
                if block != c.batch_size:
                    log(f"note: resuming with the run's block size {block} "
                        f"(--batch-size {c.batch_size} applies to new runs)")
                return group, block, False
            return cache_acts.create_run(out, s.attrs, block, c.compression,
                                         image_files=True), block, True
    elif any(p.name != LOCK_NAME for p in out.iterdir()):
        raise RunError(f"--out {out}: the directory holds files but is not a run; "
                       f"choose a new or empty directory")
    return (cache_acts.create_run(out, s.attrs, c.batch_size, c.compression,
                                  image_files=True), c.batch_size, True)


# a run's activation cache and its layout; anything else in it was computed from them
CACHE_ENTRIES = {"zarr.json", COPY_NAME, LOCK_NAME, "layers", "progress", "image_files"}
LAYER_CACHE_ENTRIES = {"zarr.json", "activations", "maxima"}


def computed_from_cache(out: Path) -> list[tuple[str, int, int]]:
    """What the run at ``out`` holds beyond its activation cache, which --overwrite
    would delete: (path relative to ``out``, bytes, files) of each top-level entry
    (results/, rotations/ of derived runs, reports) and of each layer's stored
    thresholds, cube and tally checkpoint (``layers/<node>/quantiles``, ...)."""
    found = []
    for p in sorted(out.iterdir()):
        if p.name not in CACHE_ENTRIES:
            found.append((p.name + ("/" if p.is_dir() else ""), *store_tree_size(p)))
    layers = out / "layers"
    for node in sorted(layers.iterdir()) if layers.is_dir() else []:
        for p in sorted(node.iterdir()) if node.is_dir() else []:
            if p.name not in LAYER_CACHE_ENTRIES:
                found.append((f"layers/{node.name}/{p.name}" + ("/" if p.is_dir() else ""),
                              *store_tree_size(p)))
    return found


def _confirm_overwrite(out: Path, c: ExtractConfig, log: Log) -> None:
    """--overwrite of a run holding more than its cache needs --yes: raise RunError
    listing what would be deleted, or log the list and go on."""
    found = computed_from_cache(out)
    if not found:
        log(f"--overwrite: replacing the activation cache in {out}")
        return
    listing = "\n".join(f"  - {name} ({size / 2**20:.1f} MiB, {files} file(s))"
                         for name, size, files in found)
    if not c.yes:
        raise RunError(f"--out {out}: --overwrite would delete what was computed from this "
                       f"run's cache as well:\n{listing}\npass --yes as well to delete them "
                       f"(or move them first, or choose another --out)")
    log(f"--overwrite --yes: deleting the activation cache in {out} and:\n{listing}")


def _check_metadata(out: Path, repair: bool, log: Log) -> None:
    """With ``repair``, restore damaged metadata of the run from its layout and the copy of
    its root attrs (cache/metadata.py); then raise MetadataError if any is left damaged
    (it names the file and the repair command)."""
    if repair:
        repair_run_metadata(out, log)
    check_run_metadata(out)

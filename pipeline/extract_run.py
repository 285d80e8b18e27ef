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
from pipeline.extract_config import ExtractConfig, ExtractSetup

Log = Callable[[str], None]


def differences(old: dict, new: dict) -> list[str]:
    """What makes an existing run another cache than the one asked for."""
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
    if set(old.get("layers") or []) != set(new["layers"]):
        diffs.append(f"layers (--layers): run has {old.get('layers')}, this command "
                     f"{new['layers']}")
    op, np_ = old.get("preprocessing") or {}, new["preprocessing"]
    for k in ("input_size", "mean", "std", "bgr", "resize"):
        if op.get(k) != np_.get(k):
            diffs.append(f"preprocessing {k}: run has {op.get(k)}, this command {np_.get(k)}")
    if not diffs and old.get("layer_shapes") != new["layer_shapes"]:
        diffs.append(f"layer shapes: run has {old.get('layer_shapes')}, this command "
                     f"{new['layer_shapes']}")
    return diffs


def open_or_create(out: Path, s: ExtractSetup, c: ExtractConfig, log: Log
                   ) -> tuple[zarr.Group, int, bool]:
    """(group, block_images, created)."""
    if (out / "zarr.json").is_file() or (out / COPY_NAME).is_file():
        try:
            if not c.overwrite:
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


def _check_metadata(out: Path, repair: bool, log: Log) -> None:
    """With ``repair``, restore damaged metadata of the run from its layout and the copy of
    its root attrs (cache/metadata.py); then raise MetadataError if any is left damaged
    (it names the file and the repair command)."""
    if repair:
        repair_run_metadata(out, log)
    check_run_metadata(out)

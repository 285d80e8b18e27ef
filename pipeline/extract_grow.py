"""Add layers to a complete run: ``extract.py --layers`` naming layers the run lacks, with
the same model, dataset, images, dtype and preprocessing, extracts only those (one forward
pass over the images) and adds them to the run, which keeps its layers, scorings and
results.

The new layers are extracted into a staging run beside it, ``<RUN>.adding-layers`` (an
ordinary run of the same identity holding only them, with the run's block size and
compression: so its arrays are bit-identical to extracting those layers alone, and a
kill is resumed by the same command as any extraction). When it is complete its layer
nodes are moved into ``RUN/layers/`` (one rename each), the run's root attrs (``layers``,
``layer_nodes``, ``layer_shapes``, the metadata digests: cache/metadata.py) are updated
with their copy, and the staging run is removed. A kill between the moves and the attrs
update is finished by the next run of the command: a layer node already in the run but
not yet in its attrs is known to come from the complete staging run.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import zarr

from cache import metadata
from cache.store import RunError, is_complete, layer_node
from pipeline.extract_config import ExtractConfig, ExtractSetup

Log = Callable[[str], None]
STAGING_SUFFIX = ".adding-layers"


@dataclass
class GrowPlan:
    """The layers an extraction adds to the complete run at ``out`` (in --layers order)."""
    out: Path
    new_layers: list[str]
    old_attrs: dict

    @property
    def staging(self) -> Path:
        return staging_path(self.out)


def staging_path(out: Path) -> Path:
    return out.with_name(out.name + STAGING_SUFFIX)


def plan_growth(out: Path, old: dict, s: ExtractSetup, config: ExtractConfig,
                other_differences: list[str]) -> GrowPlan | None:
    """None unless the run's attrs ``old`` differ from the asked ``s.attrs`` in layers
    only; then the layers to add, or [] when every asked layer is in the run. Raises
    RunError for a layer of the run asked with another shape, and for a run whose
    extraction is not complete (it would have to be finished first)."""
    have = list(old.get("layers") or [])
    if other_differences or set(have) == set(config.layers):
        return None
    shapes = old.get("layer_shapes") or {}
    changed = [n for n in config.layers if n in shapes
               and list(shapes[n]) != list(s.attrs["layer_shapes"][n])]
    if changed:
        return None                       # a shape change: reported as a difference
    if not is_complete(out):
        raise RunError(
            f"--out {out}: its extraction of layers {have} is not complete; finish it "
            f"first (rerun it with --layers {','.join(have)}), then add layers")
    return GrowPlan(out, [n for n in config.layers if n not in have], old)


def grow(plan: GrowPlan, config: ExtractConfig, extract: Callable, log: Log):
    """Extract ``plan.new_layers`` into the staging run with ``extract`` (pipeline.extract's
    extract_with_stats), then move them into the run. Returns extract's stats (path: the
    run) or None when nothing was to be added."""
    if not plan.new_layers:
        return None
    out = plan.out
    moved = [n for n in plan.new_layers if (out / "layers" / layer_node(n)).exists()]
    stats = None
    if not moved:
        log(f"{out}: adding layer(s) {', '.join(plan.new_layers)} (the run keeps "
            f"{', '.join(plan.old_attrs['layers'])}); staging them in {plan.staging}")
        sub = replace(config, layers=list(plan.new_layers), out=plan.staging,
                      batch_size=int(plan.old_attrs["block_images"]),
                      compression=str(plan.old_attrs.get("compression", config.compression)),
                      overwrite=False, repair=False)
        stats = extract(sub, log)
    elif not (plan.staging / "zarr.json").is_file() and len(moved) < len(plan.new_layers):
        raise RunError(f"--out {out}: layer node(s) of {moved} are in the run but not in its "
                       f"attributes, and the staging run {plan.staging} is gone; remove "
                       f"those nodes under {out / 'layers'} and rerun")
    _move_in(plan, log)
    if stats is not None:
        stats.path = out
    return stats


def _move_in(plan: GrowPlan, log: Log) -> None:
    """Move the staged layer nodes into the run, then record them in its attrs."""
    out, staging = plan.out, plan.staging
    staged = (staging / "zarr.json").is_file()
    for n in plan.new_layers:
        src, dst = staging / "layers" / layer_node(n), out / "layers" / layer_node(n)
        if not dst.exists():
            if not staged or not is_complete(staging):
                raise RunError(f"{staging}: the staging run of layer {n!r} is incomplete; "
                               f"rerun the same command")
            src.rename(dst)
    group = zarr.open_group(out, mode="r+")
    shapes = dict(plan.old_attrs["layer_shapes"])
    nodes = dict(plan.old_attrs.get("layer_nodes") or {})
    for n in plan.new_layers:
        info = zarr.open_group(out / "layers" / layer_node(n), mode="r").attrs
        shapes[n], nodes[n] = [int(v) for v in info["shape"]], layer_node(n)
    digests = dict(plan.old_attrs.get(metadata.DIGESTS) or {})
    prefixes = tuple(f"layers/{layer_node(n)}" for n in plan.new_layers)
    digests.update({k: v for k, v in metadata.node_digests(group.store).items()
                    if k in prefixes or k.startswith(tuple(p + "/" for p in prefixes))})
    layers = list(plan.old_attrs["layers"]) + list(plan.new_layers)
    metadata.update_root_attrs(group, {"layers": layers, "layer_nodes": nodes,
                                       "layer_shapes": shapes, metadata.DIGESTS: digests})
    if staging.exists():
        shutil.rmtree(staging)
        log(f"removed the staging run {staging} (its layers are now in {out})")
    log(f"{out}: layers {', '.join(layers)}")

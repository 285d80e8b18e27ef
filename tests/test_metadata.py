"""Metadata integrity (cache/metadata.py): every zarr.json of a run and a label cache is
digested when its layout is sealed and the root attrs have a second copy, so a truncated
or edited file is named with the repair command, and the repair lays it out again
byte for byte; stored thresholds and cubes carry their own digest and are recomputed
when it no longer matches."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from cache import integrity, metadata, store
from cache.cube import read_cube, read_thresholds
from cache.labels import LabelCache
import scoring_fixtures as sf


def edit_json(path: Path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta, indent=2))


@pytest.fixture()
def run(tiny_run, tmp_path) -> Path:
    return sf.copy_fresh(tiny_run, tmp_path / "run")


def test_sealed_run_records_every_node_and_a_copy_of_its_root(run):
    attrs = store.read_run_attrs(run)
    copy = json.loads((run / metadata.COPY_NAME).read_text())
    assert copy["attrs"] == attrs and copy["sha256"] == metadata.sha256(attrs)
    assert set(attrs[metadata.DIGESTS]) == {
        "layers", "progress", "image_files", *(f"layers/{n}{a}" for n in sf.LAYERS
                                for a in ("", "/activations", "/maxima"))}


def test_edited_array_dtype_is_named_and_repaired_byte_for_byte(run):
    f = run / "layers" / "features.3" / "activations" / "zarr.json"
    before = f.read_bytes()
    edit_json(f, lambda m: m.update(data_type="float32"))          # valid, but wrong
    with pytest.raises(metadata.MetadataError) as e:
        store.open_run(run)
    msg = str(e.value)
    assert f"{f}: metadata changed after writing" in msg
    assert "scripts/extract.py --dataset" in msg and f"--out {run} --repair" in msg
    assert [d.file for d in integrity.repair_run_metadata(run, log=lambda m: None)] == [str(f)]
    assert f.read_bytes() == before
    store.open_run(run)


def test_truncated_root_is_restored_from_the_copy(run):
    f = run / "zarr.json"
    attrs = store.read_run_attrs(run)
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(metadata.MetadataError, match=r"zarr.json: is not valid JSON"):
        store.open_run(run)
    integrity.repair_run_metadata(run, log=lambda m: None)
    assert store.read_run_attrs(run) == attrs


def test_edited_root_attrs_and_damaged_copy_are_named(run):
    g = zarr.open_group(run, mode="r+")
    g.attrs["dtype"] = "float32"
    with pytest.raises(metadata.MetadataError, match=r"attributes changed after writing "
                                                     r"\(dtype differ"):
        store.open_run(run)
    integrity.repair_run_metadata(run, log=lambda m: None)
    assert store.read_run_attrs(run)["dtype"] == "float16"
    edit_json(run / metadata.COPY_NAME, lambda m: m["attrs"].update(dtype="float32"))
    with pytest.raises(metadata.MetadataError, match=r"attrs-copy.json: does not match its "
                                                     r"own sha256"):
        store.open_run(run)
    integrity.repair_run_metadata(run, log=lambda m: None)
    assert metadata.find_damage(metadata.open_store(run))[0] == []


def test_edited_primary_category_of_a_label_cache_is_named_and_repaired(tiny_labels,
                                                                        tiny_data, tmp_path):
    path = tmp_path / "labels.zarr"
    shutil.copytree(tiny_labels.path, path)
    f = path / "zarr.json"
    before = json.loads(f.read_text())["attributes"]

    def change(m):
        m["attributes"]["primary_category"][1] = 1 - m["attributes"]["primary_category"][1]
    edit_json(f, change)
    with pytest.raises(metadata.MetadataError) as e:
        LabelCache.open(path)
    assert f"{f}: attributes changed after writing (primary_category differ" in str(e.value)
    assert "scripts/cache_labels.py --dataset" in str(e.value) and "--repair" in str(e.value)
    integrity.repair_label_metadata(path, log=lambda m: None)
    # restored as laid out (not complete): the build's resume finishes it
    assert json.loads(f.read_text())["attributes"] == dict(before, complete=False)
    cache = sf.make_labels(tiny_data, path)
    assert cache.attrs == before
    for name in ("planes", "scalars", "present", "label_pixels"):
        np.testing.assert_array_equal(cache.group[name][:], tiny_labels.group[name][:])


def test_edited_cube_levels_and_threshold_dtype_are_recomputed_with_a_note(run, tiny_labels):
    cube = sf.score_library(run, tiny_labels)
    layer = store.layer_group(run, "features.3")
    from pipeline.layer_stages import cube_source, layer_source
    src = cube_source(run, "features.3", tiny_labels)
    assert read_cube(layer, src) is not None
    f = run / "layers" / "features.3" / "cube" / "zarr.json"
    edit_json(f, lambda m: m["attributes"].update(levels=[0.005, 0.03]))
    notes = []
    assert read_cube(store.layer_group(run, "features.3"), src, notes.append) is None
    assert notes == [f"note: {f.parent}: metadata changed after writing (or stored before "
                     f"digests); recomputing it"]
    t = run / "layers" / "features.3" / "quantiles" / "thresholds" / "zarr.json"
    edit_json(t, lambda m: m.update(data_type="float32"))
    assert read_thresholds(layer, layer_source(run, "features.3"), notes.append) is None
    assert "quantiles: " in notes[-1] and "recomputing it" in notes[-1]
    again = sf.score_library(run, tiny_labels)          # recomputed, the same numbers
    np.testing.assert_array_equal(again.intersect, cube.intersect)
    assert read_cube(store.layer_group(run, "features.3"), src) is not None

"""A changed image or label PNG makes what was computed from it stale (pipeline/dataset_files.py):
the records (stamp, digest) themselves, a label PNG changed after scoring (its chunk is
decoded again and the cube recomputed), an image changed after extraction (scoring
refuses, extract.py --repair re-extracts its block), and a touch that keeps the bytes.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cache import store
from cache.labels import LabelCache
from pipeline.broden import BrodenDataset
from pipeline.dataset_files import find_changes, image_files, label_files, records
from pipeline.layer_stages import ScoreConfig
from pipeline.stages import score_run
import scoring_fixtures as sf


def _score(run: Path, labels: Path, log=None):
    """score_run of both layers at the small levels; returns the log lines."""
    lines: list[str] = []
    score_run(run, ScoreConfig(levels=sf.LEVELS, progress=False), label_cache=labels,
              log=log or lines.append)
    return lines


def _copy_data(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)          # copy2: sizes and mtimes kept
    return dest


def _scored_copy(tiny_data: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(dataset, run, label cache): a copy of the tiny dataset, its run and label cache
    (chunks of 8 images), scored once."""
    data = _copy_data(tiny_data, tmp_path / "broden")
    run = sf.make_run(data, tmp_path / "run")
    lab = tmp_path / "labels.zarr"
    sf.make_labels(data, lab, chunk_images=8)
    _score(run, lab)
    return data, run, lab


def _replace_keeping_mtime(path: Path, data: bytes) -> None:
    st = os.stat(path)
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_records_see_content_not_touches(tiny_data, tmp_path):
    data = _copy_data(tiny_data, tmp_path / "broden")
    ds = BrodenDataset(data)
    rows = range(len(ds))
    labels, images = records(ds, rows, label_files), records(ds, rows, image_files)
    assert labels.shape == (len(ds), 32) and labels.dtype == np.uint8
    assert not find_changes(ds, labels, label_files).stale
    png = data / "images" / label_files(ds, 4)[0]
    jpg = data / "images" / image_files(ds, 7)[0]

    os.utime(png, ns=(1, 10**18))                       # a touch: same bytes
    c = find_changes(ds, labels, label_files)
    assert c.stale == [] and list(c.restamped) == [4]

    png.write_bytes((data / "images" / label_files(ds, 5)[0]).read_bytes())
    c = find_changes(ds, labels, label_files)
    assert c.stale == [4] and c.first == label_files(ds, 4) and c.checked == len(ds)
    assert "row 5 of index.csv" in c.describe("label PNGs")

    # rewritten with its old size and mtime: only a full hash sees it
    other = (data / "images" / image_files(ds, 8)[0]).read_bytes()
    _replace_keeping_mtime(jpg, other[:jpg.stat().st_size].ljust(jpg.stat().st_size, b"\0"))
    assert find_changes(ds, images, image_files).stale == []
    assert find_changes(ds, images, image_files, full=True).stale == [7]

    jpg.unlink()
    assert find_changes(ds, images, image_files).stale == [7]


def test_changed_label_png_is_decoded_again_and_the_cube_recomputed(tiny_data, tmp_path):
    data, run, lab = _scored_copy(tiny_data, tmp_path)
    before = sf.stored_cube(run)

    ds = BrodenDataset(data)
    row = next(i for i in range(9, len(ds)) if label_files(ds, i))      # in chunk 1
    donor = next(i for i in range(len(ds)) if i != row and label_files(ds, i))
    target = data / "images" / label_files(ds, row)[0]
    target.write_bytes((data / "images" / label_files(ds, donor)[0]).read_bytes())

    lines = _score(run, lab)
    text = "\n".join(lines)
    assert f"row {row + 1} of index.csv" in text and label_files(ds, row)[0] in text
    assert "decoding label chunk(s) [1] again" in text
    after = sf.stored_cube(run)

    # the reference: a fresh label cache of the changed dataset, a never-scored copy
    ref_run = sf.copy_fresh(run, tmp_path / "ref_run")
    ref_lab = tmp_path / "ref_labels.zarr"
    sf.make_labels(data, ref_lab, chunk_images=8)
    _score(ref_run, ref_lab)
    sf.assert_cubes_equal(after, sf.stored_cube(ref_run))
    for name in ("planes", "label_files", "chunk_label_pixels"):
        np.testing.assert_array_equal(LabelCache.open(lab).group[name][:],
                                      LabelCache.open(ref_lab).group[name][:], err_msg=name)
    assert not np.array_equal(before["intersect"], after["intersect"])

    # a third scoring finds nothing changed: nothing decoded, the cube reused as is
    lines = _score(run, lab)
    assert not any("again" in line for line in lines)
    sf.assert_cubes_equal(after, sf.stored_cube(run))


def test_touched_files_are_not_stale_and_their_stamps_refreshed(tiny_data, tmp_path):
    data, run, lab = _scored_copy(tiny_data, tmp_path)
    before = sf.stored_cube(run)
    ds = BrodenDataset(data)
    for i in range(len(ds)):                            # every file touched
        for name in label_files(ds, i) + image_files(ds, i):
            os.utime(data / "images" / name, ns=(1, 10**18 + i))
    lines = _score(run, lab)
    assert not any("again" in line or "stale" in line for line in lines), lines
    sf.assert_cubes_equal(before, sf.stored_cube(run))
    # the stamps were refreshed: nothing differs any more, not even a stamp
    assert not find_changes(ds, LabelCache.open(lab).file_records(), label_files).restamped
    assert not find_changes(ds, store.image_records(run), image_files).restamped


def test_changed_image_refuses_scoring_until_repaired(tiny_data, tmp_path):
    data, run, lab = _scored_copy(tiny_data, tmp_path)
    acts_before = np.asarray(store.activations(run, "features.3")[:])

    ds = BrodenDataset(data)
    row = 19                                            # block 2 of 8-image blocks
    jpg = data / "images" / image_files(ds, row)[0]
    jpg.write_bytes((data / "images" / image_files(ds, 3)[0]).read_bytes())
    with pytest.raises(store.RunError) as e:
        _score(run, lab)
    msg = str(e.value)
    assert f"row {row + 1} of index.csv" in msg and image_files(ds, row)[0] in msg
    assert "block(s) [2] are stale" in msg and "--repair" in msg

    lines: list[str] = []
    from pipeline.extract import extract
    from pipeline.extract_config import ExtractConfig
    extract(ExtractConfig(dataset=data, model=sf.TINY, layers=sf.LAYERS, out=run,
                          input_size=(26, 26), batch_size=8, workers=0, progress=False,
                          repair=True), log=lines.append)
    assert any("re-extracting block(s) [2]" in line for line in lines), lines
    _score(run, lab)

    fresh = sf.make_run(data, tmp_path / "fresh")
    _score(fresh, lab)
    for layer in sf.LAYERS:
        np.testing.assert_array_equal(store.activations(run, layer)[:],
                                      store.activations(fresh, layer)[:])
        np.testing.assert_array_equal(store.image_records(run)[:, 16:],
                                      store.image_records(fresh)[:, 16:])
        sf.assert_cubes_equal(sf.stored_cube(run, layer), sf.stored_cube(fresh, layer))
    assert not np.array_equal(acts_before[row], store.activations(run, "features.3")[row])


def test_cache_labels_on_a_complete_cache_decodes_changed_pngs(tiny_data, tmp_path):
    from pipeline.label_decoding import build_label_cache
    data = _copy_data(tiny_data, tmp_path / "broden")
    lab = tmp_path / "labels.zarr"
    sf.make_labels(data, lab, chunk_images=8)
    ds = BrodenDataset(data)
    row = next(i for i in range(len(ds)) if label_files(ds, i))
    donor = next(i for i in range(row + 1, len(ds)) if label_files(ds, i))
    (data / "images" / label_files(ds, row)[0]).write_bytes(
        (data / "images" / label_files(ds, donor)[0]).read_bytes())
    lines: list[str] = []
    build_label_cache(ds, lab, chunk_images=8, workers=1, progress=False, log=lines.append)
    assert any(f"decoding label chunk(s) [{row // 8}] again" in line for line in lines), lines
    ref = sf.make_labels(data, tmp_path / "ref.zarr", chunk_images=8)
    for name in ("planes", "scalars", "present", "label_pixels", "label_files"):
        np.testing.assert_array_equal(LabelCache.open(lab).group[name][:],
                                      ref.group[name][:], err_msg=name)


def test_verify_names_changed_files_and_full_hashes_everything(tiny_data, tmp_path):
    from pipeline.verify import verify_run
    data, run, lab = _scored_copy(tiny_data, tmp_path)
    assert verify_run(run, str(lab))[0] == []
    ds = BrodenDataset(data)
    jpg = data / "images" / image_files(ds, 3)[0]
    same = jpg.read_bytes()
    _replace_keeping_mtime(jpg, bytes(reversed(same)))       # same size and mtime
    assert verify_run(run, str(lab))[0] == []                # the stat check cannot see it
    found, notes = verify_run(run, str(lab), full=True)
    assert [f.what for f in found] == [f"{run}/image_files"], found
    assert found[0].state == "stale" and "row 4 of index.csv" in found[0].problem
    assert "--repair" in found[0].fix and any("every file hashed" in n for n in notes)

    jpg.write_bytes(same)
    row = next(i for i in range(len(ds)) if label_files(ds, i))
    (data / "images" / label_files(ds, row)[0]).write_bytes(b"not the same")
    found, _ = verify_run(run, str(lab))
    assert [f.what for f in found] == [f"{lab}/label_files"], found
    assert "scripts/cache_labels.py" in found[0].fix

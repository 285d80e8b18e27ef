"""Replay of the caches through the kernel: tiles counted in worker processes equal the
threaded and in-process counts exactly; the choice between them; bad --workers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from cache import store
from pipeline.replay import replay_cube, shareable

LAYER = "features.3"


@pytest.fixture(scope="module")
def setup(tiny_run, tiny_labels):
    run, labels = tiny_run, tiny_labels
    acts = store.activations(run, LAYER)
    a = np.asarray(acts[:], np.float64).transpose(1, 0, 2, 3).reshape(acts.shape[1], -1)
    T = np.quantile(a, [0.995, 0.95, 0.8], axis=1)
    return {"run": run, "labels": labels, "acts": acts, "maxima": store.maxima(run, LAYER),
            "T": T}


def replay(setup, **kw):
    return replay_cube(setup["acts"], setup["maxima"], setup["labels"], [0.005, 0.05, 0.2],
                       setup["T"], device="cpu", progress=False, **kw)


@pytest.mark.slow
def test_processes_equal_threads_and_one_worker(setup):
    """Odd tiles (7 images, across the 8-image chunks) in 2 processes, 2 threads, 1."""
    want = replay(setup, workers=1, processes=False)
    assert want.intersect.sum() > 0 and want.activation.sum() > 0
    for kw in ({"workers": 2, "processes": False, "tile_images": 7},
               {"workers": 2, "processes": True, "tile_images": 7},
               {"workers": 3, "processes": True, "tile_images": 4}):
        got = replay(setup, **kw)
        for name in ("intersect", "activation", "label_pixels", "thresholds"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name),
                                          err_msg=f"{name} {kw}")


def test_only_stores_other_processes_can_open_are_shared(setup):
    assert shareable(setup["acts"], setup["maxima"], setup["labels"].planes)
    mem = zarr.create_array(zarr.storage.MemoryStore(), shape=(4,), dtype="f4")
    assert not shareable(setup["acts"], mem)


def test_bad_workers_are_refused(setup):
    with pytest.raises(ValueError, match="--workers must be at least 1, got 0"):
        replay(setup, workers=0)
    with pytest.raises(ValueError, match="worker processes count on CPU only"):
        replay_cube(setup["acts"], setup["maxima"], setup["labels"], [0.005], setup["T"][:1],
                    device=torch.device("meta"), processes=True, progress=False)


@pytest.mark.slow
def test_small_caches_use_threads_unless_workers_are_asked_for(setup, monkeypatch):
    """Processes take seconds to start: by default only caches of PROCESS_MIN_VALUES
    values or more use them; an explicit workers=N does whatever the size."""
    import pipeline.replay as replay_mod
    started = []
    real = replay_mod.ProcessPoolExecutor

    def recording(*a, **k):
        started.append(a[0] if a else k.get("max_workers"))
        return real(*a, **k)
    monkeypatch.setattr(replay_mod, "ProcessPoolExecutor", recording)
    assert np.prod(setup["acts"].shape) < replay_mod.PROCESS_MIN_VALUES
    want = replay(setup, tile_images=4)
    assert started == []
    got = replay(setup, tile_images=4, workers=2)
    assert started == [2]
    np.testing.assert_array_equal(got.intersect, want.intersect)
    replay(setup, tile_images=4, workers=2, processes=False)
    assert started == [2]


CUBE_FIELDS = ("intersect", "activation", "label_pixels", "thresholds")


def _checkpoint(tmp_path, key=None):
    from cache.cube import TallyCheckpoint
    group = zarr.open_group(str(tmp_path / "layer"), mode="a")
    return TallyCheckpoint(group, key or {"what": "test"}, every=0, log=lambda m: None)


def _stop_after(monkeypatch, n: int) -> list:
    """count_tile raises KeyboardInterrupt on its (n + 1)-th call; returns the starts of
    the calls made."""
    import pipeline.replay as rp
    real, calls = rp.count_tile, []

    def counting(acts, maxima, labels, thr, start, stop):
        calls.append(start)
        if len(calls) > n:
            raise KeyboardInterrupt
        return real(acts, maxima, labels, thr, start, stop)
    monkeypatch.setattr(rp, "count_tile", counting)
    return calls


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_replay_resumes_from_its_checkpoint_bit_identical(setup, tmp_path,
                                                                      monkeypatch, workers):
    """Stopped after some tiles (Ctrl-C), a replay with the same checkpoint counts only
    the other tiles and ends with the uninterrupted cube."""
    want = replay(setup, workers=1, processes=False, tile_images=4)        # 8 tiles
    calls = _stop_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        replay(setup, workers=workers, processes=False, tile_images=4,
               checkpoint=_checkpoint(tmp_path))
    monkeypatch.undo()
    kept = _checkpoint(tmp_path).load()[1]          # the tiles merged before the stop
    assert 1 <= len(kept) <= 3          # (a tile finishing with the failing one may not be)
    calls = _stop_after(monkeypatch, 100)
    said = []
    got = replay(setup, workers=workers, processes=False, tile_images=4,
                 checkpoint=_checkpoint(tmp_path), log=said.append)
    assert sorted(calls) == [s for s in range(0, 32, 4) if s not in kept]
    assert said and f"{len(kept)} of 8 tiles ({4 * len(kept)} images)" in said[0]
    for name in CUBE_FIELDS:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def test_checkpoint_of_other_counts_or_a_torn_slot_is_not_used(setup, tmp_path, monkeypatch):
    want = replay(setup, workers=1, processes=False, tile_images=4)
    _stop_after(monkeypatch, 5)             # a save after each tile merged: slots a, b
    with pytest.raises(KeyboardInterrupt):
        replay(setup, workers=1, processes=False, tile_images=4,
               checkpoint=_checkpoint(tmp_path))
    monkeypatch.undo()
    group = zarr.open_group(str(tmp_path / "layer"), mode="a")
    slots = {s: dict(group[f"tally_partial/{s}"].attrs) for s in "ab"}
    newest = max(slots, key=lambda s: slots[s]["seq"])
    other = "ab"[("ab".index(newest) + 1) % 2]
    n = len(slots[other]["done"])
    assert len(slots[newest]["done"]) == n + 1 and n >= 3
    group[f"tally_partial/{newest}"].attrs["key"] = None     # killed while writing it
    calls = _stop_after(monkeypatch, 100)
    said = []
    got = replay(setup, workers=1, processes=False, tile_images=4,
                 checkpoint=_checkpoint(tmp_path), log=said.append)
    assert len(calls) == 8 - n and f"{n} of 8 tiles" in said[0]
    for name in CUBE_FIELDS:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    monkeypatch.undo()
    calls = _stop_after(monkeypatch, 100)           # another key: counted from the start
    replay(setup, workers=1, processes=False, tile_images=4,
           checkpoint=_checkpoint(tmp_path, key={"what": "other"}))
    assert len(calls) == 8

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

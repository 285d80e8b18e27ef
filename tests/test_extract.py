"""Extraction into a run: values, resume after kill -9, reruns, refusals, locks, inputs.

(kill -9 of an extraction with DataLoader workers, at many moments: tests/test_kill_resume.py.)
"""
from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clirun import cli, kill9, reap, start
from cache import store
from cache.activations import chunk_shape
from cache.store import RunError, RunLock, RunLockedError
from pipeline import benchmark
from pipeline import extract as ex
from pipeline import preprocess
from pipeline.broden import BrodenDataset
from pipeline.extract import extract, extract_with_stats
from pipeline.extract_config import ExtractConfig, ExtractError
from pipeline.models.demo import DemoCNN, save_demo_checkpoint
from pipeline.models.errors import LayerError

ROOT = Path(__file__).resolve().parents[1]
FACTORIES = Path(__file__).with_name("model_factories.py")
TINY = f"{FACTORIES}:tiny_net"
TINY_LAYERS = ["features.0", "features.2"]


def cfg(dataset, out, **kw) -> ExtractConfig:
    base = dict(model=TINY, layers=TINY_LAYERS, batch_size=4, workers=0, progress=False)
    base.update(kw)
    return ExtractConfig(dataset=dataset, out=out, **base)


def arrays(run) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    store.check_complete(run)
    return {n: (np.asarray(store.activations(run, n)[:]), np.asarray(store.maxima(run, n)[:]))
            for n in store.layer_names(run)}


def assert_runs_identical(a, b) -> None:
    A, B = arrays(a), arrays(b)
    assert A.keys() == B.keys()
    for n in A:
        assert A[n][0].dtype == B[n][0].dtype
        assert np.array_equal(A[n][0], B[n][0]), n          # bit-identical (no NaN here)
        assert np.array_equal(A[n][1], B[n][1]), n


def quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="session")
def demo_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("ckpt") / "demo_random.pt"
    save_demo_checkpoint(path, DemoCNN().eval())
    return path


@pytest.fixture(scope="session")
def reference_run(small_broden, tmp_path_factory) -> Path:
    """tiny_net, all 24 images, batch 2: the uninterrupted run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    extract(cfg(small_broden, out, batch_size=2), log=quiet)
    return out


def direct_forward(model, ds, n, prep, layers, batch):
    """The layers' float32 outputs of a plain forward pass, in the same batches."""
    outs = {l: [] for l in layers}
    mods = dict(model.named_modules())
    for s in range(0, n, batch):
        px = torch.from_numpy(np.stack([ds.load_image(i) for i in range(s, min(s + batch, n))]))
        got = {}
        hs = [mods[l].register_forward_hook(lambda m, i, o, l=l: got.__setitem__(l, o.clone()))
              for l in layers]
        with torch.no_grad():
            model(preprocess.to_model_input(px, prep))
        for h in hs:
            h.remove()
        for l in layers:
            outs[l].append(got[l])
    return {l: torch.cat(v).numpy() for l, v in outs.items()}


# ---------------------------------------------------------------------- values
def test_cache_equals_direct_forward_and_maxima(small_broden, demo_ckpt, tmp_path):
    out = tmp_path / "run"
    c = cfg(small_broden, out, model="demo", weights=str(demo_ckpt), layers=["conv1", "conv5"],
            batch_size=8, limit=20, workers=1)
    assert extract(c, log=quiet) == out
    attrs = store.read_run_attrs(out)
    ds = BrodenDataset(small_broden)
    assert attrs["dataset"]["num_images"] == 20
    assert attrs["dataset"]["fingerprint"] == ds.fingerprint()
    assert attrs["layers"] == ["conv1", "conv5"] and attrs["dtype"] == "float16"
    from pipeline.models.checkpoints import model_fingerprint
    from pipeline.models.sources import load_model
    model = load_model("demo", demo_ckpt)
    assert attrs["model"]["fingerprint"] == model_fingerprint(model)
    prep = preprocess.Preprocessing((64, 64))
    want = direct_forward(model, ds, 20, prep, ["conv1.relu", "conv5.relu"], 8)
    for layer, ref in (("conv1", want["conv1.relu"]), ("conv5", want["conv5.relu"])):
        acts = store.activations(out, layer)
        assert acts.dtype == np.float16 and acts.shape == ref.shape
        got = np.asarray(acts[:])
        # float16 rounding of the same float32 values (same batches, same kernels)
        np.testing.assert_allclose(got.astype(np.float32), ref, rtol=2 ** -10, atol=2 ** -24)
        assert np.mean(got == ref.astype(np.float16)) > 0.999
        mx = np.asarray(store.maxima(out, layer)[:])
        assert mx.dtype == np.float32 and mx.shape == ref.shape[:2]
        assert np.array_equal(mx, got.astype(np.float32).max(axis=(2, 3)))
        assert (got >= 0).all() and (got > 0).any()          # post-ReLU maps
        # chunks never straddle two blocks of 8 images
        assert 8 % acts.chunks[0] == 0


def test_float32_and_dotted_layer_names(small_broden, tmp_path):
    out = tmp_path / "run"
    extract(cfg(small_broden, out, dtype="float32", limit=6), log=quiet)
    assert store.layer_names(out) == TINY_LAYERS
    assert (out / "layers" / "features.0" / "activations" / "zarr.json").is_file()
    from pipeline.models.sources import load_model
    model = load_model(TINY)
    ds = BrodenDataset(small_broden)
    want = direct_forward(model, ds, 6, preprocess.Preprocessing((64, 64)), ["features.1"], 4)
    got = np.asarray(store.activations(out, "features.0")[:])
    assert got.dtype == np.float32
    # features.0 is hooked before the in-place ReLU: the cache must hold pre-ReLU values
    assert (got < 0).any()
    np.testing.assert_allclose(np.maximum(got, 0), want["features.1"], rtol=1e-6, atol=1e-6)


def test_all_zero_chunks_are_written(small_broden, tmp_path):
    """Dead units give all-zero chunks; they must exist on disk like any other chunk."""
    out = tmp_path / "run"
    extract(cfg(small_broden, out, model=f"{FACTORIES}:dead_units", layers=["dead"],
                limit=10), log=quiet)
    acts = store.activations(out, "dead")
    assert not np.asarray(acts[:]).any()
    n_chunks = int(np.prod([-(-s // c) for s, c in zip(acts.shape, acts.chunks)]))
    files = [p for p in (out / "layers" / "dead" / "activations" / "c").rglob("*")
             if p.is_file()]
    assert len(files) == n_chunks == 3
    assert len([p for p in (out / "layers" / "dead" / "maxima" / "c").rglob("*")
                if p.is_file()]) == 3


def test_chunk_shapes_align_with_blocks():
    for K, h, w, block in [(32, 56, 56, 32), (512, 7, 7, 64), (64, 224, 224, 64), (3, 5, 5, 7)]:
        n, k, hh, ww = chunk_shape(K, h, w, 2, block)
        assert block % n == 0 and 1 <= k <= K and (hh, ww) == (h, w)
        assert n * k * h * w * 2 <= max(2 << 20, h * w * 2)


# ---------------------------------------------------------------------- resume
@pytest.mark.slow
def test_resume_after_kill9_is_bit_identical_and_lock_refuses(small_broden, reference_run,
                                                               tmp_path, monkeypatch):
    out = tmp_path / "run"
    env = dict(os.environ, SLOW_NET_SECONDS="0.2", PYTHONPATH=str(ROOT))
    proc = start("scripts/extract.py", "--dataset", small_broden, "--model",
                 f"{FACTORIES}:slow_net", "--layers", ",".join(TINY_LAYERS), "--out", out,
                 "--batch-size", "2", "--workers", "0", "--quiet", env=env,
                 merge_stderr=True)
    try:
        deadline = time.time() + 60
        done_dir = out / "progress" / "c"
        while time.time() < deadline:
            if done_dir.is_dir() and len(list(done_dir.iterdir())) >= 3:
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.02)
        else:
            pytest.fail("the extraction subprocess made no progress")
        # a second extraction into the same run is refused while the first holds it
        with pytest.raises(RunLockedError, match="another extraction"):
            extract(cfg(small_broden, out, model=f"{FACTORIES}:slow_net", batch_size=2),
                    log=quiet)
        kill9(proc)
    finally:
        reap(proc)
    done, total = store.progress(out)
    assert 3 <= done < total == 12
    with pytest.raises(RunError, match="incomplete"):
        store.check_complete(out)
    messages = []
    monkeypatch.setenv("SLOW_NET_SECONDS", "0")
    st = extract_with_stats(cfg(small_broden, out, model=f"{FACTORIES}:slow_net",
                                batch_size=2), log=messages.append)
    assert st.status == "resumed" and st.blocks_before >= 3
    assert st.images == 24 - 2 * st.blocks_before
    assert any("resuming" in m for m in messages)
    assert_runs_identical(out, reference_run)


@pytest.mark.slow
def test_ctrl_c_in_the_script_leaves_resumable_cache(small_broden, reference_run, tmp_path,
                                                     monkeypatch):
    out = tmp_path / "run"
    env = dict(os.environ, SLOW_NET_SECONDS="0.2", PYTHONPATH=str(ROOT))
    proc = start("scripts/extract.py", "--dataset", small_broden, "--model",
                 f"{FACTORIES}:slow_net", "--layers", ",".join(TINY_LAYERS), "--out", out,
                 "--batch-size", "2", "--workers", "1", "--quiet", env=env)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if (out / "progress" / "c").is_dir() and len(list((out / "progress" / "c").iterdir())) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "rerun the same command to resume" in stdout
    assert "Traceback" not in stderr
    done, total = store.progress(out)
    assert 2 <= done < total
    monkeypatch.setenv("SLOW_NET_SECONDS", "0")
    st = extract_with_stats(cfg(small_broden, out, model=f"{FACTORIES}:slow_net",
                                batch_size=2), log=quiet)
    assert st.status == "resumed"
    assert_runs_identical(out, reference_run)


def test_rerun_of_complete_cache_does_nothing(small_broden, reference_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()
             and p.name != ".lock"}
    messages = []
    st = extract_with_stats(cfg(small_broden, out, batch_size=2), log=messages.append)
    assert st.status == "complete" and st.images == 0
    assert any("complete" in m and "nothing to do" in m for m in messages)
    assert {p: p.stat().st_mtime_ns for p in files} == files
    # through the script as well
    r = cli("scripts/extract.py", "--dataset", small_broden, "--model", TINY, "--layers",
            ",".join(TINY_LAYERS), "--out", out, "--workers", "0", check=False)
    assert r.returncode == 0, r.stderr
    assert "nothing to do" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in files} == files


def test_keyboard_interrupt_leaves_resumable_cache(small_broden, reference_run, tmp_path,
                                                   monkeypatch):
    out = tmp_path / "run"
    real = ex.to_model_input
    calls = {"n": 0}

    def interrupting(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(ex, "to_model_input", interrupting)
    messages = []
    with pytest.raises(ex.ExtractInterrupted):
        extract(cfg(small_broden, out, batch_size=2), log=messages.append)
    assert any("rerun the same command to resume" in m for m in messages)
    assert store.progress(out) == (3, 12)          # the 3 computed blocks were written
    monkeypatch.setattr(ex, "to_model_input", real)
    messages = []      # another --batch-size on resume: the run's block size is kept
    st = extract_with_stats(cfg(small_broden, out, batch_size=8), log=messages.append)
    assert st.status == "resumed" and st.images == 18
    assert any("block size 2" in m for m in messages)
    assert_runs_identical(out, reference_run)


def test_write_error_is_clear_and_resumable(small_broden, reference_run, tmp_path,
                                            monkeypatch):
    out = tmp_path / "run"
    import cache.activations as ca
    real = ca.BlockWriter.write

    def failing(self, b, *a, **k):
        if b == 5:
            raise OSError(28, "No space left on device")
        return real(self, b, *a, **k)
    monkeypatch.setattr(ca.BlockWriter, "write", failing)
    with pytest.raises(ExtractError, match="No space left on device.*rerun the same command"):
        extract(cfg(small_broden, out, batch_size=2), log=quiet)
    done, total = store.progress(out)
    assert done < total
    monkeypatch.setattr(ca.BlockWriter, "write", real)
    st = extract_with_stats(cfg(small_broden, out, batch_size=2), log=quiet)
    assert st.status == "resumed"
    assert_runs_identical(out, reference_run)


def test_bad_image_names_file_and_keeps_cache(small_broden, tmp_path):
    ds_dir = tmp_path / "broden"
    shutil.copytree(small_broden, ds_dir)
    bad = BrodenDataset(ds_dir).image_path(10)
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ExtractError, match=f"(?s){bad.name}.*row 11.*rerun the same command"):
        extract(cfg(ds_dir, tmp_path / "run"), log=quiet)
    assert store.progress(tmp_path / "run") == (2, 6)   # blocks before image 10 are kept


# -------------------------------------------------------------------- refusals
def test_mismatched_cache_refused_unless_overwrite(small_broden, reference_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    from pipeline.models.sources import load_model
    model = load_model(TINY)
    sd = {k: v + 0.01 for k, v in model.state_dict().items()}
    other_weights = tmp_path / "other.pt"
    torch.save(sd, other_weights)
    other_ds = tmp_path / "other_broden"
    shutil.copytree(small_broden, other_ds)
    text = (other_ds / "index.csv").read_text()
    assert ",train," in text
    (other_ds / "index.csv").write_text(text.replace(",train,", ",val,", 1))
    cases = [
        (dict(weights=str(other_weights)), "model fingerprint"),
        (dict(layers=["features.2"], limit=20), "number of images"),   # no growth then
        (dict(limit=20), "number of images"),
        (dict(dataset=other_ds), "dataset fingerprint"),
        (dict(bgr=True), "preprocessing bgr"),
        (dict(dtype="float32"), "dtype"),
        (dict(input_size=(48, 48)), "preprocessing input_size"),
    ]
    for kw, what in cases:
        kw = dict(kw)
        ds = kw.pop("dataset", small_broden)
        with pytest.raises(RunError, match=what) as e:
            extract(cfg(ds, out, batch_size=2, **kw), log=quiet)
        assert "--overwrite" in str(e.value)
    assert_runs_identical(out, reference_run)          # untouched by the refusals
    st = extract_with_stats(cfg(small_broden, out, batch_size=4, weights=str(other_weights),
                                layers=["features.2"], overwrite=True), log=quiet)
    assert st.status == "extracted"
    attrs = store.read_run_attrs(out)
    assert attrs["layers"] == ["features.2"] and attrs["block_images"] == 4
    assert not (out / "layers" / "features.0").exists()
    store.check_complete(out)
    assert not np.array_equal(np.asarray(store.activations(out, "features.2")[:]),
                              arrays(reference_run)["features.2"][0])


def test_overwrite_never_deletes_a_foreign_directory(small_broden, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(RunError, match="not a run"):
            extract(cfg(small_broden, out, overwrite=overwrite), log=quiet)
    assert (out / "precious.txt").read_text() == "keep me"


def test_second_extraction_refused_while_locked(small_broden, tmp_path):
    out = tmp_path / "run"
    with RunLock(out):
        with pytest.raises(RunLockedError, match="another extraction"):
            extract(cfg(small_broden, out), log=quiet)
    extract(cfg(small_broden, out, limit=4), log=quiet)     # lock released: works


# ---------------------------------------------------------------------- layers
def test_unknown_layer_lists_4d_layers(small_broden, tmp_path):
    with pytest.raises(LayerError) as e:
        extract(cfg(small_broden, tmp_path / "run", layers=["features.9"]), log=quiet)
    msg = str(e.value)
    assert "features.9" in msg
    for name in ("features.0 8x64x64", "features.1 8x64x64", "features.2 16x32x32",
                 "features.3 16x32x32", "pool 16x1x1"):
        assert name in msg
    assert "fc " not in msg
    assert not (tmp_path / "run").exists()              # nothing created for a user error


def test_non_4d_layer_error_names_layer_and_shape(small_broden, tmp_path):
    with pytest.raises(LayerError, match=r"'fc'.*\(1, 4\)"):
        extract(cfg(small_broden, tmp_path / "run", layers=["fc"]), log=quiet)


@pytest.mark.slow
def test_script_reports_user_errors_without_traceback(small_broden, tmp_path):
    base = ["scripts/extract.py", "--model", TINY, "--out", tmp_path / "r"]
    r = cli(*base, "--dataset", small_broden, "--layers", "nope", check=False)
    assert r.returncode == 2 and "unknown layer 'nope'" in r.stderr
    assert "Traceback" not in r.stderr and "features.2 16x32x32" in r.stderr
    r = cli(*base, "--dataset", tmp_path / "missing", "--layers", "fc", check=False)
    assert r.returncode == 2 and "missing" in r.stderr and "Traceback" not in r.stderr
    r = cli(*base, "--dataset", small_broden, "--layers", "features.0", "--mean", "1,2",
            check=False)
    assert r.returncode == 2 and "--mean" in r.stderr


# ---------------------------------------------------------------------- inputs
def _pixels(ds_dir, n):
    ds = BrodenDataset(ds_dir)
    return np.stack([ds.load_image(i) for i in range(n)])          # (n, H, W, 3) uint8


def test_mean0_std1_feeds_pixels_over_255_exactly(small_broden, tmp_path):
    out = tmp_path / "run"
    extract(cfg(small_broden, out, model=f"{FACTORIES}:input_probe", layers=["inp"],
                dtype="float32", mean=(0, 0, 0), std=(1, 1, 1), limit=5), log=quiet)
    got = np.asarray(store.activations(out, "inp")[:])
    want = _pixels(small_broden, 5).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_bgr_swaps_channels_and_normalises(small_broden, tmp_path):
    out = tmp_path / "run"
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    extract(cfg(small_broden, out, model=f"{FACTORIES}:input_probe", layers=["inp"],
                dtype="float32", mean=mean, std=std, bgr=True, limit=3), log=quiet)
    got = np.asarray(store.activations(out, "inp")[:])
    px = _pixels(small_broden, 3).astype(np.float32) / np.float32(255)
    for c in range(3):   # model channel c = image channel 2 - c, normalised by its stats
        want = (px[..., 2 - c] - np.float32(mean[2 - c])) / np.float32(std[2 - c])
        np.testing.assert_allclose(got[:, c], want, rtol=1e-6, atol=1e-6)
    assert store.read_run_attrs(out)["preprocessing"]["bgr"] is True


def test_input_size_resizes_with_pil_bilinear(small_broden, tmp_path):
    out = tmp_path / "run"
    extract(cfg(small_broden, out, model=f"{FACTORIES}:input_probe", layers=["inp"],
                dtype="float32", mean=(0, 0, 0), std=(1, 1, 1), input_size=(40, 48),
                limit=2), log=quiet)
    got = np.asarray(store.activations(out, "inp")[:])
    assert got.shape == (2, 3, 40, 48)
    for i, img in enumerate(_pixels(small_broden, 2)):
        r = np.asarray(Image.fromarray(img).resize((48, 40), Image.BILINEAR))
        assert np.array_equal(got[i], r.transpose(2, 0, 1).astype(np.float32) / np.float32(255))
    assert store.read_run_attrs(out)["preprocessing"]["input_size"] == [40, 48]


def test_bare_forward_loop_runs(small_broden):
    rate = benchmark.bare_forward_loop(cfg(small_broden, "unused", limit=8))
    assert rate > 0


@pytest.mark.parametrize("model,dtype,expect", [
    ("tiny_scale", "float16", "stored all zero"),         # ~1e-9 rounds to 0 in float16
    ("dead_units", "float16", "stored all zero"),
    ("tiny_scale", "float32", None),                      # float32 keeps them
    ("tiny_net", "float16", None)])
def test_float16_underflow_warns(small_broden, tmp_path, model, dtype, expect):
    logs: list[str] = []
    layer = {"tiny_scale": "tiny", "dead_units": "dead", "tiny_net": "features.3"}[model]
    extract(cfg(small_broden, tmp_path / "run", model=f"{FACTORIES}:{model}", layers=[layer],
                limit=6, dtype=dtype, input_size=(16, 16)), log=logs.append)
    warned = [m for m in logs if "smallest normal" in m]
    if expect is None:
        assert not warned, warned
    else:
        assert len(warned) == 1 and f"layer {layer!r}" in warned[0] and expect in warned[0]
        assert "--dtype float32 --overwrite" in warned[0]
    if model == "tiny_scale" and dtype == "float32":
        mx = np.asarray(store.maxima(tmp_path / "run", "tiny")[:])
        assert 0 < np.abs(mx).max() < 6.1e-5

"""A run's lifetime: runs that grow (pipeline/extract_grow.py: --layers naming layers a
complete run lacks adds them, bit-identical to extracting them alone, keeping what the run
holds) and --overwrite, which lists what it would delete and needs --yes for more than
the activation cache."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cache import metadata, store
from cache.integrity import check_run_metadata
from cache.store import RunError
from pipeline.extract import extract_with_stats
from pipeline.extract_config import ExtractConfig
from pipeline.extract_grow import staging_path

FACTORIES = Path(__file__).with_name("model_factories.py")
TINY = f"{FACTORIES}:tiny_net"


def cfg(dataset, out, layers, **kw) -> ExtractConfig:
    base = dict(model=TINY, batch_size=4, workers=0, progress=False, limit=10)
    base.update(kw)
    return ExtractConfig(dataset=dataset, out=out, layers=layers, **base)


def arrays(run, layer):
    return (np.asarray(store.activations(run, layer)[:]),
            np.asarray(store.maxima(run, layer)[:]))


def quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def alone(small_broden, tmp_path_factory) -> Path:
    """features.2 extracted on its own: what an added features.2 must equal."""
    out = tmp_path_factory.mktemp("grow") / "alone"
    extract_with_stats(cfg(small_broden, out, ["features.2"]), log=quiet)
    return out


def test_adding_a_layer_keeps_the_run_and_equals_extracting_it_alone(small_broden, alone,
                                                                     tmp_path):
    run = tmp_path / "run"
    extract_with_stats(cfg(small_broden, run, ["features.0"]), log=quiet)
    before = arrays(run, "features.0")
    (run / "results").mkdir()
    (run / "results" / "features.0.csv").write_text("kept\n")          # a scoring's output
    lines: list[str] = []
    st = extract_with_stats(cfg(small_broden, run, ["features.0", "features.2"]),
                            log=lines.append)
    assert st.status == "extracted" and st.images == 10 and st.path == run
    assert any("adding layer(s) features.2" in m for m in lines)
    assert any("removed the staging run" in m for m in lines)
    attrs = store.read_run_attrs(run)
    assert attrs["layers"] == ["features.0", "features.2"]
    assert attrs["layer_shapes"]["features.2"] == \
        store.read_run_attrs(alone)["layer_shapes"]["features.2"]
    for a, b in zip(arrays(run, "features.2"), arrays(alone, "features.2")):
        assert a.dtype == b.dtype and np.array_equal(a, b)             # bit-identical
    for a, b in zip(arrays(run, "features.0"), before):
        assert np.array_equal(a, b)                                    # untouched
    assert (run / "results" / "features.0.csv").read_text() == "kept\n"
    assert not staging_path(run).exists()
    check_run_metadata(run)                      # the digests cover the new layer's nodes
    digests = metadata.read_copy(metadata.open_store(run))[0][metadata.DIGESTS]
    assert any(k.startswith("layers/features.2") for k in digests)
    store.check_complete(run)
    # asking again (or for a subset) finds nothing to do
    for layers in (["features.2", "features.0"], ["features.2"]):
        assert extract_with_stats(cfg(small_broden, run, layers), log=quiet).status == \
            "complete"


def test_a_damaged_added_layer_is_seen_by_the_metadata_check(small_broden, tmp_path):
    run = tmp_path / "run"
    extract_with_stats(cfg(small_broden, run, ["features.0"]), log=quiet)
    extract_with_stats(cfg(small_broden, run, ["features.2"]), log=quiet)
    meta = run / "layers" / "features.2" / "activations" / "zarr.json"
    meta.write_text(meta.read_text().replace('"float16"', '"float32"'))
    with pytest.raises(RunError, match="features.2"):
        check_run_metadata(run)


def test_a_kill_while_moving_the_layers_in_is_finished_by_the_next_run(
        small_broden, alone, tmp_path, monkeypatch):
    run = tmp_path / "run"
    extract_with_stats(cfg(small_broden, run, ["features.0"]), log=quiet)
    real = metadata.update_root_attrs

    def killed(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(metadata, "update_root_attrs", killed)
    with pytest.raises(KeyboardInterrupt):
        extract_with_stats(cfg(small_broden, run, ["features.2"]), log=quiet)
    # the node is moved in, the attrs not yet written, the staging run still there
    assert (run / "layers" / "features.2").is_dir() and staging_path(run).is_dir()
    assert store.read_run_attrs(run)["layers"] == ["features.0"]
    monkeypatch.setattr(metadata, "update_root_attrs", real)
    st = extract_with_stats(cfg(small_broden, run, ["features.2"]), log=quiet)
    assert st.status == "complete" or st.images == 0
    assert store.read_run_attrs(run)["layers"] == ["features.0", "features.2"]
    for a, b in zip(arrays(run, "features.2"), arrays(alone, "features.2")):
        assert np.array_equal(a, b)
    check_run_metadata(run)
    assert not staging_path(run).exists()


def test_layers_are_not_added_to_an_incomplete_run_or_across_other_differences(
        small_broden, tmp_path):
    run = tmp_path / "run"
    extract_with_stats(cfg(small_broden, run, ["features.0"]), log=quiet)
    flags = run / "progress" / "c" / "0"
    assert flags.is_file()
    flags.unlink()                                        # block 0 not done
    with pytest.raises(RunError, match=r"not complete; finish it first \(rerun it with "
                                       r"--layers features.0\)"):
        extract_with_stats(cfg(small_broden, run, ["features.2"]), log=quiet)
    with pytest.raises(RunError, match="dtype"):        # another difference: refused
        extract_with_stats(cfg(small_broden, run, ["features.2"], dtype="float32"),
                           log=quiet)
    assert store.read_run_attrs(run)["layers"] == ["features.0"]
    assert not staging_path(run).exists()


def test_overwrite_lists_what_it_deletes_and_needs_yes_beyond_the_cache(small_broden,
                                                                        tmp_path):
    run = tmp_path / "run"
    extract_with_stats(cfg(small_broden, run, ["features.0"]), log=quiet)
    lines: list[str] = []
    extract_with_stats(cfg(small_broden, run, ["features.0"], overwrite=True, dtype="float32"),
                       log=lines.append)                  # only the cache: no --yes needed
    assert any("--overwrite: replacing the activation cache" in m for m in lines)
    (run / "results").mkdir()
    (run / "results" / "features.0.csv").write_text("x" * 3000)
    (run / "layers" / "features.0" / "quantiles").mkdir()
    (run / "layers" / "features.0" / "quantiles" / "zarr.json").write_text("{}")
    again = cfg(small_broden, run, ["features.0"], overwrite=True)
    with pytest.raises(RunError) as e:
        extract_with_stats(again, log=quiet)
    msg = str(e.value)
    assert "results/ (0.0 MiB, 1 file(s))" in msg and "--yes" in msg
    assert "layers/features.0/quantiles/ (0.0 MiB, 1 file(s))" in msg
    assert (run / "results" / "features.0.csv").is_file()           # nothing deleted
    assert store.read_run_attrs(run)["dtype"] == "float32"
    lines.clear()
    extract_with_stats(replace(again, yes=True), log=lines.append)
    assert any("deleting" in m and "results/" in m for m in lines)
    assert not (run / "results").exists()
    assert store.read_run_attrs(run)["dtype"] == "float16"


def test_yes_without_overwrite_is_refused_by_the_command():
    from clirun import cli
    r = cli("-m", "pipeline", "extract", "--dataset", "d", "--model", "demo", "--layers",
            "conv5", "--out", "o", "--yes", check=False)
    assert r.returncode == 2 and "--yes only confirms --overwrite" in r.stderr

"""Corruption, generically: for every zarr node of a scored run, its label cache and a
derived (rotated) run, enumerated from the stores themselves: delete one chunk, flip a
byte of one chunk, truncate its zarr.json. Then verify names the damage; scoring gives a
named error (the array or file, and the repair command) or results identical to the
reference (CSV bytes and cube arrays), never a silent difference; the repair named
restores identity, and verify finds nothing left. One CLI pass per kind checks the
messages and exit codes of scripts/verify.py, score.py and the repair commands.
"""
from __future__ import annotations

import re
import shlex
import shutil
import warnings
from pathlib import Path

import pytest
import zarr

from cache import metadata, store
from cache.labels import LabelCacheError
from cache.zarr_io import chunk_key
from pipeline.broden import BrodenDataset
from pipeline.experiments.rotation import RotationSpec, run_experiment
from pipeline.extract import extract
from pipeline.extract_config import ExtractConfig
from pipeline.label_decoding import build_label_cache
from pipeline.layer_stages import ScoreConfig
from pipeline.stages import score_run
from pipeline.verify import verify_run
import scoring_fixtures as sf

pytestmark = pytest.mark.slow        # ~100 damaged copies, each scored and repaired

LAYER = "features.3"                 # the rotated layer
SPEC = dict(layer=LAYER, alphas=(0.5,), seed=0)
DERIVED = "rotations/features.3-seed0-a0.5"
REPAIR = {"run": "scripts/extract.py", "derived": "scripts/rotate.py",
          "labels": "scripts/cache_labels.py"}


def config(**kw) -> ScoreConfig:
    return ScoreConfig(levels=sf.LEVELS, progress=False, top_images=0, **kw)


def score(world: dict, case: dict) -> None:
    """score.py's library call on the damaged target (run or derived run)."""
    score_run(case["target"], config(), label_cache=case["labels"], log=lambda m: None)


def outcome(target: Path) -> dict:
    """What scoring left: the CSV bytes and the stored cube arrays of every layer."""
    out = {}
    for layer in store.layer_names(target):
        out[f"{layer}.csv"] = (target / "results" / f"{layer}.csv").read_bytes()
        for name, arr in sf.stored_cube(target, layer).items():
            out[f"{layer}/cube/{name}"] = (arr.dtype, arr.tobytes())
    return out


@pytest.fixture(scope="module", autouse=True)
def no_html_charts():
    """Scoring's HTML page and the rotation chart (matplotlib: ~1 s each) are not compared
    here: the CSV and the cube are the results."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pipeline.reports.html_page.layer_report", lambda *a, **k: "")
        mp.setattr("pipeline.experiments.rotation.rotation_chart", lambda *a, **k: None)
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_data, tiny_run):
    """The reference: a scored copy of tiny_run, its label cache (chunks of 8 images),
    a derived run (rotation alpha 0.5 of features.3) in RUN/rotations, scored as well."""
    tmp = tmp_path_factory.mktemp("corruption")
    labels = sf.make_labels(tiny_data, tmp / "labels.zarr", chunk_images=8)
    ref = sf.copy_fresh(tiny_run, tmp / "ref")
    score_run(ref, config(), label_cache=labels.path, log=lambda m: None)
    run_experiment(ref, RotationSpec(**SPEC), config(quantile=0.005),
                   label_cache=labels.path, log=lambda m: None)
    score_run(ref / DERIVED, config(), label_cache=labels.path, log=lambda m: None)
    return {"tmp": tmp, "data": tiny_data, "ref": ref, "labels": Path(labels.path),
            "outcome": {"run": outcome(ref), "derived": outcome(ref / DERIVED)}}


def nodes(root: Path) -> list[tuple[str, bool]]:
    """(path, is an array) of every node below ``root`` (a zarr group), root included."""
    out = [("", False)]
    with warnings.catch_warnings():             # .lock, results/, rotations/: not nodes
        warnings.simplefilter("ignore")
        members = list(zarr.open_group(root, mode="r").members(max_depth=None))
    out += [(name, isinstance(node, zarr.Array)) for name, node in members]
    return sorted(out)


def cases(world: dict) -> list[tuple[str, str, str]]:
    """(store, node, kind) for every node of the three stores and each kind of damage."""
    roots = {"run": world["ref"], "labels": world["labels"], "derived": world["ref"] / DERIVED}
    out = []
    for where, root in roots.items():
        for node, is_array in nodes(root):
            kinds = ("delete", "flip", "truncate") if is_array else ("truncate",)
            out += [(where, node, kind) for kind in kinds]
    return out


def damage(root: Path, node: str, kind: str) -> Path:
    """Damage ``node`` of the store at ``root``; returns the file damaged."""
    if kind == "truncate":
        f = root / metadata.node_key(node)
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
        return f
    arr = zarr.open_group(root, mode="r")[node]
    last = tuple(int(n) - 1 for n in arr._chunk_grid_shape)
    f = root / chunk_key(arr, last)
    assert f.is_file(), f
    if kind == "delete":
        f.unlink()
    else:
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    return f


def copy_world(world: dict, dest: Path, where: str) -> dict:
    run = dest / "run"
    shutil.copytree(world["ref"], run)
    labels = dest / "labels.zarr"
    shutil.copytree(world["labels"], labels)
    target = run / DERIVED if where == "derived" else run
    root = {"run": run, "labels": labels, "derived": run / DERIVED}[where]
    return {"run": run, "labels": labels, "target": target, "root": root}


def repair(world: dict, case: dict, where: str) -> None:
    """The repair the messages name, in-process: extract.py / cache_labels.py /
    rotate.py with --repair."""
    if where == "run":
        extract(ExtractConfig(dataset=world["data"], model=sf.TINY, layers=sf.LAYERS,
                              out=case["run"], input_size=(26, 26), batch_size=8, workers=0,
                              progress=False, repair=True), log=lambda m: None)
    elif where == "labels":
        build_label_cache(BrodenDataset(world["data"]), case["labels"], chunk_images=8,
                          workers=1, progress=False, repair=True, log=lambda m: None)
    else:
        run_experiment(case["run"], RotationSpec(**SPEC, repair=True),
                       config(quantile=0.005), label_cache=case["labels"],
                       log=lambda m: None)


def names_it(text: str, node: str, gone: Path) -> bool:
    return str(gone) in text or (node and node in text) or "incomplete" in text


def test_every_damage_is_named_or_harmless_and_repaired(world, tmp_path):
    """Every node x every kind of damage: verify names it; scoring names it (with the
    repair command of its store) or gives the reference's results; the repair restores
    the reference's results and verify finds nothing left."""
    all_cases = cases(world)
    assert len({(w, k) for w, _, k in all_cases}) == 9 and len(all_cases) >= 90, all_cases
    seen, wrong = {}, []
    for i, (where, node, kind) in enumerate(all_cases):
        try:
            seen[(where, node, kind)] = one_case(world, tmp_path / str(i), where, node, kind)
        except Exception as e:                  # noqa: BLE001 - every case is reported
            wrong.append(f"{where} {node!r} {kind}: {type(e).__name__}: {e}")
    assert not wrong, "\n".join(wrong)
    named = {w for w, o in seen.items() if o == "named"}
    for must in [("run", f"layers/{LAYER}/activations", "delete"),
                 ("run", f"layers/{LAYER}/activations", "truncate"), ("run", "", "truncate"),
                 ("labels", "planes", "delete"), ("labels", "", "truncate"),
                 ("derived", f"layers/{LAYER}/activations", "delete"),
                 ("derived", "", "truncate")]:
        assert must in named, seen


def one_case(world: dict, dest: Path, where: str, node: str, kind: str) -> str:
    """Damage, verify, score, repair, score, verify (the test above); "named" or
    "identical": what scoring did with the damage."""
    case = copy_world(world, dest, where)
    ref = world["outcome"]["derived" if where == "derived" else "run"]
    gone = damage(case["root"], node, kind)
    found, _ = verify_run(case["run"], str(case["labels"]))
    assert any(names_it(str(f), node, gone) for f in found), f"verify: {found}"
    try:
        score(world, case)
        assert outcome(case["target"]) == ref, "scoring differs"
        result = "identical"
    except (store.RunError, LabelCacheError) as e:
        msg = str(e)
        assert names_it(msg, node, gone), msg
        assert REPAIR[where] in msg or "score.py" in msg, msg
        result = "named"
    repair(world, case, where)
    score(world, case)
    assert outcome(case["target"]) == ref, "repaired scoring differs"
    found, _ = verify_run(case["run"], str(case["labels"]))
    assert found == [], f"verify after the repair: {found}"
    return result


# ------------------------------------------------------------------ the command lines
def repair_command(text: str) -> list[str]:
    """The command a message prescribes ("... repair it with CMD (what it does) ...")."""
    m = re.search(r"[Rr]epair it with (scripts/\S+\.py .+?) \(", text)
    assert m, text
    return shlex.split(m.group(1))


def verify_cli(case: dict, code: int) -> str:
    r = sf.cli("scripts/verify.py", case["run"], "--label-cache", case["labels"],
               check=False)
    assert r.returncode == code and "Traceback" not in r.stderr, r.stdout + r.stderr
    return r.stdout


@pytest.mark.parametrize("where,node,kind", [
    ("run", f"layers/{LAYER}/activations", "delete"),
    ("labels", "planes", "flip"),
    ("run", "", "truncate"),
    ("derived", f"layers/{LAYER}/activations", "truncate")])
def test_cli_names_the_damage_and_its_repair_command_works(world, tmp_path, monkeypatch,
                                                           where, node, kind):
    """One damage per kind through the command lines: verify.py exits 1 naming the file
    and the repair command; score.py exits 2 naming it too (or gives the same CSV); the
    command verify printed, run as printed, repairs it: verify.py exits 0 and scoring
    gives the reference's CSV bytes and cube."""
    monkeypatch.setenv("NETDISSECT_CACHE", str(tmp_path / "cache"))
    case = copy_world(world, tmp_path, where)
    gone = damage(case["root"], node, kind)
    out = verify_cli(case, 1)
    assert str(gone) in out and REPAIR[where] in out, out
    r = sf.cli("scripts/score.py", case["target"], "--label-cache", case["labels"],
               "--levels", ",".join(map(str, sf.LEVELS)), "--quiet", check=False)
    assert "Traceback" not in r.stderr, r.stderr
    if r.returncode != 0:
        assert r.returncode == 2 and str(gone) in r.stderr, r.stderr
        assert repair_command(r.stderr) == repair_command(out)
    sf.cli(*repair_command(out))
    assert "intact" in verify_cli(case, 0)
    score(world, case)
    assert outcome(case["target"]) == world["outcome"]["derived" if where == "derived"
                                                      else "run"]

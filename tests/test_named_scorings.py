"""Named scorings: scorings with other settings sit beside the default one (never
overwriting it), ``--name`` names one, compare takes a named scoring and says when its
sources were scored with different settings."""
from __future__ import annotations

import json

import pytest

from pipeline.layer_stages import ScoreConfig
from pipeline.null_model import NullConfig
from scoring_fixtures import cli, copy_fresh

LAYER = "features.3"


def test_names_come_from_the_settings_that_differ():
    assert ScoreConfig().scoring_name() == ""
    assert ScoreConfig(quantile=0.01, iou_threshold=0.08).scoring_name() == "q0.01_iou0.08"
    assert ScoreConfig(categories=["object", "part"]).scoring_name() == "cat-object+part"
    odd = ScoreConfig(categories=["<b>", "a/b"]).scoring_name()
    assert odd.startswith("cat-") and len(odd) == 14 and "/" not in odd
    null = NullConfig(kinds=("image",), permutations=100, images=None, seed=3)
    assert ScoreConfig(null=null, top_images=0).scoring_name() == "null-image-p100-nall-s3"
    assert ScoreConfig(top_images=0).page_name("conv5") == "conv5.top0.html"
    assert ScoreConfig().page_name("conv5") == "conv5.html"
    assert ScoreConfig(quantile=0.01, name="mine").scoring_name() == "mine"
    for bad in ("../up", "a b", "", ".."):
        with pytest.raises(ValueError, match="--name"):
            ScoreConfig(name=bad).scoring_name()


@pytest.mark.slow
def test_scorings_sit_side_by_side_and_compare_names_their_settings(tiny_cli_run,
                                                                      tiny_labels, tmp_path):
    run = copy_fresh(tiny_cli_run, tmp_path / "run")
    common = ("--label-cache", tiny_labels.path, "--layer", LAYER, "--levels", "0.005,0.02",
              "--quiet", "--top-images", "2")
    cli("scripts/score.py", run, *common[:-2])
    res = run / "results"
    plain = (res / f"{LAYER}.json").read_bytes()
    page = (res / f"{LAYER}.html").read_bytes()
    cli("scripts/score.py", run, *common[:-2], "--top-images", "0")
    assert (res / f"{LAYER}.html").read_bytes() == page           # not replaced...
    assert b"<img class=strip" not in (res / f"{LAYER}.top0.html").read_bytes()
    plain = (res / f"{LAYER}.json").read_bytes()
    cli("scripts/score.py", run, *common[:-2], "--iou-threshold", "0.08", "--categories",
        "object,part", "--sweep", "0.02:0.1:0.04")
    cli("scripts/score.py", run, *common, "--quantile", "0.02", "--name", "mine")
    assert (res / f"{LAYER}.json").read_bytes() == plain        # the default one is kept
    named = res / "iou0.08_cat-object+part"
    assert sorted(p.name for p in named.iterdir()) == sorted(
        f"{LAYER}.{x}" for x in ("csv", "html", "json", "sweep.csv", "sweep.png"))
    assert (res / "mine" / f"{LAYER}.top2.html").is_file()
    doc = json.loads((named / f"{LAYER}.json").read_text())
    assert doc["config"]["name"] == "iou0.08_cat-object+part"
    assert doc["config"]["categories"] == ["object", "part"]
    mine = json.loads((res / "mine" / f"{LAYER}.json").read_text())
    assert mine["config"]["quantile"] == 0.02 and mine["config"]["name"] == "mine"
    assert json.loads(plain)["config"]["name"] == ""

    r = cli("scripts/compare.py", run, f"{named}/{LAYER}.json", res / "mine" / f"{LAYER}.json")
    assert "warning: the sources were scored at different quantiles (0.005, 0.02)" in r.stdout
    assert "warning: the sources were scored on different categories" in r.stdout
    assert f"run/{LAYER}: quantile 0.005, scored at IoU > 0.04, categories all" in r.stdout
    assert f"{LAYER}[mine]: quantile 0.02" in r.stdout
    r = cli("scripts/compare.py", run, "--scoring", "mine")
    assert f"run[mine]/{LAYER}" in r.stdout and "warning" not in r.stdout
    r = cli("scripts/compare.py", run, "--scoring", "nope", check=False)
    assert r.returncode == 2 and "no scoring named 'nope'" in r.stderr
    assert "'iou0.08_cat-object+part', 'mine'" in r.stderr
    r = cli("scripts/score.py", run, *common, "--name", "../up", check=False)
    assert r.returncode == 2 and "--name '../up'" in r.stderr

    # the run's index lists every scoring of the layer, each link resolving to a file
    import re
    index = (res / "index.html").read_text()
    rows = re.findall(r"<tr><td class=l>([^<]+)</td><td class=l>([^<]+)</td>"
                      r"<td>([^<]+)</td><td>([^<]+)</td><td class=l>([^<]+)</td>", index)
    assert rows == [("(default)", LAYER, "0.005", "0.04", "all"),
                    ("iou0.08_cat-object+part", LAYER, "0.005", "0.08", "object, part"),
                    ("mine", LAYER, "0.02", "0.04", "all")]
    links = re.findall(r"href='([^']+)'", index)
    assert f"{LAYER}.top0.html" in links and f"mine/{LAYER}.top2.html" in links
    from urllib.parse import unquote
    assert all((res / unquote(link)).is_file() for link in links), links

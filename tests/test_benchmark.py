"""The benchmark's plan (pipeline/benchmark.py): which stages run, on which paths, with
which arguments, and the markdown it appends; one cheap stage run in its own process."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import benchmark as B
from pipeline.layer_stages import DEFAULT_LEVELS


def test_default_stages_are_those_that_apply(tmp_path):
    model = B.plan_stages(tmp_path, 100)
    assert model.stages == ("generate", "labels", "extract", "quantiles", "tally", "rescore",
                            "report", "files")
    synth = B.plan_stages(tmp_path, 100, synthetic=(8, 4, 4))
    assert synth.stages == ("generate", "labels", "activations", "quantiles", "tally",
                            "rescore", "report", "files")
    given = B.plan_stages(tmp_path, 100, dataset=str(tmp_path / "mine"), synthetic=(8, 4, 4))
    assert given.stages == ("labels", "activations", "quantiles", "tally", "rescore",
                            "report", "files")
    asked = B.plan_stages(tmp_path, 100, ["tally", "generate"], dataset="d")
    assert asked.stages == ("tally", "generate")
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['fast'\]; choose from "
                                         r"\['generate', 'labels'"):
        B.plan_stages(tmp_path, 100, ["labels", "fast"])


def test_paths_of_the_plan(tmp_path):
    p = B.plan_stages(tmp_path, 64, image_size=96, model="tv/resnet18",
                      layers="layer4,layer3")
    assert (p.dataset, p.labels) == (str(tmp_path / "broden_64_96"),
                                     str(tmp_path / "labels_broden_64_96.zarr"))
    assert (p.run, p.layer) == (str(tmp_path / "run_tv_resnet18_64"), "layer4")
    s = B.plan_stages(tmp_path, 64, dataset="/data/broden1_224", synthetic=(512, 7, 7))
    assert (s.dataset, s.labels) == ("/data/broden1_224",
                                     str(tmp_path / "labels_broden1_224.zarr"))
    assert (s.run, s.layer) == (str(tmp_path / "run_synth_512x7x7_64"), "synthetic")


def test_parse_shape_names_the_flag():
    assert B.parse_shape("8,4,4") == (8, 4, 4)
    for bad in ("8,4", "8,x,4", ""):
        with pytest.raises(ValueError, match="--synthetic-activations"):
            B.parse_shape(bad)


def test_each_stage_gets_its_arguments(tmp_path):
    p = B.plan_stages(tmp_path, 32, image_size=64, seg_size=32, layers="conv4,conv5",
                      batch_size=8, device="cpu", workers=1)
    assert B.stage_call(p, "generate") == (B.stage_generate, dict(
        out=p.dataset, num_images=32, image_size=64, seg_size=32, seed=0, workers=1,
        profile="demo"))
    b = B.plan_stages(tmp_path, 32, profile="broden")
    assert b.dataset.endswith("broden_32_224_broden")
    assert B.stage_call(b, "generate")[1]["profile"] == "broden"
    assert B.stage_call(p, "extract") == (B.stage_extract, dict(
        dataset=p.dataset, out=p.run, model="demo", layers="conv4,conv5", device="cpu",
        num_images=32, batch_size=8))
    assert B.stage_call(p, "tally") == (B.stage_tally, dict(
        run=p.run, layer="conv4", labels=p.labels, levels=list(DEFAULT_LEVELS),
        device="cpu"))
    assert B.stage_call(p, "rescore")[0] is B.stage_rescore
    assert B.stage_call(p, "report") == (B.stage_report, dict(
        run=p.run, layer="conv4", labels=p.labels, levels=list(DEFAULT_LEVELS),
        dataset=p.dataset))
    assert {B.stage_call(p, s)[0].__name__ for s in B.STAGES} == {
        f"stage_{s}" for s in B.STAGES}


def test_run_benchmark_and_append(tmp_path):
    p = B.plan_stages(tmp_path / "work", 12, ["generate"], image_size=32, seg_size=16,
                      workers=1)
    lines: list[str] = []
    results = B.run_benchmark(p, log=lines.append)
    assert [r.stage for r in results] == ["generate"] and results[0].images == 12
    assert (Path(p.dataset) / "index.csv").is_file() and results[0].peak_rss_mib > 0
    assert lines[0] == "-- generate" and lines[1] == B.table(results).splitlines()[-1]
    md = tmp_path / "BENCH.md"
    md.write_text("# Benchmarks\n")
    text = B.append_markdown(md, results, 12, ["generate", "--work", "a b"])
    assert md.read_text() == "# Benchmarks\n" + text
    assert text.startswith("\n### ") and " — N = 12\n\nMachine: " in text
    assert "\nCommand: `python scripts/bench.py generate --work 'a b'`\n\n| stage |" in text
    assert text.endswith(B.table(results) + "\n")

"""Jobs of command lines (pipeline/commands.py): the demo's plan (pipeline/demo_job.py) and
the miniature experiments' plan (pipeline/experiments/miniature.py), without running them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.commands import ROOT, Command, Copy, Note, StepFailed, run_steps, script
from pipeline.demo_job import DEMO_WEIGHTS, plan_demo
from pipeline.experiments.miniature import ITERATIONS, MiniatureConfig, plan_miniature

PY = "python"


def _argvs(steps) -> list[tuple[str, ...]]:
    return [s.argv for s in steps if isinstance(s, Command)]


def test_script_paths_are_the_checkouts():
    assert script("score.py") == str(ROOT / "scripts/score.py")
    assert Path(script("score.py")).is_file()


def test_run_steps_prints_copies_and_fails_loudly(tmp_path, capfd):
    src = tmp_path / "a.csv"
    src.write_text("x\n")
    run_steps([Note("hello"), Command((sys.executable, "-c", "print('ran')")),
               Copy(src, tmp_path / "new" / "b.csv")], "job")
    out = capfd.readouterr().out
    assert out.startswith("hello\n\n$ ") and "\nran\n  (" in out and out.endswith(" s)\n")
    assert (tmp_path / "new" / "b.csv").read_text() == "x\n"
    with pytest.raises(StepFailed, match=r"^job: step failed \(exit 3\): .* -c "):
        run_steps([Command((sys.executable, "-c", "raise SystemExit(3)"))], "job")


def test_job_modules_do_not_import_torch():
    """`make demo` starts on a fresh machine without waiting for torch."""
    code = ("import sys; import pipeline.cli, pipeline.commands, pipeline.demo_job, "
            "pipeline.experiments.miniature; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_demo_weights_named_without_torch_are_the_models():
    from pipeline.models.demo import DEMO_WEIGHTS as models_weights
    assert DEMO_WEIGHTS == models_weights


def test_demo_plan_on_a_fresh_directory(tmp_path):
    job = plan_demo(tmp_path, num_images=40, python=PY)
    data = tmp_path / "broden_synthetic_40_s2"
    assert (job.dataset, job.run_dir) == (data, tmp_path / "run")
    expected = [
        (PY, script("make_synthetic_broden.py"), "--out", str(data), "--num-images", "40",
         "--seed", "2"),
        (PY, script("extract.py"), "--dataset", str(data), "--model", "demo", "--layers",
         "conv2,conv3,conv4,conv5", "--out", str(tmp_path / "run"), "--device", "auto"),
        (PY, script("score.py"), str(tmp_path / "run"), "--device", "auto")]
    if not DEMO_WEIGHTS.is_file():
        expected.insert(1, (PY, script("train_demo_model.py"), "--out",
                            str(tmp_path / "training"), "--install"))
    assert _argvs(job.steps) == expected


def test_demo_plan_reuses_the_dataset_and_quiet_reaches_every_command(tmp_path):
    data = tmp_path / "broden_synthetic_2000_s2"
    data.mkdir()
    (data / "index.csv").write_text("")
    job = plan_demo(tmp_path, layers=["conv5"], device="cpu", quiet=True, python=PY)
    assert job.steps[0] == Note(f"dataset: {data} (already generated)")
    argvs = _argvs(job.steps)
    assert all(a[-1] == "--quiet" for a in argvs)
    assert argvs[-2][argvs[-2].index("--layers") + 1] == "conv5"
    assert argvs[-1] == (PY, script("score.py"), str(tmp_path / "run"), "--device", "cpu",
                         "--quiet")


def _config(tmp_path, **kw) -> MiniatureConfig:
    return MiniatureConfig(out=tmp_path / "exp", figures=tmp_path / "fig",
                           train_dir=tmp_path / "train", train_data=tmp_path / "train_data",
                           **kw)


def test_miniature_plan_from_nothing(tmp_path):
    c = _config(tmp_path, num_images=50, variant_iterations=100)
    steps = plan_miniature(c, python=PY)
    argvs = _argvs(steps)
    out, data = c.out, str(c.out / "broden_synthetic_50_s2")
    assert argvs[0] == (PY, script("make_synthetic_broden.py"), "--out", data,
                        "--num-images", "50", "--seed", "2")
    assert argvs[1] == (PY, script("extract.py"), "--dataset", data, "--model", "demo",
                        "--layers", "conv1,conv2,conv3,conv4,conv5", "--out",
                        str(out / "layers"), "--no-progress")
    assert argvs[2] == (PY, script("score.py"), str(out / "layers"), "--quiet",
                        "--top-images", "0")
    assert argvs[3] == (PY, script("compare.py"), str(out / "layers"), "--out",
                        str(out / "by_layer"))
    assert argvs[4] == (PY, script("train_demo_model.py"), "--dataset",
                        str(tmp_path / "train_data"), "--generate-images", "4000",
                        "--generate-seed", "1", "--out", str(tmp_path / "train"),
                        "--iterations", "1200", "--save-at", "1200", "--save-at",
                        "0,100,300,600,1200")
    extracts = [a for a in argvs if a[1] == script("extract.py")]
    weights = [a[a.index("--weights") + 1] for a in extracts if "--weights" in a]
    assert weights[:len(ITERATIONS)] == [str(tmp_path / "train" / f"demo_cnn_iter{i:06d}.pt")
                                         for i in ITERATIONS]
    assert weights[len(ITERATIONS):] == [str(tmp_path / "train" / "demo_cnn_iter000100.pt")] + [
        str(out / f"train_{n}" / "demo_cnn.pt") for n in ("no_batchnorm", "dropout",
                                                          "wide_conv5")]
    trains = [a for a in argvs if a[1] == script("train_demo_model.py")]
    assert [a[a.index("--iterations") + 1:] for a in trains[1:]] == [
        ("100", "--save-at", "100", "--no-batchnorm"),
        ("100", "--save-at", "100", "--dropout", "0.5"),
        ("100", "--save-at", "100", "--conv5-width", "512")]
    compares = [a for a in argvs if a[1] == script("compare.py")]
    assert [a[a.index("--out") + 1] for a in compares] == [
        str(out / n) for n in ("by_layer", "over_training", "variants")]
    assert argvs[-1] == (PY, script("rotate.py"), str(out / "layers"), "--layer", "conv5",
                         "--alphas", "0,0.2,0.4,0.6,0.8,1", "--seed", "0", "--baseline",
                         "combination", "--out", str(out / "rotation"), "--quiet")
    copies = [(s.src.relative_to(tmp_path), s.dst.relative_to(tmp_path))
              for s in steps if isinstance(s, Copy)]
    assert copies[:2] == [(Path("exp/by_layer/comparison.png"), Path("fig/by_layer.png")),
                          (Path("exp/by_layer/comparison.csv"), Path("fig/by_layer.csv"))]
    assert copies[-2:] == [(Path("exp/rotation/conv5-seed0.png"),
                            Path("fig/rotation_conv5.png")),
                           (Path("exp/rotation/conv5-seed0.csv"),
                            Path("fig/rotation_conv5.csv"))]
    assert len(argvs) == 1 + 2 + 1 + 1 + 2 * 5 + 1 + 3 + 2 * 4 + 1 + 2
    assert len(copies) == 2 * 3 + 2 * 2


def test_miniature_plan_reuses_what_exists(tmp_path):
    c = _config(tmp_path, skip_variants=True, quiet=True)
    data = c.out / "broden_synthetic_2000_s2"
    for d in (data, c.out / "layers" / "results", c.out / "iter000300" / "results",
              c.train_dir):
        d.mkdir(parents=True)
    (data / "index.csv").write_text("")
    (c.train_dir / "demo_cnn_iter001200.pt").write_text("")
    argvs = _argvs(plan_miniature(c, python=PY))
    assert [a[1] for a in argvs[:2]] == [script("compare.py"), script("extract.py")]
    extracted = [a[a.index("--out") + 1] for a in argvs if a[1] == script("extract.py")]
    assert extracted == [str(c.out / f"iter{i:06d}") for i in ITERATIONS if i != 300]
    assert not any(a[1] == script("train_demo_model.py") for a in argvs)
    assert not any("variant" in " ".join(a) for a in argvs)
    # quiet: the dataset (the only command with a progress bar) would be made quietly
    fresh = _argvs(plan_miniature(_config(tmp_path / "b", quiet=True), python=PY))
    assert fresh[0][-1] == "--quiet"

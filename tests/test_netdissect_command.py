"""The one command, ``netdissect`` (pipeline/commandline/main.py, ``python -m pipeline`` in a
checkout): every script is a subcommand with the same options and results, ``--help`` lists
them without importing torch, and pyproject.toml installs it."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tomllib

import pytest

from clirun import ROOT, cli
from pipeline.commandline import main as command

NAMES = ["extract", "score", "compositional", "concept-vectors", "rotate", "compare",
         "cache-labels", "synthetic", "convert", "download", "bench", "demo", "verify",
         "unpack", "experiments", "train-demo"]


def netdissect(*args, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m pipeline ARGS...`` from the repository root."""
    return cli("-m", "pipeline", *args, check=check)


def options(name: str) -> list[argparse.Action]:
    """The options and positionals of subcommand ``name``, as its module declares them."""
    p = argparse.ArgumentParser()
    importlib.import_module(f"pipeline.commandline.{command.module_of(name)}").add_arguments(p)
    return [a for a in p._actions if not isinstance(a, argparse._HelpAction)]


def test_help_lists_every_subcommand_without_importing_torch():
    assert list(command.SUBCOMMANDS) == NAMES
    out = netdissect("--help").stdout
    for name in NAMES:
        assert f"\n    {name}" in out
        summary = command.summary(command.module_of(name))
        assert " ".join(summary.split()[:4]) in " ".join(out.split())
    code = ("import sys; from pipeline.commandline.main import main\n"
            "try: main(['--help'])\nexcept SystemExit as e: assert e.code == 0\n"
            "assert 'torch' not in sys.modules, 'netdissect --help imported torch'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)


@pytest.mark.parametrize("name", NAMES)
def test_subcommand_help_describes_every_option(name, capsys):
    """In-process (``python -m pipeline`` runs this same ``main``)."""
    with pytest.raises(SystemExit) as e:
        command.main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: netdissect {name} ")
    summary = command.summary(command.module_of(name))
    assert " ".join(summary.split()) in " ".join(out.split())
    for action in options(name):
        for spelling in action.option_strings or [action.metavar or action.dest]:
            assert spelling in out, f"netdissect {name} --help does not mention {spelling}"
        assert action.help, f"netdissect {name}: {action.option_strings} has no help text"


def test_subcommand_help_through_python_m_pipeline():
    r = netdissect("unpack", "--help")
    assert "usage: netdissect unpack" in r.stdout and "--sha256 HEX" in r.stdout


def test_unknown_or_missing_subcommand_exits_2_listing_them():
    r = netdissect("frobnicate", check=False)
    assert r.returncode == 2
    assert "invalid choice: 'frobnicate'" in r.stderr
    assert all(f"'{name}'" in r.stderr for name in NAMES)
    r = netdissect(check=False)
    assert r.returncode == 2 and all(f"\n    {name}" in r.stderr for name in NAMES)


def test_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert netdissect("--version").stdout.strip() == f"netdissect {version}"


def test_pyproject_entry_point_is_the_command(capsys):
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = entry["netdissect"].partition(":")
    fn = getattr(importlib.import_module(module), attr)
    assert fn is command.main
    with pytest.raises(SystemExit) as e:
        fn(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("netdissect ")


def _parsed(monkeypatch, name: str, *argv: str) -> argparse.Namespace:
    """The arguments ``netdissect NAME ARGV...`` would run its command with."""
    module = importlib.import_module(f"pipeline.commandline.{command.module_of(name)}")
    monkeypatch.setattr(module, "run", lambda a: a)
    return command.main([name, *argv])


def test_old_spellings_are_aliases_of_the_common_ones(monkeypatch):
    for flag in ("--out", "--to"):
        a = _parsed(monkeypatch, "unpack", "x.zip", flag, "dir")
        assert (a.archive, a.to) == ("x.zip", "dir")
    for flag in ("--overwrite", "--rebuild"):
        assert _parsed(monkeypatch, "cache-labels", "--dataset", "d", flag).overwrite
    assert not _parsed(monkeypatch, "cache-labels", "--dataset", "d").overwrite
    for flag in ("--out", "--work"):
        a = _parsed(monkeypatch, "bench", "generate", flag, "w", "--quiet")
        assert a.work == "w" and a.plan
    for flag in ("--quiet", "--no-progress"):
        assert _parsed(monkeypatch, "synthetic", "--out", "d", flag).quiet
    a = _parsed(monkeypatch, "compare", "r", "--layer", "a", "--layers", "b,c")
    assert a.layers == ["a", "b", "c"]


def test_command_arguments_exclude_the_subcommand(monkeypatch):
    """What bench and train-demo record as their command line."""
    a = _parsed(monkeypatch, "bench", "generate", "--out", "a b")
    assert a.command_argv == ["generate", "--out", "a b"]


def test_checks_after_parsing_name_the_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        command.main(["rotate", "run", "--layers", "a,b"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "netdissect rotate: error: --layers: rotate one layer at a time" in err


@pytest.mark.slow
def test_the_command_writes_what_the_scripts_write(tmp_path):
    """synthetic, cache-labels, extract (demo CNN) and score through ``python -m pipeline``
    and through scripts/: the same dataset files and the same result CSVs, byte for byte."""
    gen = ["--num-images", "8", "--image-size", "64", "--seg-size", "32", "--seed", "3",
           "--workers", "1", "--quiet"]
    netdissect("synthetic", "--out", tmp_path / "a", *gen)
    cli("scripts/make_synthetic_broden.py", "--out", tmp_path / "b", *gen)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file())
    assert len(files) > 8
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    data, labels = tmp_path / "a", tmp_path / "labels.zarr"
    r = netdissect("cache-labels", "--dataset", data, "--out", labels, "--workers", "1",
                   "--quiet")
    assert r.stdout.startswith(f"label cache: {labels} (8 images")
    extract = ["--dataset", data, "--model", "demo", "--layers", "conv5", "--workers", "0",
               "--threads", "1", "--quiet"]
    score = ["--label-cache", labels, "--levels", "0.005", "--top-images", "0",
             "--workers", "1", "--quiet"]
    netdissect("extract", *extract, "--out", tmp_path / "run1")
    cli("scripts/extract.py", *extract, "--out", tmp_path / "run2")
    netdissect("score", tmp_path / "run1", *score)
    cli("scripts/score.py", tmp_path / "run2", *score)
    ours, theirs = (tmp_path / run / "results" / "conv5.csv" for run in ("run1", "run2"))
    assert ours.read_bytes() == theirs.read_bytes()
    assert ours.read_text().count("\n") > 100         # a header and a row per unit

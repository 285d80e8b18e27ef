"""Every script's --help describes the command (its docstring's first paragraph) and the
shared flags are spelled alike: ``--layers a,b`` (alias ``--layer``) where a script takes
layers, ``--quiet`` (alias ``--no-progress``) where it shows progress."""
from __future__ import annotations

import ast

import pytest

from clirun import ROOT, cli

# script -> (takes layers, shows progress)
SCRIPTS = {
    "bench.py": (True, True),
    "compare.py": (True, False),
    "demo.py": (True, True),
    "experiments.py": (False, True),
    "make_synthetic_broden.py": (False, True),
    "score.py": (True, True),
    "rotate.py": (True, True),
    "train_demo_model.py": (False, True),
    "unpack.py": (False, False),
    "verify.py": (False, False),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_describes_the_command_and_shares_the_flags(name):
    path = ROOT / "scripts" / name
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False)
    first = doc.split("\n\n")[0].strip()
    out = cli(f"scripts/{name}", "--help").stdout
    assert f"\n\n{first}\n\n" in out and "module docstring" not in out
    layers, progress = SCRIPTS[name]
    assert ("--layers L[,L...], --layer L[,L...]" in out) == layers
    assert ("--quiet, --no-progress" in out) == progress

"""pyproject.toml and environment.yml describe the same dependencies."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name_and_spec(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(3).replace(" ", "")


def test_pyproject_and_environment_yml_agree():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    py = dict(_name_and_spec(r) for r in pyproject["project"]["dependencies"])
    extras = pyproject["project"]["optional-dependencies"]
    py.update(_name_and_spec(r) for r in extras["test"] + extras["zoo"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = {}, {}
    for d in env["dependencies"]:
        if isinstance(d, dict):
            pip.update(_name_and_spec(r) for r in d["pip"] if not r.startswith("-"))
        else:
            n, s = _name_and_spec(d.replace("=", "==", 1) if re.match(r"^[\w-]+=[^=]", d) else d)
            conda[n] = s
    conda.pop("python"), conda.pop("pip")
    both = {**conda, **pip}
    assert set(both) == set(py), f"only in one list: {set(both) ^ set(py)}"
    # same minimum versions, except torch which the environment pins (Makefile's TORCH)
    for name, spec in py.items():
        if name == "torch":
            assert both[name] == "==2.13.0"
        else:
            assert both[name] == spec, name
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH  ?= torch==2.13.0" in makefile
    # the zoos: the same pins, installed after torch without dependencies
    for req in extras["zoo"]:
        name, spec = _name_and_spec(req)
        assert spec.startswith("=="), req
        assert re.search(rf"^{name.upper()}\s+\?= {re.escape(req)}$", makefile, re.M), req
    setup = makefile[makefile.index("$(STAMP): pyproject.toml"):]
    torch_at = setup.index('install -q "$(TORCH)"')
    zoo_at = setup.index('install -q --no-deps "$(TORCHVISION)" "$(TIMM)"')
    assert torch_at < zoo_at < setup.index("-e \".[test]\"")


def test_zoo_pins_match_the_installed_packages():
    """The pinned torchvision and timm are what the test environment runs (and torchvision
    names the pinned torch)."""
    from importlib.metadata import requires, version
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for req in pyproject["project"]["optional-dependencies"]["zoo"]:
        name, spec = _name_and_spec(req)
        assert version(name).split("+")[0] == spec[2:], name
    assert "torch (==2.13.0)" in requires("torchvision") or \
        "torch==2.13.0" in requires("torchvision")

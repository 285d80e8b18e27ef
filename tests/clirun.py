"""Run the project's scripts as a user would: a subprocess in the repository root."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, check: bool = True, env=None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS...`` from the repo root; raises with its output if it fails
    and ``check`` is set."""
    r = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                       text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r

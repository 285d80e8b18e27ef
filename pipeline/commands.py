"""Run a job made of the project's own command lines: each printed first, timed, and
failing loudly (the steps of ``make demo`` and of the miniature experiments).

A job is a list of steps, planned before anything runs:

- :class:`Command`: ``python scripts/NAME.py ARGS...``, run as a subprocess in the
  current directory (``$ <command line>`` printed before, ``  (<seconds> s)`` after),
  which on Linux ends with the job (a job killed with -9 leaves no step running on);
- :class:`Copy`: a result file copied to another directory (created if missing);
- :class:`Note`: a line printed.

:func:`run_steps` runs them in order; a command that exits non-zero stops the job with
:class:`StepFailed` (its message names the job, the exit status and the command line).
Nothing here imports torch: ``make demo`` starts on a fresh machine without waiting for it.
"""
from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

from pipeline.parallel import kernel_ends_with_parent

ROOT = Path(__file__).resolve().parents[1]      # the checkout: scripts/ and pipeline/


def script(name: str) -> str:
    """The path of ``scripts/<name>`` of this checkout, as a command-line argument."""
    return str(ROOT / "scripts" / name)


class StepFailed(Exception):
    """A command of a job exited non-zero (its own output says why)."""


@dataclass(frozen=True)
class Command:
    """One command line of a job (program and arguments, all strings)."""
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return " ".join(shlex.quote(c) for c in self.argv)


@dataclass(frozen=True)
class Copy:
    """Copy the file ``src`` to the file ``dst`` (its directory is created if missing)."""
    src: Path
    dst: Path


@dataclass(frozen=True)
class Note:
    """Print ``text``."""
    text: str


Step = Union[Command, Copy, Note]


def command(*argv: str | Path) -> Command:
    """A Command of these arguments, each as a string."""
    return Command(tuple(str(a) for a in argv))


def run_command(cmd: Command, job: str) -> None:
    """Print the command line, run it, print its wall time; StepFailed if it fails."""
    print("\n$ " + str(cmd), flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(list(cmd.argv), preexec_fn=functools.partial(_end_with, os.getpid()))
    if r.returncode != 0:
        raise StepFailed(f"{job}: step failed (exit {r.returncode}): {' '.join(cmd.argv)}")
    print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)


def _end_with(job: int) -> None:
    """In a step's process, before exec: end with the job's process ``job`` (Linux; a job
    that died before this call ends it at once)."""
    if kernel_ends_with_parent() and os.getppid() != job:
        os._exit(1)


def run_steps(steps: Sequence[Step], job: str) -> None:
    """Run the steps of ``job`` in order (module docstring)."""
    for step in steps:
        if isinstance(step, Command):
            run_command(step, job)
        elif isinstance(step, Copy):
            step.dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(step.src, step.dst)
        else:
            print(step.text)

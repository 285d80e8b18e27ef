"""Run the project's scripts as a user would: a subprocess in the repository root.

The one subprocess runner of the tests. ``cli`` runs a command to its end; ``start`` starts
one for a test that signals or kills it. Every child starts with SIGINT at its default
action: a suite started as a background job of a non-interactive shell inherits SIGINT
as *ignored*, and Python then installs no KeyboardInterrupt handler, so a Ctrl-C test
would see its child ignore the signal.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def command(*args) -> list[str]:
    """``[python, SCRIPT, ARGS...]`` with every argument as a string."""
    return [sys.executable, *map(str, args)]


def cli(*args, check: bool = True, env=None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS...`` from the repo root; raises with its output if it fails
    and ``check`` is set."""
    r = subprocess.run(command(*args), cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env=env, preexec_fn=_default_sigint)
    if check and r.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def start(*args, env=None, session: bool = False, merge_stderr: bool = False
          ) -> subprocess.Popen:
    """``python SCRIPT ARGS...`` started from the repo root, text pipes for stdout and
    stderr (or stderr into stdout); ``session``: in a new session and process group, so
    the test can signal the whole group as a terminal's Ctrl-C does."""
    return subprocess.Popen(command(*args), cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                            start_new_session=session, preexec_fn=_default_sigint)


def signal_group(proc: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    """Send ``sig`` to the process group of ``proc`` (started with session=True)."""
    os.killpg(proc.pid, sig)


def kill9(proc: subprocess.Popen, timeout: float = 10) -> None:
    """kill -9 ``proc`` and wait for it."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout)


def reap(proc: subprocess.Popen) -> None:
    """Make sure ``proc`` is gone (a test's ``finally``): kill it if it still runs."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()

"""The command lines: one module a subcommand of ``netdissect`` (pipeline/commandline/main.py).

Each module's docstring describes its command (the first paragraph is its ``--help``
description, the first line its summary in ``netdissect --help``) and exposes

- ``add_arguments(p)``: its options on an ``argparse.ArgumentParser``,
- ``check(p, a)`` (where arguments are checked together after parsing): ``p.error`` on
  a bad combination,
- ``run(a) -> int``: the command on the parsed arguments; the exit status,
- ``main(argv=None) -> int``: the stand-alone command (``scripts/NAME.py``), via
  :func:`standalone`.

``a.command_argv`` holds the command's own arguments (what followed the subcommand's
name, or the script's), for commands that record how they were run.
"""
from __future__ import annotations

import argparse
import sys
from types import ModuleType
from typing import Sequence

from pipeline import cli


def prepare(p: argparse.ArgumentParser, command: ModuleType, a: argparse.Namespace,
            argv: Sequence[str]) -> argparse.Namespace:
    """``a`` (parsed by ``p``, which holds ``command``'s options) checked by
    ``command.check`` when it has one, with ``command_argv`` set to ``argv``."""
    check = getattr(command, "check", None)
    if check is not None:
        check(p, a)
    a.command_argv = list(argv)
    return a


def standalone(command: ModuleType, argv: Sequence[str] | None = None) -> int:
    """Run ``command`` as its own program (prog: the script's name), on ``argv``
    (default ``sys.argv[1:]``)."""
    argv = sys.argv[1:] if argv is None else argv
    p = cli.parser(command.__doc__)
    command.add_arguments(p)
    return command.run(prepare(p, command, p.parse_args(argv), argv))

"""Run a script of scripts/ under a file-size limit, so a write fails with the real OS error.

    python tests/fsize_runner.py BYTES [MODULE:ATTR] scripts/NAME.py ARGS...

Ignores SIGXFSZ and sets the soft RLIMIT_FSIZE to BYTES: every write that would make a
file larger fails with EFBIG, as a full disk fails with ENOSPC (portable, and root is
bound by it too). With MODULE:ATTR (a function or Class.method, e.g.
``cache.labels:LabelCacheWriter.finish``) the limit is set only when that is first
called, so the failure happens exactly there.
"""
from __future__ import annotations

import importlib
import resource
import runpy
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def limit(nbytes: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))


def limit_at(target: str, nbytes: int) -> None:
    """Set the limit when ``MODULE:ATTR`` is first called."""
    module, _, attr = target.partition(":")
    owner = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    fn = getattr(owner, name)

    def limited(*args, **kwargs):
        limit(nbytes)
        return fn(*args, **kwargs)
    setattr(owner, name, limited)


def main() -> None:
    nbytes, *rest = sys.argv[1:]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if ":" in rest[0]:
        target, script, *args = rest
        limit_at(target, int(nbytes))
    else:
        script, *args = rest
        limit(int(nbytes))
    sys.argv = [script, *args]
    sys.path.insert(0, str(ROOT / "scripts"))
    runpy.run_path(str(ROOT / script), run_name="__main__")


if __name__ == "__main__":
    main()

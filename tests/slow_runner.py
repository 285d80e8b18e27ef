"""Run a script of scripts/ with one stage slowed down, so a test can kill it midway.

    python tests/slow_runner.py decode|tally|render SECONDS scripts/NAME.py ARGS...

decode: each label-cache chunk decode sleeps SECONDS first (pipeline.label_decoding.decode_range;
        use --workers 1 so decoding runs in this process).
tally:  each replay tile sleeps SECONDS first (pipeline.replay.count_tile, the one function
        every tile of the replay goes through; use --workers 1 so tiles run in this
        process). A missing hook fails loudly here, never as a silently unslowed run.
render: each synthetic image sleeps SECONDS first (pipeline.synthetic.writer._write_one; its
        forked worker processes inherit the patch).
"""
from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def slowed(fn, seconds: float):
    def wrapper(*args, **kwargs):
        time.sleep(seconds)
        return fn(*args, **kwargs)
    return wrapper


def main() -> None:
    what, seconds, script, *args = sys.argv[1:]
    if what == "decode":
        import pipeline.label_decoding as mod
        mod.decode_range = slowed(mod.decode_range, float(seconds))
    elif what == "tally":
        import pipeline.replay as mod
        mod.count_tile = slowed(mod.count_tile, float(seconds))
    elif what == "render":
        import pipeline.synthetic.writer as mod
        mod._write_one = slowed(mod._write_one, float(seconds))
    else:
        raise SystemExit(f"unknown stage {what!r}")
    sys.argv = [script, *args]
    sys.path.insert(0, str(ROOT / "scripts"))
    runpy.run_path(str(ROOT / script), run_name="__main__")


if __name__ == "__main__":
    main()

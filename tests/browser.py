"""Headless Chromium for the report tests: find (or, as root on Debian, install) it and
dump a page's DOM after its scripts ran."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def chromium() -> str:
    """The Chromium executable; installs the Debian packages when run as root, else skips
    the test with the reason."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    why = "not running as root"
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        try:
            r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends",
                                "chromium", "chromium-driver"], capture_output=True,
                               text=True, timeout=300)
            why = f"apt-get install failed ({r.returncode}): {r.stderr.strip()[-300:]}"
        except (OSError, subprocess.TimeoutExpired) as e:
            why = f"apt-get install failed: {e}"
        exe = shutil.which("chromium")
        if exe:
            return exe
    pytest.skip(f"headless Chromium is not installed and could not be installed ({why}); "
                f"install the Debian packages chromium and chromium-driver to run this test")


def dump_dom(page: Path, scratch: Path, query: str = "", width: int | None = None) -> str:
    """The DOM of the page at ``page`` (a file, opened with ``query``, e.g. ``?sort=unit``)
    once loaded and its scripts ran (10 s of virtual time), in a window ``width`` px wide
    (Chromium's default when None); ``scratch`` holds the browser profile."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={scratch / 'ud'}",
           "--virtual-time-budget=10000", "--hide-scrollbars"]
    if width:
        cmd.append(f"--window-size={width},900")
    r = subprocess.run(cmd + ["--dump-dom", Path(page).as_uri() + query],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout

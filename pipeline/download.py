"""Get Broden (broden1_224, broden1_227) safely: resumable download, checksum, safe unpack.

:func:`download` ``(name, dest)`` returns ``dest/<name>`` (the folder holding index.csv):

1. already unpacked there: returned as it is;
2. ``dest/<name>.zip`` present (a previous download, or placed there by hand): verified
   and used, nothing is fetched;
3. else fetched into ``dest/<name>.zip.part`` from each mirror in order (``mirrors=``
   replaces the catalogue's): an interrupted transfer resumes where it stopped (HTTP
   Range), on the same mirror or the next; a mirror that is down or answers an error is
   skipped;
4. the archive's SHA-256 is checked before anything is unpacked: a wrong file is moved
   aside to ``<name>.zip.bad-<first 12 hex of its sum>`` (named) and the next mirror tried;
5. unpacked by pipeline/archives.py (every member checked, atomically).

No mirror reachable: :class:`DownloadError` says where to put an archive downloaded by
other means (``dest/<name>.zip``) and that it is then verified and used.

Known sums (:data:`CATALOGUE`): the SHA-256 of the published zips is not recorded by
NetDissect. Until it is filled in here, the first download is checked against the MD5
that third-party setup scripts publish where one is known, its SHA-256 is written to
``dest/<name>.zip.sha256``, and a later download or a hand-placed zip is verified against
that record (trust on first use); the sum is printed so it can be compared and added.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from pipeline.archives import ArchiveError, sha256_of, unpack

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """Broden could not be fetched or verified; the message says what to do."""


@dataclass(frozen=True)
class KnownArchive:
    """A downloadable dataset: ``urls`` tried in order; ``sha256``/``md5`` when known;
    ``size`` exact bytes when known, ``approx_size`` for the disk-space check."""
    name: str
    urls: tuple[str, ...]
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    approx_size: int | None = None


_ORIGIN = "http://netdissect.csail.mit.edu/data/"
# The Wayback Machine serves the nearest snapshot of a URL; ``id_`` asks for the bytes
# as archived (the original server has been offline at times).
_WAYBACK = "https://web.archive.org/web/2024id_/"

#: The known Broden releases (URLs of NetDissect's script/dlbroden.sh). Exact sizes are
#: not published: ``approx_size`` only sizes the disk-space check (975 MB for broden1_227
#: as a third-party README gives it; broden1_224 assumed alike).
CATALOGUE: dict[str, KnownArchive] = {
    "broden1_224": KnownArchive(
        "broden1_224", (_ORIGIN + "broden1_224.zip", _WAYBACK + _ORIGIN + "broden1_224.zip"),
        # MD5 as published by a third-party setup script; SHA-256 to be filled in
        md5="be13c292eaef3300da03f8d0e48eab1c", approx_size=1_000_000_000),
    "broden1_227": KnownArchive(
        "broden1_227", (_ORIGIN + "broden1_227.zip", _WAYBACK + _ORIGIN + "broden1_227.zip"),
        approx_size=975_000_000),
}


def _hashes(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _expected(entry: KnownArchive, dest: Path) -> KnownArchive:
    """``entry`` with the SHA-256 recorded on first download, when the catalogue has none."""
    record = dest / f"{entry.name}.zip.sha256"
    if entry.sha256 is None and record.is_file():
        return replace(entry, sha256=record.read_text().split()[0].lower())
    return entry


def verify(path: Path, entry: KnownArchive) -> str | None:
    """None when ``path`` matches ``entry``'s sums (and size), else why not. Also None
    when no sum is known (the caller records the SHA-256)."""
    if entry.size is not None and path.stat().st_size != entry.size:
        return f"{path.stat().st_size} bytes, expected {entry.size}"
    if entry.sha256 is None and entry.md5 is None:
        return None
    sha, md5 = _hashes(path)
    if entry.sha256 is not None and sha != entry.sha256.lower():
        return f"SHA-256 {sha}, expected {entry.sha256.lower()}"
    if entry.sha256 is None and md5 != entry.md5:
        return f"MD5 {md5}, expected {entry.md5}"
    return None


def _set_aside(path: Path) -> Path:
    bad = path.with_name(f"{path.name.removesuffix('.part')}.bad-{sha256_of(path)[:12]}")
    os.replace(path, bad)
    return bad


class _Dropped(Exception):
    """The transfer stopped before the end: resume it."""


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (HTTP Range from its size); _Dropped when
    the connection ends early, urllib/OSError when the mirror is down or refuses."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:          # nothing left to send: the part is complete
            return
        raise
    with resp:
        if have and resp.status != 206:     # Range ignored: start again
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True,
                       desc=part.name.removesuffix(".zip.part"))
        try:
            with open(part, "ab" if have else "wb") as f:
                while True:
                    try:
                        chunk = resp.read(_CHUNK)
                    except (http.client.IncompleteRead, ConnectionError, socket.timeout) as e:
                        raise _Dropped(str(e) or type(e).__name__) from None
                    if not chunk:
                        break
                    f.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    if total is not None and part.stat().st_size < total:
        raise _Dropped(f"{part.stat().st_size} of {total} bytes")


def _offline_message(entry: KnownArchive, dest: Path, failures: list[str],
                     bad: list[Path]) -> str:
    lines = [f"could not download {entry.name}:"] + [f"  {f}" for f in failures]
    if bad:
        lines.append("files that failed their checksum, kept aside: "
                     + ", ".join(str(b) for b in bad))
    lines.append(f"if this machine is offline, download {entry.urls[0]} (or a mirror) "
                 f"elsewhere and put it at {dest / (entry.name + '.zip')}; rerun the same "
                 f"command: the archive is verified and unpacked")
    return "\n".join(lines)


def download(name: str, dest: str | os.PathLike, mirrors: Sequence[str] | None = None, *,
             catalogue: Mapping[str, KnownArchive] | None = None, retries: int = 3,
             timeout: float = 60.0, keep_archive: bool = True, progress: bool = True,
             log: Callable[[str], None] = print) -> Path:
    """Fetch, verify and unpack dataset ``name`` under ``dest``; returns ``dest/<name>``
    (module docstring). ``mirrors``: URLs of the zip, tried in order instead of the
    catalogue's; ``retries``: resumes per mirror after a dropped connection;
    ``keep_archive``: keep ``<name>.zip`` after unpacking."""
    known = catalogue if catalogue is not None else CATALOGUE
    if name not in known:
        raise DownloadError(f"unknown dataset {name!r}; known: {sorted(known)}")
    dest = Path(dest)
    target = dest / name
    if (target / "index.csv").is_file():
        log(f"{target} already holds {name}")
        return target
    dest.mkdir(parents=True, exist_ok=True)
    entry = _expected(known[name], dest)
    if mirrors:
        entry = replace(entry, urls=tuple(mirrors))
    archive = dest / f"{name}.zip"
    if archive.is_file():
        why = verify(archive, entry)
        if why is not None:
            bad = _set_aside(archive)
            raise DownloadError(f"{archive}: {why}: not the published archive; moved aside "
                                f"to {bad}; rerun to download it again")
        log(f"using {archive} (verified)" if entry.sha256 or entry.md5 else
            f"using {archive}")
    else:
        _download_archive(entry, dest, archive, retries, timeout, progress, log)
    _record_sum(entry, dest, archive, log)
    _unpack(archive, dest, target, log)
    if not keep_archive:
        archive.unlink()
    return target


def _download_archive(entry: KnownArchive, dest: Path, archive: Path, retries: int,
                      timeout: float, progress: bool, log: Callable[[str], None]) -> None:
    """Fetch ``entry`` into ``archive`` from its mirrors in order (module docstring)."""
    if entry.approx_size is not None:
        free = shutil.disk_usage(dest).free
        if free < 2 * entry.approx_size:
            raise DownloadError(f"{dest}: {free / 1e9:.1f} GB free; {entry.name} needs about "
                                f"{2 * entry.approx_size / 1e9:.1f} GB (archive and unpacked "
                                f"folder): free space or choose another --dest")
    part = dest / f"{entry.name}.zip.part"
    failures: list[str] = []
    bad: list[Path] = []
    for url in entry.urls:
        if not _from_mirror(url, part, retries, timeout, progress, log, failures):
            continue
        why = verify(part, entry)
        if why is None:
            os.replace(part, archive)
            return
        kept = _set_aside(part)
        bad.append(kept)
        failures.append(f"{url}: {why}; kept aside as {kept}")
        log(f"{url}: the file has {why}; kept aside as {kept}, trying the next mirror")
    raise DownloadError(_offline_message(entry, dest, failures, bad))


def _from_mirror(url: str, part: Path, retries: int, timeout: float, progress: bool,
                 log: Callable[[str], None], failures: list[str]) -> bool:
    """True once ``part`` holds all of ``url`` (resuming up to ``retries`` times after
    a dropped connection); False, with the reason in ``failures``, when the mirror is
    down, refuses, or keeps dropping."""
    for _ in range(retries + 1):
        if part.exists():
            log(f"resuming at byte {part.stat().st_size} from {url}")
        else:
            log(f"downloading {url}")
        try:
            _fetch(url, part, timeout, progress)
            return True
        except _Dropped as e:
            failures.append(f"{url}: connection dropped ({e})")
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            failures.append(f"{url}: {getattr(e, 'reason', None) or e}")
            return False
    return False


def _record_sum(entry: KnownArchive, dest: Path, archive: Path,
                log: Callable[[str], None]) -> None:
    """First download of an archive whose SHA-256 is not known: record and print it."""
    if entry.sha256 is not None:
        return
    sha = sha256_of(archive)
    (dest / f"{entry.name}.zip.sha256").write_text(f"{sha}  {entry.name}.zip\n")
    log(f"SHA-256 of {archive}: {sha} (pipeline/download.py does not know the published "
        f"sum yet: recorded in {entry.name}.zip.sha256; later copies are checked against "
        f"it)")


def _unpack(archive: Path, dest: Path, target: Path, log: Callable[[str], None]) -> None:
    """Unpack ``archive`` safely and move its dataset folder (the one holding index.csv:
    the archive's top folder or its root) to ``target``."""
    staging = dest / f".{target.name}.unpacked"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        unpack(archive, staging, log=log)
        inner = [p for p in (staging, staging / target.name) if (p / "index.csv").is_file()]
        if not inner:
            tops = sorted(p.name for p in staging.iterdir())
            raise DownloadError(f"{archive}: holds no index.csv at its root or under "
                                f"{target.name}/ (top-level entries: {tops[:5]}); not a "
                                f"Broden archive")
        if target.exists():
            target.rmdir()                      # an empty folder left by hand
        os.replace(inner[0], target)
    except ArchiveError as e:
        raise DownloadError(str(e)) from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"unpacked {archive} into {target}")

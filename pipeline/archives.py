"""Unpack a downloaded archive (a Broden zip, a converter's source tarball) without trusting it.

:func:`unpack` checks, in this order, before it writes anything:

1. the archive's SHA-256 against the expected sum, when one is given (a truncated or
   tampered download is refused, naming both sums);
2. every member: a name that is absolute (``/x``, ``C:x``, ``\\\\x``) or climbs out with
   ``..`` is refused, and so is a link (symbolic or hard) whose target is absolute or lies
   outside the target folder, and a device, FIFO or other special file; tar members also go
   through :func:`tarfile.data_filter` (Python's own check for archives from the web), zip
   members that are symbolic links are refused (zipfile would write them as files).

Then it extracts into a temporary folder beside the target (``<target>.unpacking-<pid>``)
and renames it to the target once complete, so an interrupted unpack never leaves a
half-filled target; the next :func:`unpack` removes such a folder, listing it. A hostile
archive raises :class:`ArchiveError` (exit 2) and nothing of it is on disk.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable

__all__ = ["ArchiveError", "sha256_of", "check_sha256", "unpack", "members"]

_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """An archive is not what it should be: wrong checksum, a member landing outside the
    target, a link out, a special file, or not an archive at all."""


def sha256_of(path: str | os.PathLike, progress: Callable[[int], None] | None = None) -> str:
    """Hex SHA-256 of the file's bytes; ``progress(n)`` after each MiB read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return h.hexdigest()


def check_sha256(path: str | os.PathLike, expected: str) -> None:
    """ArchiveError unless the file's SHA-256 is ``expected`` (hex, any case)."""
    got = sha256_of(path)
    if got != expected.strip().lower():
        raise ArchiveError(f"{path}: SHA-256 {got}, expected {expected.strip().lower()}: the "
                           f"file is incomplete or not the published one; delete it and "
                           f"download it again (nothing was unpacked)")


def _climbs_out(name: str) -> bool:
    """True for a member name that is absolute or leaves its folder through ``..``."""
    posix, win = PurePosixPath(name.replace("\\", "/")), PureWindowsPath(name)
    if posix.is_absolute() or win.drive or win.root or name.startswith(("/", "\\")):
        return True
    depth = 0
    for part in posix.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False


def _link_leaves(member: str, target: str) -> bool:
    """True when a link at ``member`` pointing to ``target`` resolves outside the archive
    root (absolute targets always do)."""
    if _climbs_out(target):
        return True
    return _climbs_out(str(PurePosixPath(member).parent / target))


def _refuse(archive: Path, name: str, why: str) -> ArchiveError:
    return ArchiveError(f"{archive}: member {name!r} {why}: the archive is refused and "
                        f"nothing of it was unpacked; get it from a source you trust")


def _check_tar(archive: Path, tf: tarfile.TarFile, dest: Path) -> list[str]:
    names = []
    for m in tf.getmembers():
        if _climbs_out(m.name):
            raise _refuse(archive, m.name, "is an absolute path or climbs out with '..'")
        if m.issym() and _link_leaves(m.name, m.linkname):
            raise _refuse(archive, m.name, f"is a symbolic link out of the folder "
                                           f"(to {m.linkname!r})")
        if m.islnk() and _climbs_out(m.linkname):
            raise _refuse(archive, m.name, f"is a hard link out of the folder "
                                           f"(to {m.linkname!r})")
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise _refuse(archive, m.name, "is a device, FIFO or other special file")
        try:
            tarfile.data_filter(m, str(dest))
        except tarfile.FilterError as e:
            raise _refuse(archive, m.name, f"is refused by tarfile's data filter ({e})")
        names.append(m.name)
    return names


def _check_zip(archive: Path, zf: zipfile.ZipFile) -> list[str]:
    names = []
    for info in zf.infolist():
        if _climbs_out(info.filename):
            raise _refuse(archive, info.filename,
                          "is an absolute path or climbs out with '..'")
        kind = stat.S_IFMT(info.external_attr >> 16)     # 0: no Unix type recorded
        if kind == stat.S_IFLNK:
            raise _refuse(archive, info.filename, "is a symbolic link")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(archive, info.filename, "is a device, FIFO or other special file")
        names.append(info.filename)
    return names


def _open(archive: Path):
    if zipfile.is_zipfile(archive):
        return zipfile.ZipFile(archive)
    try:
        return tarfile.open(archive)
    except tarfile.TarError as e:
        raise ArchiveError(f"{archive}: not a zip or tar archive ({e})") from None


def members(archive: str | os.PathLike, dest: str | os.PathLike = ".") -> list[str]:
    """The member names of a zip or tar archive once every member passed the checks of
    the module docstring (ArchiveError at the first that does not); reads no member's
    bytes."""
    archive = Path(archive)
    with _open(archive) as a:
        if isinstance(a, zipfile.ZipFile):
            return _check_zip(archive, a)
        return _check_tar(archive, a, Path(dest))


def _remove_partial(target: Path, log: Callable[[str], None]) -> None:
    for old in sorted(target.parent.glob(f"{target.name}.unpacking-*")):
        log(f"removing {old}: left by an unpack that did not finish")
        shutil.rmtree(old, ignore_errors=True)


def unpack(archive: str | os.PathLike, target: str | os.PathLike,
           sha256: str | None = None, log: Callable[[str], None] = print) -> Path:
    """Check ``archive`` (its ``sha256`` when given, then every member: module docstring)
    and extract it into the new folder ``target``; returns ``target``. ArchiveError when a
    check fails (nothing written) or ``target`` exists and is not empty."""
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such file")
    if target.exists() and any(target.iterdir()):
        raise ArchiveError(f"{target} exists and is not empty: it was unpacked before; "
                           f"remove it or choose another folder")
    if sha256 is not None:
        check_sha256(archive, sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_partial(target, log)
    partial = target.with_name(f"{target.name}.unpacking-{os.getpid()}")
    members(archive, partial)
    with _open(archive) as a:
        try:
            if isinstance(a, zipfile.ZipFile):
                a.extractall(partial)
            else:
                a.extractall(partial, filter="data")
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    if target.exists():
        target.rmdir()                                   # empty (checked above)
    os.replace(partial, target)
    return target

"""pipeline/archives.py: a hostile archive (path traversal, absolute names, links out,
special files, a wrong checksum) is refused before anything is written; a good one is
unpacked whole, atomically."""
from __future__ import annotations

import hashlib
import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from pipeline.archives import ArchiveError, members, unpack


def _tar(path: Path, entries: list[tuple]) -> Path:
    """entries: (name, bytes) files, (name, "dir"), (name, "sym", target),
    (name, "hard", target), (name, "chr")."""
    with tarfile.open(path, "w:gz") as tf:
        for name, kind, *rest in entries:
            ti = tarfile.TarInfo(name)
            if isinstance(kind, bytes):
                ti.size = len(kind)
                tf.addfile(ti, io.BytesIO(kind))
                continue
            ti.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                       "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE}[kind]
            ti.mode = 0o755 if kind == "dir" else 0o644
            if rest:
                ti.linkname = rest[0]
            tf.addfile(ti)
    return path


def _zip(path: Path, entries: list[tuple[str, bytes, int]]) -> Path:
    """entries: (name, bytes, unix mode) members."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


GOOD = [("broden/index.csv", b"image\n"), ("broden/images", "dir"),
        ("broden/images/a.png", b"png"), ("broden/images/b.png", "sym", "a.png"),
        ("broden/images/c.png", "hard", "broden/images/a.png")]


def test_good_tar_and_zip_unpack_whole(tmp_path):
    t = unpack(_tar(tmp_path / "good.tgz", GOOD), tmp_path / "out_tar", log=lambda m: None)
    assert (t / "broden" / "index.csv").read_bytes() == b"image\n"
    assert (t / "broden" / "images" / "b.png").is_symlink()
    assert (t / "broden" / "images" / "b.png").read_bytes() == b"png"
    assert (t / "broden" / "images" / "c.png").read_bytes() == b"png"
    z = _zip(tmp_path / "good.zip", [("broden/index.csv", b"image\n", stat.S_IFREG | 0o644),
                                      ("broden/images/a.png", b"png", 0)])
    data = z.read_bytes()
    out = unpack(z, tmp_path / "out_zip", sha256=hashlib.sha256(data).hexdigest().upper(),
                 log=lambda m: None)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == \
        ["broden", "broden/images", "broden/images/a.png", "broden/index.csv"]
    assert list(tmp_path.glob("*.unpacking-*")) == []


def test_wrong_checksum_unpacks_nothing(tmp_path):
    a = _tar(tmp_path / "good.tgz", GOOD)
    with pytest.raises(ArchiveError, match="SHA-256 .* expected 00+: the file is incomplete"):
        unpack(a, tmp_path / "out", sha256="0" * 64)
    assert not (tmp_path / "out").exists() and list(tmp_path.glob("out*")) == []


TAR_ATTACKS = {
    "dotdot": ([("broden/../../escaped.txt", b"x")], "climbs out"),
    "absolute": ([("/tmp/escaped_abs.txt", b"x")], "absolute path"),
    "symlink_out": ([("broden/link", "sym", "../../outside")], "symbolic link out"),
    "symlink_abs": ([("broden/link", "sym", "/etc")], "symbolic link out"),
    "symlink_then_write": ([("broden/link", "sym", "/tmp"), ("broden/link/x", b"x")],
                           "symbolic link out"),
    "hardlink_out": ([("broden/h", "hard", "../outside")], "hard link out"),
    "device": ([("broden/dev", "chr")], "special file"),
}


@pytest.mark.parametrize("case", sorted(TAR_ATTACKS))
def test_hostile_tar_is_refused_and_nothing_written(tmp_path, case):
    entries, why = TAR_ATTACKS[case]
    work = tmp_path / "deep" / "deeper"
    work.mkdir(parents=True)
    a = _tar(work / f"{case}.tgz", [("broden/ok.txt", b"ok"), *entries])
    with pytest.raises(ArchiveError, match=why) as e:
        unpack(a, work / "out")
    assert str(a) in str(e.value) and "nothing of it was unpacked" in str(e.value)
    assert sorted(p.name for p in work.iterdir()) == [a.name]     # no target, no partial
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["deep", "deeper", a.name])
    with pytest.raises(ArchiveError):
        members(a)


ZIP_ATTACKS = {
    "dotdot": ("../escaped.txt", stat.S_IFREG | 0o644, "climbs out"),
    "absolute": ("/tmp/escaped_abs.txt", stat.S_IFREG | 0o644, "absolute path"),
    "drive": ("C:\\escaped.txt", 0, "absolute path"),
    "symlink": ("broden/link", stat.S_IFLNK | 0o777, "symbolic link"),
    "fifo": ("broden/fifo", stat.S_IFIFO | 0o644, "special file"),
}


@pytest.mark.parametrize("case", sorted(ZIP_ATTACKS))
def test_hostile_zip_is_refused_and_nothing_written(tmp_path, case):
    name, mode, why = ZIP_ATTACKS[case]
    a = _zip(tmp_path / f"{case}.zip", [("broden/ok.txt", b"ok", 0), (name, b"/etc", mode)])
    with pytest.raises(ArchiveError, match=why):
        unpack(a, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == [a.name]


def test_not_an_archive_and_used_target(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"<html>mirror is down</html>")
    with pytest.raises(ArchiveError, match="not a zip or tar archive"):
        unpack(junk, tmp_path / "out")
    with pytest.raises(ArchiveError, match="no such file"):
        unpack(tmp_path / "missing.zip", tmp_path / "out")
    a = _tar(tmp_path / "good.tgz", GOOD)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    with pytest.raises(ArchiveError, match="exists and is not empty"):
        unpack(a, tmp_path / "used")
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert (unpack(a, tmp_path / "empty", log=lambda m: None) / "broden").is_dir()


def test_interrupted_unpack_leaves_no_target_and_is_cleaned(tmp_path, monkeypatch):
    a = _tar(tmp_path / "good.tgz", GOOD)
    real = tarfile.TarFile.extractall

    def stop(self, path, *args, **kw):
        real(self, path, *args, **kw)
        raise KeyboardInterrupt
    monkeypatch.setattr(tarfile.TarFile, "extractall", stop)
    with pytest.raises(KeyboardInterrupt):
        unpack(a, tmp_path / "out")
    assert not (tmp_path / "out").exists() and list(tmp_path.glob("out.unpacking-*")) == []
    monkeypatch.undo()
    left = tmp_path / "out.unpacking-99999"             # as a kill -9 would leave it
    (left / "broden").mkdir(parents=True)
    said = []
    unpack(a, tmp_path / "out", log=said.append)
    assert not left.exists() and said == [f"removing {left}: left by an unpack that did "
                                          f"not finish"]
    assert (tmp_path / "out" / "broden" / "index.csv").is_file()


def test_unpack_script(tmp_path):
    from clirun import cli
    bad = _tar(tmp_path / "bad.tgz", [("broden/../../escaped.txt", b"x")])
    r = cli("scripts/unpack.py", bad, "--to", tmp_path / "out", check=False)
    assert r.returncode == 2 and "climbs out" in r.stderr and not (tmp_path / "out").exists()
    good = _tar(tmp_path / "good.tgz", GOOD)
    r = cli("scripts/unpack.py", good, "--to", tmp_path / "out", "--sha256",
            hashlib.sha256(good.read_bytes()).hexdigest())
    assert "unpacked 5 members" in r.stdout and (tmp_path / "out" / "broden").is_dir()

"""Broden acquisition (pipeline/download.py) against a local HTTP server on 127.0.0.1: resume
after a dropped connection, a wrong checksum kept aside, mirrors in order, offline and
hand-placed archives. Nothing here reaches the internet: every call names its mirrors."""
from __future__ import annotations

import hashlib
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.broden import BrodenDataset
from pipeline.download import CATALOGUE, DownloadError, KnownArchive, download
from pipeline.commandline.download import main
from tiny_broden import write_tiny_broden

NAME = "broden1_224"


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files[path]``; honours ``Range: bytes=N-`` unless
    ``server.ignore_range``; the first request of a path in ``server.drop`` gets half of
    the body and a closed connection."""

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path in srv.drop:
            srv.drop.discard(self.path)
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.drop, srv.requests, srv.ignore_range = {}, set(), [], False
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    """A small zip of Broden's layout: broden1_224/index.csv, ... (tests/tiny_broden.py)."""
    root = tmp_path_factory.mktemp("zip")
    data = write_tiny_broden(root / NAME)
    path = root / f"{NAME}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(data.rglob("*")):
            zf.write(f, f.relative_to(root).as_posix())
    return path.read_bytes()


def _down_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/{NAME}.zip"


def _catalogue(body: bytes | None) -> dict:
    sha = hashlib.sha256(body).hexdigest() if body is not None else None
    return {NAME: KnownArchive(NAME, (_down_url(),), sha256=sha)}


def _get(dest, mirrors, catalogue, **kw):
    logs: list[str] = []
    out = download(NAME, dest, mirrors, catalogue=catalogue, progress=False,
                   log=logs.append, **kw)
    return out, logs


def test_a_dropped_connection_resumes_and_ends_with_the_right_file(server, archive, tmp_path):
    server.files["/m/a.zip"] = archive
    server.drop.add("/m/a.zip")
    out, logs = _get(tmp_path, [server.url + "/m/a.zip"], _catalogue(archive))
    assert out == tmp_path / NAME
    assert len(BrodenDataset(out)) == 4
    assert server.requests == [("/m/a.zip", None),
                               ("/m/a.zip", f"bytes={len(archive) // 2}-")]
    assert (tmp_path / f"{NAME}.zip").read_bytes() == archive
    assert not (tmp_path / f"{NAME}.zip.part").exists()
    assert any(line.startswith(f"resuming at byte {len(archive) // 2}") for line in logs)


def test_a_server_ignoring_range_is_restarted_from_the_start(server, archive, tmp_path):
    server.files["/m/a.zip"] = archive
    server.drop.add("/m/a.zip")
    server.ignore_range = True
    out, _ = _get(tmp_path, [server.url + "/m/a.zip"], _catalogue(archive))
    assert (tmp_path / f"{NAME}.zip").read_bytes() == archive
    assert (out / "index.csv").is_file()


def test_a_wrong_checksum_is_kept_aside_and_the_next_mirror_used(server, archive, tmp_path):
    wrong = archive[:-10] + b"0123456789"
    server.files["/bad/a.zip"], server.files["/good/a.zip"] = wrong, archive
    bad_name = f"{NAME}.zip.bad-{hashlib.sha256(wrong).hexdigest()[:12]}"
    with pytest.raises(DownloadError, match=rf"(?s)SHA-256 .*kept aside.*{bad_name}"):
        _get(tmp_path, [server.url + "/bad/a.zip"], _catalogue(archive))
    assert (tmp_path / bad_name).read_bytes() == wrong
    assert not (tmp_path / NAME).exists()
    (tmp_path / bad_name).unlink()
    out, logs = _get(tmp_path, [server.url + "/bad/a.zip", server.url + "/good/a.zip"],
                     _catalogue(archive))
    assert (tmp_path / bad_name).is_file() and len(BrodenDataset(out)) == 4
    assert any(bad_name in line for line in logs)


def test_a_mirror_that_is_down_falls_through_to_the_next(server, archive, tmp_path):
    server.files["/m/a.zip"] = archive
    out, logs = _get(tmp_path, [_down_url(), server.url + "/missing.zip",
                                server.url + "/m/a.zip"], _catalogue(archive))
    assert len(BrodenDataset(out)) == 4
    assert [p for p, _ in server.requests] == ["/missing.zip", "/m/a.zip"]


def test_offline_says_where_to_put_the_archive_which_is_then_verified(archive, tmp_path):
    cat = _catalogue(archive)
    where = tmp_path / f"{NAME}.zip"
    with pytest.raises(DownloadError, match=rf"(?s)could not download {NAME}.*put it at "
                                            rf"{where}.*verified and unpacked"):
        _get(tmp_path, None, cat)
    where.write_bytes(archive[:100])                   # a truncated copy, placed by hand
    with pytest.raises(DownloadError, match=r"SHA-256 .*not the published archive; moved"):
        _get(tmp_path, None, cat)
    assert not where.exists()
    where.write_bytes(archive)
    out, logs = _get(tmp_path, None, cat)
    assert f"using {where} (verified)" in logs and len(BrodenDataset(out)) == 4
    out2, logs = _get(tmp_path, None, cat)             # already there: nothing to do
    assert out2 == out and logs == [f"{out} already holds {NAME}"]


def test_an_unknown_sum_is_recorded_on_first_download_and_checked_later(server, archive,
                                                                       tmp_path):
    server.files["/m/a.zip"] = archive
    out, logs = _get(tmp_path, [server.url + "/m/a.zip"], _catalogue(None),
                     keep_archive=False)
    sha = hashlib.sha256(archive).hexdigest()
    assert (tmp_path / f"{NAME}.zip.sha256").read_text().split()[0] == sha
    assert any(sha in line for line in logs) and not (tmp_path / f"{NAME}.zip").exists()
    import shutil
    shutil.rmtree(out)
    (tmp_path / f"{NAME}.zip").write_bytes(archive[:-1] + b"!")
    with pytest.raises(DownloadError, match=rf"expected {sha}"):
        _get(tmp_path, None, _catalogue(None))


def test_cli_offline_exits_2_with_the_message(tmp_path, capsys):
    assert main([NAME, "--dest", str(tmp_path), "--mirror", _down_url(), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"put it at {tmp_path / (NAME + '.zip')}" in err
    assert "http://netdissect.csail.mit.edu/data/broden1_224.zip" in CATALOGUE[NAME].urls

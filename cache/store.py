"""A run: one directory that is a Zarr v3 group (zarr 3.1 API), plus report files.

Layout written by extraction (``cache/activations.py`` owns the arrays)::

    RUN/zarr.json         root attrs:
        format: "netdissect-run", version: 1,
        dataset: {path (absolute), fingerprint, num_images (after --limit),
                  image_size: [ih, iw], seg_size: [sh, sw]},
        model: {spec, weights (str | null), fingerprint},
        preprocessing: {input_size: [H, W], mean: [3], std: [3], bgr, resize},
        layers: [names, in --layers order], dtype: "float16" | "float32",
        layer_nodes: {layer name: node name under layers/},
        layer_shapes: {layer name: [K, h, w]},
        block_images: B (images per resume unit; every image chunk lies in one block),
        compression: "lz4" | "zstd", layout_complete: true once every array exists,
        versions: {torch, numpy, zarr, python, tool},
        metadata_sha256: {node: sha256 of its zarr.json} for every node laid out
                  (written with layout_complete; cache/metadata.py)
    RUN/attrs-copy.json   {"attrs": the root attrs as sealed, "sha256": of them}: the
                          second copy of the run's identity, written atomically (temp
                          file, rename) just before layout_complete. The root zarr.json is
                          the only other place the identity lives: a truncated or edited
                          one is named with the repair command, and extract.py --repair
                          restores it from this copy (and any array's or group's zarr.json
                          from the layout those attrs describe) without touching a chunk
    RUN/layers/<node>/activations   (N, K, h, w) float16|float32, chunks (n, k, h, w)
                                    with n dividing B (~2 MB raw), Blosc-lz4 (default) or
                                    zstd, then CRC32C, fill 0, write_empty_chunks
    RUN/layers/<node>/maxima        (N, K) float32, chunks (B, K): max over (h, w) of the
                                    stored (rounded) activations
    RUN/progress                    (num_blocks,) uint8, chunks (1,), CRC32C only:
                                    1 once every array of block b = images [bB, bB+B)
                                    is fully written (written last)
    RUN/image_files                 (N, 32) uint8, chunks (B, 32): per image, the stamp
                                    and digest of its file when it was extracted
                                    (pipeline/dataset_files.py); extracted runs only
    RUN/.lock                       fcntl.flock target held while extracting or scoring
                                    (holds "<pid> <extraction|scoring>")

Layer names are node names as they are (dots included: ``layer4.1``) unless they hold
characters a node name cannot (``/``, a leading ``__``, only dots), which are escaped
with ``%XX``; ``layer_nodes`` records the mapping, so readers never guess.

Other stages add their own nodes (e.g. thresholds, cubes) inside ``layers/<node>/``
(``layer_group``) or beside ``layers/``, write reports under ``RUN/results/``
(``results_dir``), and never change the root attrs (cache.metadata.update_root_attrs is
the one way to: it rewrites the copy with them).

Readers for the scoring stage (each takes a run path or the group ``open_run`` gave):
``open_run`` checks every zarr.json against its digest first (a few milliseconds: one
small read per node), and ``child`` names an unreadable node of a run made before
digests; both raise cache.metadata.MetadataError (a RunError) with the repair command.
``read_run_attrs``, ``layer_names``, ``activations`` (N, K, h, w), ``maxima`` (N, K),
``check_layer`` / ``check_complete`` (raise RunError on a missing layer or an
unfinished extraction), ``layer_group``, ``run_path``, ``results_dir``,
``layer_file_name``, ``progress``.
``open_run`` takes local paths or fsspec URLs (``file://`` is read as a local path;
``memory://``, ``s3://``, ``gcs://``... go through zarr's FsspecStore, with s3fs/gcsfs
installed by the user). Scoring writes thresholds, cubes and reports into a URL run
(``results_output`` stages report files locally and uploads them). Extraction and the
label-cache build take an ``fcntl`` lock, which exists only for local directories:
extraction writes to local (or shared-filesystem) directories only, and nothing
stops two writers of one object-store location: scoring or building a label cache
there prints :func:`no_lock_note` (start one writer at a time), and a RunLock asked
of a URL, or of a filesystem without flock (an object store mounted with FUSE), is a
RunError saying what to do instead.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import zarr

from cache.zarr_io import read_flags

RUN_FORMAT = "netdissect-run"
RUN_VERSION = 1
LOCK_NAME = ".lock"

class RunError(RuntimeError):
    """A run directory is missing, unreadable, incomplete or not what it claims."""


class RunLockedError(RunError):
    """Another process holds the run's lock."""


def is_url(path: str | os.PathLike) -> bool:
    """True for an fsspec URL other than ``file://`` (which :func:`location` turns into a
    local path)."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def location(path: str | os.PathLike) -> Path | str:
    """A run or cache location: a local Path (``file://`` URLs included) or a URL string."""
    text = str(path)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    return text if is_url(text) else Path(path)


def open_run(path: str | os.PathLike, mode: str = "r") -> zarr.Group:
    """Open the run at ``path`` (local directory or fsspec URL) as a zarr.Group.

    mode: "r" (read only), "r+" (read/write, must exist) or "a" (created if missing;
    runs are created by cache/activations.create_run). Opening with "r"/"r+" a path that
    is not a run raises RunError. (No "w": zarr's "w" would delete the lock file.)
    """
    if mode not in ("r", "r+", "a"):
        raise ValueError(f"mode must be r, r+ or a, got {mode!r}")
    path = location(path)
    store: Any = path
    if mode in ("r", "r+"):
        if not is_url(path) and not any((Path(path) / n).is_file()
                                        for n in ("zarr.json", "attrs-copy.json")):
            if (Path(path) / "index.csv").is_file():
                raise RunError(f"{path} is a Broden dataset (it holds index.csv), not a "
                               f"run: extract it first (scripts/extract.py --dataset {path} "
                               f"--model MODEL --layers LAYERS --out RUN), then score RUN")
            raise RunError(f"{path}: not a run (no zarr.json); make one with "
                           f"scripts/extract.py --dataset DATASET --model MODEL --layers "
                           f"LAYERS --out {path}")
        from cache.integrity import check_run_metadata
        check_run_metadata(path)            # MetadataError naming the file and the fix
        group = zarr.open_group(store, mode=mode)
        if group.attrs.get("format") != RUN_FORMAT:
            raise RunError(f"{path}: a Zarr group but not a netdissect run "
                           f"(format={group.attrs.get('format')!r})")
        return group
    return zarr.open_group(store, mode=mode)


def as_group(run: "str | os.PathLike | zarr.Group", mode: str = "r") -> zarr.Group:
    return run if isinstance(run, zarr.Group) else open_run(run, mode)


def read_run_attrs(run: "str | os.PathLike | zarr.Group") -> dict:
    """The root attributes of a run as a plain dict (see the module docstring)."""
    return dict(as_group(run).attrs)


def layer_node(name: str) -> str:
    """Node name under ``layers/`` for a layer name (``%XX`` escapes, see docstring)."""
    out = []
    for ch in name:
        if ch == "%" or ch == "/" or ord(ch) < 32:
            out.append(f"%{ord(ch):02X}")
        else:
            out.append(ch)
    node = "".join(out)
    if node.startswith("__"):
        node = "%5F" + node[1:]
    if node and set(node) == {"."}:
        node = "%2E" + node[1:]
    return node


def is_run_dir(path: str | os.PathLike) -> bool:
    """True if ``path`` holds a zarr.json whose attrs say format netdissect-run."""
    try:
        return zarr.open_group(Path(path), mode="r").attrs.get("format") == RUN_FORMAT
    except Exception:
        return False


def tree_size(path: str | os.PathLike) -> tuple[int, int]:
    """(bytes, files) of the regular files under ``path`` (a file: itself); links are
    not followed, files vanishing meanwhile are skipped."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size, 1
    total = count = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
                count += 1
            except OSError:
                pass
    return total, count


def clear_run_dir(path: str | os.PathLike) -> None:
    """Delete everything in a run directory except the lock file (for --overwrite).

    Refuses a non-empty directory that is not a run, so that a mistyped --out never
    deletes unrelated files.
    """
    path = Path(path)
    if not path.exists():
        return
    entries = [p for p in path.iterdir() if p.name != LOCK_NAME]
    if not entries:
        return
    if not (path / "zarr.json").is_file():
        raise RunError(f"--out {path}: the directory holds files but is not a run; "
                       f"refusing to delete them with --overwrite; choose another --out")
    try:
        fmt = zarr.open_group(path, mode="r").attrs.get("format")
    except Exception:
        fmt = RUN_FORMAT          # a run whose zarr.json a crash left unreadable
    if fmt != RUN_FORMAT:
        raise RunError(f"--out {path}: a Zarr group of format {fmt!r}, not a run; "
                       f"refusing to delete it with --overwrite; choose another --out")
    for p in entries:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """``with writing(path): ...``: an OSError raised inside that names no file (a failed
    ``write`` or ``pwrite`` names none) is raised again naming ``path``, what was being
    written, so that a full disk or a read-only filesystem is reported with its path."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


# ------------------------------------------------------------------ temp files
# pipeline/files.py writes ``<name>.<random>.<pid>.tmp`` beside its targets; zarr's
# LocalStore writes ``<name>.<32 hex>.partial`` beside each chunk or zarr.json. A failure
# removes them; a kill -9 cannot, so the next run removes what is stale.
OWN_TEMP = re.compile(r"\.[A-Za-z0-9_]+\.(\d+)\.tmp$")
ZARR_TEMP = re.compile(r"\.[0-9a-f]{32}\.partial$")


def temp_affixes(name: str) -> tuple[str, str]:
    """(prefix, suffix) for ``tempfile.mkstemp`` of a temp file beside ``name``:
    ``<name>.<random>.<pid>.tmp`` (the pid says whether its writer still lives)."""
    return f"{name}.", f".{os.getpid()}.tmp"


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists (perhaps another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def stale_temp_files(root: str | os.PathLike, zarr_partials: bool = False,
                     recursive: bool = False) -> list[Path]:
    """Temp files under ``root`` whose writer is gone: ours (named by a pid not alive)
    and, with ``zarr_partials`` (only under the lock of the store being written, when
    nobody else writes it), zarr's ``*.partial`` files."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in (root.rglob("*") if recursive else root.iterdir()):
        m = OWN_TEMP.search(p.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            found.append(p)
        elif zarr_partials and ZARR_TEMP.search(p.name):
            found.append(p)
    return sorted(p for p in found if p.is_file())


def remove_stale_temp(root: str | os.PathLike, zarr_partials: bool = False,
                      recursive: bool = False) -> list[Path]:
    """Remove :func:`stale_temp_files` of ``root`` and list them on stderr; returns them."""
    gone = []
    for p in stale_temp_files(root, zarr_partials, recursive):
        try:
            p.unlink()
            gone.append(p)
        except FileNotFoundError:
            pass
    if gone:
        print(f"note: removed {len(gone)} temp file(s) an interrupted run left: "
              + ", ".join(str(p) for p in gone), file=sys.stderr)
    return gone


_HELD_LOCK_FDS: set[int] = set()     # file descriptors of the RunLocks this process holds


def close_inherited_locks() -> None:
    """In a forked worker process: close the lock files inherited from the parent, so the
    lock dies with the parent whatever its workers do. (Only closed, never unlocked: the
    open file is shared with the parent, whose lock an unlock would drop.)"""
    for fd in list(_HELD_LOCK_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCK_FDS.clear()


class RunLock:
    """Exclusive ``fcntl.flock`` on ``RUN/.lock`` (creates RUN if needed).

    ``with RunLock(run_dir, "scoring"): ...``; a second holder (another process, or
    another RunLock in this one) gets RunLockedError at once, naming the holder's pid
    and ``purpose``. The lock dies with the process, so a killed writer never leaves a
    stale lock: worker processes close their inherited copy at start
    (:func:`close_inherited_locks`, called by ``pipeline.parallel.worker_start``). Also used
    for label-cache builds (``pipeline/label_decoding.py``).

    The file holds ``"<pid> <purpose>"`` while held and is emptied on release; a lock
    taken over from a holder that ended without releasing it (a kill) is noted on
    stderr, naming its pid and purpose, and the temp files it left in the locked
    directory are removed (and listed). A lock file that cannot be written (a full
    disk, a read-only filesystem) raises an OSError naming it. A locked directory that
    holds symbolic links out of itself is refused (:func:`check_no_links_out`).
    """

    def __init__(self, run_dir: str | os.PathLike, purpose: str = "extraction",
                 name: str = LOCK_NAME):
        if is_url(run_dir):
            raise RunError(f"{run_dir}: a {purpose} takes a file lock, which object "
                           f"storage cannot give; {_LOCAL_ONLY.get(purpose, _LOCAL)}")
        self.run_dir = Path(location(run_dir))
        self.purpose = purpose
        self.name = name
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"--out {self.run_dir}: cannot create the directory ({e})") from e
        if not self.run_dir.is_dir():
            raise RunError(f"--out {self.run_dir}: not a directory")
        path = self.run_dir / self.name
        target = self.run_dir if self.name == LOCK_NAME else path.with_suffix("")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if not isinstance(e, BlockingIOError):
                os.close(fd)
                raise RunError(f"{path}: cannot lock it ({e.strerror or e}): this "
                               f"filesystem has no file locks (an object store mounted "
                               f"with FUSE?); {_LOCAL_ONLY.get(self.purpose, _LOCAL)}"
                               ) from e
            pid, what = _holder(fd)
            os.close(fd)
            who = f" (pid {pid})" if pid else ""
            raise RunLockedError(f"{target} is being written by another "
                                 f"{what or 'extraction'}{who}; wait for it to finish"
                                 f"{_OTHERWISE.get(self.purpose, '')}") from None
        pid, what = _holder(fd)
        try:
            with writing(path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {self.purpose}".encode(), 0)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        _HELD_LOCK_FDS.add(fd)
        try:
            check_no_links_out(target)
        except RunError:
            self.release()
            raise
        if pid:
            print(f"note: the previous {what or 'writer'} of {target} (pid {pid}) ended "
                  f"without finishing; resuming", file=sys.stderr)
            remove_stale_temp(target, zarr_partials=True, recursive=True)
        return self

    def release(self) -> None:
        if self._fd is not None:
            _HELD_LOCK_FDS.discard(self._fd)
            try:
                try:
                    os.ftruncate(self._fd, 0)     # empty: released, not cut short
                except OSError:
                    pass
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def links_out(root: str | os.PathLike) -> list[tuple[Path, str]]:
    """(link, what it points to) for every symbolic link under ``root`` (not followed)
    whose target lies outside ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    real_root = os.path.realpath(root)
    out, todo = [], [str(root)]
    while todo:                          # scandir's d_type: no stat per chunk file
        with os.scandir(todo.pop()) as entries:
            for e in entries:
                if e.is_symlink():
                    real = os.path.realpath(e.path)
                    if os.path.commonpath([real_root, real]) != real_root:
                        out.append((Path(e.path), os.readlink(e.path)))
                elif e.is_dir():
                    todo.append(e.path)
    return sorted(out)


def check_no_links_out(root: str | os.PathLike) -> None:
    """RunError listing the links under ``root`` that point outside it: a writer of a run
    or label cache (e.g. one unpacked from elsewhere) would change the files they point
    to. Checked when a writer takes the lock (:class:`RunLock`)."""
    found = links_out(root)
    if found:
        shown = "; ".join(f"{p} -> {t}" for p, t in found[:5])
        more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
        raise RunError(f"{root} holds {len(found)} symbolic link(s) pointing outside it: "
                       f"{shown}{more}. Writing here would change the files they point "
                       f"to: replace them by copies (e.g. `cp -rL {root} NEW` and use NEW) "
                       f"or remove them")


_LOCAL = ("work on a local (or shared-filesystem) directory and copy it to object "
          "storage afterwards (README, 'Running on a cluster')")
#: What to do instead of locking an object store, by the purpose of the RunLock.
_LOCAL_ONLY = {"extraction": "extract to a local (or shared-filesystem) --out and copy "
                             "the run to object storage afterwards (README, 'Running on a "
                             "cluster')",
               "scoring": "score the run at its s3:// (or other fsspec) URL, which takes "
                          "no lock, or a local copy",
               "label-cache build": "give the cache's s3:// (or other fsspec) URL, which "
                                    "takes no lock, or build it locally and copy it"}


def no_lock_note(where: str, what: str) -> str:
    """The note a writer of an fsspec URL prints: no lock guards it (object stores have
    none), so the user must keep to one writer."""
    return (f"note: {where} is on object storage, which has no file lock: nothing stops "
            f"a second {what} of it meanwhile (two writers would corrupt it); run one at "
            f"a time, or work on a local copy and copy it back")


#: What else a writer refused by a lock can do, by the purpose of its own RunLock.
_OTHERWISE = {"extraction": " or choose another --out",
              "scoring": ", then score again (or score a copy of the run)",
              "label-cache build": " (the cache it builds is then used as it is)"}


def _holder(fd: int) -> tuple[str, str]:
    """(pid, purpose) a lock file holds ("" for an empty or unreadable one)."""
    try:
        holder = os.pread(fd, 256, 0).decode(errors="replace").strip()
    except OSError:
        holder = ""
    pid, _, what = holder.partition(" ")
    return pid, what


# ----------------------------------------------------------------------- readers
def run_path(run: "str | os.PathLike | zarr.Group") -> Path | str:
    """The run's location: a Path for local runs, the URL string otherwise."""
    if not isinstance(run, zarr.Group):
        return location(run)
    return store_location(run.store, run.path)


def store_location(zstore: Any, path: str = "") -> Path | str:
    """Where node ``path`` of a zarr store lives: a Path (LocalStore) or a URL
    (FsspecStore); other stores (in-process memory) give their repr."""
    root = getattr(zstore, "root", None)
    if root is not None:
        base = Path(root)
        return base / path if path else base
    fs = getattr(zstore, "fs", None)
    if fs is not None:
        base = fs.unstrip_protocol(zstore.path).rstrip("/")
        return f"{base}/{path}" if path else base
    return str(zstore)


def results_dir(run: "str | os.PathLike | zarr.Group") -> Path | str:
    """``RUN/results``: where report files go (not created here); a URL for URL runs."""
    where = run_path(run)
    return f"{where}/results" if isinstance(where, str) else where / "results"


@contextmanager
def results_output(run: "str | os.PathLike | zarr.Group",
                   elsewhere: str | os.PathLike | None = None, scoring: str = ""
                   ) -> Iterator[tuple[Path, str]]:
    """``with results_output(run) as (local_dir, final): ...``: write report files into
    ``local_dir``; ``final`` is where they end up (``RUN/results``, or ``elsewhere``
    when given: score.py --results-dir, for a run that is read-only; then the folder
    ``scoring`` below it, for a named scoring, score.py --name). For a local
    target they are the same directory; for a URL run ``local_dir`` is temporary
    (``netdissect-results-<pid>-*``, removed when the block ends) and its files are
    uploaded with fsspec when the block ends without an error. Temp files a killed
    writer left there are removed first (and listed)."""
    final = location(elsewhere) if elsewhere is not None else results_dir(run)
    if scoring:
        final = f"{final}/{scoring}" if isinstance(final, str) else final / scoring
    if not isinstance(final, str):
        with writing(final):
            final.mkdir(parents=True, exist_ok=True)
        remove_stale_temp(final)
        yield final, str(final)
        return
    import fsspec
    remove_stale_dirs(STAGING)
    tmp = temp_dir(STAGING)
    try:
        yield Path(tmp), final
        fs, root = fsspec.core.url_to_fs(final)
        fs.makedirs(root, exist_ok=True)
        for f in sorted(Path(tmp).iterdir()):
            fs.put_file(str(f), f"{root}/{f.name}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


STAGING = "netdissect-results-"


def temp_dir(prefix: str) -> str:
    """A new directory ``<tmp>/<prefix><pid>-<random>`` (see :func:`remove_stale_dirs`)."""
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")


def remove_stale_dirs(prefix: str) -> list[str]:
    """Remove the temp directories ``<prefix><pid>-*`` (:func:`temp_dir`) whose process
    is gone (a kill -9 cannot remove its own), listing them on stderr."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    gone = []
    for p in Path(tempfile.gettempdir()).glob(prefix + "*"):
        m = pattern.match(p.name)
        if m and p.is_dir() and not pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(str(p))
    if gone:
        print(f"note: removed {len(gone)} temp directories an interrupted run left: "
              + ", ".join(gone), file=sys.stderr)
    return gone


def layer_file_name(layer: str) -> str:
    """A file-name-safe form of a layer name (the node name: ``/`` -> ``%2F``)."""
    return layer_node(layer)


def layer_names(run: "str | os.PathLike | zarr.Group") -> list[str]:
    """Layer names of a run, in the order they were requested."""
    return list(as_group(run).attrs["layers"])


def _node_name(group: zarr.Group, layer: str) -> str:
    nodes = group.attrs.get("layer_nodes") or {}
    if layer not in nodes:
        raise RunError(f"layer {layer!r} is not in the run {run_path(group)}; it has "
                       f"{list(group.attrs.get('layers', []))}")
    return nodes[layer]


def layer_group(run: "str | os.PathLike | zarr.Group", layer: str, mode: str = "r"
                ) -> zarr.Group:
    """The group ``layers/<node>`` of a layer (holds activations, maxima; other stages
    may add arrays). mode "a"/"r+" reopens the run writable, whatever ``run`` was."""
    group = as_group(run)
    node = _node_name(group, layer)
    if mode == "r":
        return child(group, f"layers/{node}")
    if mode not in ("a", "r+"):
        raise ValueError(f"mode must be r, r+ or a, got {mode!r}")
    return child(zarr.open_group(run_path(group), mode="r+"), f"layers/{node}")


def child(group: zarr.Group, key: str):
    """``group[key]`` (a node of a run); unreadable metadata (a run made before metadata
    digests, cache/metadata.py) is a MetadataError naming the file and the fix."""
    from cache.metadata import child as named_child
    from cache.integrity import run_fix
    def fix() -> str:
        root = zarr.open_group(group.store, mode="r") if group.path else group
        return run_fix(run_path(root), dict(root.attrs))
    return named_child(group, key, fix)


def activations(run: "str | os.PathLike | zarr.Group", layer: str) -> zarr.Array:
    """(N, K, h, w) float16|float32 cached activations of ``layer`` (lazy zarr.Array)."""
    return child(layer_group(run, layer), "activations")


def maxima(run: "str | os.PathLike | zarr.Group", layer: str) -> zarr.Array:
    """(N, K) float32 per-image maxima over (h, w) of the stored activations."""
    return child(layer_group(run, layer), "maxima")


def image_records(run: "str | os.PathLike | zarr.Group") -> np.ndarray | None:
    """(N, 32) uint8 records of the images a run was extracted from (stamp, digest:
    pipeline/dataset_files.py), or None for a run without them (derived, synthetic, or
    made before they were recorded). RunError naming a chunk that is missing or damaged."""
    group = as_group(run)
    if "image_files" not in group:
        return None
    from cache.integrity import read_named, run_fix
    return read_named(group["image_files"], run_fix(run_path(group), dict(group.attrs)))


def read_progress(group: zarr.Group) -> np.ndarray:
    """(num_blocks,) bool: blocks fully written. A marker cut short by a kill reads as
    not done (that block is simply redone)."""
    return read_flags(child(group, "progress")) == 1


def progress(run: "str | os.PathLike | zarr.Group") -> tuple[int, int]:
    """(blocks done, blocks in all) of the extraction."""
    done = read_progress(as_group(run))
    return int(done.sum()), int(done.size)


def is_complete(run: "str | os.PathLike | zarr.Group") -> bool:
    done, total = progress(run)
    return done == total


def check_complete(run: "str | os.PathLike | zarr.Group") -> None:
    """Raise RunError unless every block of the run has been extracted."""
    done, total = progress(run)
    if done != total:
        from cache.integrity import is_derived, rotate_command
        group = as_group(run)
        attrs = dict(group.attrs)
        from cache.integrity import extract_command
        where = run_path(group)
        how = (f"rerun {rotate_command(attrs, where)}" if is_derived(attrs) else
               f"rerun {extract_command(attrs, where)}")
        raise RunError(f"{run_path(group)}: extraction is incomplete ({done} of "
                       f"{total} blocks); {how} to finish it")


def check_layer(run: "str | os.PathLike | zarr.Group", layer: str) -> None:
    """Raise RunError if ``layer`` is not in the run or the extraction is unfinished."""
    _node_name(as_group(run), layer)
    check_complete(run)

"""Scoring on a Dask distributed cluster: schedulers, and the IoU tally as a Dask graph.

    with dask_scheduler(scheduler="tcp://host:8786") as client: ...   # existing cluster
    with dask_scheduler(cluster="local:4") as client: ...             # LocalCluster
    with dask_scheduler() as client: ...       # client None: the local threaded default
    with dask_scheduler("tls://host:8786", security=scheduler_security(...)) as client: ...

Inside the block, Dask computations (the exact quantiles of ``pipeline/quantiles.py``)
run on the client's cluster, and :func:`replay_cube_dask` counts the IoU cube as a graph
of tile tasks: each task opens the activation and label caches at their location (a
path on a filesystem the workers share, or an fsspec URL), reads its image range
[start, stop) from the Zarr chunks and returns its :class:`pipeline.tally.Tally` (exact
int64 counts), which a tree of merges adds up on the workers; only the final Tally
reaches the client. This is the threaded replay's reduction (chunk, merge, result) as a
graph; integer sums do not depend on the order, so the cube equals the threaded
:func:`pipeline.replay.replay_cube` bit for bit.
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from cache import store
from cache.cube import Cube
from cache.labels import LabelCache

TREE_FANIN = 4          # partial Tallies merged per reduction task


class SchedulerError(ValueError):
    """A --scheduler/--cluster argument is malformed or the cluster cannot be reached."""


def parse_cluster(text: str) -> int:
    """``local:N`` -> N (worker processes, N >= 1); errors name the argument."""
    kind, _, n = text.partition(":")
    try:
        workers = int(n)
    except ValueError:
        workers = 0
    if kind != "local" or workers < 1:
        raise SchedulerError(f"--cluster {text!r}: expected local:N with N >= 1 worker "
                             f"processes (for an existing cluster use --scheduler ADDRESS)")
    return workers


DASK_DIRS = "netdissect-dask-"      # <tmp>/netdissect-dask-<pid>-*: a LocalCluster's files


def local_cluster(workers: int, directory: str, threads_per_worker: int = 1):
    """A LocalCluster of ``workers`` processes that needs no network beyond loopback and
    no dashboard (bokeh); spill files go to ``directory`` (the caller removes it)."""
    import dask
    from distributed import LocalCluster
    with dask.config.set({"temporary-directory": directory}):
        return LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                            processes=True, dashboard_address=None, host="127.0.0.1",
                            local_directory=directory)


#: The TLS options of a tls:// --scheduler (named as `dask scheduler` / `dask worker` name
#: them) -> the Security field each sets; unset ones come from Dask's config
#: (distributed.comm.tls.ca-file / .client.cert / .client.key, e.g. DASK_DISTRIBUTED__...).
TLS_OPTIONS = {"--tls-ca-file": "tls_ca_file", "--tls-cert": "tls_client_cert",
               "--tls-key": "tls_client_key"}
_TLS_CONFIG = {"--tls-ca-file": "distributed.comm.tls.ca-file",
               "--tls-cert": "distributed.comm.tls.client.cert"}


def scheduler_security(scheduler: str | None, tls: dict[str, str | None] | None = None,
                       log=print):
    """The ``distributed.security.Security`` of a connection to ``scheduler``: for a
    ``tls://`` address, TLS with the files of ``tls`` (flag -> path, :data:`TLS_OPTIONS`)
    over Dask's TLS config, encryption required; None for any other address (and a note
    when a ``tcp://`` address is not on this machine: its pickles travel unencrypted and
    unauthenticated). SchedulerError for TLS files without a ``tls://`` address, a file
    that does not exist, or a ``tls://`` address with no CA or certificate anywhere."""
    import dask
    given = {flag: path for flag, path in (tls or {}).items() if path}
    is_tls = bool(scheduler) and scheduler.startswith("tls://")
    if given and not is_tls:
        raise SchedulerError(f"{', '.join(given)} apply to a tls:// --scheduler address, "
                             f"got {scheduler or 'none'}: give --scheduler tls://HOST:PORT")
    for flag, path in given.items():
        if not Path(path).is_file():
            raise SchedulerError(f"{flag} {path}: no such file")
    if not is_tls:
        host = (scheduler or "").split("://")[-1].rsplit(":", 1)[0].strip("[]")
        if scheduler and host not in ("127.0.0.1", "localhost", "::1"):
            log(f"dask: {scheduler} is plain TCP: task pickles travel unencrypted and "
                f"anyone who reaches the scheduler can run code on its workers; use a "
                f"tls:// scheduler with {', '.join(TLS_OPTIONS)} on an untrusted network")
        return None
    from distributed.security import Security     # (importing it loads Dask's TLS config)
    missing = [f for f, key in _TLS_CONFIG.items()
               if f not in given and not dask.config.get(key, None)]
    if missing:
        raise SchedulerError(f"--scheduler {scheduler} needs TLS files: give "
                             f"{', '.join(missing)} (and --tls-key unless the certificate "
                             f"file holds the key), or set them in Dask's distributed.comm.tls "
                             f"config")
    return Security(require_encryption=True,
                    **{TLS_OPTIONS[flag]: path for flag, path in given.items()})


def check_scheduler_args(scheduler: str | None, cluster: str | None) -> None:
    """Raise SchedulerError for both given or a malformed --cluster (before any work)."""
    if scheduler and cluster:
        raise SchedulerError("give --scheduler ADDRESS or --cluster local:N, not both")
    if cluster:
        parse_cluster(cluster)


@contextmanager
def dask_scheduler(scheduler: str | None = None, cluster: str | None = None,
                   log=print, security=None) -> Iterator[Any]:
    """Yield a ``distributed.Client`` connected to ``scheduler`` (an address; ``security``:
    its :func:`scheduler_security`) or to a new LocalCluster (``cluster="local:N"``), set
    as Dask's scheduler for the block, and close what was opened afterwards; yield None
    (threaded scheduler) when neither is given."""
    check_scheduler_args(scheduler, cluster)
    if not scheduler and not cluster:
        yield None
        return
    import dask
    from distributed import Client
    lc = tmp = None
    try:
        if cluster:
            store.remove_stale_dirs(DASK_DIRS)
            tmp = store.temp_dir(DASK_DIRS)
            lc = local_cluster(parse_cluster(cluster), tmp)
        try:
            client = Client(lc if lc is not None else scheduler, timeout="30s",
                            **({"security": security} if security is not None else {}))
        except (OSError, TimeoutError, TypeError, ValueError) as e:
            tls = (f" (check {', '.join(TLS_OPTIONS)}: the scheduler's CA must have signed "
                   f"the certificate)" if security is not None else "")
            raise SchedulerError(f"--scheduler {scheduler}: cannot connect ({e}){tls}; start "
                                 f"one with `dask scheduler` and workers with `dask worker "
                                 f"{scheduler}`, or use --cluster local:N") from e
        try:
            n = len(client.scheduler_info().get("workers", {}))
            log(f"dask: {n} worker(s) at {client.scheduler.address}")
            with dask.config.set(scheduler=client):
                yield client
        finally:
            client.close()
    finally:
        if lc is not None:
            lc.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def shared_location(where: Path | str, what: str) -> str:
    """A location worker processes can open: an absolute path or a URL. ``memory://``
    lives inside one process, so it is refused for a cluster."""
    if isinstance(where, str) and store.is_url(where):
        if where.startswith("memory://"):
            raise SchedulerError(f"{what} {where}: memory:// exists only inside this "
                                 f"process; on a cluster use a shared filesystem path or "
                                 f"an object store (s3://, gcs://)")
        return where
    return str(Path(where).resolve())


# ------------------------------------------------------------------ tile tasks
def tally_range(run: str, layer: str, labels: str, start: int, stop: int,
                thresholds: np.ndarray, device: str = "auto"):
    """The :class:`pipeline.tally.Tally` of images [start, stop) of ``layer`` (its
    result(): intersect (V, K, L) int64, activation (V, K, G) int64). Runs on a worker:
    opens the caches at ``run`` and ``labels`` (paths or URLs) itself, so no array
    travels through the scheduler; the Tally travels as its state (the counts)."""
    import torch
    from pipeline.devices import resolve_device
    from pipeline.replay import count_tile
    dev = resolve_device(device)
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(1)        # one tile per worker thread, as replay_cube does
    try:
        return count_tile(store.activations(run, layer), store.maxima(run, layer),
                          LabelCache.open(labels),
                          torch.as_tensor(np.asarray(thresholds, np.float64), device=dev),
                          start, stop)
    finally:
        torch.set_num_threads(threads)


def tree_sum(parts: list, fanin: int = TREE_FANIN):
    """One delayed Tally merging the delayed Tallies ``parts`` in a tree
    (:func:`pipeline.tally.merged`, ``fanin`` at a time)."""
    import dask
    from pipeline.tally import merged
    while len(parts) > 1:
        parts = [dask.delayed(merged, pure=True)(*parts[i:i + fanin])
                 for i in range(0, len(parts), fanin)]
    return parts[0]


def tally_graph(run: str, layer: str, labels: str, thresholds: np.ndarray,
                ranges: Sequence[tuple[int, int]], device: str = "auto"):
    """Delayed Tally of the images of ``ranges``: one tile task per range, summed by
    :func:`tree_sum`."""
    import dask
    thr = dask.delayed(np.asarray(thresholds, dtype=np.float64), pure=True)
    parts = [dask.delayed(tally_range, pure=True)(run, layer, labels, s, e, thr, device)
             for s, e in ranges]
    return tree_sum(parts)


def replay_cube_dask(run, layer: str, labels: LabelCache, levels, thresholds: np.ndarray,
                     *, device: str = "auto", tile_images: int | None = None,
                     compute_kwargs: dict | None = None) -> Cube:
    """:func:`pipeline.replay.replay_cube` as a Dask graph over image ranges (module
    docstring); computed with ``dask.compute(..., **compute_kwargs)`` (the scheduler
    set by :func:`dask_scheduler` by default). Same Cube, bit for bit."""
    import dask
    from pipeline.replay import tally_cube, tile_ranges
    ranges = tile_ranges(store.activations(run, layer), labels, tile_images)
    graph = tally_graph(shared_location(store.run_path(run), "run"), layer,
                        shared_location(store.location(labels.path), "label cache"),
                        thresholds, ranges, device)
    total, = dask.compute(graph, **(compute_kwargs or {}))
    return tally_cube(total, levels, labels)


def check_shared(run, labels: LabelCache | None = None) -> None:
    """Raise SchedulerError if the run or label cache cannot be opened by workers."""
    shared_location(store.run_path(run), "run")
    if labels is not None:
        shared_location(store.location(labels.path), "label cache")

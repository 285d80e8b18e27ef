"""What every command line (pipeline/commandline/) shares: option groups, parsing, an error wrapper.

``parser(__doc__)`` describes a command by its docstring. The same option means the same
thing everywhere:

- ``--layers a,b`` (comma list; ``--layer a`` is kept as an alias and may be repeated),
- ``--quiet`` (no progress bars; ``--no-progress`` is kept as an alias),
- ``--device auto|cpu|cuda|cuda:N`` (where torch runs),
- ``--out`` for where a command writes (unpack's ``--to`` and bench's ``--work`` are kept
  as aliases), ``--overwrite`` to replace what is there (cache-labels' ``--rebuild`` is
  kept as an alias),
- ``--dataset``, ``--label-cache``, ``--quantile``, ``--iou-threshold``, ``--categories``,
  ``--device``, ``--tile-images``, ``--workers`` (tally worker processes) and
  ``--scheduler`` / ``--cluster`` for the scoring commands.

``run_main(fn, ...)`` runs a command's body and turns the errors a user can fix into one
line on stderr and an exit code: 2 for bad input (the message names the file, row or
argument), 1 for an environment failure: an OSError, or an error raised from a full disk
(ENOSPC, EDQUOT, EFBIG) or a read-only filesystem (EROFS; EACCES/EPERM when not root),
named with the path being written (nothing stored before is lost), 130 for Ctrl-C.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from typing import Callable, Sequence


def description(doc: str) -> str:
    """The first paragraph of a command's module docstring (line breaks kept as written)."""
    return doc.split("\n\n")[0].strip()


def parser(doc: str) -> argparse.ArgumentParser:
    """A command's parser, described by the first paragraph of its module docstring (to
    print it as written, pass ``formatter_class=argparse.RawDescriptionHelpFormatter`` as
    here to a subparser)."""
    return argparse.ArgumentParser(description=description(doc),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def check_at_least(p: argparse.ArgumentParser, a: argparse.Namespace, minimum: int,
                   *dests: str) -> None:
    """``p.error`` (exit 2) naming ``--dest`` for the first of ``dests`` below ``minimum``
    (None: its default, not checked)."""
    for dest in dests:
        v = getattr(a, dest)
        if v is not None and v < minimum:
            p.error(f"--{dest.replace('_', '-')} {v}: must be >= {minimum}")


def comma_list(text: str | None) -> list[str] | None:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; None or empty -> None."""
    if not text:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


class _LayersAction(argparse.Action):
    """``--layers a,b`` and ``--layer c`` (repeatable) add to one list, in order."""

    def __call__(self, parser, namespace, values, option_string=None):
        names = comma_list(values)
        if not names:
            parser.error(f"{option_string}: give at least one layer name")
        current = getattr(namespace, self.dest, None) or []
        setattr(namespace, self.dest, [*current, *names])


def add_layers(p: argparse.ArgumentParser, required: bool = False,
               help: str = "comma-separated layer names (default: every layer of the run)"
               ) -> None:
    p.add_argument("--layers", "--layer", dest="layers", action=_LayersAction,
                   default=None, required=required, metavar="L[,L...]", help=help)


def add_quiet(p: argparse.ArgumentParser, help: str = "no progress bars") -> None:
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                   help=help)


def add_device(p: argparse.ArgumentParser,
               help: str = "where torch runs: auto (cuda when available), cpu, cuda or "
                           "cuda:N (default auto)") -> None:
    """``--device`` (pipeline/devices.py resolves it)."""
    p.add_argument("--device", default="auto", help=help)


def add_run_data(p: argparse.ArgumentParser) -> None:
    """The run's dataset and label cache (scoring commands)."""
    p.add_argument("--dataset", help="Broden directory (default: the one extract.py recorded)")
    p.add_argument("--label-cache", help="label cache path (default: under $NETDISSECT_CACHE)")


def add_scoring(p: argparse.ArgumentParser) -> None:
    """Quantile, detector threshold and category subset."""
    p.add_argument("--quantile", type=float, default=0.005,
                   help="activation quantile q: T_k is the (1-q) quantile (default 0.005)")
    p.add_argument("--iou-threshold", type=float, default=0.04,
                   help="a unit is a detector when its best IoU exceeds this (default 0.04)")
    p.add_argument("--categories", default=None,
                   help="comma-separated subset of categories to score (default: all)")


def add_compute(p: argparse.ArgumentParser) -> None:
    """Where and how the tally runs: device, tiles, worker processes, Dask cluster."""
    add_device(p, help="where the tally runs: auto (cuda when available), cpu, cuda or "
                       "cuda:N (default auto)")
    p.add_argument("--tile-images", type=int, default=None,
                   help="images per replay tile (a worker's unit of work, merged and "
                        "checkpointed; default about 1,024, or N / 16 for small caches)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="tiles counted at once on CPU, in N worker processes (default: one "
                        "per core, in processes for large caches and threads for small ones; "
                        "1: in this process)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run the quantiles and the tally on this dask.distributed scheduler "
                        "(e.g. tcp://10.0.0.5:8786); the run and label cache must be at a "
                        "path or URL the workers can open")
    p.add_argument("--cluster", metavar="local:N", default=None,
                   help="start a LocalCluster of N worker processes for the quantiles and "
                        "the tally (default: neither, the local threaded scheduler)")
    p.add_argument("--tls-ca-file", metavar="PEM", default=None,
                   help="TLS for a tls:// --scheduler, as `dask scheduler --tls-ca-file`: "
                        "the CA that signed the cluster's certificates (default: Dask's "
                        "distributed.comm.tls config)")
    p.add_argument("--tls-cert", metavar="PEM", default=None,
                   help="this client's certificate for a tls:// --scheduler")
    p.add_argument("--tls-key", metavar="PEM", default=None,
                   help="this client's private key (unless --tls-cert holds it)")


def scheduler_security(a: argparse.Namespace, log=print):
    """The Security of ``--scheduler`` from the --tls-* options
    (:func:`pipeline.distributed.scheduler_security`)."""
    from pipeline.distributed import scheduler_security as security
    return security(a.scheduler, {"--tls-ca-file": a.tls_ca_file, "--tls-cert": a.tls_cert,
                                  "--tls-key": a.tls_key}, log)


def parse_levels(text: str) -> list[float]:
    """``--levels 0.005,0.02`` -> floats; ValueError names --levels."""
    try:
        return [float(q) for q in text.split(",") if q.strip()]
    except ValueError:
        raise ValueError(f"--levels {text!r}: expected comma-separated numbers") from None


def score_config(a: argparse.Namespace, levels: Sequence[float], **more):
    """The ScoreConfig of the options of add_scoring, add_compute, add_run_data, add_quiet
    (imported here, not at the top: commands that do not score stay light)."""
    from pipeline.layer_stages import ScoreConfig
    return ScoreConfig(quantile=a.quantile, iou_threshold=a.iou_threshold,
                       categories=comma_list(a.categories), device=a.device,
                       levels=tuple(levels), tile_images=a.tile_images, workers=a.workers,
                       progress=not a.quiet, dataset=a.dataset, **more)


FULL_DISK = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def read_only_errnos() -> set[int]:
    """EROFS, and EACCES/EPERM for a user other than root (root writes through modes)."""
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    return {errno.EROFS} | (set() if root else {errno.EACCES, errno.EPERM})


def environment_cause(e: BaseException) -> OSError | None:
    """The full-disk or read-only OSError ``e`` is or was raised from, else None."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in FULL_DISK | read_only_errnos():
            return e
        e = e.__cause__
    return None


def describe_environment(e: OSError) -> str:
    """``cannot write PATH: the disk is full ...`` or ``... is on a read-only ...``."""
    where = f"cannot write {e.filename}" if e.filename else "a write failed"
    if e.errno in FULL_DISK:
        return (f"{where}: the disk is full, or a disk quota or the file-size limit was "
                f"reached ({e.strerror})")
    return f"{where}: it is on a read-only filesystem or not writable ({e.strerror})"


class _SiblingWriteFailures(logging.Filter):
    """Drops asyncio's "Future exception was never retrieved" report (with its
    traceback) of a full-disk or read-only OSError: zarr writes chunks concurrently,
    and on a full disk each of them fails; run_main reports the one raised."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or environment_cause(exc) is None


def run_main(body: Callable[[], object], errors: tuple[type[BaseException], ...], *,
             disk_note: str, interrupt_note: str,
             read_only_note: str = "choose a writable location and rerun") -> int:
    """Run ``body`` and return the exit code: 0; 2 with ``error: <message>`` for one of
    ``errors`` or a ValueError; 1 for an OSError or an error raised from a full disk
    (``disk_note`` says what is kept and how to go on) or a read-only filesystem
    (``read_only_note``: where else to write); 130 for Ctrl-C (``interrupt_note``, unless
    the KeyboardInterrupt carries a message: then it was said already)."""
    logging.getLogger("asyncio").addFilter(_SiblingWriteFailures())
    try:
        body()
    except (*errors, ValueError, OSError) as e:
        cause = environment_cause(e)
        if cause is None and not isinstance(e, OSError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        note = read_only_note if cause is not None and cause.errno not in FULL_DISK \
            else disk_note
        if cause is e:
            print(f"error: {describe_environment(e)}\n{note}", file=sys.stderr)
        elif cause is not None:         # a named error raised from one: it says what to do
            print(f"error: {e}\n({describe_environment(cause)})\n{note}", file=sys.stderr)
        else:                           # another OSError
            print(f"error: {e}\n{disk_note}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        if not e.args:
            print(f"\ninterrupted: {interrupt_note}", file=sys.stderr)
        return 130
    return 0


def add_null(p: argparse.ArgumentParser) -> None:
    """The null model's options (pipeline/null_model.py)."""
    p.add_argument("--null", nargs="?", const="both", default=None,
                   metavar="image|spatial|both",
                   help="permutation p-values of each unit's best IoU: image shuffle, "
                        "spatial (rigid motion of the mask) or both (default when given "
                        "bare); adds p_image/p_spatial columns (README, 'Null model')")
    p.add_argument("--null-permutations", type=int, default=None,
                   help="replicates R of the null model (default 100; smallest p 1/(R+1))")
    p.add_argument("--null-images", default=None,
                   help="random subsample of images for the null model, or 'all' "
                        "(default 500)")
    p.add_argument("--null-seed", type=int, default=None,
                   help="seed of the null model (default 0)")


def null_config(a: argparse.Namespace):
    """The NullConfig asked for by --null* (None without --null); errors name the flag."""
    from pipeline.null_model import KINDS, NullConfig
    given = [f"--{k.replace('_', '-')}" for k in ("null_permutations", "null_images",
                                                   "null_seed") if getattr(a, k) is not None]
    if a.null is None:
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --null: add --null (or "
                             f"leave them out)")
        return None
    kinds = list(KINDS) if a.null == "both" else [k.strip() for k in a.null.split(",")]
    null_images = "500" if a.null_images is None else a.null_images
    if null_images.strip().lower() == "all":
        images = None
    else:
        try:
            images = int(null_images)
        except ValueError:
            raise ValueError(f"--null-images {null_images!r}: expected a number of images "
                             f"or 'all'") from None
    cfg = NullConfig(kinds=tuple(kinds), images=images,
                     permutations=100 if a.null_permutations is None else a.null_permutations,
                     seed=0 if a.null_seed is None else a.null_seed)
    cfg.check()
    return cfg


def _check_fractions(vals: list[float], arg: str, spec: str, noun: str) -> None:
    """ValueError naming ``arg`` unless ``vals`` is a non-empty list of values in [0, 1]."""
    if not vals:
        raise ValueError(f"{arg} {spec!r}: no {noun}")
    bad = [v for v in vals if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"{arg} {spec!r}: {noun}s must be in [0, 1], got {bad[:3]}")


def parse_thresholds(spec: str, arg: str = "--sweep") -> list[float]:
    """``start:stop:step`` (stop included when on the grid) or ``a,b,c`` -> thresholds.

    Values are rounded to 10 decimals (0.01:0.2:0.01 gives 0.07, not 0.07000000000000001)."""
    spec = spec.strip()
    try:
        if ":" in spec:
            parts = [float(p) for p in spec.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if step <= 0 or stop < start:
                raise ValueError(f"{arg} {spec!r}: need step > 0 and stop >= start")
            n = int(round((stop - start) / step + 1e-9)) + 1
            vals = [round(start + i * step, 10) for i in range(n)]
            vals = [v for v in vals if v <= stop + 1e-12]
        else:
            vals = [float(p) for p in spec.split(",") if p.strip()]
    except ValueError as e:
        if str(e).startswith(arg):
            raise
        raise ValueError(f"{arg} {spec!r}: expected start:stop:step (e.g. 0.01:0.2:0.01) "
                         f"or a comma-separated list of thresholds") from None
    _check_fractions(vals, arg, spec, "threshold")
    if len(vals) > 10000:
        raise ValueError(f"{arg} {spec!r}: {len(vals)} thresholds; at most 10000")
    return vals


def parse_alphas(spec: str) -> list[float]:
    """``0,0.2,...`` -> sorted distinct alphas in [0, 1]; ValueError names --alphas."""
    try:
        vals = [float(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"--alphas {spec!r}: expected comma-separated numbers "
                         f"(e.g. 0,0.2,0.4,0.6,0.8,1)") from None
    _check_fractions(vals, "--alphas", spec, "alpha")
    return sorted(set(vals))

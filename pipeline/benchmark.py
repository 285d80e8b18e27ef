"""Benchmark the pipeline's stages (scripts/bench.py): wall time, images/s, peak memory,
bytes on disk.

:func:`plan_stages` decides which stages run and on which paths (a :class:`BenchPlan`),
:func:`run_benchmark` runs them one by one, :func:`table` makes the markdown table and
:func:`append_markdown` appends it with the machine and the command to a file. Every stage
runs in a fresh (spawned) process so that its peak resident memory is its
own: ``peak_rss_mib`` is the stage process's maximum RSS, ``child_rss_mib`` the largest
of its worker processes (decoders, dask workers), if any. The bare forward loop
(:func:`bare_forward_stats`: extraction's decoding and forward passes without hooks or
writes) is the baseline extraction's cost is measured against.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import platform
import resource
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from pipeline.extract_config import ExtractConfig


@dataclass
class StageResult:
    stage: str
    images: int
    seconds: float
    peak_rss_mib: float = 0.0
    child_rss_mib: float = 0.0
    disk_mib: float | None = None
    notes: str = ""

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def dir_mib(path: str | Path) -> float:
    from cache.store import tree_size
    return tree_size(path)[0] / 2**20


# ------------------------------------------------------------------------ stages
def stage_generate(out: str, num_images: int, image_size: int, seg_size: int, seed: int,
                   workers: int | None, profile: str = "demo") -> StageResult:
    from pipeline.synthetic.writer import write_dataset
    t0 = time.perf_counter()
    write_dataset(out, num_images=num_images, image_size=image_size, seg_size=seg_size,
                  seed=seed, workers=workers, progress=False, profile=profile)
    dt = time.perf_counter() - t0
    return StageResult("generate", num_images, dt, disk_mib=dir_mib(out),
                       notes=f"{profile} profile, {image_size}px images, {seg_size}px "
                             f"segmentations, workers={workers or os.cpu_count()}")


def stage_labels(dataset: str, out: str, workers: int | None) -> StageResult:
    from pipeline.label_decoding import build_label_cache
    from pipeline.broden import BrodenDataset
    t0 = time.perf_counter()
    ds = BrodenDataset(dataset)
    c = build_label_cache(ds, out, workers=workers, overwrite=True, progress=False)
    dt = time.perf_counter() - t0
    return StageResult("label cache", c.num_images, dt, disk_mib=dir_mib(out),
                       notes=f"P={c.planes.shape[1]} slots, seg {c.seg_size}")


def stage_activations(dataset: str, out: str, shape: tuple[int, int, int],
                      num_images: int | None) -> StageResult:
    from pipeline.synthetic.activations import write_synthetic_run
    t0 = time.perf_counter()
    write_synthetic_run(out, dataset, shape, num_images=num_images, progress=False)
    dt = time.perf_counter() - t0
    from cache import store
    n = store.activations(out, "synthetic").shape[0]
    raw = n * shape[0] * shape[1] * shape[2] * 2 / 2**20
    disk = dir_mib(out)
    return StageResult("synthetic activations (write)", n, dt, disk_mib=disk,
                       notes=f"{shape[0]}x{shape[1]}x{shape[2]} float16: raw {raw:.0f} MiB, "
                             f"compression {raw / disk:.2f}x")


def stage_extract(dataset: str, out: str, model: str, layers: str, device: str,
                  num_images: int | None, batch_size: int) -> StageResult:
    from pipeline.extract import extract_with_stats
    from pipeline.extract_config import ExtractConfig
    cfg = ExtractConfig(dataset=dataset, model=model, layers=layers, out=out, device=device,
                        limit=num_images, batch_size=batch_size, overwrite=True, yes=True,
                        progress=False)
    bare = bare_forward_loop(cfg)
    stats = extract_with_stats(cfg, log=lambda *a, **k: None)
    rate = stats.images / stats.seconds
    return StageResult("extract", stats.images, stats.seconds, disk_mib=dir_mib(out),
                       notes=f"bare forward loop {bare:.1f} img/s; cache overhead "
                             f"{100 * (bare / rate - 1):+.1f}% ({model}: {layers})")


def stage_quantiles(run: str, layer: str, levels: list[float]) -> StageResult:
    from cache import store
    from pipeline.quantiles import exact_thresholds
    acts = store.activations(run, layer)
    t0 = time.perf_counter()
    exact_thresholds(acts, levels)
    dt = time.perf_counter() - t0
    return StageResult("quantiles", acts.shape[0], dt,
                       notes=f"{len(levels)} levels, {tuple(acts.shape[1:])} maps")


def stage_tally(run: str, layer: str, labels: str, levels: list[float], device: str
                ) -> StageResult:
    from cache import store
    from cache.labels import LabelCache
    from pipeline.layer_stages import ScoreConfig, layer_cube, layer_thresholds
    lab = LabelCache.open(labels)
    layer_thresholds(run, layer, levels, log=lambda *a: None)   # stored: not timed here
    g = store.layer_group(run, layer, mode="a")
    if "cube" in g:
        g["cube"].attrs["complete"] = False                    # force a replay
    t0 = time.perf_counter()
    cube = layer_cube(run, layer, lab, ScoreConfig(levels=levels, quantile=levels[0],
                                                   device=device, progress=False),
                      log=lambda *a: None)
    dt = time.perf_counter() - t0
    n = store.activations(run, layer).shape[0]
    return StageResult("tally (IoU cube)", n, dt,
                       notes=f"{len(levels)} levels, K={cube.intersect.shape[1]}, "
                             f"L={cube.intersect.shape[2]}, device={device}")


def stage_rescore(run: str, layer: str, labels: str, levels: list[float]) -> StageResult:
    from cache import store
    from cache.cube import read_cube
    from cache.labels import LabelCache
    from pipeline.layer_stages import cube_source
    from pipeline.scoring import dissect
    t0 = time.perf_counter()
    lab = LabelCache.open(labels)
    cube = read_cube(store.layer_group(run, layer), cube_source(run, layer, lab))
    v = cube.level_index(levels[0])
    d = dissect(cube.intersect[v], cube.activation[v], cube.label_pixels,
                lab.primary_category, cube.categories, iou_threshold=0.08)
    d.summary()
    dt = time.perf_counter() - t0
    return StageResult("re-score (new IoU threshold)", store.activations(run, layer).shape[0],
                       dt, notes="read cube + labels + summary, no replay")


def stage_report(run: str, layer: str, labels: str, levels: list[float], dataset: str
                 ) -> StageResult:
    """The results of one layer from its stored cube: the results document, the CSV and
    the HTML page with each unit's top 8 images (pipeline/layer_stages.py layer_results),
    into a scratch folder beside the run's results."""
    from cache import store
    from cache.cube import read_cube
    from cache.labels import LabelCache
    from pipeline.layer_stages import ScoreConfig, cube_source, layer_results
    lab = LabelCache.open(labels)
    cube = read_cube(store.layer_group(run, layer), cube_source(run, layer, lab))
    out = Path(run) / "bench_report"
    t0 = time.perf_counter()
    layer_results(run, layer, cube, lab, ScoreConfig(levels=levels, quantile=0.005,
                                                     dataset=dataset, progress=False,
                                                     results_dir=out),
                  log=lambda *a: None)
    dt = time.perf_counter() - t0
    page = out / f"{store.layer_file_name(layer)}.html"
    K = store.activations(run, layer).shape[1]
    return StageResult("report (document, CSV, HTML page)", K, dt,
                       disk_mib=page.stat().st_size / 2**20,
                       notes=f"{K} units x 8 top images; images/s column = units/s; "
                             f"disk = the page")


def stage_files(dataset: str) -> StageResult:
    """The dataset-file check done before every scoring (pipeline/dataset_files.py):
    stat every image and label PNG and compare with their records (none changed)."""
    from pipeline.broden import BrodenDataset
    from pipeline.dataset_files import find_changes, image_files, label_files, records
    ds = BrodenDataset(dataset)
    rows = range(len(ds))
    t0 = time.perf_counter()
    stored = {f: records(ds, rows, f) for f in (image_files, label_files)}
    t_records = time.perf_counter() - t0
    t0 = time.perf_counter()
    stale = sum(len(find_changes(ds, rec, f).stale) for f, rec in stored.items())
    dt = time.perf_counter() - t0
    n_files = sum(len(image_files(ds, i)) + len(label_files(ds, i)) for i in rows)
    return StageResult("dataset-file check", len(ds), dt,
                       notes=f"{n_files} files stat'ed, {stale} stale; making the records "
                             f"(read + BLAKE2b of every file) took {t_records:.1f} s")


# ------------------------------------------------------------------ bare forward
@dataclass
class LoopStats:
    """images, wall seconds and process CPU seconds (all threads) of a loop."""
    images: int
    seconds: float
    cpu_seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def bare_forward_stats(config: ExtractConfig) -> LoopStats:
    """The same pipeline as extract() (decoding workers, preprocessing, forward pass
    over the first ``config.limit`` images in batches of ``config.batch_size``) with
    no hooks and no writes: the baseline the cache's cost is measured against."""
    import torch

    from pipeline.extract_config import (ExtractError, config_workers, setup_extraction,
                                         torch_threads)
    from pipeline.preprocess import ResizedImages, image_loader, to_model_input
    s = setup_extraction(config)
    N, B = s.num_images, config.batch_size
    batches = [list(range(i, min(i + B, N))) for i in range(0, N, B)]
    workers = config_workers(config)
    threads = torch_threads(config, s.device)    # before the workers start
    loader = image_loader(ResizedImages(s.dataset, s.prep.input_size), batches, workers,
                          pin=s.device.type == "cuda")
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode(), threads:
        for _idx, pixels, err, _files in loader:
            if err is not None:
                raise ExtractError(err)
            s.model(to_model_input(pixels, s.prep, s.device))
        if s.device.type == "cuda":
            torch.cuda.synchronize()
    return LoopStats(N, time.perf_counter() - t0, time.process_time() - c0)


def bare_forward_loop(config: ExtractConfig, log: Callable[[str], None] | None = None
                      ) -> float:
    """images/s of :func:`bare_forward_stats` (compare with ExtractStats.images_per_s)."""
    st = bare_forward_stats(config)
    if log:
        log(f"bare forward loop: {st.images} images in {st.seconds:.2f} s = "
            f"{st.images_per_s:.1f} images/s")
    return st.images_per_s


# ------------------------------------------------------------------------ runner
def _child(q, fn, kwargs):
    from pipeline.parallel import worker_start
    worker_start()                      # a stage ends with the benchmark (no orphan, lock)
    try:
        r = fn(**kwargs)
        r.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        r.child_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        q.put(asdict(r))
    except BaseException as e:          # report, do not hang the parent
        q.put({"error": f"{type(e).__name__}: {e}"})


def run_stage(fn, **kwargs) -> StageResult:
    """Run ``fn(**kwargs)`` in a fresh spawned process and return its StageResult."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, fn, kwargs))
    p.start()
    out = q.get()
    p.join()
    if "error" in out:
        raise RuntimeError(f"stage {fn.__name__} failed: {out['error']}")
    return StageResult(**out)


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {gpu}; Python "
            f"{platform.python_version()}, torch {torch.__version__}")


def table(results: list[StageResult]) -> str:
    lines = ["| stage | images | wall s | images/s | peak RSS MiB (workers) | on disk MiB | notes |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        disk = f"{r.disk_mib:.0f}" if r.disk_mib is not None else ""
        child = f" ({r.child_rss_mib:.0f})" if r.child_rss_mib else ""
        lines.append(f"| {r.stage} | {r.images} | {r.seconds:.2f} | {r.images_per_s:.0f} | "
                     f"{r.peak_rss_mib:.0f}{child} | {disk} | {r.notes} |")
    return "\n".join(lines)


# -------------------------------------------------------------------------- plan
STAGES = ["generate", "labels", "extract", "activations", "quantiles", "tally", "rescore",
          "report", "files"]


@dataclass(frozen=True)
class BenchPlan:
    """The stages to measure, in order, and what they share: the Broden directory, the
    label cache, the run and its layer, and the sizes and settings of the stages.
    ``synthetic``: the (K, h, w) of a synthetic activation cache (no model), or None."""
    stages: tuple[str, ...]
    work: Path
    dataset: str
    labels: str
    run: str
    layer: str
    num_images: int
    image_size: int
    seg_size: int
    synthetic: tuple[int, ...] | None
    model: str
    layers: str
    batch_size: int
    device: str
    workers: int | None
    profile: str = "demo"


def parse_shape(text: str) -> tuple[int, int, int]:
    """``--synthetic-activations K,h,w`` -> ``(K, h, w)``; ValueError names the flag."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise ValueError(f"--synthetic-activations {text!r}: expected K,h,w "
                         f"(three integers)")
    return shape


def plan_stages(work: str | Path, num_images: int, stages: Sequence[str] = (), *,
                dataset: str | None = None, image_size: int = 224, seg_size: int = 112,
                synthetic: tuple[int, ...] | None = None, model: str = "demo",
                layers: str = "conv5", batch_size: int = 64, device: str = "auto",
                workers: int | None = None, profile: str = "demo") -> BenchPlan:
    """The plan of a benchmark in ``work``. ``stages`` empty: all of :data:`STAGES` that
    apply, in order (no generate with an existing ``dataset``; activations with
    ``synthetic``, extract of ``model``'s first layer of ``layers`` without it).
    ``profile``: of the generated dataset (demo: 81 concepts; broden: 1,197, Broden's
    statistics). Paths: WORK/broden_<N>_<image size>[_broden] (unless ``dataset``),
    WORK/labels_<dataset
    name>.zarr, WORK/run_synth_<KxhXw>_<N> or WORK/run_<model>_<N>. ValueError for an
    unknown stage or a nonsense number (naming its flag)."""
    _check_numbers(num_images=num_images, image_size=image_size, seg_size=seg_size,
                   batch_size=batch_size, workers=workers)
    work = Path(work)
    given = dataset
    tag = "" if profile == "demo" else f"_{profile}"
    dataset = dataset or str(work / f"broden_{num_images}_{image_size}{tag}")
    labels = str(work / f"labels_{Path(dataset).name}.zarr")
    if synthetic:
        run, layer = str(work / f"run_synth_{'x'.join(map(str, synthetic))}_{num_images}"), \
            "synthetic"
    else:
        run, layer = str(work / f"run_{model.replace('/', '_')}_{num_images}"), \
            layers.split(",")[0]
    stages = list(stages) or [s for s in STAGES
                              if not (s == "generate" and given)
                              and not (s == "extract" and synthetic)
                              and not (s == "activations" and not synthetic)]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"unknown stage(s) {bad}; choose from {STAGES}")
    return BenchPlan(tuple(stages), work, dataset, labels, run, layer, num_images,
                     image_size, seg_size, synthetic, model, layers, batch_size, device,
                     workers, profile)


def _check_numbers(**numbers: int | None) -> None:
    """ValueError naming ``--flag-name`` of the first number below 1 (None: default)."""
    for name, v in numbers.items():
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} {v}: must be >= 1")


# --------------------------------------------------------------------- benchmark
def stage_call(plan: BenchPlan, stage: str) -> tuple[Callable[..., StageResult], dict]:
    """The stage function of ``stage`` (one of :data:`STAGES`) and its keyword arguments
    under ``plan`` (quantiles, tally and rescore at the six levels of DEFAULT_LEVELS)."""
    from pipeline.layer_stages import DEFAULT_LEVELS
    p, levels = plan, list(DEFAULT_LEVELS)
    calls = {
        "generate": (stage_generate, dict(out=p.dataset, num_images=p.num_images,
                                          image_size=p.image_size, seg_size=p.seg_size,
                                          seed=0, workers=p.workers, profile=p.profile)),
        "labels": (stage_labels, dict(dataset=p.dataset, out=p.labels, workers=p.workers)),
        "extract": (stage_extract, dict(dataset=p.dataset, out=p.run, model=p.model,
                                        layers=p.layers, device=p.device,
                                        num_images=p.num_images, batch_size=p.batch_size)),
        "activations": (stage_activations, dict(dataset=p.dataset, out=p.run,
                                                shape=p.synthetic, num_images=p.num_images)),
        "quantiles": (stage_quantiles, dict(run=p.run, layer=p.layer, levels=levels)),
        "tally": (stage_tally, dict(run=p.run, layer=p.layer, labels=p.labels,
                                    levels=levels, device=p.device)),
        "rescore": (stage_rescore, dict(run=p.run, layer=p.layer, labels=p.labels,
                                        levels=levels)),
        "report": (stage_report, dict(run=p.run, layer=p.layer, labels=p.labels,
                                      levels=levels, dataset=p.dataset)),
        "files": (stage_files, dict(dataset=p.dataset)),
    }
    return calls[stage]


def run_benchmark(plan: BenchPlan, log: Callable[[str], None] | None = None
                  ) -> list[StageResult]:
    """Run the plan's stages in order, each in a fresh process (:func:`run_stage`), in
    ``plan.work`` (created); ``log`` gets ``-- <stage>`` before each and its table row
    after. Returns the results, in order."""
    plan.work.mkdir(parents=True, exist_ok=True)
    results = []
    for s in plan.stages:
        if log:
            log(f"-- {s}")
        fn, kwargs = stage_call(plan, s)
        r = run_stage(fn, **kwargs)
        results.append(r)
        if log:
            log(table([r]).splitlines()[-1])
    return results


def append_markdown(path: str | Path, results: list[StageResult], num_images: int,
                    argv: Sequence[str]) -> str:
    """Append the results table to the markdown file ``path`` under a dated heading, with
    the machine (:func:`machine_line`) and the command (``python scripts/bench.py`` +
    ``argv``); returns the text appended."""
    cmd = "python scripts/bench.py " + " ".join(shlex.quote(x) for x in argv)
    text = (f"\n### {time.strftime('%Y-%m-%d %H:%M')} — N = {num_images}\n\n"
            f"Machine: {machine_line()}  \nCommand: `{cmd}`\n\n{table(results)}\n")
    with open(path, "a") as f:
        f.write(text)
    return text


def write_json(path: str | Path, results: list[StageResult], argv: Sequence[str]) -> Path:
    """The results as one JSON file (machine, command, one object per stage with
    images/s), for runs whose table is read by a program (scripts/gpu_check.sh)."""
    import json
    from pipeline.files import write_text
    doc = {"machine": machine_line(),
           "command": "python scripts/bench.py " + " ".join(shlex.quote(x) for x in argv),
           "stages": [dict(asdict(r), images_per_s=r.images_per_s) for r in results]}
    return write_text(path, json.dumps(doc, indent=1) + "\n")
